#!/bin/bash
# Memory-image increments: bytes each successive memory image adds to isr's
# store (the product's capture path: FastCDC + ChunkCodec + chunk list pages)
# vs casync (one store across the series) and fixed 64 KiB block
# differencing; writes docs/benchmarks/memory-increments.md and copies the
# raw results to bench/results/memory-increments/.
#
#   bench/storage/run-memory.sh [SERIES_DIR] [--cdc MIN:AVG:MAX,...] [--aligned PAGES,...] [--casync "NAME=OPTIONS;..."]
#
# SERIES_DIR (default guest/out/mem-series) holds m01.mig, m02.mig, ...
# (bench/storage/make-memseries.sh). --cdc: isr chunker parameters in KiB
# (default: the format's 16:64:256 only). --aligned: also chunk aligned to the
# stream's page records, PAGES pages per chunk on average (a bench-only
# alternative; default none). --casync: casync runs (default:
# "default=;matched=--chunk-size=16384:65536:262144 --compression=zstd").
# A finished TSV in SERIES_DIR/results is kept; delete it to redo it.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SERIES=$REPO_ROOT/guest/out/mem-series
CDC=16:64:256 ALIGNED=
CASYNC="default=;matched=--chunk-size=16384:65536:262144 --compression=zstd"
while [ $# -gt 0 ]; do
    case "$1" in
        --cdc) CDC=$2; shift 2 ;;
        --aligned) ALIGNED=$2; shift 2 ;;
        --casync) CASYNC=$2; shift 2 ;;
        *) SERIES=$1; shift ;;
    esac
done
SERIES=$(cd "$SERIES" && pwd)
R=$SERIES/repos RES=$SERIES/results
mkdir -p "$R" "$RES"
log() { echo "[memory] $*" >&2; }
mapfile -t IMAGES < <(ls "$SERIES"/m[0-9][0-9].mig | sort)
[ "${#IMAGES[@]}" -ge 2 ] || { echo "need at least 2 images in $SERIES" >&2; exit 1; }
command -v casync >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends casync >&2
bytes() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
echo "load-before $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/times"

# ---- isr (the product's capture path over a store model) + block differencing
tsv=$RES/isr-$(echo "$CDC${ALIGNED:+,aligned$ALIGNED}" | tr ':,' '-_').tsv
if [ ! -s "$tsv" ]; then
    log "isr ($CDC${ALIGNED:+; aligned $ALIGNED}) + block and page differencing"
    t0=$(date +%s)
    dotnet run -c Release --project "$REPO_ROOT/bench/Isr.Bench.Storage" -- --memory "$tsv.tmp" --cdc "$CDC" ${ALIGNED:+--aligned "$ALIGNED"} "${IMAGES[@]}"
    mv "$tsv.tmp" "$tsv"
    echo "isr $(($(date +%s) - t0))" >>"$RES/times"
fi

# ---- casync: one store per configuration; growth of the store (chunks) and the .caibx index, per image
IFS=';' read -ra RUNS <<<"$CASYNC"
for run in "${RUNS[@]}"; do
    name=${run%%=*} opts=${run#*=}
    out=$RES/casync-$name.tsv
    [ -s "$out" ] && continue
    log "casync $name: ${opts:-(no options)}"
    rm -rf "$R/casync-$name"; mkdir -p "$R/casync-$name/idx"
    t0=$(date +%s); : >"$out.tmp"; before=0
    for img in "${IMAGES[@]}"; do
        m=$(basename "$img" .mig)
        # shellcheck disable=SC2086  # options are words
        casync make $opts --store="$R/casync-$name/store" "$R/casync-$name/idx/$m.caibx" "$img" >/dev/null
        now=$(bytes "$R/casync-$name/store")
        printf '%s\t%s\t%s\n' "$m" $((now - before)) "$(stat -c %s "$R/casync-$name/idx/$m.caibx")" >>"$out.tmp"
        before=$now
    done
    mv "$out.tmp" "$out"; echo "casync-$name $(($(date +%s) - t0))" >>"$RES/times"
done
echo "load-after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/times"

log "report"
mkdir -p "$REPO_ROOT/bench/results/memory-increments"
cp "$RES"/*.tsv "$RES/times" "$SERIES/steps.tsv" "$REPO_ROOT/bench/results/memory-increments/"
python3 "$SCRIPT_DIR/memreport.py" "$REPO_ROOT/bench/results/memory-increments" "$REPO_ROOT/docs/benchmarks/memory-increments.md"
