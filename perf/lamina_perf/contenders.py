"""The filesystems compared: a plain directory, kernel overlayfs, fuse-overlayfs and laminafs.

Each contender mounts a layer stack over its own hard-linked copy of the template layers with a fresh
upper and work directory every time, and knows how to unmount itself, lazily if it must.
"""

import atexit
import os
import re
import shutil
import signal
import subprocess
import time

from . import trees

MOUNT_TIMEOUT = 30  # seconds a mount command may take
EXIT_TIMEOUT = 10  # seconds a FUSE daemon gets to exit after its unmount

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every mountpoint this process has mounted and not yet unmounted: unmount_all() empties it.
_active = {}
FUSECTL = "/sys/fs/fuse/connections"
_mounted_fusectl = False  # mounted by abort_fuse_connection(), so unmount_all() takes it down


class MountError(Exception):
    pass


def _one_line(text):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else ""


def _mountinfo_entry(path):
    """The /proc/self/mountinfo fields of the mount exactly at path, or None."""
    real = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            if mount_point == real:
                found = fields  # the last one is the one on top
    return found


def is_mountpoint(path):
    return _mountinfo_entry(path) is not None


def fs_type(path):
    """The type of the filesystem holding path (longest mountpoint prefix in mountinfo)."""
    real = os.path.realpath(path)
    best, best_type = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            fstype = fields[fields.index("-") + 1]
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, best_type = mount_point, fstype
    return best_type


def _process_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


def find_process(text, accept):
    """A process with text in its command line (pgrep -f) whose argv accept() takes, or None."""
    res = subprocess.run(["pgrep", "-f", "--", re.escape(text)], capture_output=True, text=True)
    for word in res.stdout.split():
        pid = int(word)
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except FileNotFoundError:
            continue
        if accept(argv):
            return pid
    return None


def daemon_pid(mountpoint):
    """The FUSE daemon serving mountpoint: found with pgrep -f, then confirmed by an argv entry equal
    to the mountpoint (pgrep alone would also match .../mnt2 or a find running inside it)."""
    return find_process(mountpoint, lambda argv: os.fsencode(mountpoint) in argv)


def process_cpu_seconds(pid):
    """utime + stime of pid and all its threads, in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    # After the comm field: state is fields[0], so utime (field 14) is fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_peak_rss_mib(pid):
    """VmHWM of pid in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return None


def abort_fuse_connection(mountpoint):
    """Aborts the FUSE connection behind mountpoint, so every process blocked on it gets ENOTCONN.
    Used when a daemon stops answering; needs the fusectl filesystem (mounted here if it is not)."""
    entry = _mountinfo_entry(mountpoint)
    if entry is None:
        return False
    minor = entry[2].split(":")[1]
    global _mounted_fusectl
    connections = FUSECTL
    if os.path.isdir(connections) and not os.listdir(connections):
        res = subprocess.run(
            ["mount", "-t", "fusectl", "fusectl", connections], capture_output=True
        )
        _mounted_fusectl = res.returncode == 0
    try:
        with open(os.path.join(connections, minor, "abort"), "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


class Mounted:
    """One mount of a stack: where it is and, for FUSE, the daemon serving it."""

    def __init__(self, contender, path, pid=None):
        self.contender = contender
        self.path = path
        self.pid = pid

    def daemon_cpu_seconds(self):
        return process_cpu_seconds(self.pid) if self.pid else None

    def daemon_peak_rss_mib(self):
        return process_peak_rss_mib(self.pid) if self.pid else None

    def abort(self):
        if self.contender.kind == "fuse":
            abort_fuse_connection(self.path)

    def unmount(self):
        self.contender.unmount(self)


class Contender:
    kind = "dir"

    def __init__(self, name, workroot):
        self.name = name
        self.root = os.path.join(workroot, "contenders", name)
        self.available = True
        self.reason = ""
        self.version = ""
        self._copies = set()

    def describe(self):
        return {
            "available": self.available,
            "reason": self.reason,
            "version": self.version,
            "kind": self.kind,
        }

    def check(self):
        """Sets available/reason/version from what is installed (no mount yet)."""

    def run_dir(self, stack):
        return os.path.join(self.root, stack.name, "run")

    def mount(self, stack, writes=(), mutates=True):
        """A fresh mount of stack; `writes` are files the job writes in place, `mutates` says whether
        it changes the tree at all."""
        raise NotImplementedError

    def unmount(self, mounted):
        _active.pop(mounted.path, None)

    def cleanup(self):
        trees.remove_tree(self.root)


class Plain(Contender):
    """No union at all: the merged tree as one real directory. What the hardware and ext4 give."""

    kind = "dir"

    def check(self):
        self.version = "plain directory"

    def __init__(self, name, workroot):
        super().__init__(name, workroot)
        self._pristine = set()  # stacks whose merged directory no job has changed yet

    def mount(self, stack, writes=(), mutates=True):
        run = self.run_dir(stack)
        path = os.path.join(run, "mnt")
        # Rebuilding a 100,000-file union for every read-only job would cost more than the job.
        if stack.name not in self._pristine or writes:
            trees.remove_tree(run)
            os.makedirs(run)
            trees.merge_layers(stack, path, copied=set(writes))
            self._pristine.add(stack.name)
        if mutates:
            self._pristine.discard(stack.name)
        return Mounted(self, path)


class OverlayContender(Contender):
    """Something mounted with overlayfs-style lowerdir/upperdir/workdir options over a copy of the
    stack's layers. The mount command runs inside that copy with relative layer paths, which keeps
    a 128-layer option string short."""

    def _layers_copy(self, stack):
        copy = os.path.join(self.root, stack.name)
        if stack.name not in self._copies:
            trees.remove_tree(copy)
            os.makedirs(self.root, exist_ok=True)
            trees.link_copy(stack, copy)
            self._copies.add(stack.name)
        return copy

    def mount(self, stack, writes=(), mutates=True):
        copy = self._layers_copy(stack)
        run = self.run_dir(stack)
        trees.remove_tree(run)
        for d in ("upper", "work", "mnt"):
            os.makedirs(os.path.join(run, d))
        path = os.path.join(run, "mnt")
        options = f"lowerdir={':'.join(stack.layer_names())},upperdir=run/upper,workdir=run/work"
        try:
            self._mount_command(copy, options, path)
            if not is_mountpoint(path):
                raise MountError(f"{self.name}: nothing mounted on {path}")
        except MountError:
            # A daemon that failed, or answered too late, may still be around or even mounted.
            Mounted(self, path, self._find_daemon(path)).unmount()
            raise
        mounted = Mounted(self, path, self._find_daemon(path))
        _active[path] = mounted
        return mounted

    def _find_daemon(self, path):
        return None

    def _run_mount(self, argv, cwd):
        log = os.path.join(self.root, "mount.log")
        os.makedirs(self.root, exist_ok=True)
        # The daemon's stdio goes to a file, not a pipe: a daemon that keeps its stderr open would
        # otherwise hold the pipe, and this process, until it exits.
        with open(log, "a+") as out:
            start = out.tell()
            try:
                res = subprocess.run(
                    argv,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    timeout=MOUNT_TIMEOUT,
                )
                rc = res.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            out.seek(start)
            said = _one_line(out.read())
        if rc != 0:
            why = said or (
                f"exit status {rc}" if rc != "timeout" else f"no answer in {MOUNT_TIMEOUT} s"
            )
            raise MountError(f"{self.name}: mount failed: {why}")


class KernelOverlay(OverlayContender):
    kind = "kernel"

    def check(self):
        self.version = os.uname().release
        if os.geteuid() != 0:
            self.available, self.reason = False, "mount -t overlay needs root"
            return
        with open("/proc/filesystems") as f:
            known = "overlay" in f.read()
        if not known:
            subprocess.run(["modprobe", "overlay"], capture_output=True)

    def _mount_command(self, cwd, options, path):
        self._run_mount(["mount", "-t", "overlay", "overlay", "-o", options, path], cwd)

    def unmount(self, mounted):
        if is_mountpoint(mounted.path):
            res = subprocess.run(["umount", mounted.path], capture_output=True)
            if res.returncode != 0:
                subprocess.run(["umount", "-l", mounted.path], capture_output=True)
        super().unmount(mounted)


class FuseOverlay(OverlayContender):
    """A FUSE daemon taking the same options (fuse-overlayfs, laminafs). It detaches once mounted."""

    kind = "fuse"

    def __init__(self, name, workroot, binary, extra_options=""):
        super().__init__(name, workroot)
        self.binary = binary
        self.extra_options = extra_options  # appended to the overlay options, e.g. ",passthrough"

    def check(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            self.available, self.reason = False, f"{self.binary} not found"
            return
        if not os.path.exists("/dev/fuse"):
            self.available, self.reason = False, "/dev/fuse missing"
            return
        try:
            res = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=10
            )
            text = res.stdout + res.stderr
            lines = [l.strip() for l in text.splitlines() if l.strip()]
            named = [l for l in lines if l.startswith(self.name)] or [
                l for l in lines if "version" in l.lower()
            ]
            line = (named or lines or [""])[0]
            if line.startswith(self.name):
                line = line[len(self.name) :].lstrip(": ")
            self.version = line
        except (OSError, subprocess.TimeoutExpired) as e:
            self.version = f"unknown ({e})"

    def _mount_command(self, cwd, options, path):
        self._run_mount([self.binary, "-o", options + self.extra_options, path], cwd)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mountpoint(path) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _find_daemon(self, path):
        return daemon_pid(path)

    def unmount(self, mounted):
        if is_mountpoint(mounted.path):
            res = subprocess.run(["fusermount3", "-u", mounted.path], capture_output=True)
            if res.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", mounted.path], capture_output=True)
        if mounted.pid:
            deadline = time.monotonic() + EXIT_TIMEOUT
            while _process_alive(mounted.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _process_alive(mounted.pid):
                try:
                    os.kill(mounted.pid, signal.SIGKILL)  # the daemon this run started, by its pid
                except ProcessLookupError:
                    pass
        super().unmount(mounted)


def laminafs_binary(repo_root):
    # Absolute, because the mount command runs inside the stack's directory.
    return os.path.abspath(
        os.environ.get("LAMINAFS") or os.path.join(repo_root, "build", "fs", "laminafs")
    )


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def remember_enable_uring():
    """A root laminafs sets the fuse module's enable_uring to Y itself (FUSE over io_uring by
    default): the run reads the value first and puts it back when it ends, so it leaves the machine
    as it found it. Returns the value read, or None where the kernel has no such parameter."""
    try:
        with open(ENABLE_URING) as f:
            before = f.read().strip()
    except OSError:
        return None
    atexit.register(_write_quietly, ENABLE_URING, before)
    return before


def _write_quietly(path, value):
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


# laminafs: its default options, which are FUSE passthrough (root, Linux 6.9+) and FUSE over
# io_uring (where the kernel offers it, Linux 6.14+). laminafs-plain: both off, every request and
# every read and write through /dev/fuse, as before they were the default.
PLAIN_LAMINAFS_OPTIONS = ",passthrough=off,io_uring=off"
ORDER = ("plain", "kernel", "fuse-overlayfs", "laminafs", "laminafs-plain")


def make_contenders(names, workroot, repo_root):
    made = []
    for name in ORDER:
        if name not in names:
            continue
        if name == "plain":
            made.append(Plain(name, workroot))
        elif name == "kernel":
            made.append(KernelOverlay(name, workroot))
        elif name == "fuse-overlayfs":
            made.append(
                FuseOverlay(
                    name, workroot, shutil.which("fuse-overlayfs") or "/usr/bin/fuse-overlayfs"
                )
            )
        elif name == "laminafs":
            made.append(FuseOverlay(name, workroot, laminafs_binary(repo_root)))
        elif name == "laminafs-plain":
            made.append(
                FuseOverlay(
                    name, workroot, laminafs_binary(repo_root), extra_options=PLAIN_LAMINAFS_OPTIONS
                )
            )
    for c in made:
        c.check()
    return made


def unmount_all():
    """Unmounts everything still mounted by this run (the finally of every run ends here)."""
    for mounted in list(_active.values()):
        try:
            mounted.unmount()
        except Exception:  # keep going: the next mount must still come down
            pass
    _active.clear()
    global _mounted_fusectl
    if _mounted_fusectl:
        subprocess.run(["umount", FUSECTL], capture_output=True)
        _mounted_fusectl = False
