#!/bin/bash
# The scale benchmark's matrix (docs/benchmarks/scale.md): chunks in the data directory or in Ceph RGW, metadata in
# SQLite or PostgreSQL, one or two isr-server instances; each row a run of Isr.Bench.Scale. Starts a throwaway Ceph
# and PostgreSQL with the project's scripts and stops them after.
#   bench/scale/run-scale.sh OUT.md [Isr.Bench.Scale options…]     e.g. --sites 8 --duration 20
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: run-scale.sh OUT.md [bench options]" >&2; exit 2; }
OUT=$(realpath -m "$1"); shift
WORK=$(mktemp -d /tmp/isr-scale-XXXXXX)
chmod 755 "$WORK" # PostgreSQL runs as its own user when we are root
cleanup() {
    bash "$ROOT/scripts/services/ceph.sh" stop "$WORK/ceph" >/dev/null 2>&1 || true
    bash "$ROOT/scripts/services/postgres.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
dotnet build "$ROOT/bench/Isr.Bench.Scale" -c Release -v q -nologo >/dev/null
BENCH=(dotnet "$ROOT/bench/Isr.Bench.Scale/bin/Release/net10.0/Isr.Bench.Scale.dll")
bash "$ROOT/scripts/services/ceph.sh" start "$WORK/ceph" >/dev/null
bash "$ROOT/scripts/services/postgres.sh" start "$WORK/pg" >/dev/null
set -a; . "$WORK/ceph/s3.env"; set +a
PG=$(cat "$WORK/pg/connection")

echo "| engines | servers | sites | s | upload MB/s | download MB/s | commits/s | missing p50/p99 ms | upload p50/p99 ms | commit p50/p99 ms | download p50/p99 ms | errors |" >"$OUT"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|" >>"$OUT"
status=0
n=0
for servers in 1 2; do
    for metadata in "" "$PG"; do
        for chunks in "" "s3://isr-scale-$servers?endpoint=$ISR_S3_ENDPOINT"; do
            n=$((n + 1))
            echo "run $n: servers=$servers metadata=${metadata:+PostgreSQL} chunks=${chunks:+RGW} (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
            "${BENCH[@]}" --servers "$servers" ${metadata:+--metadata "$metadata"} ${chunks:+--chunks "$chunks"} --out "$OUT" "$@" >/dev/null || status=1
        done
    done
done
cat "$OUT"
exit $status
