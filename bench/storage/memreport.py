#!/usr/bin/env python3
"""Write docs/benchmarks/memory-increments.md from the TSVs of bench/storage/run-memory.sh.

    memreport.py RESULTS_DIR OUT.md
"""
import csv, datetime, glob, os, sys

res, out = sys.argv[1], sys.argv[2]
MiB = 1024 * 1024
isr_path = sorted(glob.glob(os.path.join(res, "isr-*.tsv")))[-1]
isr = list(csv.DictReader(open(isr_path), delimiter="\t"))
names = [r["image"].removesuffix(".mig") for r in isr]
n = len(isr)
steps = {r["image"]: r["step"] for r in csv.DictReader(open(os.path.join(res, "steps.tsv")), delimiter="\t")}
times = [l.split() for l in open(os.path.join(res, "times"))]
loads = [" ".join(t[1:]) for t in times if t[0].startswith("load-")]


def casync(name):
    p = os.path.join(res, f"casync-{name}.tsv")
    if not os.path.exists(p):
        return None
    rows = [r for r in csv.reader(open(p), delimiter="\t")]
    return {"store": [int(r[1]) for r in rows][:n], "index": [int(r[2]) for r in rows][:n]}


cdcs = [k.removesuffix("_blobs") for k in isr[0] if k.endswith("_blobs")]
isr_cols = {c: {"blobs": [int(r[c + "_blobs"]) for r in isr], "pages": [int(r[c + "_pages"]) for r in isr],
                "chunks": [int(r[c + "_chunks"]) for r in isr]} for c in cdcs}
FORMAT = "cdc16-64-256"
cas = {k: casync(k) for k in ("default", "matched", "16k")}
cas = {k: v for k, v in cas.items() if v is not None}


def total(c):
    return [b + p for b, p in zip(c["blobs"], c["pages"])] if "blobs" in c else [s + i for s, i in zip(c["store"], c["index"])]


def label(c):
    if c.startswith("aligned"):
        return f"isr, cut at page records, ~{c.removeprefix('aligned').removesuffix('p')} pages (bench only)"
    lo, avg, hi = c.removeprefix("cdc").split("-")
    return f"isr FastCDC {lo}/{avg}/{hi} KiB"


def m(b):
    return f"{b / MiB:.2f}"


def incr(v):
    return sum(v[1:])


isr64 = total(isr_cols[FORMAT])
cas64 = total(cas["default"])
matched_same = "matched" in cas and cas["matched"] == cas["default"]
cols = [("isr (format: FastCDC 16/64/256 KiB)", isr64), ("casync defaults", cas64)]
ref = [("block 64 KiB raw", [int(r["block64k_raw"]) for r in isr]),
       ("block 64 KiB zstd-1", [int(r["block64k_zstd1"]) for r in isr])]
has_pages = "pagediff_zstd1" in isr[0]
if has_pages:
    ref.append(("page diff zstd-1", [int(r["pagediff_zstd1"]) for r in isr]))

L = []
L.append("# Memory-image increments: bytes stored per successive suspend, isr vs casync")
L.append("")
L.append(f"Measured {datetime.date.today().isoformat()} on the 2-core shared host (load average {loads[0]} before, "
         f"{loads[-1]} after), by `bench/storage/make-memseries.sh` (the images) and `bench/storage/run-memory.sh` "
         "(the measurements). Figures are **MiB added to the store by each memory image** (m01: the whole first image); "
         "lower is better. Raw results: `bench/results/memory-increments/`.")
L.append("")
L.append("## The series")
L.append("")
L.append("The realistic guest (`scripts/guest-realistic/`, 512 MiB RAM, 1 vCPU, QEMU 7.2 TCG, kernel with "
         "`init_on_free=1`) is booted **once**; then, alternately, something is done on its serial console and its "
         "state is saved as isr suspends (`scripts/guest-realistic/run.sh` command `save FILE` → `qmp-save.py`: QMP "
         "`stop`, `migrate-set-parameters max-bandwidth` 100 GiB/s, `migrate` to a unix socket, the raw stream read to "
         "EOF into a file, `query-migrate` = completed; no migration capabilities, as `QemuVm.SaveStateAsync`), then "
         "`cont` and on to the next step. The stream is what isr chunks as the memory image.")
L.append("")
L.append("| image | what happened since the previous save | stream (MiB) | non-zero RAM pages | pages changed |")
L.append("|---|---|---:|---:|---:|")
for i, r in enumerate(isr):
    pages = f"{int(r['ram_pages']):,}" if has_pages else ""
    changed = f"{int(r['changed_pages']):,}" if has_pages and i > 0 else ""
    L.append(f"| {names[i]} | {steps.get(names[i], '')} | {m(int(r['stream_bytes']))} | {pages} | {changed} |")
L.append("")
L.append("\"workload\" is `/usr/local/bin/isr-workload` (1000 files created, edited, searched; sqlite; tar+xz+zstd; a gcc "
         "build; git). Pages changed: non-zero guest pages whose content differs from the same guest address in the "
         "previous image.")
L.append("")
L.append("## Bytes added per image (MiB)")
L.append("")
hdr = [c for c, _ in cols] + ["isr ÷ casync"] + [c for c, _ in ref]
L.append("| image | " + " | ".join(hdr) + " |")
L.append("|---|" + "---:|" * len(hdr))
for i in range(n):
    cells = [m(v[i]) for _, v in cols] + [f"{isr64[i] / cas64[i]:.2f}"] + [m(v[i]) for _, v in ref]
    L.append(f"| {names[i]} | " + " | ".join(cells) + " |")
cells = [f"**{m(incr(v))}**" for _, v in cols] + [f"**{incr(isr64) / incr(cas64):.2f}**"] + [f"**{m(incr(v))}**" for _, v in ref]
L.append(f"| **{names[1]}–{names[-1]}** | " + " | ".join(cells) + " |")
cells = [f"**{m(sum(v))}**" for _, v in cols] + [f"**{sum(isr64) / sum(cas64):.2f}**"] + [f"**{m(sum(v))}**" for _, v in ref]
L.append("| **total** | " + " | ".join(cells) + " |")
L.append("")
b, p = isr_cols[FORMAT]["blobs"], isr_cols[FORMAT]["pages"]
s, x = cas["default"]["store"], cas["default"]["index"]
L.append(f"Of that, over {names[1]}–{names[-1]}: isr {m(incr(b))} MiB of chunk blobs + {m(incr(p))} MiB of chunk-list pages; "
         f"casync {m(incr(s))} MiB of chunks + {m(incr(x))} MiB of `.caibx` indexes. Blobs alone vs casync's chunks "
         f"alone: {incr(b) / incr(s):.2f}.")
if matched_same:
    L.append("")
    L.append("casync with its chunk size set to ours (`--chunk-size=16384:65536:262144 --compression=zstd`) stored "
             "byte-for-byte what its defaults stored: casync's defaults *are* min 16 / avg 64 / max 256 KiB with zstd, "
             "so the defaults column is also the matched one.")
elif "matched" in cas:
    L.append("")
    L.append(f"casync with its chunk size set to ours: {m(incr(total(cas['matched'])))} MiB over the increments.")
L.append("")
L.append("## Other chunk sizes")
L.append("")
L.append("The same images with other FastCDC parameters in isr's capture path; cut only where a RAM page record ends "
         "(`MigrationPages.AlignedChunks`: after a non-zero page whose content hash picks it, 1 in N, at least N/4 and at "
         "most 4N pages per chunk; then `ChunkCodec.Encode` as isr); and casync at a 16 KiB average "
         "(`--chunk-size=4096:16384:65536 --compression=zstd`). Chunks: per image (m09), i.e. objects fetched at resume.")
L.append("")
L.append("| chunking | chunks (m09) | m01 | " + f"{names[1]}–{names[-1]}" + " | of which pages/index | total | ÷ casync defaults (increments) |")
L.append("|---|---:|---:|---:|---:|---:|---:|")
rows = [(label(c), isr_cols[c]["chunks"][-1], total(isr_cols[c]), isr_cols[c]["pages"]) for c in cdcs]
for k, lab in (("default", "casync 16/64/256 KiB (defaults)"), ("16k", "casync 4/16/64 KiB")):
    if k in cas:
        rows.append((lab, "", total(cas[k]), cas[k]["index"]))
for lab, chunks, v, meta in rows:
    L.append(f"| {lab} | {chunks} | {m(v[0])} | {m(incr(v))} | {m(incr(meta))} | {m(sum(v))} | {incr(v) / incr(cas64):.2f} |")
L.append("")
L.append("## How each column is measured")
L.append("")
L.append("- **isr**: `Isr.Bench.Storage --memory` runs the product's capture path, `MemoryImage.CaptureAsync` (FastCDC "
         "as in docs/FORMAT.md, then `ChunkCodec.Encode`: HMAC-SHA256 key, zstd-1, AES-256-GCM, SHA-256 tag), on each "
         "stream file, into one store model shared by the series: a blob whose tag is already stored (from any earlier "
         "image, any position) adds nothing. The chunk-list pages `ChunkListTree.Build` writes for the image are counted "
         "the same way (by tag). Not counted: the version record (~1 KiB).")
L.append("- **casync**: `casync make --store=S m0N.caibx m0N.mig` into one store for the whole series; bytes added = "
         "growth of the store (its compressed `.cacnk` chunks, sum of file sizes) + the new `.caibx` index. No "
         "encryption.")
L.append("- **block 64 KiB**: non-zero 64 KiB blocks of the stream that differ from the previous stream at the same "
         "offset, raw or zstd-1 each (no dedup).")
if has_pages:
    L.append("- **page diff**: the stream parsed into its RAM page records (`MigrationPages`); each non-zero guest "
             "page whose content differs from the same guest address in the previous image, zstd-1 on its own, plus the "
             "device state after the RAM, compressed whole. No metadata counted. What a scheme that stores changed "
             "pages by address would store (not a format; per-page zstd compresses worse than 64 KiB chunks, see m01).")
L.append("")
L.append("Reproduce (as root, from the repository root):")
L.append("")
L.append("```sh")
L.append("bench/storage/make-memseries.sh      # boots the guest once, 9 saves (~10 min here)")
L.append("bench/storage/run-memory.sh --cdc 16:64:256,4:16:64,8:32:128 --aligned 4,16 \\")
L.append("    --casync 'default=;matched=--chunk-size=16384:65536:262144 --compression=zstd;16k=--chunk-size=4096:16384:65536 --compression=zstd'")
L.append("```")
L.append("")
L.append("Run times (s): " + ", ".join(f"{t[0]} {t[1]}" for t in times if not t[0].startswith("load-")) + ".")
L.append("")
# The hand-written reading of the numbers survives a regeneration: everything from its heading on is kept.
READING = "## Reading it"
previous = open(out).read() if os.path.exists(out) else ""
if READING in previous:
    L.append(READING + previous.split(READING, 1)[1].rstrip())
    L.append("")
open(out, "w").write("\n".join(L))
print(f"wrote {out}")
