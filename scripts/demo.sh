#!/bin/bash
# The demo: installs what is needed, builds the test guest and isr, creates a parcel from the guest's bootable disk,
# resumes it (first boot), lets it work, suspends it, resumes it again and checks that it continued (same seed,
# counter going on, no reboot). Prints the resume latency and PASS or FAIL.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/install-deps.sh
bash scripts/guest/build.sh
dotnet build src/Isr.Cli -c Release -o build/isr -v quiet -nologo | grep -E "error|Warn|Elapsed" || true

DEMO=$(mktemp -d /tmp/isr-demo.XXXXXX)
export ISR_HOME=$DEMO/site-a ISR_PASSWORD=demo-password
ISR="$ROOT/build/isr/isr"
cleanup() { "$ISR" suspend demo >/dev/null 2>&1 || true; }
trap cleanup EXIT

wait_ticks() { # wait until the serial log has more than $1 tick lines (bounded)
    for _ in $(seq 1 120); do
        c=$(grep -c ISR-TICK "$SERIAL" 2>/dev/null || true)
        [ "${c:-0}" -gt "$1" ] && return 0
        sleep 1
    done
    echo "the guest printed nothing for 120 s" >&2; return 1
}
last_tick() { grep ISR-TICK "$SERIAL" | tail -1; }

echo "== create: import the guest's bootable disk (qcow2) into an encrypted store"
"$ISR" create demo --from guest/out/disk.qcow2 --store "$DEMO/store" --memory 256M
echo "== resume (first boot)"
SERIAL=$DEMO/serial-1.log
"$ISR" resume demo --headless --serial "$SERIAL"
wait_ticks 4
echo "== suspend"
"$ISR" suspend demo
before=$(last_tick); echo "   guest before suspend: $before"
echo "== resume (continue from the memory image)"
SERIAL=$DEMO/serial-2.log
"$ISR" resume demo --headless --serial "$SERIAL"
wait_ticks 0
after=$(grep -m1 ISR-TICK "$SERIAL"); echo "   guest after resume:  $after"
"$ISR" suspend demo
trap - EXIT
"$ISR" ls -l
"$ISR" stat demo

seed() { sed -E 's/.*seed=([0-9a-f]+).*/\1/' <<<"$1"; }
counter() { sed -E 's/.*counter=([0-9]+).*/\1/' <<<"$1"; }
boot() { sed -E 's/.*boot=([0-9]+).*/\1/' <<<"$1"; }
latency=$("$ISR" stat demo --json | sed -nE 's/.*"lastResumeSeconds":([0-9.]+).*/\1/p')
if [ "$(seed "$before")" = "$(seed "$after")" ] && [ "$(boot "$before")" = "$(boot "$after")" ] \
   && [ "$(counter "$after")" -gt "$(counter "$before")" ]; then
    echo "resume latency: ${latency} s"
    echo "PASS: the guest continued where it was suspended (seed $(seed "$after"), counter $(counter "$before") -> $(counter "$after"), boot $(boot "$after"))"
else
    echo "FAIL: before='$before' after='$after'"; exit 1
fi
