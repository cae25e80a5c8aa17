#!/bin/bash
# Build the small ISR test guest from Debian packages.
#
#   scripts/guest/build.sh [--force] [OUTDIR]
#
# OUTDIR defaults to guest/out (relative to the repository root).
# Outputs: OUTDIR/disk.img (bootable raw disk), OUTDIR/disk.qcow2 (same
# image as qcow2), OUTDIR/guest.env (shell-sourceable facts).
# Downloads are cached in guest/out/.cache, shared by all OUTDIRs
# (override: ISR_GUEST_CACHE).
# Run as root on Debian bookworm.  See scripts/guest/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

FORCE=0
OUTDIR=
for arg in "$@"; do
    case "$arg" in
        --force | -f) FORCE=1 ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
        *)
            [ -z "$OUTDIR" ] || { echo "build.sh: only one OUTDIR" >&2; exit 2; }
            OUTDIR=$arg
            ;;
    esac
done
OUTDIR=${OUTDIR:-$REPO_ROOT/guest/out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=${ISR_GUEST_CACHE:-$REPO_ROOT/guest/out/.cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

log() { echo "[guest] $*" >&2; }
die() { echo "[guest] error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, creates device nodes)"

# ---------------------------------------------------------------- layout
GUEST_MEMORY=256M
DISK_MIB=128
BOOT_START_MIB=1        # partition 1: FAT16, kernel + initramfs + syslinux
BOOT_SIZE_MIB=32
DATA_START_MIB=$((BOOT_START_MIB + BOOT_SIZE_MIB))   # partition 2: ext4
DATA_SIZE_MIB=$((DISK_MIB - DATA_START_MIB))
KERNEL_CMDLINE="console=ttyS0 quiet panic=-1"
# Loaded by /init in this order (dependencies first).
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
virtio_console virtio_blk crc16 mbcache jbd2 crc32c_generic ext4 failover net_failover virtio_net"
MODULES=$(echo $MODULES)
PACKAGES="busybox-static syslinux syslinux-common mtools dosfstools fdisk e2fsprogs
cpio kmod qemu-utils zstd xz-utils gzip util-linux coreutils"
APT_GET=(apt-get -o DPkg::Lock::Timeout=600)

# One build per OUTDIR, and per cache, at a time (always in this order).
exec 9>"$OUTDIR/.lock"
flock 9
exec 8>"$CACHE/.lock"
flock 8

# ---------------------------------------------------------------- packages
apt_updated=0
apt_update() {
    [ "$apt_updated" -eq 0 ] || return 0
    log "apt-get update"
    "${APT_GET[@]}" -qq update >&2
    apt_updated=1
}

missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null | sed -n 's/ install ok installed$//p' || true)
for p in $PACKAGES; do
    grep -qx -- "$p" <<<"$installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        apt_update
        DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
fi

# ---------------------------------------------------------------- kernel package
# ISR_GUEST_KERNEL_PKG pins the package (e.g. linux-image-6.1.0-56-amd64);
# default: whatever linux-image-amd64 currently depends on.
resolve_kernel() {
    local pkg=${ISR_GUEST_KERNEL_PKG:-} ver= info
    # apt-cache is slow here (no pkgcache.bin): one call, and its answer is
    # remembered for as long as the apt lists do not change.
    local sig
    sig=$({ echo "$pkg"; ls -l --time-style=+%s /var/lib/apt/lists/*Packages* /var/lib/apt/lists/*Release 2>/dev/null; } | sha256sum | cut -c1-16)
    if [ -f "$CACHE/kernel-resolution" ] && [ "$(cut -d' ' -f1 "$CACHE/kernel-resolution")" = "$sig" ]; then
        read -r _ KERNEL_PKG KERNEL_PKG_VERSION <"$CACHE/kernel-resolution"
        return 0
    fi
    if [ -z "$pkg" ]; then
        # linux-image-amd64 depends on exactly one linux-image-X-amd64 (= V).
        info=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null) || return 1
        read -r pkg ver < <(echo "$info" | sed -n '/^Depends:/{s/^.*\(linux-image-[0-9][^ ,]*-amd64\)\( (= \([^)]*\))\)\{0,1\}.*/\1 \3/p;q}') || true
        [ -n "${pkg:-}" ] || return 1
    fi
    if [ -z "$ver" ]; then
        info=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null) || return 1
        ver=$(echo "$info" | sed -n '/^Version: /{s///p;q}')
    fi
    [ -n "${pkg:-}" ] && [ -n "${ver:-}" ] || return 1
    KERNEL_PKG=$pkg
    KERNEL_PKG_VERSION=$ver
    echo "$sig $KERNEL_PKG $KERNEL_PKG_VERSION" >"$CACHE/kernel-resolution"
}
if ! resolve_kernel; then
    apt_update || true
    if ! resolve_kernel; then
        # Offline: fall back to the newest cached package.
        deb=$(ls -1 "$CACHE"/linux-image-*-amd64_*_amd64.deb 2>/dev/null | sort -V | tail -n1 || true)
        [ -n "$deb" ] || die "cannot resolve a linux-image-*-amd64 package (apt sources?)"
        KERNEL_PKG=$(dpkg-deb -f "$deb" Package)
        KERNEL_PKG_VERSION=$(dpkg-deb -f "$deb" Version)
        log "apt cannot resolve the kernel; using cached $KERNEL_PKG $KERNEL_PKG_VERSION"
    fi
fi
KERNEL_VERSION=${KERNEL_PKG#linux-image-}

pkgver() { dpkg-query -W -f='${Version}' "$1"; }

# ---------------------------------------------------------------- up to date?
FINGERPRINT=$(
    {
        sha256sum <"$SCRIPT_DIR/build.sh"
        sha256sum <"$SCRIPT_DIR/init.sh"
        echo "kernel=$KERNEL_PKG=$KERNEL_PKG_VERSION"
        dpkg-query -W -f='${Package}=${Version}\n' busybox-static syslinux syslinux-common \
            mtools dosfstools e2fsprogs fdisk qemu-utils
    } | sha256sum | cut -c1-64
)
STAMP=$OUTDIR/.stamp
# Up to date = same inputs, and the images are still the pristine ones
# (booting OUTDIR/disk.img directly modifies it: boot copies instead).
outputs_pristine() {
    [ -f "$OUTDIR/disk.img" ] && [ -f "$OUTDIR/disk.qcow2" ] && [ -f "$OUTDIR/guest.env" ] || return 1
    local want_img want_qcow
    want_img=$(sed -n 's/^GUEST_DISK_SHA256=//p' "$OUTDIR/guest.env")
    want_qcow=$(sed -n 's/^GUEST_QCOW2_SHA256=//p' "$OUTDIR/guest.env")
    [ "$(sha256sum <"$OUTDIR/disk.img" | cut -c1-64)" = "$want_img" ] &&
        [ "$(sha256sum <"$OUTDIR/disk.qcow2" | cut -c1-64)" = "$want_qcow" ]
}
if [ "$FORCE" -eq 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FINGERPRINT" ]; then
    if outputs_pristine; then
        log "up to date: $OUTDIR (use --force to rebuild)"
        exit 0
    fi
    log "outputs missing or modified: rebuilding"
fi

WORK=$OUTDIR/.work
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- download + extract
DEB=$CACHE/${KERNEL_PKG}_${KERNEL_PKG_VERSION//:/%3a}_amd64.deb
if [ ! -s "$DEB" ]; then
    log "downloading $KERNEL_PKG $KERNEL_PKG_VERSION"
    (cd "$WORK" && "${APT_GET[@]}" -qq -o APT::Sandbox::User=root download "$KERNEL_PKG=$KERNEL_PKG_VERSION" >&2)
    got=$(ls -1 "$WORK"/"${KERNEL_PKG}"_*_amd64.deb | head -n1)
    dpkg-deb -I "$got" >/dev/null || die "downloaded package is corrupt: $got"
    mv "$got" "$DEB.tmp" && mv "$DEB.tmp" "$DEB"
fi

KDIR=$CACHE/kernel-$KERNEL_VERSION-$KERNEL_PKG_VERSION
if [ "$(cat "$KDIR/.complete" 2>/dev/null)" != "$MODULES" ]; then
    log "extracting vmlinuz and modules from $(basename "$DEB")"
    rm -rf "$KDIR"
    mkdir -p "$KDIR/modules"
    # Extract only what we need (the full package unpacks to ~400 MB).
    members=$(dpkg-deb --fsys-tarfile "$DEB" | tar -t)
    want=("./boot/vmlinuz-$KERNEL_VERSION" "./boot/config-$KERNEL_VERSION"
        "./lib/modules/$KERNEL_VERSION/modules.builtin")
    for m in $MODULES; do
        pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
        path=$(echo "$members" | grep -E "^\./lib/modules/$KERNEL_VERSION/kernel/.*/${pat}\.ko(\.xz|\.zst|\.gz)?$" | head -n1 || true)
        # Not found: built into the kernel (checked below) or missing.
        [ -z "$path" ] || want+=("$path")
    done
    mkdir -p "$WORK/deb"
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$WORK/deb" "${want[@]}"
    cp "$WORK/deb/boot/vmlinuz-$KERNEL_VERSION" "$KDIR/vmlinuz"
    cp "$WORK/deb/boot/config-$KERNEL_VERSION" "$KDIR/config"
    cp "$WORK/deb/lib/modules/$KERNEL_VERSION/modules.builtin" "$KDIR/modules.builtin"
    # Decompress modules: busybox insmod loads plain .ko files only.
    find "$WORK/deb/lib/modules" -name '*.ko*' | while read -r f; do
        name=$(basename "$f")
        case "$name" in
            *.ko) cp "$f" "$KDIR/modules/$name" ;;
            *.ko.xz) xz -dc "$f" >"$KDIR/modules/${name%.xz}" ;;
            *.ko.zst) zstd -qdc "$f" >"$KDIR/modules/${name%.zst}" ;;
            *.ko.gz) gzip -dc "$f" >"$KDIR/modules/${name%.gz}" ;;
        esac
    done
    rm -rf "$WORK/deb"
    echo "$MODULES" >"$KDIR/.complete"
fi

# ---------------------------------------------------------------- module order
# Module file names may use '-' where module names use '_'.
modfile() {
    local m=$1 f
    for f in "$KDIR/modules/$m.ko" "$KDIR/modules/${m//_/-}.ko"; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
is_builtin() { grep -Eq "/$(echo "$1" | sed 's/[-_]/[-_]/g')\.ko$" "$KDIR/modules.builtin"; }
LOAD=()
seen=" "
for m in $MODULES; do
    if f=$(modfile "$m"); then
        for d in $(modinfo -F depends "$f" | tr ',' ' '); do
            d=${d//-/_}
            case "$seen" in *" $d "*) continue ;; esac
            is_builtin "$d" && continue
            die "module order: $m needs $d, which is not loaded before it"
        done
        vm=$(modinfo -F vermagic "$f" | cut -d' ' -f1)
        [ "$vm" = "$KERNEL_VERSION" ] || die "module $m is for $vm, not $KERNEL_VERSION"
        LOAD+=("$(basename "$f" .ko)")
    elif is_builtin "$m"; then
        log "module $m is built into $KERNEL_VERSION"
    else
        die "module $m not found in $KERNEL_PKG"
    fi
    seen="$seen${m//-/_} "
done

# ---------------------------------------------------------------- initramfs
log "initramfs"
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
[ -x "$BUSYBOX" ] || die "busybox-static binary not found"
R=$WORK/initramfs
mkdir -p "$R"/{bin,sbin,dev,proc,sys,data,tmp,run,etc,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
done
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3
for m in "${LOAD[@]}"; do
    cp "$KDIR/modules/$m.ko" "$R/lib/modules/"
done
printf '%s\n' "${LOAD[@]}" >"$R/etc/isr-modules"
install -m 755 "$SCRIPT_DIR/init.sh" "$R/init"
(cd "$R" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --quiet --null -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$WORK/initrd.gz"

# ---------------------------------------------------------------- boot partition (FAT, no mount)
log "boot partition"
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
mkfs.fat -F 16 -n ISRBOOT -i 15a0b007 -h $((BOOT_START_MIB * 2048)) "$BOOT" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$BOOT" "$KDIR/vmlinuz" ::/vmlinuz
mcopy -i "$BOOT" "$WORK/initrd.gz" ::/initrd.gz
mcopy -i "$BOOT" "$WORK/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$BOOT"

# ---------------------------------------------------------------- data partition (ext4 on a file)
log "data partition"
P=$WORK/data-prefill
mkdir -p "$P"
echo 0 >"$P/bootcount"
yes ISR-CANARY-PLAINTEXT-5f2b9e | head -c 262144 >"$P/canary" || true
DATA=$WORK/data.ext4
truncate -s "${DATA_SIZE_MIB}M" "$DATA"
mkfs.ext4 -q -F -b 4096 -m 0 -L isr-data \
    -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$P" "$DATA"

# ---------------------------------------------------------------- disk image
log "disk image"
IMG=$WORK/disk.img
truncate -s "${DISK_MIB}M" "$IMG"
sfdisk -q "$IMG" <<EOF
label: dos
label-id: 0x15a0b007
unit: sectors

start=$((BOOT_START_MIB * 2048)), size=$((BOOT_SIZE_MIB * 2048)), type=e, bootable
start=$((DATA_START_MIB * 2048)), size=$((DATA_SIZE_MIB * 2048)), type=83
EOF
# syslinux's MBR code: first 440 bytes only (keep disk signature + table).
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
dd if="$BOOT" of="$IMG" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
dd if="$DATA" of="$IMG" bs=1M seek="$DATA_START_MIB" conv=notrunc,sparse status=none
[ "$(stat -c %s "$IMG")" -eq $((DISK_MIB * 1024 * 1024)) ] || die "disk image has the wrong size"

log "qcow2"
qemu-img convert -f raw -O qcow2 "$IMG" "$WORK/disk.qcow2"

# ---------------------------------------------------------------- facts
cat >"$WORK/guest.env" <<EOF
# ISR test guest, built by scripts/guest/build.sh -- see scripts/guest/README.md
GUEST_MEMORY=$GUEST_MEMORY
GUEST_DISK_IMAGE=disk.img
GUEST_DISK_QCOW2=disk.qcow2
GUEST_DISK_SIZE=$((DISK_MIB * 1024 * 1024))
GUEST_DISK_SHA256=$(sha256sum <"$IMG" | cut -c1-64)
GUEST_QCOW2_SHA256=$(sha256sum <"$WORK/disk.qcow2" | cut -c1-64)
GUEST_DISK_IF=virtio
GUEST_NIC_MODEL=virtio-net-pci
GUEST_CONSOLE=ttyS0
BOOT_PARTITION_OFFSET=$((BOOT_START_MIB * 1024 * 1024))
BOOT_PARTITION_SIZE=$((BOOT_SIZE_MIB * 1024 * 1024))
DATA_PARTITION_OFFSET=$((DATA_START_MIB * 1024 * 1024))
DATA_PARTITION_SIZE=$((DATA_SIZE_MIB * 1024 * 1024))
DATA_PARTITION_DEVICE=/dev/vda2
DATA_FS_BLOCK_SIZE=4096
KERNEL_PACKAGE=$KERNEL_PKG
KERNEL_PACKAGE_VERSION=$KERNEL_PKG_VERSION
KERNEL_VERSION=$KERNEL_VERSION
KERNEL_CMDLINE='$KERNEL_CMDLINE'
GUEST_MODULES='${LOAD[*]}'
BUSYBOX_VERSION=$(pkgver busybox-static)
SYSLINUX_VERSION=$(pkgver syslinux)
CANARY=ISR-CANARY-PLAINTEXT-5f2b9e
CANARY_FILE=/canary
CANARY_FILE_SIZE=262144
BUILD_FINGERPRINT=$FINGERPRINT
EOF

# Publish: images first, facts and stamp last.
rm -f "$STAMP"
mv "$IMG" "$OUTDIR/disk.img"
mv "$WORK/disk.qcow2" "$OUTDIR/disk.qcow2"
mv "$WORK/guest.env" "$OUTDIR/guest.env"
echo "$FINGERPRINT" >"$STAMP"
log "built $OUTDIR: disk.img disk.qcow2 guest.env (kernel $KERNEL_VERSION)"
