#!/bin/sh
# /init of the realistic guest's initramfs (busybox): load the virtio/ext4
# modules, mount /dev/vda2 and switch_root into it, running /sbin/isr-init.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
fail() { echo "ISR-ERROR $*"; sync; sleep 1; poweroff -f; while :; do sleep 3600; done; }
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$m.ko" || echo "ISR-ERROR insmod $m"
done </etc/isr-modules
i=0
while [ ! -b /dev/vda2 ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || fail "no /dev/vda2"; usleep 100000
done
mount -t ext4 -o rw,noatime /dev/vda2 /newroot || fail "cannot mount /dev/vda2"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/isr-init
