#!/usr/bin/env python3
"""Resume latency and slowdown per state-transfer policy x bandwidth, with peers in the same run.

Driven by scripts/bench/policies.sh (root, namespaces, builds). Subcommands:
  prepare   server + nginx in isr-srv, parcel made and checked in once, local reference state, peer files
  (prepare, when the matrix has lookaside cells: read-only media, a jukebox in the site namespace, a stale dongle)
  run       the matrix: interleaved passes, one JSON line per finished run in the results file, resumable
  render    docs/benchmarks/policies.md (+ PNG plots with gnuplot) from the results file

Every QEMU we start runs under `timeout`; every process we start is killed by its PID.
"""
import argparse, calendar, json, mmap, os, re, resource, select, shutil, signal, socket, statistics, subprocess, sys, threading, time

# netns.sh reads the same variables, so two harnesses can run side by side under different names.
SRV_NS, SITE_NS = os.environ.get("ISR_NETNS_SRV", "isr-srv"), os.environ.get("ISR_NETNS_SITE", "isr-site")
SRV_IP, SITE_IP = (os.environ.get("ISR_NETNS_PREFIX", "10.77.0") + n for n in (".1", ".2"))
ISR_PORT, HTTP_PORT, JUKEBOX_PORT = 8443, 8080, 8480
PARCEL, USER, PASSWORD = "bench", "bench", "bench-password-1"
# The check-in cells commit a version per run: on a parcel of their own, so the head the other cells resume stays put.
CHECKIN_PARCEL = "bench-checkin"
MEM = "512M"
RATES = {"100mbit": 100e6, "10mbit": 10e6, "1mbit": 1e6, "100kbit": 100e3}
POLICIES = {  # isr resume flags per policy; proactive hoards first (unshaped: ahead of time), then resumes from the cache
    "baseline": ["--policy", "baseline", "--prefetch", "none"],
    "proactive": ["--policy", "demand", "--prefetch", "none"],
    "demand": ["--policy", "demand", "--prefetch", "none"],
    "demand+ws": ["--policy", "demand", "--prefetch", "workingset"],
    # the replay from `cont` only, without the working set's planned head before it (--working-set-head 0)
    "demand+ws-nohead": ["--policy", "demand", "--prefetch", "workingset", "--working-set-head", "0"],
    # demand fetch with one lookaside source, asked before the server (lookaside_source says which)
    "demand+media": ["--policy", "demand", "--prefetch", "none"],
    "demand+jukebox": ["--policy", "demand", "--prefetch", "none"],
    "demand+staledongle": ["--policy", "demand", "--prefetch", "none"],
}
QEMU_TIMEOUT = 3600
RUNNING_LINE = '{"progress":"the VM runs"}'  # isr resume --json on stderr at cont (ParcelSession.RunningMessage)
# The devices isr's descriptor gives every parcel (VmDescriptorFactory) beyond the plain reference's disk and serial
# port: the "local-machine" reference runs the same guest from local files on this machine, so that the comparison
# with isr's proactive resume is between equal VMs (a VGA's 16 MiB of video memory and two more PCI devices load too).
ISR_MACHINE_ARGS = ["-cpu", "qemu64", "-device", "VGA,id=video0,addr=0x2", "-netdev", "user,id=net0",
                    "-device", "virtio-net-pci,id=net0,netdev=net0,addr=0x3,mac=52:54:00:12:34:56,romfile=",
                    "-chardev", "null,id=agent0", "-device", "virtio-serial-pci,id=agent0,addr=0x5",
                    "-device", "virtserialport,id=agent0port,bus=agent0.0,nr=1,chardev=agent0,name=org.qemu.guest_agent.0"]
# TCG unless asked: a /dev/kvm that opens is not proof that KVM runs guests (nested hosts fail at the first instruction).
ACCEL = os.environ.get("ISR_BENCH_ACCEL", "tcg")


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def sh(args, ns=None, env=None, check=True, timeout=3600, capture=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + args
    p = subprocess.run(cmd, env=env, timeout=timeout, text=True,
                       stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {(p.stderr or '')[-2000:]}")
    return p


def netns(*args):
    sh(["bash", os.path.join(ROOT, "scripts/bench/netns.sh"), *args])


SETTLE_SECONDS = 0.0  # --settle
WARM_MIB = 0  # --warm-memory


def settle_memory():
    """Idles --settle seconds before a timed resume. This host is a VM that reports free memory back to its
    hypervisor about 2 s after it is freed; a huge page touched after that costs ~8 ms (refaulted there), so QEMU
    loading the guest's RAM took ~0.45 s of system time, against 0.03 s right after another QEMU had freed its RAM
    (scripts/bench/policies-notes.md). Back-to-back local runs were lucky that way and isr runs (login and hoard come
    first) were not; idling before every timed resume, of isr and of the peers alike, gives each the same cold start."""
    if SETTLE_SECONDS > 0:
        time.sleep(SETTLE_SECONDS)
    if WARM_MIB > 0:
        # --warm-memory: touch and free that much right before the resume, so that every run's QEMU finds backed free
        # huge pages, as on a host that is not a VM. In huge pages, as QEMU takes them: memory touched 4 KiB at a time
        # left QEMU's load as slow as after an idle (1.0-1.2 s of system time); this leaves it at 0.1 s.
        with mmap.mmap(-1, WARM_MIB << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as buf:
            buf.madvise(mmap.MADV_HUGEPAGE)
            for offset in range(0, WARM_MIB << 20, 4096):
                buf[offset] = 1


def proc_stat(pid):
    """A process's name, user and system CPU (ms) and minor page faults so far, from /proc/PID/stat; None once gone."""
    try:
        head, _, tail = open(f"/proc/{pid}/stat").read().rpartition(")")
        f, tick = tail.split(), os.sysconf("SC_CLK_TCK")
        return {"name": head.partition("(")[2], "user": int(f[11]) * 1000 // tick, "sys": int(f[12]) * 1000 // tick, "minflt": int(f[7])}
    except (OSError, IndexError, ValueError):
        return None


def qemu_cpu_ms(pid):
    """User and system CPU of a process so far (QEMU's fault cost at load shows in the system part), and its page
    faults (minor: what the host had to back)."""
    st = proc_stat(pid)
    return st and {k: st[k] for k in ("user", "sys", "minflt")}


def vmstat(names=("thp_fault_alloc", "thp_fault_fallback", "compact_stall", "pgfault")):
    """Host-wide memory counters: their change over a timed resume says how many huge pages were backed on the way."""
    values = {}
    for line in open("/proc/vmstat"):
        name, _, value = line.partition(" ")
        if name in names:
            values[name] = int(value)
    return values


def vmstat_delta(before):
    after = vmstat()
    return {k: after[k] - v for k, v in before.items() if k in after}


def process_faults():
    """Per process (pid: name, minor faults, CPU ms) and the harness's reaped children together: which processes made
    the host back memory over a timed resume (vmstat's pgfault counts them all at once)."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if st := proc_stat(pid):
            procs[int(pid)] = (st["name"], st["minflt"], st["user"] + st["sys"])
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs[0] = ("reaped children of the harness", kids.ru_minflt, int((kids.ru_utime + kids.ru_stime) * 1000))
    return procs


def process_faults_delta(before, top=6):
    """The processes that faulted most since BEFORE (a process started since counts whole), by name."""
    by_name = {}
    for pid, (name, minflt, cpu) in process_faults().items():
        old = before.get(pid)
        minflt0, cpu0 = old[1:] if old and old[0] == name else (0, 0)
        f, c = by_name.get(name, (0, 0))
        by_name[name] = (f + minflt - minflt0, c + cpu - cpu0)
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {name: {"minflt": f, "cpu_ms": c} for name, (f, c) in rows}


def load_avg():
    return float(open("/proc/loadavg").read().split()[0])


# ------------------------------------------------------------------ console: FIFOs BASE.in / BASE.out
class Console:
    """The guest's serial console through two FIFOs: lines read with host timestamps, commands written."""

    def __init__(self, base, log_path):
        for s in (".in", ".out"):
            if not os.path.exists(base + s):
                os.mkfifo(base + s)
        self.base = base
        # O_RDWR: opening never blocks, and QEMU finds both ends open whenever it starts.
        self.wfd = os.open(base + ".in", os.O_RDWR)
        self.rfd = os.open(base + ".out", os.O_RDWR)
        self.lines = []  # (monotonic time, line)
        self.cond = threading.Condition()
        self.log = open(log_path, "a")
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        while not self.closed:
            # Polled, so that close() can stop the thread: one left blocked in read() on a closed descriptor still reads
            # the FIFO, and took the first bytes meant for the next console on the same path ("SR-PONG").
            try:
                if not select.select([self.rfd], [], [], 0.1)[0]:
                    continue
                b = os.read(self.rfd, 65536)
            except OSError:
                return
            if not b:
                return
            buf += b
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").rstrip("\r")
                t = time.monotonic()
                self.log.write(f"{t:.3f} {text}\n"); self.log.flush()
                with self.cond:
                    self.lines.append((t, text)); self.cond.notify_all()

    def send(self, line):
        os.write(self.wfd, (line + "\n").encode())

    def mark(self):
        with self.cond:
            return len(self.lines)

    def wait(self, pattern, since, timeout, alive=None):
        """First line matching pattern at index >= since: (time, line)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines[since:]:
                    if rx.search(line):
                        return t, line
                    if "Kernel panic" in line:
                        raise RuntimeError("guest kernel panic")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no console line matching {pattern!r} in {timeout} s")
                if alive is not None and not alive():
                    raise RuntimeError(f"the VM exited while waiting for {pattern!r}")
                self.cond.wait(0.05)

    def close(self):
        self.closed = True
        self.reader.join(5)
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()


# ------------------------------------------------------------------ plain QEMU (local reference and peers)
class Qmp:
    def __init__(self, path, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n"); self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")

    def wait_migration(self, timeout=3600, poll=0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"migration {st}")
            time.sleep(poll)
        raise TimeoutError("migration")


class PlainVm:
    """QEMU with a local (or nbd-backed) disk, console on FIFOs, QMP; `incoming` is an exec: migration source, `extra`
    more QEMU arguments (ws-bound.py's block tracing)."""

    def __init__(self, dirpath, disk, fmt, ns=None, incoming=None, extra=()):
        os.makedirs(dirpath, exist_ok=True)
        self.console = Console(os.path.join(dirpath, "console"), os.path.join(dirpath, "console.log"))
        qmp = os.path.join(dirpath, "qmp.sock")
        if os.path.exists(qmp):
            os.unlink(qmp)
        args = ["timeout", "--kill-after=10", str(QEMU_TIMEOUT), "qemu-system-x86_64", "-machine", "pc", "-accel", ACCEL,
                "-m", MEM, "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
                "-serial", f"pipe:{self.console.base}", "-qmp", f"unix:{qmp},server=on,wait=off",
                "-drive", f"file={disk},format={fmt},if=virtio,cache=writeback"]
        if incoming:  # -S: stay paused after loading, so that the run sends `cont` itself, as isr does
            args += ["-S", "-incoming", incoming]
        args += list(extra)
        if ns:
            args = ["ip", "netns", "exec", ns] + args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(dirpath, "qemu.stderr"), "w"))
        self.qmp = Qmp(qmp)

    def alive(self):
        return self.proc.poll() is None

    def qemu_pid(self):
        """QEMU itself: the child of `timeout` (or of `ip netns exec`, which execs into timeout)."""
        try:
            kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # timeout forwards it to QEMU
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()
        self.console.close()


# ------------------------------------------------------------------ isr at the site
class Site:
    def __init__(self, home, parcel=PARCEL):
        self.home, self.parcel = home, parcel
        os.makedirs(home, exist_ok=True)
        self.env = dict(os.environ, ISR_HOME=home, ISR_PASSWORD=PASSWORD, ISR_SITE_NAME=os.path.basename(home))

    def isr(self, *args, check=True, timeout=3600):
        return sh([ISR, *args], ns=SITE_NS, env=self.env, check=check, timeout=timeout)

    def login(self, fingerprint):
        self.isr("login", "--server", f"https://{SRV_IP}:{ISR_PORT}", "--user", USER, "--server-fingerprint", fingerprint)

    def stat(self):
        return json.loads(self.isr("stat", self.parcel, "--json").stdout)

    def qemu_pid(self):
        """From the session's QEMU record (parcels/NAME/qemu.json), without asking the daemon."""
        try:
            return json.load(open(os.path.join(self.home, "parcels", self.parcel, "qemu.json")))["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def stop_vm(self):
        """Ends a benchmark session without keeping anything: QEMU killed by its PID, the disk-only version dropped,
        the lock released."""
        try:
            pid = (self.stat().get("session") or {}).get("qemuPid")
            if pid:
                os.kill(pid, signal.SIGKILL)
                for _ in range(100):
                    if not os.path.exists(f"/proc/{pid}"):
                        break
                    time.sleep(0.1)
        except Exception as e:  # noqa: BLE001 - best effort, the clean below reports what matters
            log(f"stop: {e}")
        self.isr("suspend", self.parcel, check=False, timeout=600)
        self.isr("clean", self.parcel, "--force", check=False, timeout=600)


# ------------------------------------------------------------------ prepare
def state_path(name):
    return os.path.join(WORK, name)


def read_state():
    p = state_path("state.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def write_state(st):
    json.dump(st, open(state_path("state.json") + ".tmp", "w"), indent=1)
    os.replace(state_path("state.json") + ".tmp", state_path("state.json"))


def start_services(st):
    """isr-server and nginx inside isr-srv; returns their Popen objects (killed by PID at exit)."""
    data = state_path("server")
    if not os.path.exists(os.path.join(data, "fingerprint")):
        shutil.rmtree(data, ignore_errors=True)
        out = sh([SERVER, "init", "--data", data]).stdout
        fp = re.search(r"^fingerprint: (\S+)", out, re.M).group(1)
        pw = state_path("password"); open(pw, "w").write(PASSWORD)
        sh([SERVER, "user", "add", USER, "--password-file", pw, "--data", data])
        os.unlink(pw)
        open(os.path.join(data, "fingerprint"), "w").write(fp)
    st["fingerprint"] = open(os.path.join(data, "fingerprint")).read().strip()
    srv_log = open(state_path("server.log"), "a")
    server = subprocess.Popen(["ip", "netns", "exec", SRV_NS, SERVER, "run", "--data", data, "--urls", f"https://{SRV_IP}:{ISR_PORT}"],
                              stdout=srv_log, stderr=subprocess.STDOUT)
    www = state_path("www"); os.makedirs(www, exist_ok=True)
    conf = state_path("nginx.conf")
    open(conf, "w").write(f"""daemon off; worker_processes 1; pid {state_path('nginx.pid')}; error_log {state_path('nginx.err')};
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; default_type application/octet-stream;
  client_body_temp_path {WORK}/nginx-tmp; proxy_temp_path {WORK}/nginx-tmp; fastcgi_temp_path {WORK}/nginx-tmp;
  uwsgi_temp_path {WORK}/nginx-tmp; scgi_temp_path {WORK}/nginx-tmp;
  server {{ listen {SRV_IP}:{HTTP_PORT}; root {www}; }} }}
""")
    os.makedirs(f"{WORK}/nginx-tmp", exist_ok=True)
    nginx = subprocess.Popen(["ip", "netns", "exec", SRV_NS, "nginx", "-c", conf, "-e", state_path("nginx.err")],
                             stdout=subprocess.DEVNULL, stderr=open(state_path("nginx.err"), "a"))
    for _ in range(600):
        try:
            sh(["curl", "-sk", "-o", "/dev/null", f"https://{SRV_IP}:{ISR_PORT}/"], ns=SITE_NS, timeout=10)
            sh(["curl", "-s", "-o", "/dev/null", f"http://{SRV_IP}:{HTTP_PORT}/"], ns=SITE_NS, check=False, timeout=10)
            break
        except (RuntimeError, subprocess.TimeoutExpired):
            if server.poll() is not None:
                raise RuntimeError("isr-server exited; see " + state_path("server.log"))
            time.sleep(0.5)
    return [server, nginx]


def prepare_parcel(st, image):
    """The parcel the runs resume: created from the guest's disk, booted, one workload run, caches dropped, suspended,
    checked in; then resumed from that memory image for one more workload run, suspended and checked in again. The
    runs resume that last version: its working set is the one a resumed session records (a boot reads much that a
    resume never asks for), which is what working-set prefetch replays for a user."""
    if st.get("parcel_ready") and st.get("resumed_session"):
        return
    netns("set-rate", "none")
    site = Site(state_path("prep-site"))
    site.login(st["fingerprint"])
    if not st.get("parcel_ready"):
        first_session(st, site, image)
    log("prepare: resume from the memory image, one workload run, drop caches, suspend, check in")
    session_with_workload(site, st, boot=False)
    stat = site.stat()
    st.update(resumed_session=True, parcel_head=stat.get("headVersion"), memory_image_raw=stat.get("memoryImageBytes"))
    write_state(st)


def suspended_session(site, boot, drop=True, resume_flags=()):
    """Resume (a boot the first time), one workload run, the page cache dropped (unless not `drop`), suspend (kept at
    the site until a check-in); returns the suspend's JSON."""
    con = Console(os.path.join(site.home, "console"), os.path.join(site.home, "console.log"))
    try:
        site.isr("resume", site.parcel, "--headless", "--serial-pipe", con.base, "--trickle-limit", "0", *resume_flags)
        if boot:
            con.wait(r"^ISR-READY", 0, 600)
        else:
            ping(con)
        m = con.mark(); con.send("run"); con.wait(r"^ISR-WORKLOAD-DONE", m, 1800)
        if drop:
            m = con.mark(); con.send("drop"); con.wait(r"^ISR-DROPPED", m, 300)
        return json.loads(site.isr("suspend", site.parcel, "--json").stdout)
    finally:
        con.close()


def session_with_workload(site, st, boot):
    """A suspended session (above), checked in."""
    st["suspend"] = suspended_session(site, boot)
    site.isr("checkin", site.parcel)


def create_parcel(site, image):
    site.isr("create", site.parcel, "--from", image, "--memory", MEM, "--accelerator", ACCEL)


def first_session(st, site, image):
    if not st.get("parcel_created"):
        log("prepare: isr create (imports the 2 GiB disk through our NBD server)")
        create_parcel(site, image)
        st["parcel_created"] = True; write_state(st)
    log("prepare: first resume (boot), one workload run, drop caches, suspend, check in")
    session_with_workload(site, st, boot=True)
    stat = site.stat()
    st.update(parcel_ready=True, parcel_head=stat.get("headVersion"), memory_image_raw=stat.get("memoryImageBytes"),
              disk_size=stat.get("diskSize"))
    write_state(st)


def prepare_checkin_parcel(st, image):
    """The check-in cells' parcel: created from the same disk, booted, one workload run, suspended, checked in, so that
    each run resumes a memory image and checks in what a session changed."""
    if st.get("checkin_parcel_ready"):
        return
    netns("set-rate", "none")
    site = Site(state_path("prep-checkin-site"), CHECKIN_PARCEL)
    site.login(st["fingerprint"])
    if not st.get("checkin_parcel_created"):
        log("prepare: the check-in cells' parcel (isr create)")
        create_parcel(site, image)
        st["checkin_parcel_created"] = True; write_state(st)
    log("prepare: the check-in cells' parcel: boot, one workload run, suspend, check in")
    session_with_workload(site, {}, boot=True)
    st["checkin_parcel_ready"] = True; write_state(st)


def save_local_reference(name, image, extra=()):
    """WORK/NAME: a copy of IMAGE booted by plain QEMU (EXTRA: more devices), one workload run, caches dropped, its
    state saved with QEMU's migration to NAME/mem.state. Returns the directory and the disk."""
    d = state_path(name); shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    disk = os.path.join(d, "disk.img")
    sh(["cp", "--sparse=always", image, disk])
    log(f"prepare: {name} reference: boot, one workload run, drop caches, save state")
    vm = PlainVm(os.path.join(d, "vm"), disk, "raw", extra=extra)
    try:
        vm.console.wait(r"^ISR-READY", 0, 600, vm.alive)
        m = vm.console.mark(); vm.console.send("run"); vm.console.wait(r"^ISR-WORKLOAD-DONE", m, 1800, vm.alive)
        m = vm.console.mark(); vm.console.send("drop"); vm.console.wait(r"^ISR-DROPPED", m, 300, vm.alive)
        vm.qmp.cmd("stop")
        vm.qmp.cmd("migrate", uri=f"exec:cat > {d}/mem.state")
        vm.qmp.wait_migration()
        vm.qmp.cmd("quit")
        vm.proc.wait(60)
    finally:
        vm.kill()
    return d, disk


def prepare_local(st, image):
    """The no-ISR reference: the same guest from a local file, brought to the same point (boot, one workload run,
    caches dropped), its state saved with QEMU's migration to a file. Also the peers' files: the raw disk for
    nbdkit-curl, and zstd-compressed disk and state for the ISR-1 copy-in."""
    if st.get("local_ready"):
        return
    d, disk = save_local_reference("local", image)
    www = state_path("www")
    sh(["cp", "--sparse=always", disk, os.path.join(www, "disk.raw")])
    sh(["zstd", "-q", "-f", "-3", "-T2", disk, "-o", os.path.join(www, "disk.img.zst")])
    sh(["zstd", "-q", "-f", "-3", "-T2", f"{d}/mem.state", "-o", os.path.join(www, "mem.state.zst")])
    st.update(local_ready=True, local_mem_state_bytes=os.path.getsize(f"{d}/mem.state"),
              isr1_disk_zst=os.path.getsize(os.path.join(www, "disk.img.zst")),
              mem_state_zst=os.path.getsize(os.path.join(www, "mem.state.zst")),
              disk_allocated=os.stat(disk).st_blocks * 512)
    write_state(st)


def prepare_local_machine(st, image):
    """The same reference with isr's devices (ISR_MACHINE_ARGS), from its own copy of the image."""
    if st.get("local_machine_ready"):
        return
    d, _ = save_local_reference("local-machine", image, ISR_MACHINE_ARGS)
    st.update(local_machine_ready=True, local_machine_mem_state_bytes=os.path.getsize(f"{d}/mem.state"))
    write_state(st)


# ------------------------------------------------------------------ lookaside sources
def lookaside_source(policy):
    """The `--lookaside` argument of a lookaside cell (None for the others)."""
    return {"demand+media": state_path("media/disk.img"), "demand+jukebox": f"http://{SITE_IP}:{JUKEBOX_PORT}",
            "demand+staledongle": state_path("stale-dongle")}.get(policy)


def prepare_media(st, image):
    """Read-only media: a copy of the pristine guest image the parcel was created from (the parcel's disk has since
    been changed by the prepare's boot and workload run). Each run indexes it at its fresh site, as a user would."""
    if st.get("media_ready"):
        return
    d = state_path("media"); os.makedirs(d, exist_ok=True)
    sh(["cp", "--sparse=always", image, os.path.join(d, "disk.img.tmp")])
    os.chmod(os.path.join(d, "disk.img.tmp"), 0o444)
    os.replace(os.path.join(d, "disk.img.tmp"), lookaside_source("demand+media"))
    st.update(media_ready=True, media_allocated=os.stat(lookaside_source("demand+media")).st_blocks * 512)
    write_state(st)


def start_jukebox(st):
    """`isr-server jukebox` in the site namespace (on the LAN: the shaped veth is not on its path), serving a copy of
    the server's blob directory: every run then meets the same warm jukebox, where `--upstream` would make the first
    run a demand fetch through it. Returns its Popen (killed by PID at exit)."""
    d = state_path("jukebox")
    if not st.get("jukebox_ready"):
        shutil.rmtree(d + ".tmp", ignore_errors=True)
        sh(["cp", "-al", state_path("server/chunks"), d + ".tmp"])  # hard links: blobs are immutable, named by tag
        shutil.rmtree(d, ignore_errors=True)
        os.replace(d + ".tmp", d)
        files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
        st.update(jukebox_ready=True, jukebox_blobs=len(files), jukebox_bytes=sum(os.path.getsize(f) for f in files))
        write_state(st)
    url = lookaside_source("demand+jukebox")
    proc = subprocess.Popen(["ip", "netns", "exec", SITE_NS, SERVER, "jukebox", "--dir", d, "--listen", url],
                            stdout=open(state_path("jukebox.log"), "a"), stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # "don't have" (404) for a tag nobody has: it answers
            if sh(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/chunks/{'0' * 64}"], ns=SITE_NS, check=False, timeout=10).stdout == "404":
                return proc
            if proc.poll() is not None:
                raise RuntimeError("isr-server jukebox exited; see " + state_path("jukebox.log"))
            time.sleep(0.5)
        raise TimeoutError("the jukebox did not answer")
    except BaseException:
        proc.kill(); proc.wait()
        raise


def prepare_stale_dongle(st):
    """A dongle written at an older suspend: the parcel's first version (the created disk) resumed (a boot), suspended
    and written to the dongle (memory image of the booted guest, disk chunks the boot dirtied), then dropped: nothing is
    checked in, the head that every run resumes stays as it is. So the dongle holds the state from before the
    prepare's workload run, as if the user wrote it at that suspend and did not update it afterwards."""
    if st.get("stale_dongle_ready"):
        return
    netns("set-rate", "none")
    site = Site(state_path("dongle-site"))
    site.login(st["fingerprint"])
    site.isr("clean", PARCEL, "--force", check=False, timeout=600)  # an interrupted attempt's suspended version and lock
    d = lookaside_source("demand+staledongle")
    shutil.rmtree(d, ignore_errors=True)
    con = Console(os.path.join(site.home, "console"), os.path.join(site.home, "console.log"))
    try:
        log("prepare: stale dongle (version 1 booted, suspended, written to the dongle, dropped)")
        site.isr("resume", PARCEL, "--version", "1", "--headless", "--serial-pipe", con.base, "--trickle-limit", "0")
        con.wait(r"^ISR-READY", 0, 900)
        site.isr("suspend", PARCEL)
        out = json.loads(site.isr("dongle", "write", PARCEL, d, "--json").stdout)
    finally:
        con.close()
        site.isr("clean", PARCEL, "--force", check=False, timeout=600)
    st.update(stale_dongle_ready=True, stale_dongle=out)
    write_state(st)


def prepare_lookaside(st, image, cells):
    """What the lookaside cells among CELLS need; returns processes to stop at exit (the jukebox)."""
    if "isr:demand+media" in cells:
        prepare_media(st, image)
    if "isr:demand+staledongle" in cells:
        prepare_stale_dongle(st)
    return [start_jukebox(st)] if "isr:demand+jukebox" in cells else []


# ------------------------------------------------------------------ one run of a cell
def send_ping(con):
    """Writes `ping` on the guest's console; returns the mark to wait for its answer from."""
    m = con.mark(); con.send("ping")
    return m


def ping(con, alive=None):
    return con.wait(r"^ISR-PONG", send_ping(con), 3600, alive)[0]


def resume_and_ping(site, con, args):
    """`isr resume ARGS --json`, the guest pinged as soon as isr reports that it runs (the progress line at `cont`), as
    the references ping it right after their `cont`, not once the command has exited (its reply and exit took 0.08-0.14
    s more). Falls back to pinging after the exit when no such line comes (a build without it). Returns the command's
    stdout and the times it reported the VM running (None without that line), exited, and the guest answered."""
    proc = subprocess.Popen(["ip", "netns", "exec", SITE_NS, ISR, "resume", *args, "--json"], env=site.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors, pinged = [], []  # pinged: (when isr said the VM runs, the console mark of the ping)

    def watch_progress():
        for line in proc.stderr:
            errors.append(line)
            if not pinged and line.strip() == RUNNING_LINE:
                pinged.append((time.monotonic(), send_ping(con)))

    watcher = threading.Thread(target=watch_progress, daemon=True)
    watcher.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=3600)
    finally:
        if proc.poll() is None:
            proc.kill(); proc.wait()
    t_ret = time.monotonic()
    watcher.join(60)
    if proc.returncode != 0:
        raise RuntimeError(f"isr resume exited {proc.returncode}: {''.join(errors)[-2000:]}")
    t_running, mark = pinged[0] if pinged else (None, send_ping(con))
    return out, t_running, t_ret, con.wait(r"^ISR-PONG", mark, 3600)[0]


def workload(con, alive=None):
    m = con.mark(); t1 = time.monotonic(); con.send("run")
    t2, line = con.wait(r"^ISR-WORKLOAD-DONE", m, 7200, alive)
    g = re.search(r"seconds=([0-9.]+)", line)
    return t2 - t1, float(g.group(1)) if g else None


def run_isr(policy, rate, rundir, with_workload, st):
    site = Site(os.path.join(rundir, "site"), CHECKIN_PARCEL if policy == "checkin" else PARCEL)
    netns("set-rate", "none")
    t = time.monotonic()
    site.login(st["fingerprint"])  # Argon2id of the password, as resume does it again: a part of isr's fixed cost
    r = {"login_s": round(time.monotonic() - t, 2)}
    if policy == "hoard":  # the transfer alone, over the shaped link: how much of the link a hoard uses
        netns("set-rate", rate)
        try:
            out = json.loads(site.isr("hoard", PARCEL, "--json").stdout)
        finally:
            netns("set-rate", "none")
            site.isr("logout", check=False)
            shutil.rmtree(site.home, ignore_errors=True)
        return r | {"hoard": out, "hoard_seconds": out.get("seconds"), "hoard_bytes": out.get("bytesFetched")}
    if policy == "checkin":
        return r | check_in_after_session(site, rate)
    if policy == "proactive":
        t = time.monotonic()
        out = json.loads(site.isr("hoard", PARCEL, "--json").stdout)
        r.update(hoard_seconds=round(time.monotonic() - t, 2), hoard=out)
    lookaside = lookaside_source(policy)
    if policy == "demand+media":  # the site indexes its media ahead of time (reads it, tags need the user's keys)
        t = time.monotonic()
        r["media_index"] = json.loads(site.isr("lookaside", "index", lookaside, "--json").stdout)
        r["media_index_s"] = round(time.monotonic() - t, 2)
    netns("set-rate", rate)
    con = Console(os.path.join(rundir, "console"), os.path.join(rundir, "console.log"))
    try:
        settle_memory()
        counters, faults = vmstat(), process_faults()
        t0 = time.monotonic()
        out, t_running, t_ret, t_pong = resume_and_ping(site, con, [PARCEL, "--headless", "--serial-pipe", con.base, "--trickle-limit", "0",
                                                                   *POLICIES[policy], *(["--lookaside", lookaside] if lookaside else [])])
        res = json.loads(out)  # the session's counters at cont (isr stat would also read keyring pages over the link)
        r.update(resume_s=round(t_pong - t0, 3), resume_cmd_s=round(t_ret - t0, 3), resume_to_cont_s=res.get("resumeSeconds"),
                 resume_running_s=t_running and round(t_running - t0, 3),
                 home_bytes_at_cont=res.get("homeBytes"), transfers_at_cont=res.get("transfers"), trace=res.get("trace"),
                 lookaside_at_cont=res.get("lookaside"), qemu_cpu_at_pong=qemu_cpu_ms(site.qemu_pid()), vmstat_at_pong=vmstat_delta(counters),
                 faults_at_pong=process_faults_delta(faults))
        if with_workload:
            w, g = workload(con)
            s1 = site.stat().get("session") or {}
            r.update(workload_s=round(w, 2), guest_seconds=g, guest_wait_s=s1.get("guestWaitSeconds"),
                     guest_stall_s=s1.get("guestStallSeconds"), misses=s1.get("misses"),
                     home_bytes_total=s1.get("homeBytes"), cache_bytes=s1.get("cacheBytes"), transfers=s1.get("transfers"),
                     lookaside=s1.get("lookaside"), lookaside_bytes=s1.get("lookasideBytes"))
    finally:
        con.close()
        netns("set-rate", "none")
        site.stop_vm()
        shutil.rmtree(site.home, ignore_errors=True)
    return r


def check_in_after_session(site, rate):
    """A session over the unshaped link (resume, one workload run, suspend), then `isr checkin` alone over the shaped
    one: how much of the link a check-in uses for what a session changed (memory image and dirty chunks)."""
    checked_in = False
    try:
        suspend = suspended_session(site, boot=False, drop=False, resume_flags=("--prefetch", "none"))
        netns("set-rate", rate)
        t = time.monotonic()
        out = json.loads(site.isr("checkin", site.parcel, "--json").stdout)
        seconds = time.monotonic() - t
        checked_in = True
    finally:
        netns("set-rate", "none")
        if not checked_in:  # the lock and the suspended version would stop the next run
            site.stop_vm()
        site.isr("logout", check=False)
        shutil.rmtree(site.home, ignore_errors=True)
    return {"suspend": suspend, "checkin": out, "checkin_seconds": round(seconds, 2), "checkin_bytes": out.get("bytesUploaded")}


def run_plain(kind, rate, rundir, with_workload, st):
    """local: QEMU from the local state file with a qcow2 overlay on the local disk (local-machine: with isr's devices). isr1: copy both compressed files
    over the link (ISR-1), then resume locally. nbdkit: copy the compressed state, disk demand-paged by nbdkit-curl
    from nginx, local qcow2 overlay."""
    os.makedirs(rundir, exist_ok=True)
    overlay = os.path.join(rundir, "overlay.qcow2")
    nbdkit = None
    r = {}
    if rate:
        netns("set-rate", rate)
    settle_memory()
    counters, faults = vmstat(), process_faults()
    t0 = time.monotonic()
    extra = ISR_MACHINE_ARGS if kind == "local-machine" else ()
    if kind in ("local", "local-machine"):
        ref = state_path(kind)
        base, state = os.path.join(ref, "disk.img"), f"cat {ref}/mem.state"
        sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay])
        disk, fmt, ns = overlay, "qcow2", None
    else:
        url = f"http://{SRV_IP}:{HTTP_PORT}"
        mem = os.path.join(rundir, "mem.state.zst")
        if kind == "isr1":
            disk, fmt = os.path.join(rundir, "disk.img"), "raw"
            sh(["bash", "-c", f"set -o pipefail; curl -sf {url}/disk.img.zst | zstd -dq --sparse -o {disk}"], ns=SITE_NS)
            sh(["curl", "-sf", "-o", mem, f"{url}/mem.state.zst"], ns=SITE_NS)
        else:
            sock = os.path.join(rundir, "nbd.sock")
            nbdkit = subprocess.Popen(["ip", "netns", "exec", SITE_NS, "nbdkit", "-f", "-r", "-U", sock, "curl", f"url={url}/disk.raw"],
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(rundir, "nbdkit.err"), "w"))
            for _ in range(300):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", f"nbd+unix:///?socket={sock}", "-F", "raw", overlay])
            disk, fmt = overlay, "qcow2"
            sh(["curl", "-sf", "-o", mem, f"{url}/mem.state.zst"], ns=SITE_NS)
        state, ns = f"zstd -dc {mem}", SITE_NS
        r["copied_s"] = round(time.monotonic() - t0, 3)
    vm = PlainVm(os.path.join(rundir, "vm"), disk, fmt, ns=ns, incoming=f"exec:{state}", extra=extra)
    try:
        vm.qmp.wait_migration()  # incoming: status goes to completed
        vm.qmp.cmd("cont")
        t_cont = time.monotonic()
        t_pong = ping(vm.console, vm.alive)
        r.update(resume_s=round(t_pong - t0, 3), resume_to_cont_s=round(t_cont - t0, 3), qemu_cpu_at_pong=qemu_cpu_ms(vm.qemu_pid()),
                 vmstat_at_pong=vmstat_delta(counters), faults_at_pong=process_faults_delta(faults))
        if with_workload:
            w, g = workload(vm.console, vm.alive)
            r.update(workload_s=round(w, 2), guest_seconds=g)
    finally:
        vm.kill()
        if nbdkit is not None and nbdkit.poll() is None:
            nbdkit.terminate()
            try:
                nbdkit.wait(10)
            except subprocess.TimeoutExpired:
                nbdkit.kill()
        netns("set-rate", "none")
        shutil.rmtree(rundir, ignore_errors=True)
    return r


# ------------------------------------------------------------------ the matrix
def plan():
    """(cell, rate, target runs, workload in every run). Passes go over this list in order, so runs of different
    cells alternate (A B C … A B C …)."""
    # isr over the unshaped veth: its own fixed cost (CLI, daemon, keys, HTTPS, decode, QEMU load) with ~no link time.
    # The local reference comes back before each bandwidth: T_local is the yardstick, and the host's load drifts.
    p = [("local", None, 9, True), ("isr:demand", "none", 3, False)]
    for rate in ("10mbit", "100mbit"):
        p.append(("local", None, 9, True))
        for c in ("isr:demand", "isr:demand+ws", "isr:proactive", "peer:nbdkit"):
            if c == "isr:proactive" and rate == "10mbit":
                p.append(("local-machine", None, 5, True))
            p.append((c, rate, 5, True))
        if rate == "10mbit":
            p.append(("isr:demand+ws-nohead", rate, 5, True))
        # Lookaside cells next to plain demand on the same link: media and jukebox at 10 Mbit/s (and 1 below), the
        # stale dongle at 100 Mbit/s, where isr's fetch wait is smallest and so an added cost shows most.
        p += [(c, rate, 3, True) for c in LOOKASIDE_WORKLOAD] if rate == "10mbit" else [("isr:demand+staledongle", rate, 5, True)]
        # After a baseline or ISR-1 copy the guest runs from local data: one workload run checks that, latency is the point.
        p += [("isr:baseline", rate, 3, rate == "100mbit"), ("peer:isr1", rate, 3, False)]
    p += [("local", None, 9, True), ("isr:demand", "1mbit", 3, False), ("isr:demand+ws", "1mbit", 2, False), ("isr:proactive", "1mbit", 2, False),
          ("peer:nbdkit", "1mbit", 1, False), ("isr:hoard", "100mbit", 1, False), ("isr:hoard", "10mbit", 1, False),
          ("isr:checkin", "100mbit", 3, False), ("isr:checkin", "10mbit", 3, False), ("isr:checkin", "1mbit", 2, False),
          ("isr:demand+ws", "1mbit-workload", 1, True), ("isr:demand", "1mbit-workload", 2, True)]
    p += [(c, "1mbit-workload", 2, True) for c in LOOKASIDE_WORKLOAD]
    return p


def only(items, keys):
    """The plan's items for KEYS, in plan order. A local reference right before another (or at the end) is dropped:
    in the full plan other cells stood between them, and a subset's passes should alternate local and isr runs too."""
    kept = [p for p in items if key(p[0], p[1]) in keys]
    if all(p[0] == "local" for p in kept):
        return kept
    return [p for i, p in enumerate(kept) if p[0] != "local" or (i + 1 < len(kept) and kept[i + 1][0] != "local")]


LOOKASIDE_WORKLOAD = ("isr:demand+media", "isr:demand+jukebox")  # workload time with a lookaside, at 10 and 1 Mbit/s


def key(cell, rate):
    return f"{cell}@{rate or 'local'}"


def load_results(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a kill: that run is done again
    return out


def expected_seconds(results, cell, rate, with_workload):
    done = [r for r in results if r.get("key") == key(cell, rate) and "error" not in r and "superseded" not in r]
    if done:
        return statistics.median(r.get("elapsed_s", 0) for r in done)
    rough = {"100mbit": 120, "10mbit": 250, "1mbit": 250, "1mbit-workload": 900}.get(rate, 100)
    return rough + (90 if with_workload else 0)


def run_matrix(args):
    st = read_state()
    procs = start_services(st)
    try:
        items = plan() if not args.only else only(plan(), args.only.split(","))
        cells = {p[0] for p in items}
        prepare_parcel(st, args.image)
        if cells & {"local", "peer:isr1", "peer:nbdkit"}:  # another boot and workload run under TCG: only when needed
            prepare_local(st, args.image)
        if "local-machine" in cells:
            prepare_local_machine(st, args.image)
        procs += prepare_lookaside(st, args.image, cells)
        if "isr:checkin" in cells:
            prepare_checkin_parcel(st, args.image)
        results = load_results(args.results)
        deadline = calendar.timegm(time.strptime(args.deadline, "%Y-%m-%dT%H:%M")) if args.deadline else None
        max_target = max(p[2] for p in items)
        occurrences = {}
        for cell, rate, *_ in items:
            occurrences[key(cell, rate)] = occurrences.get(key(cell, rate), 0) + 1
        for pass_no in range(1, max_target + 1):
            seen = {}
            for cell, rate, target, with_workload in items:
                with_workload = with_workload and not args.latency_only
                k = key(cell, rate)
                seen[k] = seen.get(k, 0) + 1
                if os.path.exists(state_path("stop")):
                    log("stop file found: stopping between runs")
                    return
                done = sum(1 for r in results if r.get("key") == key(cell, rate) and "error" not in r and "superseded" not in r)
                # a cell listed m times gets up to m runs per pass
                if done >= min(target, (pass_no - 1) * occurrences[k] + seen[k]) or done >= (args.max_runs or 99):
                    continue
                est = expected_seconds(results, cell, rate, with_workload)
                if deadline and time.time() + est > deadline:
                    log(f"skip {key(cell, rate)}: ~{est:.0f} s would pass the deadline")
                    continue
                log(f"pass {pass_no}: {key(cell, rate)} run {done + 1}/{target} (load {load_avg():.1f})")
                # Short: the site's ISR_HOME lies under it, and isr refuses one too long for its unix sockets.
                rundir = state_path(f"runs/{int(time.time())}")
                t = time.monotonic()
                rec = {"key": key(cell, rate), "cell": cell, "rate": rate or "local", "run": done + 1, "workload": with_workload,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_before": load_avg(),
                       "settle_s": SETTLE_SECONDS, "warm_mib": WARM_MIB, "rundir": rundir}
                try:
                    kind, name = cell.split(":") if ":" in cell else ("plain", cell)
                    link = rate.split("-")[0] if rate else None  # "1mbit-workload": a separate target on the same link
                    rec["rate"] = link or "local"
                    if kind == "isr":
                        rec.update(run_isr(name, link, rundir, with_workload, st))
                    else:
                        rec.update(run_plain(name, link, rundir, with_workload, st))
                except Exception as e:  # noqa: BLE001 - recorded, the matrix goes on
                    rec["error"] = str(e)[-1500:]
                    log(f"  error: {rec['error'][:300]}")
                rec["elapsed_s"] = round(time.monotonic() - t, 1)
                rec["load_after"] = load_avg()
                with open(args.results, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                results.append(rec)
                log(f"  resume {rec.get('resume_s')} s, workload {rec.get('workload_s')} s, wait {rec.get('guest_wait_s')} s, took {rec['elapsed_s']} s")
        state = dict(st)
        state.pop("fingerprint", None)
        json.dump(state, open(args.results.replace(".jsonl", "-setup.json"), "w"), indent=1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def main():
    global ROOT, WORK, ISR, SERVER
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "render"])
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", help="scratch directory (server data, sites, reference state)")
    ap.add_argument("--image", help="the realistic guest's disk.img")
    ap.add_argument("--results", required=True)
    ap.add_argument("--deadline", help="UTC YYYY-MM-DDTHH:MM: start no run expected to end after it")
    ap.add_argument("--only", help="comma-separated cell keys, e.g. isr:demand@10mbit")
    ap.add_argument("--max-runs", type=int, help="at most this many runs per cell (a smoke run: 1)")
    ap.add_argument("--latency-only", action="store_true", help="resume latency alone: no workload run after the resume")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of idling before each timed resume, isr and peers alike (see settle_memory; 0: none)")
    ap.add_argument("--warm-memory", type=int, default=0, metavar="MIB",
                    help="after the idle, touch and free this many MiB right before each timed resume (see settle_memory; 0: none)")
    ap.add_argument("--out", help="render: the Markdown file")
    ap.add_argument("--page", choices=["policies", "lookaside"], default="policies",
                    help="render: the whole policies page, or the lookaside cells alone (docs/benchmarks/lookaside-workload.md)")
    args = ap.parse_args()
    ROOT = args.root
    global SETTLE_SECONDS, WARM_MIB
    SETTLE_SECONDS, WARM_MIB = args.settle, args.warm_memory
    ISR, SERVER = os.path.join(ROOT, "build/Isr.Cli/isr"), os.path.join(ROOT, "build/Isr.Server/isr-server")
    if args.command == "render":
        import policies_render
        (policies_render.render_lookaside if args.page == "lookaside" else policies_render.render)(load_results(args.results), args.results, args.out)
        return
    WORK = os.path.abspath(args.work)
    os.makedirs(WORK, exist_ok=True)
    if os.path.exists(state_path("stop")):
        os.unlink(state_path("stop"))
    # SIGTERM ends the run through the finally blocks: the VM, nbdkit, server and nginx are stopped by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_matrix(args)


if __name__ == "__main__":
    main()
