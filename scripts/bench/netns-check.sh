#!/bin/bash
# Measure TCP throughput across the isr-srv <-> isr-site link made by
# netns.sh, in both directions, for a list of rates (each set in place).
#
#   scripts/bench/netns-check.sh [SECONDS] [RATE...]     default: 5 100mbit 10mbit 1mbit
#
# Prints one line per rate and direction: nominal, measured Mbit/s, ratio.
# Each transfer is sized to take ~SECONDS at the nominal rate, and is
# bounded by a timeout of 4*SECONDS+10 s. Leaves the link at the last rate.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECS=${1:-5}; shift || true
RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(100mbit 10mbit 1mbit)
PY=$(command -v python3)
SRV_IP=${ISR_NETNS_PREFIX:-10.77.0}.1
"$SCRIPT_DIR/netns.sh" up >/dev/null

# python: 'recv PORT' accepts one connection, reads to EOF, prints bytes and
# seconds from first to last byte; 'send HOST PORT N' connects and writes N bytes.
PROG='
import socket, sys, time
if sys.argv[1] == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(float(sys.argv[3]))
    c, _ = s.accept(); c.settimeout(float(sys.argv[3])); n = 0; t0 = None
    while True:
        b = c.recv(1 << 16)
        if not b: break
        if t0 is None: t0 = time.monotonic()
        n += len(b)
    print(n, time.monotonic() - t0)
else:
    for attempt in range(100):  # the receiver may start slowly on a loaded host
        try:
            c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=60); break
        except ConnectionRefusedError:
            time.sleep(0.1)
    else:
        sys.exit("cannot connect")
    buf = bytes(1 << 16); left = int(sys.argv[4])
    while left > 0:
        k = min(left, len(buf)); c.sendall(buf[:k]); left -= k
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
'
measure() { # FROM_NS TO_NS TO_IP BYTES
    local port=$((20000 + RANDOM % 20000)) out lim=$((4 * SECS + 10))
    timeout "$lim" ip netns exec "$2" "$PY" -c "$PROG" recv "$port" "$lim" >/tmp/netns-check.$$ &
    local rp=$!
    sleep 0.5
    timeout "$lim" ip netns exec "$1" "$PY" -c "$PROG" send "$3" "$port" "$4" || true
    wait "$rp" || true
    out=$(cat /tmp/netns-check.$$); rm -f /tmp/netns-check.$$
    echo "$out"
}
SITE_IP=${ISR_NETNS_PREFIX:-10.77.0}.2
printf '%-8s %-12s %10s %12s %6s\n' rate direction bytes Mbit/s ratio
for r in "${RATES[@]}"; do
    "$SCRIPT_DIR/netns.sh" set-rate "$r" >/dev/null
    case "${r,,}" in *gbit) nom=$(( ${r%?bit} * 1000 ));; *mbit) nom=${r%mbit};; *kbit) nom=$(awk "BEGIN{print ${r%kbit}/1000}");; esac
    bytes=$(awk "BEGIN{printf \"%d\", $nom * 1e6 / 8 * $SECS}")
    for dir in srv-to-site site-to-srv; do
        if [ "$dir" = srv-to-site ]; then res=$(measure isr-srv isr-site "$SITE_IP" "$bytes")
        else res=$(measure isr-site isr-srv "$SRV_IP" "$bytes"); fi
        read -r got secs <<<"$res"
        mb=$(awk "BEGIN{printf \"%.3f\", $got * 8 / $secs / 1e6}")
        printf '%-8s %-12s %10s %12s %6s\n' "$r" "$dir" "$got" "$mb" "$(awk "BEGIN{printf \"%.3f\", $mb / $nom}")"
    done
done
