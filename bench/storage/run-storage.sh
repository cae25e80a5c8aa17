#!/bin/bash
# Storage efficiency on a version series: bytes added per version by isr's
# chunk store (16/64/256 KiB chunks), fixed 64 KiB block differencing (raw
# and zstd-1), restic, casync and borg; writes docs/benchmarks/storage.md.
#
#   bench/storage/run-storage.sh [SERIES_DIR] [--peers "restic casync borg"] [--no-isr-check]
#
# SERIES_DIR (default guest/out/storage-series) holds v01.img, v02.img, ...
# (bench/storage/make-series.sh).  Work files go to SERIES_DIR/repos (removed
# and remade on each run).  Each peer's TSV is written as soon as it is done.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SERIES=$REPO_ROOT/guest/out/storage-series
PEERS="restic casync borg"
ISR_CHECK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --peers) PEERS=$2; shift 2 ;;
        --no-isr-check) ISR_CHECK=0; shift ;;
        *) SERIES=$1; shift ;;
    esac
done
SERIES=$(cd "$SERIES" && pwd)
R=$SERIES/repos
RES=$SERIES/results
mkdir -p "$R" "$RES"
log() { echo "[storage] $*" >&2; }
mapfile -t IMAGES < <(ls "$SERIES"/v[0-9][0-9].img | sort)
[ "${#IMAGES[@]}" -ge 2 ] || { echo "need at least 2 versions in $SERIES" >&2; exit 1; }
log "${#IMAGES[@]} versions"
for t in restic casync borg; do
    case " $PEERS " in *" $t "*) command -v "$t" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
            "$([ $t = borg ] && echo borgbackup || echo $t)" >&2 ;; esac
done
# Bytes of data: the sum of regular files' sizes (directories, e.g. isr's 2-level chunk fan-out, are not counted).
bytes() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

# ---- isr (model over the real format code) + block differencing
if [ ! -s "$RES/isr.tsv" ]; then
    log "isr chunk store + block differencing"
    t0=$(date +%s)
    dotnet run -c Release --project "$REPO_ROOT/bench/Isr.Bench.Storage" -- "$RES/isr.tsv.tmp" "${IMAGES[@]}"
    mv "$RES/isr.tsv.tmp" "$RES/isr.tsv"
    echo "isr $(($(date +%s) - t0))" >>"$RES/times"
fi

# ---- real isr check: import v01 with `isr create --store` (64 KiB) and measure the store
if [ "$ISR_CHECK" -eq 1 ] && [ ! -s "$RES/isr-create.tsv" ]; then
    log "isr create --store (v01, 64 KiB): checks the model's first row"
    rm -rf "$R/isr-store" "$R/isr-home"
    echo bench-password >"$R/isr-password"
    t0=$(date +%s)
    ISR_HOME=$R/isr-home dotnet run -c Release --project "$REPO_ROOT/src/Isr.Cli" -- create bench --from "${IMAGES[0]}" \
        --chunk-size 64K --store "$R/isr-store" --password-file "$R/isr-password" >&2
    chunks=$(bytes "$R/isr-store/chunks")
    printf 'v01\t%s\t%s\n' "$chunks" "$(bytes "$R/isr-store")" >"$RES/isr-create.tsv"
    echo "isr-create $(($(date +%s) - t0))" >>"$RES/times"
fi

# ---- restic (repository format 2, compression auto = zstd fastest; always encrypted)
if [[ " $PEERS " == *" restic "* ]] && [ ! -s "$RES/restic.tsv" ]; then
    log "restic $(restic version | head -n1)"
    rm -rf "$R/restic"; export RESTIC_PASSWORD=isr-bench RESTIC_CACHE_DIR=$R/restic-cache
    restic init -q --repo "$R/restic" >&2
    t0=$(date +%s); : >"$RES/restic.tsv.tmp"; before=$(bytes "$R/restic")
    for img in "${IMAGES[@]}"; do
        restic backup -q --repo "$R/restic" --host bench --stdin --stdin-filename disk.img <"$img" >&2
        now=$(bytes "$R/restic"); printf '%s\t%s\n' "$(basename "$img" .img)" $((now - before)) >>"$RES/restic.tsv.tmp"; before=$now
    done
    mv "$RES/restic.tsv.tmp" "$RES/restic.tsv"; echo "restic $(($(date +%s) - t0))" >>"$RES/times"
fi

# ---- casync (blob index, default chunk sizes 16/64/256 KiB, zstd; no encryption)
if [[ " $PEERS " == *" casync "* ]] && [ ! -s "$RES/casync.tsv" ]; then
    log "casync $(casync --version 2>&1 | head -n1)"
    rm -rf "$R/casync"; mkdir -p "$R/casync/idx"
    t0=$(date +%s); : >"$RES/casync.tsv.tmp"; before=0
    for img in "${IMAGES[@]}"; do
        v=$(basename "$img" .img)
        casync make --compression=zstd --store="$R/casync/store" "$R/casync/idx/$v.caibx" "$img" >/dev/null
        now=$(bytes "$R/casync"); printf '%s\t%s\n' "$v" $((now - before)) >>"$RES/casync.tsv.tmp"; before=$now
    done
    mv "$RES/casync.tsv.tmp" "$RES/casync.tsv"; echo "casync $(($(date +%s) - t0))" >>"$RES/times"
fi

# ---- borg (repokey, fixed passphrase; buzhash default chunker ~2 MiB; zstd level 1)
if [[ " $PEERS " == *" borg "* ]] && [ ! -s "$RES/borg.tsv" ]; then
    log "borg $(borg --version)"
    rm -rf "$R/borg" "$R/borg-home"; export BORG_PASSPHRASE=isr-bench BORG_BASE_DIR=$R/borg-home
    borg init -e repokey "$R/borg" >&2
    t0=$(date +%s); : >"$RES/borg.tsv.tmp"; before=$(bytes "$R/borg")
    for img in "${IMAGES[@]}"; do
        v=$(basename "$img" .img)
        (cd "$(dirname "$img")" && borg create --compression zstd,1 "$R/borg::$v" "$(basename "$img")" >&2)
        now=$(bytes "$R/borg"); printf '%s\t%s\n' "$v" $((now - before)) >>"$RES/borg.tsv.tmp"; before=$now
    done
    mv "$RES/borg.tsv.tmp" "$RES/borg.tsv"; echo "borg $(($(date +%s) - t0))" >>"$RES/times"
fi

log "report"
python3 "$SCRIPT_DIR/report.py" "$SERIES" "$REPO_ROOT/docs/benchmarks/storage.md"
