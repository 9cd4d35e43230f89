"""Real workloads: a podman container untarring, stat'ing and deleting /usr/include in its own layer
(podman's native kernel overlay against fuse-overlayfs and laminafs as overlay.mount_program), each
run on a fresh ext4; and a build of this project's own source tree inside each contender's mount.
"""

import atexit
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

from . import contenders, trees
from .jobs import C_LOCALE, JobError

# ---------------------------------------------------------------------------------------------
# A fresh ext4 per run

EXT4_MKFS = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]


def _run(argv, what, timeout=120, **kw):
    """Runs argv; a failure raises JobError with its last line of output."""
    try:
        res = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
    except subprocess.TimeoutExpired:
        raise JobError(f"{what}: no answer in {timeout} s") from None
    if res.returncode != 0:
        said = contenders._one_line(res.stderr + res.stdout)
        raise JobError(f"{what}: {said or f'exit status {res.returncode}'}")
    return res.stdout


class FreshExt4:
    """An ext4 made for one run in a sparse file on a loop device, mounted at `path`. ext4 slows
    creates for minutes after a mass delete, which would otherwise handicap whichever contender runs
    after another's `rm -rf`."""

    def __init__(self, root, size_bytes, bytes_per_inode=None, direct_io=False):
        self.image = os.path.join(root, "ext4.img")
        self.path = os.path.join(root, "fs")
        self.size = size_bytes
        self.bytes_per_inode = bytes_per_inode
        # Direct I/O from the loop device to its file: a cold read then goes to the disk once,
        # as on a real block device, not through a second page cache of the file.
        self.direct_io = direct_io
        self.device = None

    def make(self):
        os.makedirs(self.path, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        inodes = ["-i", str(self.bytes_per_inode)] if self.bytes_per_inode else []
        _run(EXT4_MKFS + inodes + [self.image], "mkfs.ext4")
        dio = ["--direct-io=on"] if self.direct_io else []
        self.device = _run(["losetup", "--find", "--show"] + dio + [self.image], "losetup").strip()
        _run(["mount", "-t", "ext4", self.device, self.path], "mount ext4")

    def remove(self):
        """Unmounts whatever is still mounted inside it (lazily if it must), then it, then frees
        the loop device and the file."""
        for mnt in sorted(trees._mountpoints_below(self.path), reverse=True):
            _unmount(mnt)
        if contenders.is_mountpoint(self.path):
            _unmount(self.path)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], capture_output=True)
            self.device = None
        if os.path.exists(self.image):
            os.unlink(self.image)


def _unmount(path):
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


# ---------------------------------------------------------------------------------------------
# Counting FUSE requests by operation: the kernel's fuse_request_send tracepoint (Linux 6.15+),
# filtered to one connection, in a tracing instance of its own.

TRACEFS = "/sys/kernel/tracing"
_tracefs = []  # where tracefs is for this run, once found or mounted


def tracefs():
    """The tracefs directory, or None without it or the fuse events. Where the system has not
    mounted it, it is mounted for this run in a directory of its own under /run (unmounted and
    removed when this process ends: call it first in the process that lives on), which leaves
    /sys/kernel/tracing as it was."""
    if not _tracefs:
        if os.path.isdir(os.path.join(TRACEFS, "instances")):
            _tracefs.append(TRACEFS)
        else:
            private = tempfile.mkdtemp(prefix="lamina-perf-tracefs-", dir="/run")
            res = subprocess.run(["mount", "-t", "tracefs", "nodev", private], capture_output=True)
            if res.returncode != 0:
                os.rmdir(private)
                return None
            atexit.register(_unmount_private_tracefs, private)
            _tracefs.append(private)
    base = _tracefs[0]
    return base if os.path.isdir(os.path.join(base, "events", "fuse", "fuse_request_send")) else None


def _unmount_private_tracefs(path):
    subprocess.run(["umount", path], capture_output=True)
    try:
        os.rmdir(path)
    except OSError:
        pass


class FuseRequestTrace:
    """Counts the requests the kernel sends one FUSE connection, by operation, from when start()
    is called. Tracing costs well under a microsecond per request, against round trips of tens."""

    def __init__(self, name, connection):
        self.connection = connection  # the mount's anonymous device number (major 0)
        self.name = name  # of the tracing instance
        self.dir = None
        self.pipe = None
        self.pending = b""

    def start(self):
        base = tracefs()
        if base is None:
            return False
        self.dir = os.path.join(base, "instances", self.name)
        try:
            os.mkdir(self.dir)
            event = os.path.join(self.dir, "events", "fuse", "fuse_request_send")
            # Events wait in the buffer until the phase ends: room for about a million of them.
            per_cpu_kib = max(8192, min(65536, 262144 // (os.cpu_count() or 1)))
            self._write("buffer_size_kb", str(per_cpu_kib))
            self._write(os.path.join(event, "filter"), f"connection == {self.connection}")
            self._write(os.path.join(event, "enable"), "1")
            self.pipe = os.open(os.path.join(self.dir, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self.stop()
            return False
        return True

    def _write(self, name, value):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(value)

    def take(self):
        """{operation: requests} since the last take(), or None if events were lost."""
        counts = {}
        while True:
            try:
                data = os.read(self.pipe, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.pending += data
            lines = self.pending.split(b"\n")
            self.pending = lines.pop()
            for line in lines:
                found = re.search(rb"\(FUSE_(\w+)\)", line)
                if found:
                    op = found.group(1).decode()
                    counts[op] = counts.get(op, 0) + 1
        return None if self._lost() else counts

    def _lost(self):
        cpus = os.path.join(self.dir, "per_cpu")
        for cpu in os.listdir(cpus):
            with open(os.path.join(cpus, cpu, "stats")) as f:
                for line in f:
                    if line.startswith("overrun:") and int(line.split()[1]):
                        return True
        return False

    def stop(self):
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        self.remove_instance()

    def remove_instance(self):
        """Takes the tracing instance away, also one a killed run left behind."""
        if not self.dir and _tracefs:
            self.dir = os.path.join(_tracefs[0], "instances", self.name)
        if self.dir and os.path.isdir(self.dir):
            try:
                self._write("events/fuse/fuse_request_send/enable", "0")
                os.rmdir(self.dir)
            except OSError:
                pass


def fuse_connection(under):
    """The device number of the FUSE mount inside `under` (the container's root), or None."""
    real = os.path.realpath(under).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype.startswith("fuse") and fields[4].startswith(real):
                major, minor = (int(n) for n in fields[2].split(":"))
                return (major << 20) | minor
    return None


# ---------------------------------------------------------------------------------------------
# podman

PODMAN_IMAGE = "localhost/lamina-perf/busybox:1"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "tar", "find", "stat", "rm", "echo", "cat", "mkdir")
PODMAN_PHASES = ("untar", "stat", "rm")
# The container tells the harness (through a FIFO) where it is and waits for a reply before going
# on: the harness times every phase and reads the daemon's counters between them, and the time it
# takes doing so is not counted.
PODMAN_SCRIPT = """
step() { echo "$1" >/sync/to_host; read -r go </sync/to_ctr; }
step ready
mkdir /work && tar -xf /input/input.tar -C /work || exit 1
step untar
find /work -type f -exec stat {} + >/dev/null || exit 1
step stat
rm -rf /work || exit 1
step rm
"""


def static_busybox():
    """None if /bin/busybox is a static binary (it runs alone in the image), else why not."""
    try:
        with open(BUSYBOX, "rb") as f:
            head = f.read(4)
    except OSError:
        return f"{BUSYBOX} missing (apt-get install busybox-static)"
    if head != b"\x7fELF":
        return f"{BUSYBOX} is not an ELF binary"
    out = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True)
    if "not a dynamic executable" in out.stdout + out.stderr or "statically linked" in out.stdout:
        return None
    return f"{BUSYBOX} is not static (apt-get install busybox-static)"


def make_busybox_rootfs_tar(root):
    """The image's one layer: a static busybox and its applets, for `podman import`."""
    rootfs = os.path.join(root, "busybox-rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    os.makedirs(os.path.join(rootfs, "tmp"))
    subprocess.run(["cp", BUSYBOX, os.path.join(rootfs, "bin", "busybox")], check=True)
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tar = os.path.join(root, "busybox-rootfs.tar")
    subprocess.run(
        ["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-cf", tar, "."],
        check=True,
    )
    return tar


def tar_entries(tar):
    with tarfile.open(tar) as t:
        return sum(1 for _ in t)


def podman_unavailable():
    """None when the podman job can run here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (a fresh ext4 per run, podman --root)"
    for prog in ("podman", "runc", "mkfs.ext4", "losetup"):
        if not shutil.which(prog):
            return f"{prog} not installed"
    return static_busybox()


# Contenders the podman job has a storage setup for, and the mount program each gives podman.
def mount_program(contender):
    """(program or None for podman's native kernel overlay, why it cannot run)."""
    if contender.kind == "kernel":
        return None, None
    if contender.kind == "fuse":
        return contender.binary, None
    return None, "podman has no storage driver for a plain directory"


LAMINAFS_WRAPPER = """#!/bin/sh
# podman's overlay.mount_program for perf/run: laminafs in the foreground with its statistics going
# to a log (daemonized, it would send them to /dev/null), detached from podman like a daemon.
for mnt; do :; done
setsid {binary} -f {options}"$@" </dev/null >>{log} 2>&1 &
echo $! >>{pids}
while ! mountpoint -q "$mnt"; do
    kill -0 $! 2>/dev/null || exit 1
    sleep 0.01
done
"""


class PodmanTarget:
    """What one podman run of one contender needs: a fresh ext4 holding podman's store, its config
    files, the busybox image imported, and the FIFOs the container reports on."""

    def __init__(self, contender, root, size_bytes, rootfs_tar, input_tar):
        self.contender = contender
        self.root = root
        self.fs = FreshExt4(root, size_bytes)
        self.rootfs_tar = rootfs_tar
        self.input_tar = input_tar
        self.program, self.why_not = mount_program(contender)
        self.log = os.path.join(root, "laminafs.log")
        self.pids = os.path.join(root, "laminafs.pids")
        self.path = self.fs.path  # where the job's files are (Runner reads .path)
        self.pid = None  # no daemon of ours before the container starts
        self.trace_name = f"lamina-perf-{os.getpid()}"  # the tracing instance, if any
        self.run_root = None
        self.argv = None  # podman with this store's options, once prepare() has made it
        self.env = None

    def _wrapped_program(self):
        """laminafs goes through a wrapper that keeps its statistics; others as they are."""
        if not self.program or not os.path.basename(self.program).startswith("laminafs"):
            return self.program
        extra = self.contender.extra_options.lstrip(",")
        wrapper = os.path.join(self.root, "mount-program")
        with open(wrapper, "w") as f:
            f.write(
                LAMINAFS_WRAPPER.format(
                    binary=shlex.quote(self.program),
                    options=f"-o {shlex.quote(extra)} " if extra else "",
                    log=shlex.quote(self.log),
                    pids=shlex.quote(self.pids),
                )
            )
        os.chmod(wrapper, 0o755)
        return wrapper

    def prepare(self):
        trees.remove_tree(self.root)
        os.makedirs(self.root)
        self.fs.make()
        base = self.fs.path
        # podman wants its runroot's path under 50 characters; /run is where it usually is.
        self.run_root = tempfile.mkdtemp(prefix="lamina-perf-", dir="/run")
        # Beside the ext4, not on it: the FIFOs, and the input (a hard link), read-only in the
        # container.
        for d in ("sync", "input"):
            os.makedirs(os.path.join(self.root, d))
        for fifo in ("to_host", "to_ctr"):
            os.mkfifo(os.path.join(self.root, "sync", fifo))
        os.link(self.input_tar, os.path.join(self.root, "input", "input.tar"))
        program = self._wrapped_program()
        if program:
            tracefs()  # mounted (if need be) by this process, which outlives the timed child's
        conf = os.path.join(self.root, "storage.conf")
        with open(conf, "w") as f:
            f.write(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/root"\n'
                f'runroot = "{self.run_root}/run"\n'
            )
            if program:
                f.write(f'[storage.options.overlay]\nmount_program = "{program}"\n')
        with open(os.path.join(self.root, "containers.conf"), "w") as f:
            f.write("[containers]\ndefault_ulimits = []\n")
        self.env = dict(
            C_LOCALE,
            CONTAINERS_STORAGE_CONF=conf,
            CONTAINERS_CONF=os.path.join(self.root, "containers.conf"),
        )
        self.argv = [
            "podman",
            "--root",
            f"{base}/root",
            "--runroot",
            f"{self.run_root}/run",
            "--tmpdir",
            f"{self.run_root}/tmp",
            "--storage-driver",
            "overlay",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]
        if program:
            # --storage-driver drops storage.conf's driver options: they go on the command line too.
            self.argv += ["--storage-opt", f"overlay.mount_program={program}"]
        self.podman(["import", "--quiet", self.rootfs_tar, PODMAN_IMAGE], "podman import")

    def podman(self, args, what, timeout=120):
        return _run(self.argv + args, what, timeout=timeout, env=self.env)

    def run_argv(self):
        return self.argv + [
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "-v",
            f"{self.root}/sync:/sync",
            "-v",
            f"{self.root}/input:/input:ro",
            PODMAN_IMAGE,
            "sh",
            "-c",
            PODMAN_SCRIPT,
        ]

    def daemon_pid(self):
        """The FUSE daemon serving the container's root: the wrapper's note for laminafs, else the
        process of the mount program with a path of this store among its arguments."""
        if not self.program:
            return None
        try:
            with open(self.pids) as f:
                return int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        name = os.fsencode(os.path.basename(self.program))
        return contenders.find_process(
            self.fs.path + "/", lambda argv: os.path.basename(argv[0]) == name
        )

    def requests_served(self, pid):
        """laminafs's count of requests served over io_uring (its SIGUSR1 statistics line), or
        None: no daemon of ours, no line within 2 s, or no request came over io_uring."""
        if not pid or not os.path.exists(self.log):
            return None
        with open(self.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = f.tell()
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                return None
            deadline = time.monotonic() + 2
            said = b""
            while time.monotonic() < deadline:
                f.seek(start)
                said = f.read()
                found = re.search(rb"laminafs: stats: .*uring_requests=(\d+)", said)
                if found:
                    return int(found.group(1))
                time.sleep(0.01)
        return None

    def abort(self):
        pid = self.daemon_pid()
        if pid:
            for mnt in trees._mountpoints_below(self.fs.path):
                contenders.abort_fuse_connection(mnt)

    def unmount(self):
        """Takes everything down: the container, the daemon's mount, the ext4, the loop device."""
        if self.argv:  # never without --root: that would be the machine's own containers
            try:
                subprocess.run(
                    self.argv + ["rm", "-af", "-t", "0"],
                    env=self.env,
                    capture_output=True,
                    timeout=60,
                )
            except (subprocess.TimeoutExpired, OSError):
                pass
        FuseRequestTrace(self.trace_name, None).remove_instance()
        self.fs.remove()
        if self.run_root:
            for mnt in sorted(trees._mountpoints_below(self.run_root), reverse=True):
                _unmount(mnt)
            trees.remove_tree(self.run_root)
        trees.remove_tree(self.root)

    def daemon_cpu_seconds(self):
        return None  # the job reads it between the container's phases


def podman_workload(ctx):
    """The timed podman run: total wall time (less the harness's pauses at the container's
    reports), each phase, and for FUSE mount programs the daemon's CPU seconds and, for laminafs,
    its requests per tar entry over the three phases."""
    target = ctx.target
    sync = os.path.join(target.root, "sync")
    to_host = os.open(os.path.join(sync, "to_host"), os.O_RDWR | os.O_NONBLOCK)
    to_ctr = os.open(os.path.join(sync, "to_ctr"), os.O_RDWR)
    out_path = os.path.join(target.root, "podman-run.log")
    with open(out_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            target.run_argv(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=target.env,
        )
    deadline = time.monotonic() + ctx.timeout
    phases, paused, pending = {}, 0.0, b""
    go_at = None
    pid = cpu0 = req0 = cpu1 = req1 = None
    trace, traced = None, {}  # requests by operation, per phase
    try:
        while len(phases) < len(PODMAN_PHASES):
            if b"\n" not in pending:
                if proc.poll() is not None:
                    raise JobError(f"podman run: {_last_line(out_path, proc.returncode)}")
                if time.monotonic() > deadline:
                    raise JobError(f"podman run: no report in {ctx.timeout:.0f} s")
                ready, _, _ = select.select([to_host], [], [], 0.2)
                if ready:
                    pending += os.read(to_host, 4096)
                continue
            line, pending = pending.split(b"\n", 1)
            arrived = time.perf_counter()
            step = line.decode().strip()
            if step == "ready":
                pid = target.daemon_pid()
                cpu0 = contenders.process_cpu_seconds(pid) if pid else None
                req0 = target.requests_served(pid)
                connection = fuse_connection(target.fs.path) if target.program else None
                if connection is not None:
                    trace = FuseRequestTrace(target.trace_name, connection)
                    if not trace.start():
                        trace = None
            else:
                phases[step] = arrived - go_at
                if trace:
                    traced[step] = trace.take()
            if step == PODMAN_PHASES[-1] and pid:
                cpu1 = contenders.process_cpu_seconds(pid)
                req1 = target.requests_served(pid)
            os.write(to_ctr, b"go\n")
            go_at = time.perf_counter()
            paused += go_at - arrived
        rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
        total = time.perf_counter() - start - paused
        if rc != 0:
            raise JobError(f"podman run: {_last_line(out_path, rc)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(to_host)
        os.close(to_ctr)
        if trace:
            trace.stop()
    extra = {}
    cpu = None
    if cpu0 is not None and cpu1 is not None:
        cpu = cpu1 - cpu0
        extra["daemon CPU s"] = cpu
    entries = tar_entries(ctx.include_tar)
    if traced and all(counts is not None for counts in traced.values()):
        extra.update(requests_per_file(traced, entries))
    elif req0 is not None and req1 is not None and req1 > req0:
        extra["requests/file"] = (req1 - req0) / entries
    return {"value": total, "parts": phases, "cpu": cpu, "extra": extra}


def requests_per_file(traced, entries):
    """The traced requests per tar entry: in all, in each phase, and of each operation."""
    figures = {"requests/file": sum(sum(c.values()) for c in traced.values()) / entries}
    by_op = {}
    for phase, counts in traced.items():
        figures[f"{REQUESTS_IN}{phase}"] = sum(counts.values()) / entries
        for op, n in counts.items():
            by_op[op] = by_op.get(op, 0) + n
    for op, n in by_op.items():
        figures[f"{REQUESTS_OF}{op}"] = n / entries
    return figures


# Names of the detail figures of the podman job (report.py lays them out as a table of their own).
REQUESTS_IN = "requests/file in "
REQUESTS_OF = "requests/file of "


def headline_figures(extra):
    """A job's further figures that its cell and progress line show: not the detail."""
    return {
        name: v
        for name, v in (extra or {}).items()
        if not name.startswith((REQUESTS_IN, REQUESTS_OF))
    }


def _last_line(path, rc):
    with open(path, errors="replace") as f:
        said = contenders._one_line(f.read())
    return said or f"exit status {rc}"


# ---------------------------------------------------------------------------------------------
# Building this project


BUILD_PHASES = ("setup", "compile")


def meson_build(ctx):
    """meson setup and a 2-job compile of the source tree in the mount, the build directory beside
    it in the upper layer; ccache is kept out so every contender compiles everything."""
    src = os.path.join(ctx.mnt, trees.SOURCE_DIR)
    build = os.path.join(ctx.mnt, "B")
    env = dict(C_LOCALE, CCACHE_DISABLE="1")
    start = time.perf_counter()
    phases = {}
    for phase, argv in zip(
        BUILD_PHASES,
        (
            ["meson", "setup", build, src],
            ["meson", "compile", "-C", build, "-j", "2"] + list(ctx.profile.build_targets),
        ),
    ):
        began = time.perf_counter()
        left = ctx.timeout - (began - start)
        _run(argv, " ".join(argv[:2]), timeout=max(left, 1), env=env)
        phases[phase] = time.perf_counter() - began
    return {"value": time.perf_counter() - start, "parts": phases}


# ---------------------------------------------------------------------------------------------
# The jobs

_busybox_rootfs = {}  # workdir -> the image's layer, made once per run


def podman_target(contender, runner):
    """A fresh ext4 and podman store for one run of the podman job (Job.target)."""
    root = os.path.join(runner.workdir, "podman", contender.name)
    if runner.workdir not in _busybox_rootfs:
        _busybox_rootfs[runner.workdir] = make_busybox_rootfs_tar(
            os.path.join(runner.workdir, "podman-image")
        )
    target = PodmanTarget(
        contender,
        root,
        runner.profile.podman_fs_bytes,
        _busybox_rootfs[runner.workdir],
        runner.include_tar,
    )
    try:
        target.prepare()
    except BaseException:
        target.unmount()
        raise
    return target


def workload_jobs(profile, include):
    """The podman job and the build job, with this profile's sizes."""
    from .jobs import read_tar, timed

    if profile.build_targets:
        what = "the targets " + ", ".join(profile.build_targets)
    else:
        what = "everything"
    return [
        timed(
            "podman",
            "workload",
            f"podman run (busybox) on a fresh ext4: tar -xf of {include} into the container's "
            "layer, find -type f -exec stat, rm -rf; podman's native kernel overlay, else "
            "overlay.mount_program",
            None,
            podman_workload,
            ("cold",),
            target=podman_target,
            parts=PODMAN_PHASES,
            prime=read_tar,
            unavailable=podman_unavailable,
            refuses=lambda contender: mount_program(contender)[1],
            needs=("tar",),
        ),
        timed(
            "build",
            "workload",
            f"meson setup and meson compile -j 2 ({what}) of this project's source tree in a "
            "lower layer, the build directory in the upper",
            "src",
            meson_build,
            ("cold",),
            needs=("meson", "ninja", "c++", "git"),
            parts=BUILD_PHASES,
            timeout=profile.build_timeout,
        ),
    ]
