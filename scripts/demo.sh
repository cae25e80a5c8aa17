#!/bin/bash
# The demo: installs what is needed, builds the test guest, the native isr and isr-server, starts an embedded server on
# loopback, creates a parcel from the guest's bootable disk, resumes it at site A (first boot), lets it work,
# suspends and checks it in, then resumes it at site B and checks that the guest continued exactly where it
# stopped (same RAM-only seed, counter going on, no reboot). Prints resume latencies and PASS or FAIL.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/install-deps.sh
bash scripts/guest/build.sh
bash scripts/publish.sh
ISR="$ROOT/build/Isr.Cli/isr"
SERVER="$ROOT/build/Isr.Server/isr-server"

DEMO=$(mktemp -d /tmp/isr-demo.XXXXXX)
export ISR_PASSWORD=demo-password-1
PORT=$((20000 + RANDOM % 20000))
server_pid=
cleanup() {
    for site in a b; do ISR_HOME=$DEMO/site-$site "$ISR" suspend demo >/dev/null 2>&1 || true; done
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

wait_ticks() { # wait (bounded) until console file $1 has more than $2 tick lines
    for _ in $(seq 1 120); do
        c=$(grep -c ISR-TICK "$1" 2>/dev/null || true)
        [ "${c:-0}" -gt "$2" ] && return 0
        sleep 1
    done
    echo "the guest printed nothing for 120 s" >&2; return 1
}
field() { sed -E "s/.*$1=([0-9a-f]+).*/\1/" <<<"$2"; }
latency() { ISR_HOME=$1 "$ISR" stat demo --json | sed -nE 's/.*"lastResumeSeconds":([0-9.]+).*/\1/p'; }

echo "== server: init (self-signed certificate), add a user, run on 127.0.0.1:$PORT"
FP=$("$SERVER" init --data "$DEMO/server" | sed -nE 's/^fingerprint: //p')
echo "$ISR_PASSWORD" > "$DEMO/password"
"$SERVER" user add alice --password-file "$DEMO/password" --data "$DEMO/server" | sed 's/^/   /'
rm "$DEMO/password"
"$SERVER" run --data "$DEMO/server" --urls "https://127.0.0.1:$PORT" > "$DEMO/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 60); do grep -q "listening on" "$DEMO/server.log" && break; sleep 1; done

echo "== site A: log in (pinning the certificate), create the parcel from the guest's bootable qcow2 disk"
export ISR_HOME=$DEMO/site-a ISR_SITE_NAME=site-a
"$ISR" login --server "https://127.0.0.1:$PORT" --user alice --server-fingerprint "$FP"
"$ISR" create demo --from guest/out/disk.qcow2 --memory 256M
echo "== site A: resume (first boot), work, suspend, check in"
"$ISR" resume demo --headless --serial "$DEMO/console-a.log"
wait_ticks "$DEMO/console-a.log" 4
"$ISR" suspend demo
before=$(grep ISR-TICK "$DEMO/console-a.log" | tail -1); echo "   guest at site A before suspend: $before"
"$ISR" checkin demo
latency_a=$(latency "$ISR_HOME")

echo "== site B: log in, resume: the guest continues where it stopped at site A"
export ISR_HOME=$DEMO/site-b ISR_SITE_NAME=site-b
"$ISR" login --server "https://127.0.0.1:$PORT" --user alice --server-fingerprint "$FP"
"$ISR" resume demo --headless --serial "$DEMO/console-b.log"
wait_ticks "$DEMO/console-b.log" 0
after=$(grep -m1 ISR-TICK "$DEMO/console-b.log"); echo "   guest at site B after resume:   $after"
latency_b=$(latency "$ISR_HOME")
"$ISR" suspend demo
"$ISR" checkin demo
"$ISR" ls -l
trap - EXIT
cleanup

echo "resume latency: site A (first boot) ${latency_a} s, site B (memory image over HTTPS) ${latency_b} s"
if [ "$(field seed "$before")" = "$(field seed "$after")" ] && [ "$(field boot "$before")" = "$(field boot "$after")" ] \
   && [ "$(field counter "$after")" -gt "$(field counter "$before")" ]; then
    echo "PASS: site B continued the guest suspended at site A (seed $(field seed "$after"), counter $(field counter "$before") -> $(field counter "$after"), no reboot)"
else
    echo "FAIL: before='$before' after='$after'"; exit 1
fi
