#!/usr/bin/env python3
"""QEMU's own cost of loading a saved state, with and without a pause before it (no isr involved).

    scripts/bench/qemu-load-cost.py STATE DISK [--runs N] [--idle S]

STATE is a QEMU migration stream saved by the policies harness (WORK/local/mem.state: the realistic guest, 512 MiB
RAM, machine pc, no VGA or NIC) and DISK its disk (WORK/local/disk.img, opened read-only). Each run starts QEMU with
`-incoming defer`, streams STATE into it over a unix socket and waits for the migration to complete; it prints the wall
time of the load and QEMU's user and system CPU. Runs alternate: one after S seconds idle ("idle"), one right after the
previous QEMU exited ("back to back").

Why: on a host that is itself a VM reporting free pages to its hypervisor, memory freed a few seconds ago is backed
again only when touched, and QEMU's first touch of guest RAM during the load pays for it in system time. A benchmark
that compares QEMU resumes must then give each the same idle time before it (policies.py --settle).
"""
import argparse
import json
import os
import socket
import subprocess
import tempfile
import time

from policies import Qmp, qemu_cpu_ms


def load_once(state, disk, scratch):
    qmp, incoming = os.path.join(scratch, "qmp.sock"), os.path.join(scratch, "load.sock")
    for p in (qmp, incoming):
        if os.path.exists(p):
            os.unlink(p)
    qemu = subprocess.Popen(["timeout", "--kill-after=5", "60", "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg",
                             "-m", "512M", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot", "-serial", "null",
                             "-qmp", f"unix:{qmp},server=on,wait=off",
                             "-drive", f"file={disk},format=raw,if=virtio,readonly=on", "-S", "-incoming", "defer"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        qmp_client = Qmp(qmp, timeout=10)
        qmp_client.cmd("migrate-incoming", uri="unix:" + incoming)
        data = open(state, "rb").read()
        pid = int(open(f"/proc/{qemu.pid}/task/{qemu.pid}/children").read().split()[0])
        cpu0 = qemu_cpu_ms(pid)
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(incoming)
            s.sendall(data)
        qmp_client.wait_migration(timeout=30, poll=0.005)
        wall = time.monotonic() - t0
        cpu1 = qemu_cpu_ms(pid)
        return {"load_s": round(wall, 3), "qemu_user_ms": cpu1["user"] - cpu0["user"], "qemu_sys_ms": cpu1["sys"] - cpu0["sys"]}
    finally:
        qemu.terminate()
        qemu.wait(20)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state")
    ap.add_argument("disk")
    ap.add_argument("--runs", type=int, default=5, help="runs of each kind (default 5)")
    ap.add_argument("--idle", type=float, default=6.0, help="seconds idle before an 'idle' run (default 6)")
    args = ap.parse_args()
    rows = {"idle": [], "back to back": []}
    with tempfile.TemporaryDirectory(prefix="isr-qemu-load-") as scratch:
        load_once(args.state, args.disk, scratch)  # warms the page cache with STATE and QEMU's files
        for _ in range(args.runs):
            for kind in rows:
                if kind == "idle":
                    time.sleep(args.idle)
                r = load_once(args.state, args.disk, scratch)
                rows[kind].append(r)
                print(json.dumps({"kind": kind, **r}), flush=True)
    print("\n| before the load | load (s), median | QEMU user CPU (ms) | QEMU system CPU (ms) |\n|---|---:|---:|---:|")
    for kind, rs in rows.items():
        med = lambda k: sorted(r[k] for r in rs)[len(rs) // 2]
        print(f"| {kind} | {med('load_s')} | {med('qemu_user_ms')} | {med('qemu_sys_ms')} |")


if __name__ == "__main__":
    main()
