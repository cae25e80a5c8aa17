#!/usr/bin/env bash
# Resume latency over a shaped link: demand fetch vs hoarded (proactive) vs a current dongle vs a stale dongle.
# Usage: sudo scripts/bench/lookaside.sh [RATE ...]        (default: 100mbit 10mbit 1mbit)
# Environment: MODES (default "demand hoarded dongle stale"), RUNS per cell (default 1; the table shows the median),
# SETTLE seconds idle before each timed resume (default 3),
# ISR_NETNS_SRV / ISR_NETNS_SITE / ISR_NETNS_PREFIX (namespace names and addresses, defaults isrla-srv, isrla-site, 10.79.0).
# Needs: isr and isr-server built (dotnet build Isr.slnx -c Release), the test guest (ISR_TEST_GUEST, default guest/out).
# The server runs in its own network namespace, each site in the other, joined by a veth pair shaped with tbf
# (scripts/bench/netns.sh, with names of its own so it does not disturb other users of the default ones).
# For each rate and mode a fresh site (empty cache) logs in and resumes version 3 (a stale dongle holds version 2);
# resume latency is what `isr resume` reports (command start to the VM running). Between runs the lock is broken
# and the previous site's daemon killed by PID, so no run uploads anything.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=("$@")
[ $# -gt 0 ] || RATES=(100mbit 10mbit 1mbit)
export ISR_NETNS_SRV=${ISR_NETNS_SRV:-isrla-srv} ISR_NETNS_SITE=${ISR_NETNS_SITE:-isrla-site} ISR_NETNS_PREFIX=${ISR_NETNS_PREFIX:-10.79.0}
read -r -a MODE_LIST <<< "${MODES:-demand hoarded dongle stale}"
RUNS=${RUNS:-1}
NETNS=scripts/bench/netns.sh
# ISR_DLL / ISR_SERVER_DLL: a copy of the build, so that building again during a run does not change what is measured.
ISR="dotnet ${ISR_DLL:-$PWD/src/Isr.Cli/bin/Release/net10.0/isr.dll}"
SERVER="dotnet ${ISR_SERVER_DLL:-$PWD/src/Isr.Server/bin/Release/net10.0/isr-server.dll}"
GUEST=${ISR_TEST_GUEST:-$PWD/guest/out}
WORK=$(mktemp -d /tmp/isr-bench-lookaside.XXXXXX)
export ISR_PASSWORD="bench password 1"
SERVER_PID=""
cleanup() {
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    for home in "$WORK"/site-*; do [ -d "$home" ] && stop_site "$home"; done
    bash $NETNS down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

bash $NETNS up --rate 100mbit >/dev/null
site() { local home=$1; shift; ip netns exec "$ISR_NETNS_SITE" env ISR_HOME="$home" DISPLAY= timeout 1200 $ISR "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }
stop_site() { # kill the site's QEMU and daemon by PID (the daemon logs its PID first)
    local qemu=${2:-} pid
    [ -z "$qemu" ] || kill "$qemu" 2>/dev/null || true
    pid=$(sed -n 's/.*isr daemon \([0-9]*\) serving.*/\1/p' "$1/daemon.log" 2>/dev/null | tail -1)
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    sleep 1
}

$SERVER init --data "$WORK/server" > "$WORK/init.txt"
FP=$(sed -n 's/^fingerprint: //p' "$WORK/init.txt")
printf '%s' "$ISR_PASSWORD" > "$WORK/pw"; $SERVER user add alice --password-file "$WORK/pw" --data "$WORK/server" >/dev/null; rm "$WORK/pw"
ip netns exec "$ISR_NETNS_SRV" $SERVER run --data "$WORK/server" --urls "https://$ISR_NETNS_PREFIX.1:8443" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 60); do grep -q "listening on" "$WORK/server.log" && break; sleep 1; done
URL=https://$ISR_NETNS_PREFIX.1:8443
login() { site "$1" login --server $URL --user alice --server-fingerprint "$FP" >/dev/null; }

# Site A makes versions 2 and 3 (two suspends of the running guest), each written to a dongle.
A=$WORK/site-a; login "$A"
site "$A" create box --from "$GUEST/disk.qcow2" >/dev/null
for v in 2 3; do
    site "$A" resume box --headless --serial "$WORK/console-a$v.log" >/dev/null
    for _ in $(seq 120); do [ "$(cat "$WORK/console-a$v.log" 2>/dev/null | grep -c ISR-TICK)" -ge 3 ] && break; sleep 1; done
    site "$A" suspend box --dongle "$WORK/dongle-v$v" >/dev/null
    site "$A" checkin box >/dev/null
done
stop_site "$A"
MEM=$(site "$A" ls -l --json | json "[v for v in d[0]['versions'] if v['number']==3][0]['memoryBytes']" 2>/dev/null || echo "?")

median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:])), 1))" "$@"; }
cell() { [ -n "${t[$1]:-}" ] && echo "$(median ${t[$1]}) s" || echo "-"; }
echo "| link | demand | hoarded (proactive) | dongle (current) | dongle (stale) | dongle / hoarded | load average |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
n=0
for rate in "${RATES[@]}"; do
    bash $NETNS set-rate "$rate" >/dev/null
    declare -A t=()
    load=$(cut -d' ' -f1 /proc/loadavg)
    for run in $(seq "$RUNS"); do  # modes interleaved within each run, so load drifts hit them alike
        for mode in "${MODE_LIST[@]}"; do
            n=$((n + 1)); S=$WORK/site-$n; login "$S"
            site "$S" lock box --break >/dev/null 2>&1 || true
            extra=()
            case $mode in
                hoarded) # ahead of time, so unshaped (at 1 Mbit/s it would take most of the run)
                    bash $NETNS set-rate none >/dev/null; site "$S" hoard box --version 3 >/dev/null; bash $NETNS set-rate "$rate" >/dev/null ;;
                dongle) extra=(--lookaside "$WORK/dongle-v3") ;;
                stale) extra=(--lookaside "$WORK/dongle-v2") ;;
            esac
            # The same idle time before every timed resume: this host hands freed memory back to its hypervisor after
            # ~2 s, and QEMU's load pays for it or not by luck (scripts/bench/qemu-load-cost.py; policies.py --settle).
            sleep "${SETTLE:-3}"
            site "$S" resume box --version 3 --headless --prefetch none "${extra[@]}" --json > "$WORK/resume.json"
            t[$mode]="${t[$mode]:-} $(json "round(d['resumeSeconds'], 2)" < "$WORK/resume.json")"
            # The sources' counters at cont: a slow run shows whether a source timed out (failures) or was cut off (skipped).
            echo "# $rate run $run $mode: $(json "d['resumeSeconds']" < "$WORK/resume.json") s; from home $(json "round((d.get('homeBytes') or 0) / 1e6, 1)" < "$WORK/resume.json") MB; lookaside $(json "[(s['source'], s['hits'], s['misses'], s['failures'], s['skipped']) for s in d.get('lookaside') or []]" < "$WORK/resume.json")" >&2
            stop_site "$S" "$(json "d.get('qemuPid') or ''" < "$WORK/resume.json")"
            rm -rf "$S"
        done
    done
    ratio=-
    [ -z "${t[dongle]:-}" ] || [ -z "${t[hoarded]:-}" ] || ratio=$(python3 -c "print(round($(median ${t[dongle]}) / $(median ${t[hoarded]}), 2))")
    echo "| $rate | $(cell demand) | $(cell hoarded) | $(cell dongle) | $(cell stale) | $ratio | $load |"
    unset t
done
echo
echo "memory image of version 3: $MEM bytes (raw); runs per cell: $RUNS (median)"
