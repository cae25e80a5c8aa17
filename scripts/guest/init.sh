#!/bin/sh
# /init of the ISR test guest (runs as PID 1 from the initramfs, busybox sh).
# Built into the initramfs by scripts/guest/build.sh; the contract it
# implements (console lines, files on /data) is documented in
# scripts/guest/README.md -- tests rely on it, change both together.

export PATH=/bin:/sbin

CANARY=ISR-CANARY-PLAINTEXT-5f2b9e
DATA_DEV=/dev/vda2

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel opened the console before devtmpfs was mounted; reopen it so
# that all output goes to the serial console (console=ttyS0).
exec </dev/console >/dev/console 2>&1

# The seed comes from /dev/urandom, whose first read waits (~1-2 s under
# TCG) until the kernel's RNG is initialised: start it now, in parallel
# with module loading, and collect it below.
mkdir -p /run
(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' >/run/seed) &
seed_pid=$!

fail() {
    echo "ISR-ERROR $*"
    sync
    sleep 1
    poweroff -f
    while :; do sleep 3600; done
}

# Modules, in dependency order (list written at build time).
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$m.ko" || echo "ISR-ERROR insmod $m"
done </etc/isr-modules

# Wait up to ~10 s for the data partition to appear.
i=0
while [ ! -b "$DATA_DEV" ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "no $DATA_DEV"
    usleep 100000
done

mkdir -p /data
mount -t ext4 -o rw,noatime "$DATA_DEV" /data || fail "cannot mount $DATA_DEV"

# Boot counter: persistent, on disk.
boot=$(cat /data/bootcount 2>/dev/null)
case "$boot" in
    '' | *[!0-9]*) boot=0 ;;
esac
boot=$((boot + 1))
echo "$boot" >/data/bootcount
sync

# Seed and counter: only in RAM (shell variables), so they survive a
# suspend/resume (memory image) but not a reboot.
wait "$seed_pid"
seed=$(cat /run/seed)
rm -f /run/seed
case "$seed" in
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
    *) fail "bad seed '$seed'" ;;
esac
counter=0

# Canary: a known plaintext that must never appear in encrypted stores.
yes "$CANARY" | head -c 262144 >/data/canary
# 16 MiB of random data, read back one fresh 1 MiB slice every 5 s with the page cache dropped: after a resume at
# another site these reads miss the site's cache, so tests can cut the network and watch the VM wait, not fail.
[ -s /data/payload ] || dd if=/dev/urandom of=/data/payload bs=1M count=16 2>/dev/null
sync
slice=0

# Console commands (tests write them to the serial line): ISR-DATE prints the clock, ISR-SETDATE <epoch> sets it;
# both answer ISR-CLOCK <epoch>.
(while :; do
    while read -r cmd; do
        case "$cmd" in
            ISR-DATE) ;;
            ISR-SETDATE\ *) date -s "@${cmd#ISR-SETDATE }" >/dev/null ;;
            *) continue ;;
        esac
        echo "ISR-CLOCK $(date +%s)"
    done </dev/console
    sleep 1
done) &

# A minimal guest agent (qemu-guest-agent is dynamically linked; this guest is busybox): on the virtio-serial port
# QEMU names org.qemu.guest_agent.0 it answers guest-sync-delimited and guest-set-time (which sets the clock).
agent=
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && agent=/dev/${p##*/}
done
[ -z "$agent" ] || (while :; do
    # One open at a time (the port refuses a second); reads end at once while no host is connected.
    while read -r req <&3; do
        id=$(echo "$req" | sed -n 's/.*"guest-sync-delimited".*"id": *\([0-9]*\).*/\1/p')
        ns=$(echo "$req" | sed -n 's/.*"guest-set-time".*"time": *\([0-9]*\).*/\1/p')
        if [ -n "$id" ]; then
            printf '\377{"return": %s}\n' "$id" >&3
        elif [ -n "$ns" ] && date -s "@$((ns / 1000000000))" >/dev/null; then
            echo '{"return": {}}' >&3
        else
            echo '{"error": {"class": "GenericError", "desc": "not supported by the test guest"}}' >&3
        fi
    done 3<>"$agent"
    sleep 1
done) &

echo "ISR-BOOT boot=$boot seed=$seed"
while :; do
    counter=$((counter + 1))
    echo "counter=$counter seed=$seed boot=$boot" >>/data/ticks
    sync
    echo "ISR-TICK counter=$counter seed=$seed boot=$boot"
    if [ $((counter % 5)) -eq 0 ]; then
        echo 3 >/proc/sys/vm/drop_caches
        if dd if=/data/payload of=/dev/null bs=1M skip=$slice count=1 2>/dev/null; then
            echo "ISR-READ slice=$slice ok"
        else
            echo "ISR-IOERROR slice=$slice"
        fi
        slice=$(((slice + 1) % 16))
    fi
    sleep 1
done
