#!/bin/bash
# Resume latency and slowdown per state-transfer policy (baseline, proactive, demand, demand + working-set
# prefetch) x bandwidth (100 Mbit/s, 10, 1 over tc tbf), with the no-ISR local time and two peers in the same run:
# ISR-1 copy-in of the compressed image files, and nbdkit-curl demand paging from nginx. Root, Debian bookworm.
#
#   scripts/bench/policies.sh [run] [--deadline YYYY-MM-DDTHH:MM] [--only KEY,...] [--max-runs N] [--latency-only]
#   scripts/bench/policies.sh lookaside [--deadline ...] [--max-runs N]
#   scripts/bench/policies.sh render
#
# run: installs what it needs, builds isr, isr-server and the realistic guest, makes the namespaces, prepares the
# parcel and the reference state once (scratch in guest/out/bench-policies), then runs the matrix in interleaved
# passes. Each finished run is appended to bench/results/policies.jsonl; a restart does only what is missing.
# --deadline (UTC) starts no run expected to end after it. KEY is like isr:demand@10mbit, peer:nbdkit@1mbit, local@local.
# lookaside: issue 7's cells (demand + read-only media / LAN jukebox at 10 and 1 Mbit/s, demand + stale dongle at
# 100 Mbit/s) with plain demand and the local reference in the same passes, into bench/results/lookaside-workload.jsonl.
# render: docs/benchmarks/policies.md and PNG plots from the results file, and lookaside-workload.md from its own
# (run and lookaside call it at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || { echo "policies.sh: must run as root (network namespaces)" >&2; exit 1; }
cmd=run
case "${1:-}" in run | render | lookaside) cmd=$1; shift ;; esac
RESULTS=bench/results/policies.jsonl
LOOKASIDE_RESULTS=bench/results/lookaside-workload.jsonl
if [ "$cmd" = lookaside ]; then
    RESULTS=$LOOKASIDE_RESULTS
    set -- --only local@local,isr:demand@10mbit,isr:demand+media@10mbit,isr:demand+jukebox@10mbit,isr:demand@100mbit,isr:demand+staledongle@100mbit,isr:demand@1mbit-workload,isr:demand+media@1mbit-workload,isr:demand+jukebox@1mbit-workload "$@"
fi
mkdir -p bench/results

need=()
for p in nbdkit:nbdkit nginx:nginx-light zstd:zstd curl:curl gnuplot:gnuplot-nox qemu-img:qemu-utils; do
    command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
fi

render() {
    [ ! -s bench/results/policies.jsonl ] ||
        python3 scripts/bench/policies.py render --root "$ROOT" --results bench/results/policies.jsonl --out docs/benchmarks/policies.md
    [ ! -s "$LOOKASIDE_RESULTS" ] ||
        python3 scripts/bench/policies.py render --root "$ROOT" --results "$LOOKASIDE_RESULTS" --page lookaside --out docs/benchmarks/lookaside-workload.md
}
if [ "$cmd" = render ]; then
    render
    exit
fi

bash scripts/guest-realistic/build.sh
bash scripts/publish.sh # what users install: the native isr, the ReadyToRun server
bash scripts/bench/netns.sh up >/dev/null
python3 scripts/bench/policies.py run --root "$ROOT" --work "$ROOT/guest/out/bench-policies" --image "$ROOT/guest/out/realistic/disk.img" \
    --results "$RESULTS" "$@"
render
