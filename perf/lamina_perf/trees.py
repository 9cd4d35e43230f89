"""The identical trees and layer stacks every contender mounts: built once, then hard-linked per contender."""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .profiles import MIB

INCLUDE_SOURCE = "/usr/include"

# Files of the data stack, all in its lowest layer.
BIG_FILE = "big.dat"  # read sequentially, at random and through mmap
COPY_UP_FILE = "cu.dat"  # written into by the copy-up job
RANDOM_WRITE_FILE = "rw.dat"  # copied up, then written at random
MANY_DIR = "many"  # the metadata stack's directory of many files
PROBE_DIR = (
    "probe"  # present in every layer of the include stacks: where missing names are looked up
)


def many_name(i):
    return f"f{i:06d}"


@dataclass
class Stack:
    """A layer stack: directories l0 (top) .. l{layers-1} (bottom) under path."""

    name: str
    path: str
    layers: int
    # Files (relative path: size) whose content must never change: the lower layers of every
    # contender share these inodes, so a contender writing through to a lower layer would spoil
    # the rest.
    guarded: dict = field(default_factory=dict)
    _guard_state: dict = field(default_factory=dict)

    def layer_names(self):
        return [f"l{i}" for i in range(self.layers)]

    def remember_guarded(self):
        for rel in self.guarded:
            st = os.stat(os.path.join(self.path, rel))
            self._guard_state[rel] = (st.st_size, st.st_mtime_ns)

    def changed_guarded(self):
        """Guarded files whose size or mtime moved since remember_guarded()."""
        changed = []
        for rel, state in self._guard_state.items():
            st = os.stat(os.path.join(self.path, rel))
            if (st.st_size, st.st_mtime_ns) != state:
                changed.append(rel)
        return changed


def _write_data_file(path, size):
    # Incompressible, non-zero data: a repeated random block, so no filesystem can skip the work.
    block = os.urandom(min(size, MIB))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def _touch(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _make_layers(stack):
    for name in stack.layer_names():
        os.makedirs(os.path.join(stack.path, name), exist_ok=True)


def build_data_stack(root, profile):
    sizes = {
        BIG_FILE: profile.data_bytes,
        COPY_UP_FILE: profile.data_bytes,
        RANDOM_WRITE_FILE: profile.random_file_bytes,
    }
    stack = Stack(
        "data", os.path.join(root, "data"), 2, guarded={f"l1/{n}": b for n, b in sizes.items()}
    )
    _make_layers(stack)
    with open(os.path.join(stack.path, "l0", "README"), "w") as f:
        f.write("top layer of the data stack\n")
    for name, size in sizes.items():
        _write_data_file(os.path.join(stack.path, "l1", name), size)
    stack.remember_guarded()
    return stack


def rewrite_guarded(stack):
    """Restores guarded files a contender wrote through to (same inode, so every hard link sees it)."""
    for rel in stack.changed_guarded():
        _write_data_file(os.path.join(stack.path, rel), stack.guarded[rel])
    stack.remember_guarded()


def build_meta_stack(root, profile):
    """A directory of many empty files spread over two layers, so listing it merges them."""
    stack = Stack("meta", os.path.join(root, "meta"), 2)
    _make_layers(stack)
    for layer in stack.layer_names():
        os.makedirs(os.path.join(stack.path, layer, MANY_DIR))
    for i in range(profile.files):
        _touch(os.path.join(stack.path, f"l{i % 2}", MANY_DIR, many_name(i)))
    return stack


HUGE_DIR = "huge"  # the hugedir stack's one big directory
HUGE_DIR_OPS = 1000  # lookups, creates and unlinks the hugedir job times in it


def huge_name(i):
    return f"e{i:07d}"


def build_huge_dir_stack(root, profile):
    """One directory of huge_dir_entries empty files spread round-robin over four layers."""
    stack = Stack("hugedir", os.path.join(root, "hugedir"), 4)
    _make_layers(stack)
    for layer in stack.layer_names():
        os.makedirs(os.path.join(stack.path, layer, HUGE_DIR))
    for i in range(profile.huge_dir_entries):
        _touch(os.path.join(stack.path, f"l{i % 4}", HUGE_DIR, huge_name(i)))
    return stack


def build_walk_stack(root, profile):
    """walk_files empty files, a thousand to a directory, spread round-robin over the layers."""
    stack = Stack("walk", os.path.join(root, "walk"), profile.walk_layers)
    _make_layers(stack)
    made = set()
    for i in range(profile.walk_files):
        layer = f"l{i % stack.layers}"
        d = os.path.join(stack.path, layer, f"d{i // 1000:04d}")
        if d not in made:
            os.makedirs(d)
            made.add(d)
        _touch(os.path.join(d, f"f{i:06d}"))
    return stack


def _synthetic_include(root, count):
    """Stands in for /usr/include on a machine without one: `count` small files in nested dirs."""
    base = os.path.join(root, "synthetic")
    for i in range(count):
        d = os.path.join(base, "include", f"lib{i % 40:02d}", f"sub{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"header{i:05d}.h"), "w") as f:
            f.write(f"#define HEADER_{i} {i}\n" * (1 + i % 50))
    return os.path.join(base, "include")


def make_include_tar(root, profile):
    """A tar of /usr/include (its first include_files entries in a sorted walk, when capped)."""
    tar = os.path.join(root, "include.tar")
    source = INCLUDE_SOURCE
    if not os.path.isdir(source):
        source = _synthetic_include(root, profile.include_files or 20_000)
    base = os.path.dirname(source)
    if profile.include_files == 0:
        subprocess.run(["tar", "-C", base, "-cf", tar, os.path.basename(source)], check=True)
        return tar
    picked = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            picked.append(os.path.relpath(os.path.join(dirpath, name), base))
            if len(picked) >= profile.include_files:
                break
        if len(picked) >= profile.include_files:
            break
    listing = os.path.join(root, "include.list")
    with open(listing, "w") as f:
        f.write("\n".join(picked) + "\n")
    subprocess.run(["tar", "-C", base, "-cf", tar, "--no-recursion", "-T", listing], check=True)
    os.unlink(listing)
    return tar


def extract_include(root, tar):
    src = os.path.join(root, "include-src")
    os.makedirs(src)
    subprocess.run(["tar", "-C", src, "-xf", tar], check=True)
    return src


def build_include_stack(root, src, layers):
    """The extracted include tree with its files dealt round-robin over `layers` layers.

    Every directory exists in the bottom layer; a file's parent directories also exist in the layer
    holding it, so most directories are merged from several layers. Each layer gets a file in
    PROBE_DIR, making that directory present in all of them.
    """
    stack = Stack(f"inc{layers}", os.path.join(root, f"inc{layers}"), layers)
    _make_layers(stack)
    bottom = os.path.join(stack.path, f"l{layers - 1}")
    i = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        os.makedirs(os.path.join(bottom, rel_dir), exist_ok=True)
        for name in sorted(
            filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        ):
            layer_dir = os.path.join(stack.path, f"l{i % layers}", rel_dir)
            os.makedirs(layer_dir, exist_ok=True)
            os.link(
                os.path.join(dirpath, name), os.path.join(layer_dir, name), follow_symlinks=False
            )
            i += 1
    for j in range(layers):
        probe = os.path.join(stack.path, f"l{j}", PROBE_DIR)
        os.makedirs(probe)
        _touch(os.path.join(probe, f"layer{j}"))
    return stack


SOURCE_DIR = "lamina"  # the source stack's one directory: this project's tracked files


def build_source_stack(root, repo):
    """This project's source tree (the files git tracks, copied) in the one layer of a stack."""
    stack = Stack("src", os.path.join(root, "src"), 1)
    _make_layers(stack)
    dest = os.path.join(stack.path, "l0", SOURCE_DIR)
    listed = subprocess.run(
        ["git", "-C", repo, "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    for rel in os.fsdecode(listed).split("\0"):
        if not rel or not os.path.lexists(os.path.join(repo, rel)):
            continue  # deleted in the work tree
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copy2(os.path.join(repo, rel), out, follow_symlinks=False)
    return stack


def link_copy(stack, dest):
    """A hard-linked copy of the stack's layers at dest: its own names, the template's inodes."""
    subprocess.run(["cp", "-al", stack.path, dest], check=True)


def merge_layers(stack, dest, copied=()):
    """The union of the stack's layers as one plain directory (top layer wins), hard-linked from the
    template, except the relative paths in `copied`, which are real copies because a job writes
    into them. The template has no whiteouts, so the union is every layer laid bottom to top."""
    os.makedirs(dest)
    made = {""}  # directories already in dest, relative
    placed = set()  # files already in dest, relative
    for layer in reversed(stack.layer_names()):
        top = os.path.join(stack.path, layer)
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            for entry in os.scandir(os.path.join(top, rel_dir)):
                rel = os.path.join(rel_dir, entry.name)
                out = os.path.join(dest, rel)
                if entry.is_dir(follow_symlinks=False):
                    if rel not in made:
                        os.mkdir(out)
                        made.add(rel)
                    pending.append(rel)
                    continue
                if rel in placed:
                    os.unlink(out)
                placed.add(rel)
                if rel in copied:
                    shutil.copyfile(entry.path, out)
                else:
                    os.link(entry.path, out, follow_symlinks=False)


def _mountpoints_below(path):
    """Mountpoints strictly inside path, from /proc/self/mountinfo."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix):
                found.add(mount_point)
    return found


def remove_tree(path, workers=64):
    """rm -rf, many removals at a time, never crossing into a filesystem still mounted below path.

    On this project's VMs the root ext4 (mounted with discard) takes about 3.5 ms per rmdir when
    they come one at a time but overlaps them well, so a 128-layer stack with tens of thousands of
    directories goes in seconds instead of minutes. Directories go deepest level first.
    """
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    path = os.path.realpath(path)
    skip = _mountpoints_below(path)
    files, levels = [], {}
    pending = [(path, 0)]
    while pending:
        directory, depth = pending.pop()
        levels.setdefault(depth, []).append(directory)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.path not in skip:  # still mounted: leave it (and so its parents) alone
                    pending.append((entry.path, depth + 1))
            else:
                files.append(entry.path)

    def quietly(op):
        def run(p):
            try:
                op(p)
            except OSError:
                pass

        return run

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(quietly(os.unlink), files, chunksize=256))
        for depth in sorted(levels, reverse=True):
            list(pool.map(quietly(os.rmdir), levels[depth]))
