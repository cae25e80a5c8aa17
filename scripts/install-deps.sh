#!/bin/bash
# Installs what isr needs on a Debian (bookworm) machine: QEMU (TCG; KVM on real hosts), qemu-img/qemu-io/qemu-nbd,
# the tools that build the test guest, the guest display (QEMU's GTK/SDL window module, Xvfb and xwd for the
# display tests), and checks for the .NET 10 SDK. Idempotent; run as root.
set -euo pipefail
PACKAGES=(qemu-system-x86 qemu-utils qemu-block-extra busybox-static syslinux syslinux-common mtools dosfstools fdisk
          e2fsprogs cpio kmod zstd xz-utils util-linux ca-certificates
          qemu-system-gui xvfb x11-apps)
missing=()
for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[deps] installing: ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v dotnet >/dev/null || ! dotnet --list-sdks | grep -q '^10\.'; then
    echo "[deps] error: the .NET 10 SDK is required (https://learn.microsoft.com/dotnet/core/install/linux-debian)" >&2
    exit 1
fi
