"""The lazy-pull job (issue 19): `lamina pull --lazy` against a full pull over a slow link.

A docker-registry on 127.0.0.1 holds distro-shaped images pushed as eStargz; lamina pulls them
through netproxy.py (a bandwidth cap, added round-trip time, a count of the bytes passed) into a
fresh store each time. Measured per image size and link speed, lazy against full:

* first byte: from the start of `pull` to the first byte of /etc/os-release read through the
  container's mount (pull, create, mount, open, read);
* bytes moved: what crossed the link from the start of `pull` until a read workload touching 5%
  of the files (all of each) ends;
* completion: `pull --lazy --background` until its detached completer is done and the layers are
  ordinary, against the full `pull`;
* `find -ls` over the lazy mount against the fully pulled one (caches dropped, then again warm).

Run only when asked (`perf/run --only lazy`): it needs docker-registry, root for the mounts, and
minutes. See docs/perf.md, "The lazy-pull job".
"""

import datetime
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from . import contenders, distro, machine, report, runner, trees
from .profiles import GIB, MIB, human_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = "lamina-perf/distro"
RTT_MS = 5
TOUCH_PERCENT = 5
SIZES = {"quick": (20 * MIB,), "full": (100 * MIB, 1 * GIB)}
MBITS = (100, 1000)
READ_BOUND = 120  # seconds one open and read through the mount may take before it is aborted
# A background completion not done within this many full pulls (or the pull's own bound) is
# stopped and reported as "more than" the time it had.
COMPLETION_BOUND = 20
BEGIN_MARK = "<!-- perf-lazy:begin -->"
END_MARK = "<!-- perf-lazy:end -->"
CHART = "lazy.png"

# Each figure: (key, unit, what it is, the goal as (kind, bound) or None). kind "lazy-below": the
# lazy figure under bound; "ratio-at-most": lazy ÷ full at most bound.
METRICS = (
    (
        "first-byte",
        "s",
        "pull to the first byte of /etc/os-release through the mount",
        ("lazy-below", 1.0),
    ),
    ("pull", "s", "the pull command alone", None),
    (
        "bytes",
        "MiB",
        f"moved over the link by the pull and a read of {TOUCH_PERCENT}% of the files",
        None,
    ),
    ("read", "s", f"reading {TOUCH_PERCENT}% of the files whole, after the first byte", None),
    (
        "complete",
        "s",
        "the layers complete: full pull, or pull --lazy --background until its completer ends",
        ("ratio-at-most", 1.2),
    ),
    ("find-cold", "s", "find -ls over the mount, caches dropped", ("ratio-at-most", 1.5)),
    ("find-warm", "s", "find -ls over the mount again", None),
)


class LazyError(Exception):
    pass


def _last_line(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Registry:
    """docker-registry serving plain HTTP on 127.0.0.1 from a directory of its own (as the
    registry tests start it)."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.proc = None

    def start(self):
        os.makedirs(os.path.join(self.root, "storage"), exist_ok=True)
        config = os.path.join(self.root, "config.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.root}/storage\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n"
            )
        with open(os.path.join(self.root, "registry.log"), "wb") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for_port(self.port, 15):
            self.stop()
            raise LazyError("docker-registry did not start (see registry.log)")

    def manifest(self, tag):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v2/{REPOSITORY}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        self.proc = None


class Proxy:
    """netproxy.py in front of the registry: the link a pull goes over, and its byte count."""

    def __init__(self, target_port, mbit):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "netproxy.py"),
                "--target",
                f"127.0.0.1:{target_port}",
                "--mbit",
                str(mbit),
                "--rtt-ms",
                str(RTT_MS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise LazyError("netproxy.py did not start")
        self.port = int(line)

    def counts(self):
        """(bytes passed from the registry to lamina, connections accepted) so far."""
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        _, down, connections = self.proc.stdout.readline().split()
        return int(down), int(connections)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of input stops it
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Lamina:
    """The lamina CLI on one store, with a home of its own (no credentials or settings of the
    machine's)."""

    def __init__(self, binary, root, env):
        self.binary = binary
        self.root = root
        self.env = env

    def __call__(self, *args, timeout=300):
        try:
            res = subprocess.run(
                [self.binary, "--root", self.root, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise LazyError(f"lamina {args[0]}: no answer in {timeout:.0f} s") from None
        if res.returncode != 0:
            said = _last_line(res.stderr) or f"exit status {res.returncode}"
            raise LazyError(f"lamina {args[0]}: {said}")
        return res.stdout

    def lazy_layers(self, ref):
        """How many layers of ref are still lazy, and the last error a completer left, if any."""
        image = json.loads(self("inspect", ref))[0]
        lazy = [layer["Lazy"] for layer in image.get("Layers", []) if layer.get("Lazy")]
        errors = [l["LastError"] for l in lazy if l.get("LastError")]
        return len(lazy), (errors[0] if errors else None)


def _with_watchdog(mountpoint, seconds, fn):
    """Runs fn(); past `seconds` the mount's FUSE connection is aborted, so a read that hangs
    fails instead of hanging the run."""
    timer = threading.Timer(seconds, contenders.abort_fuse_connection, [mountpoint])
    timer.start()
    try:
        return fn()
    finally:
        timer.cancel()


def _read_all(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def _completes(store):
    """A test of an argv: is it the `lamina-lazy-fetch --complete` that `pull --background` left
    for store? (lamina names the store as given: the run gives it with symlinks resolved.)"""
    wanted = os.fsencode(store)
    return lambda argv: (
        argv[0].endswith(b"lamina-lazy-fetch") and b"--complete" in argv and wanted in argv
    )


def open_completer(store):
    """A pidfd of store's background completer, or None when there is none (or it is done).
    Checked again after it is opened, so the pidfd is that process, not one that took its pid."""
    pid = contenders.find_process(store, _completes(store))
    if pid is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            same = _completes(store)(f.read().split(b"\0"))
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def stop_completer(store):
    """Kills store's background completer, if it is still there (a run stopped early)."""
    fd = open_completer(store)
    if fd is not None:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


class Scenario:
    """One image size over one link speed: its runs, full and lazy."""

    def __init__(self, bench, size, mbit):
        self.bench = bench
        self.size = size
        self.mbit = mbit
        self.tag = human_bytes(size).replace(" ", "").lower()
        self.figures = {key: {"full": [], "lazy": []} for key, *_ in METRICS}
        self.unfinished = []  # seconds a background completion had when it was stopped
        self.errors = []
        self.proxy = None

    @property
    def ref(self):
        return f"127.0.0.1:{self.proxy.port}/{REPOSITORY}:{self.tag}"

    def seconds_allowed(self):
        """A pull of the whole image over this link, three times over, and two minutes."""
        return self.bench.blob_bytes[self.size] * 8 / (self.mbit * 1e6) * 3 + 120

    def run(self, rep):
        self.proxy = Proxy(self.bench.registry.port, self.mbit)
        try:
            runs = (
                ("full", "full", self.mounted_run),
                ("lazy", "lazy", self.mounted_run),
                ("lazy", "lazy background", self.background_run),
            )
            for kind, name, fn in runs:
                label = f"{self.tag} {self.mbit} Mbit/s [{rep + 1}] {name}"
                try:
                    said = fn(kind, rep)
                    self.bench.log(f"  lazy {label}: {said}")
                except (LazyError, OSError, ValueError, KeyError) as e:
                    self.errors.append(f"{label}: {e}")
                    self.bench.log(f"  lazy {label}: {e}")
                finally:
                    self.bench.clean_stores()
        finally:
            self.proxy.stop()

    def mounted_run(self, kind, rep):
        """Pull (lazily or not), create, mount, first byte; the read workload; find -ls."""
        lamina = self.bench.store(f"{kind}-{self.tag}-{self.mbit}-{rep}")
        timeout = self.seconds_allowed()
        pull = ["pull", "--tls-verify=false", "--quiet"] + (["--lazy"] if kind == "lazy" else [])
        down0, _ = self.proxy.counts()
        start = time.monotonic()
        lamina(*pull, self.ref, timeout=timeout)
        pulled = time.monotonic()
        lamina("create", "--name", "bench", self.ref)
        mnt = lamina("mount", "bench").strip()
        os_release = os.path.join(mnt, "etc", "os-release")

        def first_byte():
            with open(os_release, "rb", buffering=0) as f:
                if not f.read(1):
                    raise LazyError(f"{os_release} is empty")
            return time.monotonic()

        first = _with_watchdog(mnt, READ_BOUND, first_byte) - start
        began = time.monotonic()
        for rel in self.bench.touched[self.size]:
            _with_watchdog(mnt, READ_BOUND, lambda: _read_all(os.path.join(mnt, rel)))
        read = time.monotonic() - began
        moved = (self.proxy.counts()[0] - down0) / MIB
        finds = {}
        for mode in ("cold", "warm"):
            if mode == "cold":
                runner.drop_caches()
            began = time.monotonic()
            res = subprocess.run(
                ["find", mnt, "-ls"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
            finds[mode] = time.monotonic() - began
            if res.returncode != 0:
                raise LazyError(f"find -ls: {_last_line(res.stderr)}")
        lamina("umount", "bench")
        figures = {"first-byte": first, "pull": pulled - start, "bytes": moved, "read": read}
        figures["find-cold"], figures["find-warm"] = finds["cold"], finds["warm"]
        if kind == "full":
            figures["complete"] = pulled - start
        for key, value in figures.items():
            self.figures[key][kind].append(value)
        return ", ".join(f"{key} {value:.3g}" for key, value in figures.items())

    def background_run(self, kind, rep):
        """pull --lazy --background, then wait for its completer through a pidfd. One not done
        within COMPLETION_BOUND full pulls is killed, and the time it had is a lower bound."""
        lamina = self.bench.store(f"background-{self.tag}-{self.mbit}-{rep}")
        timeout = self.seconds_allowed()
        full = self.figures["complete"]["full"]
        bound = max(timeout, COMPLETION_BOUND * statistics.median(full) if full else 0)
        down0, connections0 = self.proxy.counts()
        start = time.monotonic()
        pull = ["pull", "--tls-verify=false", "--quiet", "--lazy", "--background"]
        lamina(*pull, self.ref, timeout=timeout)
        fd = open_completer(lamina.root)  # None: it is done already
        if fd is not None:
            try:
                left = max(1, bound - (time.monotonic() - start))
                ready, _, _ = select.select([fd], [], [], left)
                if not ready:
                    # A figure, not a failure: the goal is missed by at least this much.
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    had = time.monotonic() - start
                    self.unfinished.append(had)
                    return f"not complete within {had:.0f} s: stopped"
            finally:
                os.close(fd)
        done = time.monotonic() - start
        still_lazy, error = lamina.lazy_layers(self.ref)
        if still_lazy:
            raise LazyError(
                f"{still_lazy} layers still lazy after the completer ended: "
                + (error or "no error recorded")
            )
        self.figures["complete"]["lazy"].append(done)
        down, connections = self.proxy.counts()
        moved = (down - down0) / MIB
        return (
            f"complete {done:.3g} s, {moved:.3g} MiB moved, "
            f"{connections - connections0} connections"
        )

    def describe(self):
        rows = []
        for key, unit, title, goal in METRICS:
            full = self.figures[key]["full"]
            lazy = self.figures[key]["lazy"]
            f = statistics.median(full) if full else None
            l = statistics.median(lazy) if lazy else None
            row = {
                "key": key,
                "unit": unit,
                "title": title,
                "full": f,
                "lazy": l,
                "full_runs": full,
                "lazy_runs": lazy,
                "ratio": l / f if f and l is not None else None,
                "goal": list(goal) if goal else None,
            }
            if key == "complete" and l is None and self.unfinished:
                # Every completion was stopped: what is known is that it takes longer.
                row["lazy_at_least"] = max(self.unfinished)
                row["ratio_at_least"] = row["lazy_at_least"] / f if f else None
            rows.append(row)
        return {
            "image_bytes": self.size,
            "blob_bytes": self.bench.blob_bytes[self.size],
            "files": len(self.bench.files[self.size]),
            "touched_files": len(self.bench.touched[self.size]),
            "mbit": self.mbit,
            "rtt_ms": RTT_MS,
            "metrics": rows,
            "errors": self.errors,
        }


class Bench:
    """Everything the job set up: the registry, the pushed images, the stores it made."""

    def __init__(self, workdir, repo, log):
        self.workdir = workdir
        self.log = log
        self.lamina_binary = os.path.abspath(
            os.environ.get("LAMINA") or os.path.join(repo, "build", "tools", "lamina")
        )
        home = os.path.join(workdir, "home")
        os.makedirs(home)
        self.env = dict(
            os.environ,
            HOME=home,
            LC_ALL="C",
            LAMINAFS=contenders.laminafs_binary(repo),
        )
        self.registry = Registry(os.path.join(workdir, "registry"))
        self.blob_bytes, self.files, self.touched = {}, {}, {}
        self.stores = []

    def store(self, name):
        root = os.path.join(self.workdir, "stores", name)
        os.makedirs(root)
        self.stores.append(root)
        return Lamina(self.lamina_binary, root, self.env)

    def clean_stores(self):
        """Unmounts and deletes every store made so far (each run starts from an empty one)."""
        for root in self.stores:
            for mnt in sorted(trees._mountpoints_below(root), reverse=True):
                if subprocess.run(["fusermount3", "-u", mnt], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", mnt], capture_output=True)
        for root in self.stores:
            stop_completer(root)
            trees.remove_tree(root)
        self.stores = []

    def push_image(self, size):
        """A distro tree of `size` bytes, imported, pushed as eStargz straight to the registry."""
        tag = human_bytes(size).replace(" ", "").lower()
        tree = os.path.join(self.workdir, "images", tag)
        files = distro.build_tree(tree, size)
        tar = tree + ".tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", tree, "-cf", tar, "."],
            check=True,
        )
        trees.remove_tree(tree)
        source = self.store(f"source-{tag}")
        source("import", tar, f"{REPOSITORY}:{tag}", timeout=1800)
        os.unlink(tar)
        source(
            "push",
            "--tls-verify=false",
            "--quiet",
            "--compression-format",
            "estargz",
            f"{REPOSITORY}:{tag}",
            f"127.0.0.1:{self.registry.port}/{REPOSITORY}:{tag}",
            timeout=3600,
        )
        self.clean_stores()
        manifest = self.registry.manifest(tag)
        self.blob_bytes[size] = sum(layer["size"] for layer in manifest["layers"])
        self.files[size] = files
        self.touched[size] = distro.touched_files(files, TOUCH_PERCENT)


def parse_sizes(text):
    sizes = []
    for word in text.split(","):
        word = word.strip().upper().removesuffix("IB").removesuffix("B")
        unit = {"K": 1 << 10, "M": MIB, "G": GIB}.get(word[-1:], 1)
        number = word[:-1] if word[-1:] in "KMG" else word
        if not number.isdigit() or int(number) == 0:
            raise ValueError(f"cannot read image size {text!r}: say 20M, 100M, 1G")
        sizes.append(int(number) * unit)
    return tuple(sizes)


def parse_mbits(text):
    try:
        mbits = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"cannot read link speeds {text!r}: say 100,1000 (Mbit/s)") from None
    if any(m <= 0 for m in mbits):
        raise ValueError("link speeds must be positive")
    return mbits


def unavailable():
    """None when the job can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (lamina mount, dropping caches)"
    for prog in ("docker-registry", "fusermount3", "find", "tar"):
        if not shutil.which(prog):
            return f"{prog} not installed"
    return None


def space_needed(sizes):
    """The image tree, its tar, the source store, the registry and two stores at a time."""
    return 8 * max(sizes) + (1 << 30)


def run(profile_name, repeat, sizes, mbits, directory, repo, log, keep=False, fresh_fs=False):
    """Measures every size over every link speed; returns the report (a dict, as JSON stores it).
    fresh_fs: directory is on a filesystem made for this run (said in the report)."""
    why = unavailable()
    if why:
        raise LazyError(f"the lazy job cannot run here: {why}")
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="lamina-perf-lazy-", dir=directory))
    log(
        f"perf/run: the lazy job, {profile_name} profile: images "
        f"{', '.join(human_bytes(s) for s in sizes)} over {', '.join(f'{m} Mbit/s' for m in mbits)}"
        f" with {RTT_MS} ms added round trip; in {workdir}"
    )
    bench = Bench(workdir, repo, log)
    scenarios = []
    try:
        bench.registry.start()
        for size in sizes:
            began = time.monotonic()
            bench.push_image(size)
            log(
                f"  image {human_bytes(size)}: {len(bench.files[size]):,} files, "
                f"{bench.blob_bytes[size] / MIB:.1f} MiB as eStargz, "
                f"pushed in {time.monotonic() - began:.0f} s"
            )
            for mbit in mbits:
                scenarios.append(Scenario(bench, size, mbit))
        # Repeat, then scenario: slow drift of a shared machine hits every scenario alike.
        for rep in range(repeat):
            for s in scenarios:
                s.run(rep)
        about = machine.describe(workdir, repo, [], fresh_fs=fresh_fs)
        version = [bench.lamina_binary, "--version"]
        about["lamina"] = _last_line(subprocess.run(version, capture_output=True, text=True).stdout)
        about["load_average"] = os.getloadavg()
    finally:
        bench.clean_stores()
        bench.registry.stop()
        if keep:
            log(f"  kept {workdir}")
        else:
            trees.remove_tree(workdir)
    return {
        "schema": 1,
        "job": "lazy",
        "profile": profile_name,
        "repeat": repeat,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": about,
        "scenarios": [s.describe() for s in scenarios],
    }


def _verdict(row):
    """The goal of a row, and whether this run met it."""
    if not row["goal"]:
        return ""
    kind, bound = row["goal"]
    if kind == "lazy-below":
        met = row["lazy"] is not None and row["lazy"] < bound
        return f"lazy < {report.fmt(bound)} s {'✅' if met else '❌'}"
    if row["ratio"] is None and row.get("ratio_at_least") is not None:
        return f"≤ {bound}x ❌"
    met = row["ratio"] is not None and row["ratio"] <= bound
    return f"≤ {bound}x {'✅' if met else '❌'}"


def render_markdown(rep, chart_prefix=None, level=2):
    h = "#" * (level + 1)
    m = rep["machine"]
    load = m.get("load_average")
    lines = [
        f"{'#' * level} Lazy pull ({rep['profile']})",
        "",
        f"Run {rep['started']} in {rep['duration_s']:.0f} s; median of {rep['repeat']} "
        f"run{'s' if rep['repeat'] > 1 else ''}. Machine: Linux {m['kernel']}, {m['cpu']} "
        f"({m['cores']} cores), {m['memory_gib']} GiB RAM, {m['fs_type']} under {m['workdir']}; "
        f"{m.get('lamina') or 'lamina'} ({m['lamina_revision'] or '?'})"
        + (f"; load average {load[0]:.1f} at the end" if load else "")
        + ".",
        "",
        "Each run pulls into an empty store through netproxy.py: the bandwidth cap shared by all "
        f"connections, {RTT_MS} ms added to every round trip. full: `lamina pull`; lazy: "
        "`lamina pull --lazy`. Bytes are what the registry sent through the proxy.",
        "",
    ]
    for s in rep["scenarios"]:
        lines += [
            f"{h} {human_bytes(s['image_bytes'])} image, {s['mbit']} Mbit/s",
            "",
            f"{s['files']:,} files, {s['blob_bytes'] / MIB:.1f} MiB as eStargz; the read "
            f"workload reads {s['touched_files']:,} of them whole.",
            "",
        ]
        rows = []
        for row in s["metrics"]:
            lazy_cell = report.fmt(row["lazy"])
            ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            if row.get("lazy_at_least") is not None:
                lazy_cell = f"> {report.fmt(row['lazy_at_least'])} (stopped)"
                if row.get("ratio_at_least") is not None:
                    ratio = f"> {row['ratio_at_least']:.2f}x"
            rows.append(
                [
                    f"`{row['key']}`: {row['title']}",
                    row["unit"],
                    report.fmt(row["full"]),
                    lazy_cell,
                    ratio,
                    _verdict(row),
                ]
            )
        lines += report._table(["figure", "unit", "full", "lazy", "lazy ÷ full", "goal"], rows)
        lines.append("")
        for error in s["errors"]:
            lines.append(f"- failed: {error}")
        if s["errors"]:
            lines.append("")
    if chart_prefix:
        lines += [f"![Lazy pull against full pull]({chart_prefix}{CHART})", ""]
    return "\n".join(lines)


def _label_axes(ax, labels, ylabel, title):
    ax.set_yscale("log")
    ax.set_xticks(list(range(len(labels))))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)


def write_chart(rep, out_dir):
    """Two panels: first byte in seconds (full and lazy, the 1 s goal), and lazy ÷ full of the
    bytes moved, the completion and find -ls, with their goals. Returns the file or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    os.makedirs(out_dir, exist_ok=True)
    labels = [f"{human_bytes(s['image_bytes'])}\n{s['mbit']} Mbit/s" for s in rep["scenarios"]]
    by_key = [{row["key"]: row for row in s["metrics"]} for s in rep["scenarios"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 3]})
    xs = range(len(labels))
    for offset, kind, colour in ((-0.2, "full", "#8c8c8c"), (0.2, "lazy", "#1b9e77")):
        ys = [rows["first-byte"][kind] or 0 for rows in by_key]
        left.bar([x + offset for x in xs], ys, 0.4, label=kind, color=colour)
    left.axhline(1.0, color="red", linewidth=0.8, linestyle="--")
    title = "pull to first byte of /etc/os-release (goal: lazy < 1 s)"
    _label_axes(left, labels, "seconds (log)", title)
    shown = (
        ("bytes", "bytes moved", None),
        ("complete", "completion", 1.2),
        ("find-cold", "find -ls cold", 1.5),
    )
    width = 0.8 / len(shown)
    colours = ("#7570b3", "#d95f02", "#1b9e77")
    for i, (key, name, goal) in enumerate(shown):
        at = [x + (i - (len(shown) - 1) / 2) * width for x in xs]
        # A completion that was stopped is drawn at what is known: at least that.
        ratios = [rows[key]["ratio"] or rows[key].get("ratio_at_least") or 0 for rows in by_key]
        right.bar(at, ratios, width, label=name, color=colours[i])
        if goal:
            for x in at:
                right.plot([x - width / 2, x + width / 2], [goal, goal], color="red", linewidth=1)
    right.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    _label_axes(right, labels, "lazy ÷ full (log)", "lazy ÷ full (red: the goal, at most)")
    fig.tight_layout()
    path = os.path.join(out_dir, CHART)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(rep, results_dir, docs_md, docs_charts, publish, log):
    """perf/results/lazy.{json,md} and lazy-charts/, printed; with publish, the block between the
    lazy markers of docs/perf.md and the chart in docs/perf/."""
    os.makedirs(results_dir, exist_ok=True)
    chart = write_chart(rep, os.path.join(results_dir, "lazy-charts"))
    if chart is None:
        log("no chart: matplotlib is not installed (apt-get install python3-matplotlib)")
    markdown = render_markdown(rep, chart_prefix="lazy-charts/" if chart else None)
    with open(os.path.join(results_dir, "lazy.json"), "w") as f:
        json.dump(rep, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(results_dir, "lazy.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    log(f"wrote perf/results/lazy.md, lazy.json{' and lazy-charts/' if chart else ''}")
    if publish:
        docs = render_markdown(rep, chart_prefix="perf/" if chart else None, level=4)
        report.publish(docs, docs_md, [chart] if chart else [], docs_charts, BEGIN_MARK, END_MARK)
        log("published to docs/perf.md (the lazy-pull block) and docs/perf/")
