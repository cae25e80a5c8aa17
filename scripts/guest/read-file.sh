#!/bin/bash
# Print a file from the ext4 data partition (partition 2) of a guest disk
# image, without mounting and without modifying the image.
#
#   scripts/guest/read-file.sh IMAGE PATH
#
# IMAGE: raw disk image (qcow2 and other formats qemu-img knows are
# converted to a temporary raw copy first).  PATH: absolute path inside the
# data file system, e.g. /ticks, /bootcount, /canary.
#
# The guest never unmounts its file system, so the image is normally in the
# state of a crashed machine: recent metadata may still be only in the ext4
# journal.  The partition is therefore copied to a temporary file and the
# journal is replayed there (e2fsck -E journal_only) before reading.
# Exit status: 0 = printed, 1 = file not found / not readable, 2 = usage.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
IMAGE=$1
FPATH=$2
[ -r "$IMAGE" ] || { echo "read-file.sh: cannot read $IMAGE" >&2; exit 2; }
case "$FPATH" in
    /*) ;;
    *) FPATH=/$FPATH ;;
esac
for tool in debugfs e2fsck sfdisk; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/isr-read-file.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

RAW=$IMAGE
fmt=raw
if command -v qemu-img >/dev/null 2>&1; then
    fmt=$(qemu-img info --output=json -U "$IMAGE" 2>/dev/null |
        sed -n '/^ *"format": "/{s/^ *"format": "\([^"]*\)".*/\1/p;q}')
    fmt=${fmt:-raw}
fi
if [ "$fmt" != raw ]; then
    RAW=$TMP/disk.raw
    qemu-img convert -U -f "$fmt" -O raw "$IMAGE" "$RAW"
fi

# Partition 2: start and size in 512-byte sectors, from the MBR.
read -r start size < <(sfdisk -d "$RAW" 2>/dev/null |
    sed -n 's/.*[^0-9]2 : start= *\([0-9]*\), size= *\([0-9]*\),.*/\1 \2/p')
if [ -z "${start:-}" ] || [ -z "${size:-}" ]; then
    echo "read-file.sh: $IMAGE has no partition 2" >&2
    exit 2
fi

PART=$TMP/data.ext4
dd if="$RAW" of="$PART" bs=1M iflag=skip_bytes,count_bytes \
    skip=$((start * 512)) count=$((size * 512)) conv=sparse status=none
[ "$RAW" = "$IMAGE" ] || rm -f "$RAW"

# Replay the journal (exit status 1 = "file system modified": expected).
rc=0
e2fsck -y -E journal_only "$PART" >"$TMP/fsck.log" 2>&1 || rc=$?
if [ "$rc" -gt 1 ]; then
    echo "read-file.sh: e2fsck failed (exit $rc):" >&2
    cat "$TMP/fsck.log" >&2
    exit 1
fi

# debugfs reports errors on stderr but exits 0: check the path first.
debugfs -R "stat \"$FPATH\"" "$PART" >"$TMP/stat" 2>"$TMP/err" || true
if ! grep -q 'Type: regular' "$TMP/stat"; then
    echo "read-file.sh: $FPATH: not a regular file in the data partition of $IMAGE" >&2
    exit 1
fi
debugfs -R "cat \"$FPATH\"" "$PART" 2>"$TMP/err"
