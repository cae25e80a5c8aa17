#!/bin/bash
# Build the realistic ISR benchmark guest: a Debian bookworm minbase root
# (python3, gcc, make, sqlite3, git, xz, zstd, ...) on a bootable 2 GiB disk.
#
#   scripts/guest-realistic/build.sh [--force] [OUTDIR]
#
# OUTDIR defaults to guest/out/realistic.  Outputs: OUTDIR/disk.img (raw,
# sparse), OUTDIR/guest.env.  The debootstrap root is cached as a tarball
# in guest/out/.cache (override: ISR_GUEST_CACHE), so rebuilds take ~1 min.
# Run as root on Debian bookworm.  See scripts/guest-realistic/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

FORCE=0
OUTDIR=
for arg in "$@"; do
    case "$arg" in
        --force | -f) FORCE=1 ;;
        -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
        *) [ -z "$OUTDIR" ] || { echo "build.sh: only one OUTDIR" >&2; exit 2; }; OUTDIR=$arg ;;
    esac
done
OUTDIR=${OUTDIR:-$REPO_ROOT/guest/out/realistic}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=${ISR_GUEST_CACHE:-$REPO_ROOT/guest/out/.cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

log() { echo "[guest-realistic] $*" >&2; }
die() { echo "[guest-realistic] error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, device nodes)"

# ---------------------------------------------------------------- layout
DISK_MIB=2048
BOOT_START_MIB=1
BOOT_SIZE_MIB=32
DATA_START_MIB=$((BOOT_START_MIB + BOOT_SIZE_MIB))
DATA_SIZE_MIB=$((DISK_MIB - DATA_START_MIB))
# init_on_free: freed pages are zeroed, so a memory image carries the guest's live memory, not stale data
KERNEL_CMDLINE="console=ttyS0 quiet panic=-1 init_on_free=1"
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"
SUITE=bookworm
INCLUDE=python3,gcc,libc6-dev,make,xz-utils,zstd,sqlite3,vim-tiny,git,procps,qemu-guest-agent
PACKAGES="debootstrap busybox-static syslinux syslinux-common mtools dosfstools fdisk e2fsprogs cpio kmod zstd xz-utils gzip"
APT_GET=(apt-get -o DPkg::Lock::Timeout=600)

exec 9>"$OUTDIR/.lock"; flock 9
exec 8>"$CACHE/.lock-realistic"; flock 8

# ---------------------------------------------------------------- host packages
missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null | sed -n 's/ install ok installed$//p' || true)
for p in $PACKAGES; do grep -qx -- "$p" <<<"$installed" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2 || {
        "${APT_GET[@]}" -qq update >&2
        DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
    }
fi

# The first deb URI of the host's sources (deb822 or one-line format).
MIRROR=${ISR_GUEST_MIRROR:-}
if [ -z "$MIRROR" ]; then
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
    [ -n "$MIRROR" ] || MIRROR=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# ---------------------------------------------------------------- kernel (shared cache with scripts/guest)
KERNEL_PKG=${ISR_GUEST_KERNEL_PKG:-}
if [ -z "$KERNEL_PKG" ] && [ -f "$CACHE/kernel-resolution" ]; then
    read -r _ KERNEL_PKG KERNEL_PKG_VERSION <"$CACHE/kernel-resolution"
fi
if [ -z "$KERNEL_PKG" ]; then
    KERNEL_PKG=$(apt-cache show --no-all-versions linux-image-amd64 | sed -n '/^Depends:/{s/^.*\(linux-image-[0-9][^ ,]*-amd64\).*/\1/p}')
fi
[ -n "${KERNEL_PKG_VERSION:-}" ] || KERNEL_PKG_VERSION=$(apt-cache show --no-all-versions "$KERNEL_PKG" | sed -n '/^Version: /{s///p}')
[ -n "$KERNEL_PKG" ] && [ -n "$KERNEL_PKG_VERSION" ] || die "cannot resolve the kernel package"
KERNEL_VERSION=${KERNEL_PKG#linux-image-}

FINGERPRINT=$({
    sha256sum <"$SCRIPT_DIR/build.sh"; sha256sum <"$SCRIPT_DIR/initramfs-init.sh"
    sha256sum <"$SCRIPT_DIR/isr-init"; sha256sum <"$SCRIPT_DIR/isr-workload"
    echo "$SUITE $INCLUDE $MIRROR $KERNEL_PKG=$KERNEL_PKG_VERSION"
    dpkg-query -W -f='${Package}=${Version}\n' busybox-static syslinux e2fsprogs mtools dosfstools
} | sha256sum | cut -c1-64)
if [ "$FORCE" -eq 0 ] && [ -f "$OUTDIR/.stamp" ] && [ "$(cat "$OUTDIR/.stamp")" = "$FINGERPRINT" ] && [ -f "$OUTDIR/disk.img" ] &&
    [ "$(sha256sum <"$OUTDIR/disk.img" | cut -c1-64)" = "$(sed -n 's/^GUEST_DISK_SHA256=//p' "$OUTDIR/guest.env")" ]; then
    log "up to date: $OUTDIR (use --force to rebuild)"
    exit 0
fi

WORK=$OUTDIR/.work
[ ! -d "$WORK" ] || { findmnt -rn -o TARGET | grep -qF "$WORK/" && die "$WORK has mounts (an interrupted debootstrap?): unmount them first"; rm -rf --one-file-system "$WORK"; }
mkdir -p "$WORK"
# debootstrap mounts proc/sys in the root: never rm -rf across a mount.
cleanup_work() {
    if [ -d "$WORK" ]; then
        local m
        for m in $(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r || true); do umount -l "$m" || true; done
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup_work EXIT

# ---------------------------------------------------------------- debootstrap root (cached)
ROOTKEY=$(echo "$SUITE minbase $INCLUDE $MIRROR" | sha256sum | cut -c1-16)
ROOTTAR=$CACHE/realistic-root-$SUITE-$ROOTKEY.tar.zst
ROOT=$WORK/root
if [ ! -s "$ROOTTAR" ]; then
    log "debootstrap $SUITE from $MIRROR (takes a few minutes)"
    t0=$(date +%s)
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    chroot "$ROOT" apt-get clean
    rm -rf "$ROOT"/var/lib/apt/lists/*_Packages "$ROOT"/var/log/*.log
    log "debootstrap took $(($(date +%s) - t0)) s, $(du -sm "$ROOT" | cut -f1) MB"
    tar -C "$ROOT" --numeric-owner --xattrs -cf - . | zstd -q -1 -T2 >"$ROOTTAR.tmp"
    mv "$ROOTTAR.tmp" "$ROOTTAR"
else
    log "root from cache $(basename "$ROOTTAR")"
    mkdir -p "$ROOT"
    zstd -q -dc "$ROOTTAR" | tar -C "$ROOT" --numeric-owner --xattrs -xf -
fi

# ---------------------------------------------------------------- our files in the root
install -m 755 "$SCRIPT_DIR/isr-init" "$ROOT/sbin/isr-init"
install -m 755 "$SCRIPT_DIR/isr-workload" "$ROOT/usr/local/bin/isr-workload"
echo isr-realistic >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 isr-realistic\n' >"$ROOT/etc/hosts"
printf '/dev/vda2 / ext4 rw,noatime 0 1\n' >"$ROOT/etc/fstab"
mkdir -p "$ROOT/root/work"
# Deterministic-ish image: fixed machine-id.
echo 1d5f0c0ffee0ddba11d5f0c0ffee0d15 >"$ROOT/etc/machine-id"

# ---------------------------------------------------------------- kernel + modules
DEB=$CACHE/${KERNEL_PKG}_${KERNEL_PKG_VERSION//:/%3a}_amd64.deb
if [ ! -s "$DEB" ]; then
    log "downloading $KERNEL_PKG $KERNEL_PKG_VERSION"
    (cd "$WORK" && "${APT_GET[@]}" -qq -o APT::Sandbox::User=root download "$KERNEL_PKG=$KERNEL_PKG_VERSION" >&2)
    mv "$WORK"/"${KERNEL_PKG}"_*_amd64.deb "$DEB"
fi
KDIR=$WORK/kernel
mkdir -p "$KDIR/modules" "$WORK/deb"
members=$(dpkg-deb --fsys-tarfile "$DEB" | tar -t)
want=("./boot/vmlinuz-$KERNEL_VERSION" "./lib/modules/$KERNEL_VERSION/modules.builtin")
for m in $MODULES; do
    pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
    path=$(echo "$members" | grep -E "^\./lib/modules/$KERNEL_VERSION/kernel/.*/${pat}\.ko(\.xz|\.zst|\.gz)?$" | head -n1 || true)
    [ -z "$path" ] || want+=("$path")
done
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$WORK/deb" "${want[@]}"
cp "$WORK/deb/boot/vmlinuz-$KERNEL_VERSION" "$KDIR/vmlinuz"
LOAD=()
for m in $MODULES; do
    f=$(find "$WORK/deb/lib/modules" -name "$m.ko*" -o -name "${m//_/-}.ko*" | head -n1)
    if [ -z "$f" ]; then
        grep -Eq "/$(echo "$m" | sed 's/[-_]/[-_]/g')\.ko$" "$WORK/deb/lib/modules/$KERNEL_VERSION/modules.builtin" ||
            die "module $m not found in $KERNEL_PKG"
        continue
    fi
    case "$f" in
        *.ko) cp "$f" "$KDIR/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$KDIR/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$KDIR/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$KDIR/modules/$m.ko" ;;
    esac
    LOAD+=("$m")
done

# ---------------------------------------------------------------- initramfs (busybox, loads modules, switch_root)
log "initramfs"
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
R=$WORK/initramfs
mkdir -p "$R"/{bin,dev,proc,sys,newroot,etc,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3
for m in "${LOAD[@]}"; do cp "$KDIR/modules/$m.ko" "$R/lib/modules/"; done
printf '%s\n' "${LOAD[@]}" >"$R/etc/isr-modules"
install -m 755 "$SCRIPT_DIR/initramfs-init.sh" "$R/init"
(cd "$R" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --quiet --null -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$WORK/initrd.gz"

# ---------------------------------------------------------------- boot partition (FAT, no mount)
cat >"$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT isr
PROMPT 0
TIMEOUT 0
LABEL isr
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $KERNEL_CMDLINE
EOF
BOOT=$WORK/boot.fat
truncate -s "${BOOT_SIZE_MIB}M" "$BOOT"
mkfs.fat -F 16 -n ISRBOOT -i 15a0b008 -h $((BOOT_START_MIB * 2048)) "$BOOT" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$BOOT" "$KDIR/vmlinuz" ::/vmlinuz
mcopy -i "$BOOT" "$WORK/initrd.gz" ::/initrd.gz
mcopy -i "$BOOT" "$WORK/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$BOOT"

# ---------------------------------------------------------------- root partition: ext4 from the directory
log "ext4 root (${DATA_SIZE_MIB} MiB)"
DATA=$WORK/data.ext4
truncate -s "${DATA_SIZE_MIB}M" "$DATA"
mkfs.ext4 -q -F -b 4096 -L isr-root -U 15a0b008-0000-4000-8000-000000000002 \
    -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$ROOT" "$DATA"

IMG=$WORK/disk.img
truncate -s "${DISK_MIB}M" "$IMG"
sfdisk -q "$IMG" <<EOF
label: dos
label-id: 0x15a0b008
unit: sectors

start=$((BOOT_START_MIB * 2048)), size=$((BOOT_SIZE_MIB * 2048)), type=e, bootable
start=$((DATA_START_MIB * 2048)), size=$((DATA_SIZE_MIB * 2048)), type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
dd if="$BOOT" of="$IMG" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
dd if="$DATA" of="$IMG" bs=1M seek="$DATA_START_MIB" conv=notrunc,sparse status=none
rm -f "$DATA" "$BOOT"

cat >"$WORK/guest.env" <<EOF
# ISR realistic guest, built by scripts/guest-realistic/build.sh -- see its README.md
GUEST_MEMORY=512M
GUEST_DISK_IMAGE=disk.img
GUEST_DISK_SIZE=$((DISK_MIB * 1024 * 1024))
GUEST_DISK_SHA256=$(sha256sum <"$IMG" | cut -c1-64)
GUEST_DISK_IF=virtio
GUEST_CONSOLE=ttyS0
BOOT_PARTITION_OFFSET=$((BOOT_START_MIB * 1024 * 1024))
DATA_PARTITION_OFFSET=$((DATA_START_MIB * 1024 * 1024))
DATA_PARTITION_SIZE=$((DATA_SIZE_MIB * 1024 * 1024))
ROOT_DEVICE=/dev/vda2
KERNEL_PACKAGE=$KERNEL_PKG
KERNEL_PACKAGE_VERSION=$KERNEL_PKG_VERSION
KERNEL_CMDLINE='$KERNEL_CMDLINE'
DEBOOTSTRAP_SUITE=$SUITE
DEBOOTSTRAP_INCLUDE=$INCLUDE
ROOT_USED_MB=$(du -sm "$ROOT" | cut -f1)
BUILD_FINGERPRINT=$FINGERPRINT
EOF
rm -rf --one-file-system "$ROOT"
rm -f "$OUTDIR/.stamp"
mv "$IMG" "$OUTDIR/disk.img"
mv "$WORK/guest.env" "$OUTDIR/guest.env"
echo "$FINGERPRINT" >"$OUTDIR/.stamp"
log "built $OUTDIR/disk.img ($(du -m "$OUTDIR/disk.img" | cut -f1) MiB allocated)"
