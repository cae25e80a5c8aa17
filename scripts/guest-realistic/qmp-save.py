#!/usr/bin/env python3
"""Save a running QEMU's state to a file over QMP, the way isr suspends, then let the guest go on.

    qmp-save.py QMP_SOCKET OUT_FILE [--timeout S]

As src/Isr.Vmm/QemuVm.SaveStateAsync does: `stop`, `migrate-set-parameters max-bandwidth` (100 GiB/s),
`migrate` to a unix socket we listen on, read the stream to EOF, wait for `query-migrate` to say
"completed"; then `cont` (isr quits QEMU instead; here the same guest goes on to the next step).
OUT_FILE is the raw migration stream, what isr chunks as the memory image. Prints "bytes=N seconds=S".
"""
import json
import os
import socket
import sys
import tempfile
import time

MAX_BANDWIDTH = 100 * 1024 * 1024 * 1024


class Qmp:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(max(1.0, deadline - time.monotonic()))
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.read()  # greeting
        self.execute("qmp_capabilities")

    def read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise SystemExit("qmp-save: QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command, arguments=None):
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        reply = self.read()
        if "error" in reply:
            raise SystemExit(f"qmp-save: {command}: {reply['error'].get('desc')}")
        return reply["return"]


def main():
    args = sys.argv[1:]
    timeout = 600.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        raise SystemExit(__doc__)
    qmp_path, out_path = args
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    qmp = Qmp(qmp_path, deadline)
    qmp.execute("stop")
    qmp.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "save.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(max(1.0, deadline - time.monotonic()))
        qmp.execute("migrate", {"uri": "unix:" + path})
        conn, _ = listener.accept()
        conn.settimeout(max(1.0, deadline - time.monotonic()))
        total = 0
        with open(out_path + ".tmp", "wb") as out:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                out.write(data)
                total += len(data)
        conn.close()
        listener.close()
    while True:
        status = qmp.execute("query-migrate").get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled") or time.monotonic() > deadline:
            raise SystemExit(f"qmp-save: migration {status}")
        time.sleep(0.1)
    os.replace(out_path + ".tmp", out_path)
    qmp.execute("cont")
    print(f"bytes={total} seconds={time.monotonic() - t0:.1f}")


if __name__ == "__main__":
    main()
