#!/usr/bin/env bash
# Hoarding at another site vs hoarding here, over a shaped link: the same parcel (the test guest's disk) hoarded into
# a fresh site's empty cache by `isr hoard P` (foreground, 16 blobs in flight) and by the site's daemon for a request
# made at another site (`isr hoard P --site NAME`; background, 4 in flight), runs interleaved.
# Usage: sudo scripts/bench/remote-hoard.sh [RUNS] [RATE ...]     (default: 2 runs; 100mbit 10mbit)
# Needs: isr and isr-server built (dotnet build Isr.slnx -c Release, or see ISR_BENCH_CLI below), the test guest
# (ISR_TEST_GUEST, default guest/out).
# "background" is the daemon's own hoard time (from its log: listing and fetching); "request to done" runs from the
# `isr hoard --site` command to `isr hoard --requests` seeing it done, so it adds the daemon's pickup (it polls every
# second here) and the CLI's own start-up.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-2}; shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(100mbit 10mbit)
export ISR_NETNS_SRV=isrrh-srv ISR_NETNS_SITE=isrrh-site ISR_NETNS_PREFIX=10.81.0
NETNS=scripts/bench/netns.sh
# ISR_BENCH_CLI / ISR_BENCH_SERVER: other builds (e.g. the published ones under build/ that policies.sh makes).
ISR=${ISR_BENCH_CLI:-"dotnet $PWD/src/Isr.Cli/bin/Release/net10.0/isr.dll"}
SERVER=${ISR_BENCH_SERVER:-"dotnet $PWD/src/Isr.Server/bin/Release/net10.0/isr-server.dll"}
GUEST=${ISR_TEST_GUEST:-$PWD/guest/out}
WORK=$(mktemp -d /tmp/isr-bench-remote-hoard.XXXXXX)
export ISR_PASSWORD="bench password 1"
SERVER_PID="" DAEMON_PID=""
cleanup() {
    [ -z "$DAEMON_PID" ] || kill "$DAEMON_PID" 2>/dev/null || true
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    bash $NETNS down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

bash $NETNS up --rate 100mbit >/dev/null
site() { local home=$1; shift; ip netns exec "$ISR_NETNS_SITE" env ISR_HOME="$home" ISR_SITE_NAME="$(basename "$home")" DISPLAY= timeout 1800 $ISR "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }

$SERVER init --data "$WORK/server" > "$WORK/init.txt"
FP=$(sed -n 's/^fingerprint: //p' "$WORK/init.txt")
printf '%s' "$ISR_PASSWORD" > "$WORK/pw"; $SERVER user add alice --password-file "$WORK/pw" --data "$WORK/server" >/dev/null; rm "$WORK/pw"
ip netns exec "$ISR_NETNS_SRV" $SERVER run --data "$WORK/server" --urls "https://10.81.0.1:8443" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 60); do grep -q "listening on" "$WORK/server.log" && break; sleep 1; done
login() { local home=$1; shift; site "$home" login --server https://10.81.0.1:8443 --user alice --server-fingerprint "$FP" "$@" >/dev/null; }

A=$WORK/site-a; login "$A"
bash $NETNS set-rate none >/dev/null
site "$A" create box --from "$GUEST/disk.qcow2" >/dev/null

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| link | run | foreground hoard | MB | link use | background hoard | MB | link use | background / foreground | request to done |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
n=0
for rate in "${RATES[@]}"; do
    bits=$(python3 -c "import re,sys; m=re.fullmatch(r'([0-9.]+)(k|m|g)bit', sys.argv[1]); print(float(m[1]) * {'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]])" "$rate")
    for run in $(seq "$RUNS"); do
        bash $NETNS set-rate "$rate" >/dev/null
        n=$((n + 1)); F=$WORK/site-f$n; login "$F"
        site "$F" hoard box --json > "$WORK/fg.json"
        fg_s=$(json "d['seconds']" < "$WORK/fg.json"); fg_b=$(json "d['bytesFetched']" < "$WORK/fg.json")
        rm -rf "$F"

        B=$WORK/site-b$n; login "$B" --keep-keys 0  # starts no daemon: B's one daemon is the keyless service below
        echo '{"hoardPollSeconds": 1}' > "$B/config.json"
        ip netns exec "$ISR_NETNS_SITE" env -u ISR_PASSWORD ISR_HOME="$B" ISR_SITE_NAME="site-b$n" $ISR daemon --service > "$WORK/daemon-b$n.log" 2>&1 &
        DAEMON_PID=$!
        start=$(date +%s.%N)
        site "$A" hoard box --site "site-b$n" --json > "$WORK/request.json"
        id=$(json "d['id']" < "$WORK/request.json")
        state=pending
        for _ in $(seq 3600); do
            site "$A" hoard --requests --json > "$WORK/requests.json"
            state=$(json "[r for r in d if r['id']==$id][0]['state']" < "$WORK/requests.json")
            [ "$state" = done ] || [ "$state" = failed ] && break
            sleep 0.5
        done
        end=$(date +%s.%N)
        [ "$state" = done ] || { echo "background hoard ended $state" >&2; cat "$WORK/daemon-b$n.log" >&2; exit 1; }
        bg_b=$(json "[r for r in d if r['id']==$id][0]['bytesDone']" < "$WORK/requests.json")
        bg_s=$(sed -n 's/.* done: .* in \([0-9.]*\) s, .*/\1/p' "$WORK/daemon-b$n.log" | tail -1)
        kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
        site "$A" site revoke "site-b$n" >/dev/null
        rm -rf "$B"
        python3 - "$rate" "$run" "$fg_s" "$fg_b" "$start" "$end" "$bg_s" "$bg_b" "$bits" <<'PY'
import sys
rate, run, fg_s, fg_b, start, end, bg_s, bg_b, bits = sys.argv[1:]
fg_s, fg_b, bg_s, bg_b, bits = float(fg_s), float(fg_b), float(bg_s), float(bg_b), float(bits)
use = lambda b, s: f"{b * 8 / s / bits * 100:.0f}%"
print(f"| {rate} | {run} | {fg_s:.1f} s | {fg_b / 1e6:.1f} | {use(fg_b, fg_s)} | {bg_s:.1f} s | {bg_b / 1e6:.1f} | {use(bg_b, bg_s)} | "
      f"{bg_s / fg_s:.2f} | {float(end) - float(start):.1f} s |")
PY
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
