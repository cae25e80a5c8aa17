#!/usr/bin/env python3
"""Write docs/benchmarks/storage.md from SERIES/results/*.tsv (bench/storage/run-storage.sh)."""
import csv, datetime, os, subprocess, sys

series, out = sys.argv[1], sys.argv[2]
res = os.path.join(series, "results")
MiB = 1024 * 1024


def peer(name):
    p = os.path.join(res, name + ".tsv")
    if not os.path.exists(p):
        return None
    return [int(r[1]) for r in csv.reader(open(p), delimiter="\t")]


isr = list(csv.DictReader(open(os.path.join(res, "isr.tsv")), delimiter="\t"))
n = len(isr)
cols = {}
for k in (16, 64, 256):
    cols[f"isr {k} KiB"] = [int(r[f"isr{k}k_blobs"]) + int(r[f"isr{k}k_pages"]) for r in isr]
cols["block 64 KiB raw"] = [int(r["block64k_raw"]) for r in isr]
cols["block 64 KiB zstd-1"] = [int(r["block64k_zstd1"]) for r in isr]
for p in ("restic", "borg", "casync"):
    v = peer(p)
    if v is not None:
        cols[p] = v[:n]
pages64 = [int(r["isr64k_pages"]) for r in isr]
times = {}
if os.path.exists(os.path.join(res, "times")):
    for line in open(os.path.join(res, "times")):
        k, v = line.split()
        times[k] = int(v)

steps = {}
for i in range(2, n + 1):
    log = os.path.join(series, f"v{i:02d}.img.run.log")
    cmd = ""
    if os.path.exists(log):
        done = [l.strip() for l in open(log) if l.startswith("ISR-WORKLOAD-DONE")]
        steps[i] = done
STEP_TEXT = {
    2: "workload", 3: "workload", 4: "dpkg -i 9 small packages (tree, less, patch, jq, file, ...)", 5: "workload",
    6: "delete /usr/share/{doc,man,info}, edit dotfiles", 7: "workload",
    8: "dpkg -i python3-numpy + BLAS/LAPACK/gfortran (~37 MB installed), run numpy", 9: "workload",
    10: "rm workload tree, dpkg --purge jq libjq1 libonig5, rm some __pycache__", 11: "workload",
    12: "unpack a .deb in /root, copy+gzip 6 .debs to /root, workload",
}

def m(b):
    return f"{b / MiB:.1f}"

L = []
L.append("# Storage efficiency on a version series of a real, evolving disk")
L.append("")
L.append(f"Measured {datetime.date.today().isoformat()} on this 2-core shared host, by `bench/storage/make-series.sh` "
         "(the versions) and `bench/storage/run-storage.sh` (the measurements). All figures are **MiB added to the store by "
         "each version** (v01: the whole first version); lower is better.")
L.append("")
L.append("## The series")
L.append("")
L.append("v01 is the pristine realistic guest (`scripts/guest-realistic/build.sh`: Debian bookworm minbase + python3, gcc, "
         "make, sqlite3, git, xz, zstd; 2 GiB raw disk, ~500 MiB allocated). Each later version is a copy of the previous one, "
         "**booted under QEMU (TCG, 512 MiB, 1 vCPU)**, changed as below from the serial console, and powered off cleanly "
         "(sync, remount read-only, poweroff). \"workload\" is `/usr/local/bin/isr-workload` (1000 files created/edited/searched, "
         "sqlite, tar+xz+zstd, a gcc build, git; it removes the previous run's tree first). Packages come from a second, "
         "read-only virtio disk made from `.deb`s fetched once with `apt-get download`.")
L.append("")
def runinfo(i):
    log = os.path.join(series, f"v{i:02d}.img.run.log")
    if not os.path.exists(log):
        return "", ""
    total, work = "", []
    for l in open(log):
        if l.startswith("total-seconds="):
            total = l.split("=")[1].strip()
        if l.startswith("ISR-WORKLOAD-DONE"):
            work.append(l.split()[1].split("=")[1])
    return total, ", ".join(work)

L.append("| version | what happened since the previous version | QEMU run (s) | workload (s) |")
L.append("|---|---|---:|---:|")
L.append("| v01 | pristine image | | |")
for i in range(2, n + 1):
    t, w = runinfo(i)
    L.append(f"| v{i:02d} | {STEP_TEXT.get(i, '?')} | {t} | {w} |")
L.append("")
L.append("QEMU run = boot + change + clean poweroff, on this host while other jobs kept its load average at 10–20 "
         "(the workload takes 25–37 s on a quiet host).")
L.append("")
L.append("## Bytes added per version (MiB)")
L.append("")
names = list(cols)
L.append("| version | " + " | ".join(names) + " |")
L.append("|---|" + "---:|" * len(names))
for i in range(n):
    L.append(f"| v{i + 1:02d} | " + " | ".join(m(cols[c][i]) for c in names) + " |")
L.append("| **v02–v%02d** | " % n + " | ".join(f"**{m(sum(cols[c][1:]))}**" for c in names) + " |")
L.append("| **total** | " + " | ".join(f"**{m(sum(cols[c]))}**" for c in names) + " |")
L.append("")
L.append("## isr relative to each peer")
L.append("")
L.append("Ratio isr ÷ peer of the bytes added by v02…v%02d (the increments; < 1 means isr stores less), and of the totals "
         "including v01." % n)
L.append("")
L.append("| isr chunk size | " + " | ".join(c for c in names if not c.startswith("isr")) + " |")
L.append("|---|" + "---:|" * len([c for c in names if not c.startswith("isr")]))
for k in (16, 64, 256):
    a = cols[f"isr {k} KiB"]
    cells = []
    for c in names:
        if c.startswith("isr"):
            continue
        b = cols[c]
        inc = f"{sum(a[1:]) / sum(b[1:]):.2f}" if sum(b[1:]) else "–"
        cells.append(f"{inc} (total {sum(a) / sum(b):.2f})" if sum(b) else "–")
    L.append(f"| {k} KiB | " + " | ".join(cells) + " |")
L.append("")
L.append("## How each column is measured")
L.append("")
L.append("- **isr N KiB**: `bench/Isr.Bench.Storage` commits each version as the next version of one parcel *in a model of the "
         "store built from the real format code*: every non-zero chunk that differs from the previous version is encoded with "
         "`ChunkCodec.Encode` (HMAC-SHA256 key, zstd-1, AES-256-GCM, SHA-256 tag; convergent, so a blob already stored, in any "
         "version or position, is not stored again), and the keyring pages written by `ChunkListTree.Build`/`UpdateAsync` are "
         "counted too. Zero chunks are never stored. Not counted: version records (~1 KiB each) and file-system overhead "
         "of one file per blob. The keyring pages are a visible part of the increments: at 64 KiB they are "
         + ", ".join(m(p) for p in pages64[1:]) + " MiB for v02… (every 1024-chunk leaf page touched by a version is "
         "rewritten, 1024 × ~68 bytes).")
chk = os.path.join(res, "isr-create.tsv")
if os.path.exists(chk):
    r = open(chk).read().split()
    L.append(f"- Check against the real client: `isr create --store` (ParcelImporter: qemu-img → our NBD server → chunk store) of "
             f"v01 at 64 KiB stored {m(int(r[1]))} MiB in `chunks/` ({m(int(r[2]))} MiB with metadata); the model's v01 at "
             f"64 KiB is {m(cols['isr 64 KiB'][0])} MiB.")
L.append("- **block 64 KiB**: fixed 64 KiB blocks that differ from the previous version and are not all zero (v01: all "
         "non-zero blocks), stored raw, or each compressed with zstd level 1 (what a simple block-differencing system with "
         "per-block compression would store; no dedup across positions or versions).")
L.append("- **restic**: `restic backup --stdin` of the raw image into one repository (format 2, compression `auto`, "
         "always encrypted; content-defined chunks of 512 KiB–8 MiB, ~1 MiB average); growth of the repository (sum of file sizes).")
L.append("- **casync**: `casync make --compression=zstd` of the raw image (blob index, default chunk sizes min 16 / avg 64 / "
         "max 256 KiB; no encryption) into one store; growth of the store plus the `.caibx` indexes (sum of file sizes).")
L.append("- **borg**: `borg create --compression zstd,1` of the image file into one repository (`-e repokey`, fixed "
         "passphrase; default buzhash chunker, ~2 MiB average); growth of the repository (sum of file sizes).")
L.append("")
if times:
    L.append("Run times on this loaded host (s): " + ", ".join(f"{k} {v}" for k, v in times.items()) + ".")
    L.append("")
L.append("Reproduce (as root, from the repository root):")
L.append("")
L.append("```sh")
L.append("bench/storage/make-series.sh        # boots the guest once per version; resumable")
L.append("bench/storage/run-storage.sh        # isr model + block differencing, isr create check, restic, casync, borg")
L.append("```")
open(out, "w").write("\n".join(L) + "\n")
print(f"wrote {out}", file=sys.stderr)
