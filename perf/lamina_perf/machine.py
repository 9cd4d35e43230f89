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


def describe(workdir, repo_root, contenders, enable_uring_before=None):
    versions = {c.name: c.version for c in contenders}
    return {
        "kernel": os.uname().release,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "fs_type": fs_type(workdir),
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
