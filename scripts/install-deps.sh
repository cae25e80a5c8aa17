#!/bin/bash
# Installs what isr needs on a Debian (bookworm) machine: QEMU (TCG; KVM on real hosts), qemu-img/qemu-io/qemu-nbd,
# the tools that build the test guest, the guest display (QEMU's GTK/SDL window module, Xvfb and xwd for the
# display tests), PostgreSQL 15 (throwaway servers: scripts/services/postgres.sh), Ceph's mon, OSD and radosgw
# (scripts/services/ceph.sh: the S3 chunk store's tests), gcc and zlib for linking the native isr, and checks for the .NET 10 SDK. Idempotent; run as root.
set -euo pipefail
# What the project runs; when any of it is missing, the apt-get line below installs every package that provides it.
needed=(qemu-system-x86_64 qemu-img qemu-io qemu-nbd busybox syslinux mcopy mkfs.fat sfdisk mkfs.ext4 debugfs e2fsck
        cpio modinfo zstd xz gcc /usr/include/zlib.h Xvfb xwd /usr/lib/syslinux/mbr/mbr.bin /usr/lib/x86_64-linux-gnu/qemu/ui-gtk.so
        /usr/lib/x86_64-linux-gnu/qemu/block-curl.so /usr/lib/postgresql/15/bin/pg_ctl
        ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl)
missing=0
for n in "${needed[@]}"; do
    if [[ $n == /* ]]; then [ -e "$n" ] || missing=1; else command -v "$n" >/dev/null || missing=1; fi
done
if [ "$missing" = 1 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends qemu-system-x86 qemu-utils qemu-block-extra qemu-system-gui busybox-static syslinux syslinux-common mtools dosfstools fdisk e2fsprogs cpio kmod zstd xz-utils util-linux ca-certificates gcc libc6-dev zlib1g-dev xvfb x11-apps postgresql-15 \
        ceph-mon ceph-osd radosgw ceph-common ceph-base curl
fi
if ! command -v dotnet >/dev/null || ! dotnet --list-sdks | grep -q '^10\.'; then
    echo "[deps] error: the .NET 10 SDK is required (https://learn.microsoft.com/dotnet/core/install/linux-debian)" >&2
    exit 1
fi
