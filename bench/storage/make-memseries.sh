#!/bin/bash
# Make a series of successive memory images of the realistic guest: boot it
# once (QEMU/TCG, 512 MiB, hard timeout), then alternately do some work on
# the console and save the VM state as isr suspends (QMP stop + migrate of
# the raw migration stream to a file, then cont).
#
#   bench/storage/make-memseries.sh [OUTDIR]      (default guest/out/mem-series)
#
# Writes OUTDIR/m01.mig ... m09.mig (the streams), OUTDIR/steps.tsv (what
# happened before each) and the console log.  Kept if complete; otherwise
# the whole series is made again (one boot).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT=${1:-$REPO_ROOT/guest/out/mem-series}
GUEST=${ISR_REALISTIC_GUEST:-$REPO_ROOT/guest/out/realistic}
RUN=$REPO_ROOT/scripts/guest-realistic/run.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[memseries] $*" >&2; }

# What happens before each save: the workload, small edits, an idle pause, a
# burst of allocations that are freed again (init_on_free zeroes them).
STEPS=(
    "idle after boot|"
    "workload|run"
    "workload|run"
    "edit a few files|sh cd /root && for i in 1 2 3 4 5; do date >>notes.txt; done; sed -i 's/^#*\\(alias\\)/\\1/' /root/.bashrc"
    "workload|run"
    "python: 100 MB allocated and freed|sh python3 -c 'b = [bytearray(1 << 20) for _ in range(100)]; print(sum(len(x) for x in b))' >/dev/null"
    "workload|run"
    "nothing (two saves in a row)|"
    "workload|run"
)
N=${#STEPS[@]}
last=$(printf '%s/m%02d.mig' "$OUT" "$N")
if [ -s "$last" ] && [ -s "$OUT/steps.tsv" ]; then log "complete: $OUT"; exit 0; fi
[ -s "$GUEST/disk.img" ] || "$REPO_ROOT/scripts/guest-realistic/build.sh" "$GUEST"
rm -f "$OUT"/m[0-9][0-9].mig
cp --sparse=always "$GUEST/disk.img" "$OUT/disk.img"
cmds=()
printf 'image\tstep\n' >"$OUT/steps.tsv.tmp"
for i in $(seq 1 "$N"); do
    step=${STEPS[$((i - 1))]}
    what=${step%%|*} cmd=${step#*|}
    [ -z "$cmd" ] || cmds+=("$cmd")
    cmds+=("save $(printf '%s/m%02d.mig' "$OUT" "$i")")
    printf 'm%02d\t%s\n' "$i" "$what" >>"$OUT/steps.tsv.tmp"
done
log "booting once for $N saves (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$RUN" --accel "${ISR_QEMU_ACCEL:-tcg}" --timeout 3600 --log "$OUT/console.log" "$OUT/disk.img" "${cmds[@]}" | tee "$OUT/run.log"
mv "$OUT/steps.tsv.tmp" "$OUT/steps.tsv"
rm -f "$OUT/disk.img"
log "series complete (load: $(cut -d' ' -f1-3 /proc/loadavg)): $(ls "$OUT"/m*.mig | wc -l) images in $OUT"
