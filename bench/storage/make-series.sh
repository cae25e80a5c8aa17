#!/bin/bash
# Make a series of versions of the realistic guest's disk by booting it
# (QEMU/TCG) and doing what a user does between suspends.
#
#   bench/storage/make-series.sh [OUTDIR]      (default guest/out/storage-series)
#
# OUTDIR/v01.img is the pristine disk (scripts/guest-realistic/build.sh);
# each later vNN.img is a copy of the previous one, booted once with the steps
# below, then powered off cleanly.  Existing versions are kept (resumable).
# Packages come from a local "media" disk (/dev/vdb: ext4 made with
# mkfs.ext4 -d from .debs fetched once with apt-get download).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT=${1:-$REPO_ROOT/guest/out/storage-series}
GUEST=${ISR_REALISTIC_GUEST:-$REPO_ROOT/guest/out/realistic}
CACHE=${ISR_GUEST_CACHE:-$REPO_ROOT/guest/out/.cache}
RUN=$REPO_ROOT/scripts/guest-realistic/run.sh
mkdir -p "$OUT"
log() { echo "[series] $*" >&2; }

"$REPO_ROOT/scripts/guest-realistic/build.sh" "$GUEST"

# ---- media disk: two batches of packages
PKGS_A="tree less patch jq libjq1 libonig5 file libmagic1 libmagic-mgc"
PKGS_B="python3-numpy python3-pkg-resources libblas3 liblapack3 libgfortran5 libquadmath0"
DEBS=$CACHE/storage-debs
mkdir -p "$DEBS"
for p in $PKGS_A $PKGS_B; do
    ls "$DEBS"/"${p}"_*.deb >/dev/null 2>&1 ||
        (cd "$DEBS" && apt-get -o DPkg::Lock::Timeout=600 -qq -o APT::Sandbox::User=root download "$p")
done
if [ ! -s "$OUT/media.img" ]; then
    M=$(mktemp -d); mkdir -p "$M/a" "$M/b"
    for p in $PKGS_A; do cp "$DEBS"/"${p}"_*.deb "$M/a/"; done
    for p in $PKGS_B; do cp "$DEBS"/"${p}"_*.deb "$M/b/"; done
    truncate -s 64M "$OUT/media.img.tmp"
    mkfs.ext4 -q -F -L isr-media -d "$M" "$OUT/media.img.tmp"
    rm -rf "$M"; mv "$OUT/media.img.tmp" "$OUT/media.img"
fi

MNT='mkdir -p /mnt/media; mountpoint -q /mnt/media || mount -o ro /dev/vdb /mnt/media'
# Version steps (what happens between version N-1 and N).
steps() {
    case "$1" in
        2) echo run ;;
        3) echo run ;;
        4) echo "sh $MNT && dpkg -i /mnt/media/a/*.deb >/var/log/isr-dpkg.log 2>&1" ;;
        5) echo run ;;
        6) echo "sh rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/*; sed -i 's/^#*\\(alias\\)/\\1/' /root/.bashrc; echo 'set nocompatible' >/root/.vimrc; printf 'export EDITOR=vi\\n' >>/root/.profile" ;;
        7) echo run ;;
        8) echo "sh $MNT && dpkg -i /mnt/media/b/*.deb >>/var/log/isr-dpkg.log 2>&1; python3 -c 'import numpy; print(numpy.arange(10).sum())' >/root/numpy.out" ;;
        9) echo run ;;
        10) echo "sh rm -rf /root/work/run-*; dpkg --purge jq libjq1 libonig5 >>/var/log/isr-dpkg.log 2>&1; find /usr/lib/python3 -name __pycache__ | head -n 50 | xargs rm -rf" ;;
        11) echo run ;;
        12) echo "sh cd /root && tar -xf /mnt/media/b/python3-numpy_*.deb 2>/dev/null; $MNT && cp /mnt/media/b/*.deb /root/ && gzip -1 /root/*.deb"; echo run ;;
    esac
}
LAST=${ISR_SERIES_VERSIONS:-10}

[ -s "$OUT/v01.img" ] || { log "v01 = pristine"; cp --sparse=always "$GUEST/disk.img" "$OUT/v01.img.tmp"; mv "$OUT/v01.img.tmp" "$OUT/v01.img"; }
for v in $(seq 2 "$LAST"); do
    img=$(printf '%s/v%02d.img' "$OUT" "$v"); prev=$(printf '%s/v%02d.img' "$OUT" $((v - 1)))
    [ -s "$img" ] && continue
    mapfile -t cmds < <(steps "$v")
    log "v$(printf %02d "$v"): ${cmds[*]}"
    cp --sparse=always "$prev" "$img.tmp"
    t0=$(date +%s)
    "$RUN" --timeout 900 --media "$OUT/media.img" --log "$img.console.log" "$img.tmp" "${cmds[@]}" >"$img.run.log" 2>&1 ||
        { cat "$img.run.log" >&2; echo "[series] v$v failed" >&2; exit 1; }
    mv "$img.tmp" "$img"
    log "v$(printf %02d "$v") done in $(($(date +%s) - t0)) s: $(grep -h 'ISR-WORKLOAD-DONE\|ISR-SH-DONE' "$img.run.log" | tr '\n' ' ')"
done
log "series complete: $(ls "$OUT"/v*.img | wc -l) versions in $OUT"
