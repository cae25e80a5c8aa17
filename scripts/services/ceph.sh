#!/bin/bash
# A throwaway one-node Ceph cluster (Debian's Ceph 16) with an S3 endpoint, for tests and benchmarks.
#
#   scripts/services/ceph.sh start DIR    one mon, one OSD (memstore), radosgw (beast) on 127.0.0.1, an S3 user;
#                                         writes DIR/s3.env (ISR_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
#   scripts/services/ceph.sh stop DIR     stops what start started (rgw, then the OSD, then the mon), by PID
#
# Everything lives in DIR (config, keys, data, logs, pid files); nothing is installed or left running elsewhere.
# ISR_CEPH_STORE=bluestore puts the OSD on a sparse file in DIR instead of memory (data survives a restart).
# Why these settings: cephx is required (with "auth = none" the OSD exits with "wrong fsid"); a short paxos propose
# interval cuts startup from ~20 s to a few; one OSD cannot hold the default pg count, so pools get few PGs.
set -Eeuo pipefail

die() { echo "ceph.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: ceph.sh start|stop DIR"
cmd=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF=$DIR/ceph.conf
DAEMONS=(rgw:10 osd:100 mon:100) # stop order, with each one's grace (tenths of a second)

# A TCP port no socket uses (from the kernel's socket table; bounded tries) and not $1, below the kernel's ephemeral
# range so that an outgoing connection cannot take it between this choice and the daemon's bind.
free_port() {
    local used port i low avoid=${1:-}
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    used=$(awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp* | while read -r hex; do echo $((16#$hex)); done)
    for ((i = 0; i < 100; i++)); do
        port=$((10000 + RANDOM % (low - 10000)))
        [ "$port" != "$avoid" ] && ! grep -qx "$port" <<<"$used" && { echo "$port"; return; }
    done
    die "no free port found"
}

# A failed step says which it was and shows the end of the daemons' logs: some steps write only there.
report_failure() {
    local code=$? line=$1 cmd=$2 f
    echo "ceph.sh: line $line failed ($code): $cmd" >&2
    for f in "$DIR"/log/*; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
}

# Waits until COMMAND succeeds, at most SECONDS (tenths of a second between tries).
wait_for() {
    local seconds=$1 what=$2 i; shift 2
    for ((i = 0; i < seconds * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what did not come up within ${seconds}s (logs in $DIR/log)"
}

# SIGTERM, then SIGKILL after GRACE tenths of a second. radosgw keeps no state of its own (objects live in RADOS) but
# takes ~6 s to honour SIGTERM, so it gets a short grace; mon and OSD exit within ~2 s.
stop_daemon() {
    local pidfile=$DIR/run/$1.pid grace=$2 pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    # Only our own daemon: the PID must still run a ceph program started with our config.
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF"; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < grace; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

start() {
    for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
        command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
    done
    [ -f "$DIR/s3.env" ] && die "$DIR already holds a cluster (stop it first)"
    # A start that fails half way stops what it started.
    trap 'if [ ! -f "$DIR/s3.env" ]; then for d in "${DAEMONS[@]}"; do stop_daemon "${d%:*}" "${d#*:}"; done; fi' EXIT
    trap 'report_failure "$LINENO" "$BASH_COMMAND"' ERR
    mkdir -p "$DIR"/{mon,osd,rgw,run,log}
    local fsid mon_port rgw_port store
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mon_port=$(free_port)
    rgw_port=$(free_port "$mon_port")
    store=${ISR_CEPH_STORE:-memstore}
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$type.pid
log file = $DIR/log/\$name.log
paxos propose interval = 0.01
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 4
osd pool default pgp num = 4
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
[mon]
mon data = $DIR/mon/\$id
[osd]
osd data = $DIR/osd/\$id
keyring = $DIR/osd/\$id/keyring
osd objectstore = $store
memstore device bytes = 4294967296
bluestore block path = $DIR/osd/\$id.block
bluestore block size = 10737418240
bluestore block create = true
osd max object name len = 256
osd max object namespace len = 64
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
keyring = $DIR/rgw/keyring
pid file = $DIR/run/rgw.pid
debug rgw = 0/0
EOF
    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring"
    ceph-mon -c "$CONF" -i a 2>>"$DIR/log/mon.stderr"
    wait_for 30 "ceph-mon" ceph -c "$CONF" --connect-timeout 2 mon stat

    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$DIR/osd/0"
    ceph -c "$CONF" osd new "$uuid" 0 >/dev/null
    ceph-osd -c "$CONF" -i 0 --mkfs --mkkey --no-mon-config --osd-uuid "$uuid" 2>>"$DIR/log/osd-mkfs.log"
    ceph -c "$CONF" auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$DIR/osd/0/keyring" >/dev/null 2>&1
    ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/osd.stderr"
    wait_for 60 "ceph-osd" bash -c "ceph -c '$CONF' osd dump | grep -q '^osd.0 up'"

    ceph -c "$CONF" auth get-or-create client.rgw mon 'allow rw' osd 'allow rwx' -o "$DIR/rgw/keyring"
    radosgw -c "$CONF" -n client.rgw 2>>"$DIR/log/rgw.stderr"
    wait_for 60 "radosgw" curl -sf "http://127.0.0.1:$rgw_port/"

    local access secret
    access=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n')
    secret=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
    radosgw-admin -c "$CONF" -n client.admin user create --uid=isr --display-name=isr \
        --access-key="$access" --secret-key="$secret" >/dev/null
    umask 077
    cat >"$DIR/s3.env" <<EOF
ISR_S3_ENDPOINT=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
EOF
    echo "ceph: S3 endpoint http://127.0.0.1:$rgw_port (credentials in $DIR/s3.env)"
}

stop() {
    [ -f "$CONF" ] || die "$DIR holds no cluster"
    for d in "${DAEMONS[@]}"; do stop_daemon "${d%:*}" "${d#*:}"; done
    rm -f "$DIR/s3.env"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) die "usage: ceph.sh start|stop DIR" ;;
esac
