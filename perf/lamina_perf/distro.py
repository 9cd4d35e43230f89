"""A tree shaped like a distribution's root filesystem, of a given size, for the lazy-pull job.

Many small files (configuration, headers, scripts, documentation, package lists, translations)
and fewer large ones (programs, shared libraries, a few big libraries), in the directories a
Debian image has them. Text is slices of a made-up vocabulary (gzip shrinks it about 3x);
programs and libraries are half random bytes, a quarter zeros and a quarter text (about 1.6x),
so the compressed image and the bytes a pull moves are of a realistic order. The same seed gives
the same tree.
"""

import math
import os
import random

from .profiles import KIB, MIB

OS_RELEASE = (
    'PRETTY_NAME="lamina perf distro"\nNAME="lamina perf distro"\nID=lamina-perf\n'
    'VERSION_ID="1"\nHOME_URL="https://example.invalid/"\n'
)

# Where the bytes go: (share of the image's bytes, directory pattern, smallest, largest, kind).
# A pattern's {pkg} is a made-up package name, {n} a number; sizes are drawn log-uniformly.
CATEGORIES = (
    (0.03, "etc/{pkg}", 100, 8 * KIB, "text"),
    (0.14, "usr/bin", 8 * KIB, 2 * MIB, "binary"),
    (0.03, "usr/sbin", 8 * KIB, 1 * MIB, "binary"),
    (0.30, "usr/lib/x86_64-linux-gnu", 16 * KIB, 8 * MIB, "binary"),
    (0.12, "usr/lib/x86_64-linux-gnu/{pkg}", 1 * MIB, 48 * MIB, "binary"),  # the few big ones
    (0.10, "usr/lib/python3/dist-packages/{pkg}", 1 * KIB, 64 * KIB, "text"),
    (0.09, "usr/include/{pkg}", 500, 64 * KIB, "text"),
    (0.07, "usr/share/doc/{pkg}", 300, 24 * KIB, "text"),
    (0.07, "usr/share/locale/l{n}/LC_MESSAGES", 2 * KIB, 128 * KIB, "binary"),
    (0.05, "var/lib/dpkg/info", 100, 24 * KIB, "text"),
)
FILES_PER_DIR = 40  # a pattern with {pkg} or {n} gets a new directory after this many files


def _vocabulary(rng):
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ex", "in", "or", "un", "_", "."]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    lines, size = [], 0
    while size < 4 * MIB:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


class _Content:
    def __init__(self, rng):
        self.rng = rng
        self.text = _vocabulary(rng)

    def text_bytes(self, n):
        out = bytearray()
        while len(out) < n:
            start = self.rng.randrange(len(self.text) - 1)
            out += self.text[start : start + (n - len(out))]
        return bytes(out)

    def binary_bytes(self, n):
        out = bytearray()
        while len(out) < n:
            block = min(n - len(out), 16 * KIB)
            kind = self.rng.random()
            if kind < 0.5:
                out += self.rng.randbytes(block)
            elif kind < 0.75:
                out += bytes(block)
            else:
                out += self.text_bytes(block)
        return bytes(out)


def _size(rng, smallest, largest):
    return int(math.exp(rng.uniform(math.log(smallest), math.log(largest))))


def build_tree(root, total_bytes, seed=19):
    """Writes the tree under root; returns the relative paths of its regular files, sorted."""
    rng = random.Random(seed)
    content = _Content(rng)
    files = []

    def write(rel, data):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        files.append(rel)

    write("etc/os-release", OS_RELEASE.encode())
    for d in ("tmp", "root", "home", "var/tmp", "var/log", "proc", "sys", "dev", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for share, pattern, smallest, largest, kind in CATEGORIES:
        budget = int(total_bytes * share)
        largest = max(smallest, min(largest, budget // 2 or smallest))
        written, index = 0, 0
        while written < budget:
            size = min(_size(rng, smallest, largest), budget - written)
            group = index // FILES_PER_DIR
            directory = pattern.format(pkg=f"pkg{group:04d}", n=group)
            suffix = {"text": ".txt", "binary": ".so" if "lib" in pattern else ""}[kind]
            name = f"{os.path.basename(directory) or 'f'}-{index:06d}{suffix}"
            data = content.text_bytes(size) if kind == "text" else content.binary_bytes(size)
            write(os.path.join(directory, name), data)
            if suffix == ".so" and index % 3 == 0:  # libfoo.so.1 -> libfoo.so.1.2.3, as ldconfig
                os.symlink(name, os.path.join(root, directory, name + ".1"))
            written += size
            index += 1
    return sorted(files)


def touched_files(files, percent):
    """The files a read workload touching percent of them reads: every (100/percent)th, sorted
    by path, always with /etc/os-release."""
    step = max(1, round(100 / percent))
    chosen = files[::step]
    if "etc/os-release" not in chosen:
        chosen.append("etc/os-release")
    return chosen
