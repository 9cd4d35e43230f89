"""What the figures were measured on: kernel, CPU, memory, filesystem and tool versions."""

import os
import platform
import subprocess

from .contenders import fs_type


def _first_line(argv):
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [l.strip() for l in (res.stdout + res.stderr).splitlines() if l.strip()]
    return lines[0] if lines else ""


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _overlay_parameters():
    base = "/sys/module/overlay/parameters"
    params = {}
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            try:
                with open(os.path.join(base, name)) as f:
                    params[name] = f.read().strip()
            except OSError:
                pass
    return params


def _git_revision(repo_root):
    rev = _first_line(["git", "-C", repo_root, "rev-parse", "--short", "HEAD"])
    if not rev:
        return ""
    dirty = subprocess.run(
        ["git", "-C", repo_root, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return rev + ("+changes" if dirty else "")


def ext4_journal(path):
    """True or False when path is on ext4 with or without a journal; None for another filesystem
    or when the kernel does not say. ext4 without a journal checks, for every inode it allocates,
    whether that inode was freed in the last minute or, with its inode table block dirty, the last
    six minutes (`recently_deleted()` in fs/ext4/ialloc.c), and skips it if so: after a mass
    delete each create scans past the freed inodes, and creates cost O(recent deletes)."""
    if fs_type(path) != "ext4":
        return None
    dev = os.stat(path).st_dev
    try:
        name = os.path.basename(os.readlink(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
        with open(f"/sys/fs/ext4/{name}/journal_task") as f:
            return f.read().strip() != "<none>"
    except OSError:
        return None


def describe_fs(path, fresh):
    """The filesystem the trees are on, as the report says it."""
    kind = fs_type(path)
    journal = ext4_journal(path)
    said = kind
    if journal is not None:
        said += " with a journal" if journal else " without a journal"
    if fresh:
        said += ", made for this run on a loop device"
    return said


def describe(workdir, repo_root, contenders, enable_uring_before=None, fresh_fs=False):
    versions = {c.name: c.version for c in contenders}
    return {
        "kernel": os.uname().release,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "fs_type": describe_fs(workdir, fresh_fs),
        "workdir": os.path.dirname(workdir),
        "fuse_overlayfs": versions.get("fuse-overlayfs")
        or _first_line(["fuse-overlayfs", "--version"]),
        "laminafs": versions.get("laminafs", ""),
        "libfuse": _first_line(["fusermount3", "--version"]).replace(
            "fusermount3 version:", "fusermount3"
        ),
        "fio": _first_line(["fio", "--version"]),
        "python": platform.python_version(),
        "overlay_module": _overlay_parameters(),
        "lamina_revision": _git_revision(repo_root),
        "root": os.geteuid() == 0,
        # The fuse module's enable_uring when the run began (a root laminafs sets it to Y itself;
        # the run puts this value back at the end).
        "fuse_enable_uring_before": enable_uring_before,
    }
