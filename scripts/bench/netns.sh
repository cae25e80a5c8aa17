#!/bin/bash
# Two network namespaces for ISR benchmarks, joined by a veth pair, with a
# token-bucket rate limit (tc tbf) on both directions.
#
#   scripts/bench/netns.sh up [--rate R]     create (idempotent); R like 100mbit, 10mbit, 1mbit, 100kbit
#   scripts/bench/netns.sh set-rate R        change the rate in place
#   scripts/bench/netns.sh status            show namespaces, addresses, qdiscs
#   scripts/bench/netns.sh down              remove everything 'up' made
#
# isr-srv: veth isr-srv0 10.77.0.1/24     isr-site: veth isr-site0 10.77.0.2/24
# Run programs inside with: ip netns exec isr-srv CMD / ip netns exec isr-site CMD
# Environment: ISR_NETNS_SRV, ISR_NETNS_SITE, ISR_NETNS_PREFIX (10.77.0) override names/addresses.
# "--rate none" (or set-rate none) removes the limit.
set -euo pipefail

SRV=${ISR_NETNS_SRV:-isr-srv}
SITE=${ISR_NETNS_SITE:-isr-site}
PFX=${ISR_NETNS_PREFIX:-10.77.0}
SRV_IF=${SRV}0
SITE_IF=${SITE}0
SRV_IP=$PFX.1
SITE_IP=$PFX.2

die() { echo "netns.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

has_ns() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

# burst must hold at least one timer tick's worth of data (rate/HZ) and one
# MTU; latency bounds the queue (packets waiting longer are dropped).
burst_for() {
    local bits
    bits=$(rate_bits "$1")
    local b=$((bits / 8 / 100))            # 10 ms of data
    [ "$b" -ge 3200 ] || b=3200         # >= 2 MTU
    echo "$b"
}
rate_bits() {
    local r=${1,,} n
    case "$r" in
        *gbit) n=${r%gbit}; echo $((n * 1000000000)) ;;
        *mbit) n=${r%mbit}; echo $((n * 1000000)) ;;
        *kbit) n=${r%kbit}; echo $((n * 1000)) ;;
        *bit) n=${r%bit}; echo "$n" ;;
        *) die "rate must be like 100mbit, 10mbit, 512kbit" ;;
    esac
}

apply_rate() {
    local rate=$1 ns dev
    for pair in "$SRV:$SRV_IF" "$SITE:$SITE_IF"; do
        ns=${pair%%:*}; dev=${pair#*:}
        if [ "$rate" = none ]; then
            ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
        else
            ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$(burst_for "$rate")" latency 200ms
        fi
    done
}

up() {
    local rate=$1
    has_ns "$SRV" || ip netns add "$SRV"
    has_ns "$SITE" || ip netns add "$SITE"
    if ! ip -n "$SRV" link show "$SRV_IF" >/dev/null 2>&1; then
        # A half-made pair (e.g. interrupted earlier) would block the name.
        ip link del "$SRV_IF" 2>/dev/null || true
        ip -n "$SITE" link del "$SITE_IF" 2>/dev/null || true
        ip link add "$SRV_IF" type veth peer name "$SITE_IF"
        ip link set "$SRV_IF" netns "$SRV"
        ip link set "$SITE_IF" netns "$SITE"
    fi
    ip -n "$SRV" addr replace "$SRV_IP/24" dev "$SRV_IF"
    ip -n "$SITE" addr replace "$SITE_IP/24" dev "$SITE_IF"
    for ns in "$SRV" "$SITE"; do ip -n "$ns" link set lo up; done
    ip -n "$SRV" link set "$SRV_IF" up
    ip -n "$SITE" link set "$SITE_IF" up
    # Offloads make tbf see 64 KiB super-packets: turn them off for exact shaping.
    for pair in "$SRV:$SRV_IF" "$SITE:$SITE_IF"; do
        ip netns exec "${pair%%:*}" ethtool -K "${pair#*:}" tso off gso off gro off 2>/dev/null || true
    done
    [ -z "$rate" ] || apply_rate "$rate"
    if command -v ping >/dev/null; then
        ip netns exec "$SITE" ping -c1 -W2 "$SRV_IP" >/dev/null 2>&1 || die "no connectivity $SITE_IP -> $SRV_IP"
    fi
    echo "up: $SRV ($SRV_IP) <-> $SITE ($SITE_IP), rate ${rate:-unlimited}"
}

down() {
    # Deleting a namespace deletes the veth in it (and so its peer).
    for ns in "$SITE" "$SRV"; do
        if has_ns "$ns"; then
            ip netns pids "$ns" 2>/dev/null | grep -q . && echo "netns.sh: warning: processes still run in $ns" >&2
            ip netns del "$ns"
        fi
    done
    ip link del "$SRV_IF" 2>/dev/null || true
    echo "down"
}

status() {
    for ns in "$SRV" "$SITE"; do
        has_ns "$ns" || { echo "$ns: absent"; continue; }
        echo "== $ns"
        ip -n "$ns" -br addr
        ip netns exec "$ns" tc qdisc show
    done
}

cmd=${1:-}; shift || true
rate=
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rate=${2:?--rate needs a value}; shift 2 ;;
        --rate=*) rate=${1#--rate=}; shift ;;
        *) if [ "$cmd" = set-rate ] && [ -z "$rate" ]; then rate=$1; shift; else die "unknown argument $1"; fi ;;
    esac
done
[ -z "$rate" ] || [ "$rate" = none ] || rate_bits "$rate" >/dev/null
case "$cmd" in
    up) up "$rate" ;;
    set-rate)
        [ -n "$rate" ] || die "set-rate needs a rate"
        has_ns "$SRV" && has_ns "$SITE" || die "not up"
        apply_rate "$rate"; echo "rate $rate" ;;
    down) down ;;
    status) status ;;
    *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
