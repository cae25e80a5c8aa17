#!/usr/bin/env python3
"""How little the guest could wait on fetches after a resume, for any policy that starts fetching at `cont`.

    scripts/bench/ws-bound.py trace --work WORK [--runs N]     # the guest's block requests in local runs
    scripts/bench/ws-bound.py bound --work WORK [--rates 10mbit,1mbit] [--chunk-sizes 64K,16K] [--levels 1,19] [--t-local S] [--out PAGE.md]

WORK is a policies harness work directory (policies.py prepares WORK/local: the realistic guest's disk and its saved
state). `trace` resumes that state in plain QEMU from the local disk (a qcow2 overlay, as the harness's local
reference), with QEMU's `blk_co_preadv`/`blk_co_pwritev` trace events on, runs the workload once and keeps every
request the guest made, timed from `cont`, in WORK/ws-trace-N.jsonl. No data waits in such a run, so the times are the
guest's own progress.

`bound` cuts the disk into chunks, marks when each chunk is first needed (first read, or first write that does not
cover it whole: ParcelDisk must merge it with the base chunk), and sizes each needed chunk as isr would send it: zstd at
the given level (stored raw when that is not smaller) plus isr's 22 bytes of header and GCM tag. Each keyring leaf
(1,024 chunks' tags and keys, ~70 KB) is needed with the first chunk it covers. With the link busy from
`cont` on, carrying the needed chunks in the order of first need (no order does better: it is earliest deadline first),
chunk i is there at S_i / B, S_i the bytes up to and including it; the guest, reaching it at t_i of its own progress,
has by then waited W_i = max(W_(i-1), S_i / B - t_i). The last W is the least wait any policy can have once it starts
at `cont`. B is the link rate times the share of it isr's transfers use (--goodput, 0.9: hoards measured 89-91%).

What is not in the bound: chunks fetched before `cont` (they lengthen the resume by their own link time, so the sum of
resume and wait stays), and isr's CPU beside the guest's on this 2-core host. QEMU's tracing slows the guest (a traced
workload ran 51-53 s here, untraced 43-45 s): --t-local T scales the traced times to an untraced workload time T, so
that the guest's demand is not spread thinner than it is.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time

import policies
from policies import PlainVm, ping, workload, sh

RATES = {"100mbit": 100e6, "10mbit": 10e6, "1mbit": 1e6, "100kbit": 100e3}
BLOB_OVERHEAD = 6 + 16  # ChunkCodec: header, GCM tag
LEAF_CAPACITY = 1024  # ChunkListTree.LeafCapacity
LEAF_BYTES = 20 + LEAF_CAPACITY * 32 + 28 + LEAF_CAPACITY * 36  # ChunkListPage: header, tags, sealed (nonce, GCM tag) keys and lengths
TRACE_RX = re.compile(r"^\d+@(\d+\.\d+):blk_co_(preadv|pwritev) .* offset (\d+) bytes (\d+)")


def size(text):
    m = re.fullmatch(r"(\d+)([KM]?)", text)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20}[m.group(2)]


def trace(work, runs):
    local = os.path.join(work, "local")
    for n in range(1, runs + 1):
        out = os.path.join(work, f"ws-trace-{n}.jsonl")
        if os.path.exists(out):
            continue
        rundir = os.path.join(work, "runs", f"ws-trace-{n}")
        shutil.rmtree(rundir, ignore_errors=True); os.makedirs(rundir)
        overlay, log_path = os.path.join(rundir, "overlay.qcow2"), os.path.join(rundir, "blk.log")
        sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.join(local, "disk.img"), "-F", "raw", overlay])
        policies.settle_memory()
        vm = PlainVm(os.path.join(rundir, "vm"), overlay, "qcow2", incoming=f"exec:cat {local}/mem.state",
                     extra=["-msg", "timestamp=on", "-trace", "enable=blk_co_preadv", "-trace", "enable=blk_co_pwritev",
                            "-trace", f"file={log_path}"])
        try:
            vm.qmp.wait_migration()
            vm.qmp.cmd("cont")
            t_cont = time.time()  # the trace's timestamps are wall-clock
            ping(vm.console, vm.alive)
            w, g = workload(vm.console, vm.alive)
        finally:
            vm.kill()
        requests = []
        for line in open(log_path):
            m = TRACE_RX.match(line)
            if m and float(m.group(1)) >= t_cont:
                requests.append([round(float(m.group(1)) - t_cont, 6), m.group(2) == "pwritev", int(m.group(3)), int(m.group(4))])
        with open(out + ".tmp", "w") as f:
            json.dump({"workload_s": round(w, 2), "guest_seconds": g, "requests": requests}, f)
        os.replace(out + ".tmp", out)
        shutil.rmtree(rundir, ignore_errors=True)
        print(f"trace {n}: workload {w:.1f} s, {len(requests)} requests -> {out}", flush=True)


def first_needs(requests, chunk):
    """{chunk index: (seconds after cont it is first needed, bytes of it the guest read or wrote)}: a chunk whose
    first touch is a write over all of it is never needed."""
    need, written, touched = {}, set(), {}
    for t, is_write, offset, length in requests:
        first, last = offset // chunk, (offset + length - 1) // chunk
        for i in range(first, last + 1):
            lo, hi = max(offset, i * chunk), min(offset + length, (i + 1) * chunk)
            touched[i] = touched.get(i, 0) + (hi - lo)
            if i in need or i in written:
                continue
            if is_write and hi - lo == chunk:
                written.add(i)
            else:
                need[i] = t
    return {i: (t, touched[i]) for i, t in need.items()}


def blob_size(disk, index, chunk, level):
    with open(disk, "rb") as f:
        f.seek(index * chunk)
        data = f.read(chunk)
    if not data.strip(b"\0"):
        return 0  # a hole: isr never fetches zero chunks
    z = subprocess.run(["zstd", "-q", "-c", f"-{level}", "--no-check"] + (["--ultra"] if level > 19 else []),
                       input=data, capture_output=True, check=True).stdout
    return BLOB_OVERHEAD + min(len(z), len(data))


def least_wait(needs, sizes, rate):
    """needs: {chunk index: (time first needed, …)}; each keyring leaf goes just before the first chunk it covers."""
    waited, sent, leaves = 0.0, 0, set()
    for i in sorted(needs, key=lambda i: needs[i][0]):
        leaf = i // LEAF_CAPACITY
        if leaf not in leaves:
            leaves.add(leaf)
            sent += LEAF_BYTES
        sent += sizes[i]
        waited = max(waited, sent / rate - needs[i][0])
    return waited, len(leaves)


def bound(work, rates, chunk_sizes, levels, goodput, t_local, out):
    traces = sorted(f for f in os.listdir(work) if re.fullmatch(r"ws-trace-\d+\.jsonl", f))
    if not traces:
        sys.exit("no traces: run `ws-bound.py trace --work WORK` first")
    disk = os.path.join(work, "local", "disk.img")
    rows, sizes = [], {}  # sizes: (chunk, level, index) -> blob bytes, shared by the traces
    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2)
    for name in traces:
        tr = json.load(open(os.path.join(work, name)))
        scale = t_local / tr["workload_s"] if t_local else 1.0
        requests = [[t * scale, *rest] for t, *rest in tr["requests"]]
        for chunk in chunk_sizes:
            needs = first_needs(requests, chunk)
            for level in levels:
                todo = [i for i in needs if (chunk, level, i) not in sizes]
                for i, n in zip(todo, pool.map(lambda i: blob_size(disk, i, chunk, level), todo)):
                    sizes[chunk, level, i] = n
                blob = {i: sizes[chunk, level, i] for i in needs}
                fetched = {i: n for i, n in needs.items() if blob[i] > 0}
                total = sum(blob[i] for i in fetched)
                used = sum(min(n, chunk) for _, n in fetched.values())
                for rate in rates:
                    bps = RATES[rate] / 8 * goodput
                    w, leaves = least_wait(fetched, blob, bps)
                    t = t_local or tr["workload_s"]
                    rows.append(dict(trace=name, t_local=round(t, 1), chunk=chunk, level=level, rate=rate, chunks=len(fetched), leaves=leaves,
                                     bytes=total + leaves * LEAF_BYTES, touched_share=round(used / (len(fetched) * chunk), 3) if fetched else 0,
                                     link_s=round((total + leaves * LEAF_BYTES) / bps, 1), least_wait_s=round(w, 1), least_slowdown=round(w / t, 3)))
                    print(json.dumps(rows[-1]), flush=True)
    lines = ["| trace | T | chunk | zstd | link | chunks needed | leaves | bytes | share of chunk bytes the guest touched | their link time | least wait | ÷ T |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['trace']} | {r['t_local']:.1f} s | {r['chunk'] >> 10} KiB | {r['level']} | {r['rate']} | {r['chunks']:,} | {r['leaves']} | "
                     f"{r['bytes'] / 2**20:.1f} MiB | {r['touched_share']:.0%} | {r['link_s']} s | {r['least_wait_s']} s | {r['least_slowdown']:.0%} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if out:
        open(out, "w").write(table)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["trace", "bound"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=1, help="trace: local runs to trace (kept; a second call adds the missing ones)")
    ap.add_argument("--settle", type=float, default=3.0, help="trace: seconds idle before the resume (policies.py --settle)")
    ap.add_argument("--rates", default="10mbit,1mbit")
    ap.add_argument("--chunk-sizes", default="64K,16K")
    ap.add_argument("--levels", default="1,19")
    ap.add_argument("--goodput", type=float, default=0.9)
    ap.add_argument("--t-local", type=float, help="bound: the untraced workload time to scale the traced times to (s)")
    ap.add_argument("--out", help="bound: also write the table to this file")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    policies.WORK, policies.SETTLE_SECONDS = work, args.settle
    if args.command == "trace":
        trace(work, args.runs)
    else:
        bound(work, args.rates.split(","), [size(c) for c in args.chunk_sizes.split(",")], [int(l) for l in args.levels.split(",")],
              args.goodput, args.t_local, args.out)


if __name__ == "__main__":
    main()
