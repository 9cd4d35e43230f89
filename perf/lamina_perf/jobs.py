"""What is measured: data-path jobs (fio) and metadata jobs (timed from Python), one Job each."""

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional

from . import trees
from .profiles import MIB, human_bytes

JOBS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
C_LOCALE = dict(os.environ, LC_ALL="C")


@dataclass
class Context:
    """What a job's functions get: the mounted tree and the run's sizes."""

    mnt: str
    profile: object
    include_tar: str
    timeout: float
    mode: str = "cold"
    target: object = None  # what a job with its own target (Job.target) runs against


@dataclass
class Job:
    name: str
    group: str  # "data" or "metadata"
    title: str  # one line: what it does, with this profile's sizes
    stack: str  # the layer stack it mounts
    unit: str  # "MiB/s" or "s"
    higher_is_better: bool
    modes: tuple  # ("cold", "warm") or ("cold",)
    run: Callable  # (Context) -> float, the timed part
    setup: Optional[Callable] = None  # untimed, after mounting, before caches are dropped
    prime: Optional[
        Callable
    ] = None  # untimed, after caches are dropped: warms inputs outside the mount
    warm_setup: Optional[Callable] = None  # untimed, between the cold and the warm run
    writes: tuple = ()  # files of the stack written in place (the plain contender copies them)
    mutates: bool = True  # changes the tree (creates, writes, removes); False: only reads it
    needs: tuple = ()  # programs it runs
    record_rss: bool = False  # read the daemon's peak RSS after this job
    # A job that mounts nothing of the stacks (stack None): target(contender, runner) gives what it
    # runs against instead, with .path, .pid, .daemon_cpu_seconds(), .abort() and .unmount().
    target: Optional[Callable] = None
    # Further figures one run gives (its run returns {"value", "parts", "cpu", "extra"}): each part
    # is a row of its own, keyed name-part.
    parts: tuple = ()
    unavailable: Optional[Callable] = None  # () -> why the job cannot run on this machine, or None
    refuses: Optional[Callable] = None  # (contender) -> why it cannot run for that one, or None
    timeout: Optional[float] = None  # seconds a timed run may take, if not the profile's


class JobError(Exception):
    pass


def _fio(ctx, jobfile, **env):
    """Runs one fio job file with FILE/SIZE/... from env; returns its bandwidth in MiB/s."""
    full_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
    res = subprocess.run(
        ["fio", "--output-format=json", os.path.join(JOBS_DIR, jobfile)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=ctx.timeout,
    )
    if res.returncode != 0:
        lines = [l for l in (res.stderr + res.stdout).splitlines() if l.strip()]
        raise JobError(
            f"fio {jobfile}: " + (lines[-1] if lines else f"exit status {res.returncode}")
        )
    out = res.stdout
    report = json.loads(out[out.index("{") :])  # fio may print notes before the JSON
    job = report["jobs"][0]
    if job.get("error"):
        raise JobError(f"fio {jobfile}: error {job['error']} ({os.strerror(job['error'])})")
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    if side["io_bytes"] == 0:
        raise JobError(f"fio {jobfile}: moved no data")
    return side["bw_bytes"] / MIB


def _pass_or_time(ctx):
    """fio timing options: a cold run makes one pass over the file (a second would be warm), cut
    short after fio_cap_seconds; a warm run repeats it for warm_seconds, so a figure from the page
    cache is not a matter of a few milliseconds."""
    if ctx.mode == "warm":
        return {"TIME_BASED": 1, "RUNTIME": f"{int(ctx.profile.warm_seconds * 1000)}ms"}
    return {"TIME_BASED": 0, "RUNTIME": f"{ctx.profile.fio_cap_seconds}s"}


def _big(ctx):
    return os.path.join(ctx.mnt, trees.BIG_FILE)


def _copy_up_file(ctx):
    return os.path.join(ctx.mnt, trees.COPY_UP_FILE)


def seqread(ctx):
    return _fio(
        ctx, "seqread.fio", FILE=_big(ctx), SIZE=ctx.profile.data_bytes, **_pass_or_time(ctx)
    )


def read_whole_big_file(ctx):
    """A cold run may stop early (the random read always does, a slow one at fio_cap_seconds); the
    warm run after it should find the whole file cached."""
    with open(_big(ctx), "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def randread(ctx):
    p = ctx.profile
    return _fio(
        ctx,
        "randread.fio",
        FILE=_big(ctx),
        SIZE=p.data_bytes,
        IO_SIZE=p.random_io_bytes,
        **_pass_or_time(ctx),
    )


def mmapread(ctx):
    return _fio(
        ctx, "mmapread.fio", FILE=_big(ctx), SIZE=ctx.profile.data_bytes, **_pass_or_time(ctx)
    )


def seqwrite(ctx):
    p = ctx.profile
    return _fio(
        ctx,
        "seqwrite.fio",
        FILE=os.path.join(ctx.mnt, "new.dat"),
        SIZE=p.data_bytes,
        RUNTIME=p.fio_cap_seconds,
    )


def _random_write_file(ctx):
    return os.path.join(ctx.mnt, trees.RANDOM_WRITE_FILE)


def copy_up_untimed(ctx):
    """Opens the lower file for writing and writes its first byte back: the copy-up happens here."""
    fd = os.open(_random_write_file(ctx), os.O_RDWR)
    try:
        first = os.pread(fd, 1, 0)
        os.pwrite(fd, first, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def randwrite(ctx):
    p = ctx.profile
    return _fio(
        ctx,
        "randwrite.fio",
        FILE=_random_write_file(ctx),
        SIZE=p.random_file_bytes,
        IO_SIZE=p.random_io_bytes,
        RUNTIME=p.fio_cap_seconds,
    )


def first_write(ctx):
    """Time of open(O_WRONLY) + one 4 KiB write + fsync + close on a file still in a lower layer:
    the whole copy-up of data_bytes is inside it."""
    block = b"x" * 4096
    start = time.perf_counter()
    fd = os.open(_copy_up_file(ctx), os.O_WRONLY)
    try:
        os.pwrite(fd, block, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def _many(ctx):
    return os.path.join(ctx.mnt, trees.MANY_DIR)


def create_files(ctx):
    d = _many(ctx)
    names = [os.path.join(d, f"new{i:06d}") for i in range(ctx.profile.files)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for path in names:
        os.close(os.open(path, flags, 0o644))
    return time.perf_counter() - start


def stat_files(ctx):
    d = _many(ctx)
    names = [os.path.join(d, trees.many_name(i)) for i in range(ctx.profile.files)]
    start = time.perf_counter()
    for path in names:
        os.lstat(path)
    return time.perf_counter() - start


def unlink_files(ctx):
    d = _many(ctx)
    names = [os.path.join(d, trees.many_name(i)) for i in range(ctx.profile.files)]
    start = time.perf_counter()
    for path in names:
        os.unlink(path)
    return time.perf_counter() - start


def _timed_command(ctx, argv):
    start = time.perf_counter()
    res = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=C_LOCALE,
        timeout=ctx.timeout,
    )
    took = time.perf_counter() - start
    if res.returncode != 0:
        said = res.stderr.decode(errors="replace").strip().splitlines()
        raise JobError(f"{argv[0]}: " + (said[-1] if said else f"exit status {res.returncode}"))
    return took


def ls_many(ctx):
    return _timed_command(ctx, ["ls", "-l", _many(ctx)])


def find_stat(ctx):
    # -ls lstat()s every entry, like ls -l over the whole tree.
    return _timed_command(ctx, ["find", ctx.mnt, "-ls"])


def missing_lookups(ctx):
    d = os.path.join(ctx.mnt, trees.PROBE_DIR)
    names = [os.path.join(d, f"missing{i:06d}") for i in range(ctx.profile.missing_lookups)]
    start = time.perf_counter()
    for path in names:
        try:
            os.stat(path)
        except FileNotFoundError:
            pass
        else:
            raise JobError(f"{path} exists")
    return time.perf_counter() - start


def huge_dir_ops(ctx):
    """A listing of the huge directory, then lookups, creates and unlinks spread over it: the
    time per operation must not grow with the directory (no scan per lookup, no quadratic merge)."""
    d = os.path.join(ctx.mnt, trees.HUGE_DIR)
    entries = ctx.profile.huge_dir_entries
    ops = min(trees.HUGE_DIR_OPS, entries)
    step = max(entries // ops, 1)
    start = time.perf_counter()
    listed = sum(1 for _ in os.scandir(d))
    if listed != entries:
        raise JobError(f"{d} lists {listed} entries, expected {entries}")
    for i in range(ops):
        os.lstat(os.path.join(d, trees.huge_name(i * step)))
    for i in range(ops):
        path = os.path.join(d, f"new{i:06d}")
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    for i in range(ops):
        os.unlink(os.path.join(d, trees.huge_name(i * step)))
    return time.perf_counter() - start


def read_tar(ctx):
    with open(ctx.include_tar, "rb") as f:
        while f.read(MIB):
            pass


def make_untar_dir(ctx):
    os.mkdir(os.path.join(ctx.mnt, "untar"))


def untar(ctx):
    return _timed_command(
        ctx, ["tar", "-xf", ctx.include_tar, "-C", os.path.join(ctx.mnt, "untar")]
    )


def _throughput(name, title, run, modes, **extra):
    return Job(name, "data", title, "data", "MiB/s", True, modes, run, needs=("fio",), **extra)


def timed(name, group, title, stack, run, modes, **extra):
    return Job(name, group, title, stack, "s", False, modes, run, **extra)


def make_jobs(profile):
    p = profile
    size = human_bytes(p.data_bytes)
    rio = human_bytes(p.random_io_bytes)
    rsize = human_bytes(p.random_file_bytes)
    both = ("cold", "warm")
    cold = ("cold",)
    if p.include_files == 0:
        include = "/usr/include"
    else:
        include = f"{p.include_files:,} files of /usr/include"
    jobs = [
        _throughput(
            "seqread",
            f"sequential read, 1 MiB blocks, {size} lower file",
            seqread,
            both,
            warm_setup=read_whole_big_file,
            mutates=False,
        ),
        _throughput(
            "randread",
            f"random read, 4 KiB blocks, {rio} of a {size} lower file",
            randread,
            both,
            warm_setup=read_whole_big_file,
            mutates=False,
        ),
        _throughput(
            "mmapread",
            f"mmap read (fio ioengine=mmap), {size} lower file",
            mmapread,
            both,
            warm_setup=read_whole_big_file,
            mutates=False,
        ),
        _throughput(
            "seqwrite",
            f"sequential write of a new {size} file, 1 MiB blocks, fsync",
            seqwrite,
            cold,
        ),
        _throughput(
            "randwrite",
            f"random write, 4 KiB blocks, {rio} into a copied-up {rsize} file, fsync",
            randwrite,
            cold,
            setup=copy_up_untimed,
            writes=(trees.RANDOM_WRITE_FILE,),
        ),
        timed(
            "copyup",
            "data",
            f"first write + fsync to a {size} lower file (copy-up latency)",
            "data",
            first_write,
            cold,
            writes=(trees.COPY_UP_FILE,),
        ),
        timed(
            "create",
            "metadata",
            f"create {p.files:,} empty files in a merged directory",
            "meta",
            create_files,
            cold,
        ),
        timed(
            "stat",
            "metadata",
            f"stat {p.files:,} lower files",
            "meta",
            stat_files,
            both,
            mutates=False,
        ),
        timed(
            "unlink",
            "metadata",
            f"unlink {p.files:,} lower files (whiteouts)",
            "meta",
            unlink_files,
            cold,
        ),
        timed(
            "ls",
            "metadata",
            f"ls -l of a {p.files:,}-entry directory merged from 2 layers",
            "meta",
            ls_many,
            both,
            needs=("ls",),
            mutates=False,
        ),
    ]
    for layers in p.include_layers:
        plural = "s" if layers > 1 else ""
        jobs.append(
            timed(
                f"find-{layers}",
                "metadata",
                f"find -ls over {include} spread over {layers} layer{plural}",
                f"inc{layers}",
                find_stat,
                both,
                needs=("find",),
                mutates=False,
            )
        )
    jobs += [
        timed(
            "missing",
            "metadata",
            f"{p.missing_lookups:,} lookups of missing names under {p.missing_layers} layers",
            f"inc{p.missing_layers}",
            missing_lookups,
            both,
            mutates=False,
        ),
        timed(
            "untar",
            "metadata",
            f"untar {include} into the mount",
            "meta",
            untar,
            cold,
            setup=make_untar_dir,
            prime=read_tar,
            needs=("tar",),
        ),
        timed(
            "hugedir",
            "metadata",
            f"list a {p.huge_dir_entries:,}-entry directory merged from 4 layers, then "
            f"{min(trees.HUGE_DIR_OPS, p.huge_dir_entries):,} lookups, creates and unlinks in it",
            "hugedir",
            huge_dir_ops,
            cold,
        ),
        timed(
            "walk",
            "metadata",
            f"find -ls over a {p.walk_files:,}-file tree in {p.walk_layers} layers "
            "(then the daemon's peak RSS is read)",
            "walk",
            find_stat,
            cold,
            needs=("find",),
            record_rss=True,
            mutates=False,
        ),
    ]
    if p.workloads:
        from . import workloads  # it builds on this module

        jobs += workloads.workload_jobs(p, include)
    return jobs


def _matches(job, word):
    return (
        word == job.name
        or word == job.group
        or (word.endswith("*") and job.name.startswith(word[:-1]))
        or (word == "find" and job.name.startswith("find-"))
        or (word == "rss" and job.record_rss)
    )


def select_jobs(jobs, only):
    """--only: job names, a name prefix followed by '*', "find" for every find-N, a group (data,
    metadata), or "rss" for the job after which the daemon's peak RSS is read."""
    if not only:
        return jobs
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if not any(_matches(j, w) for j in jobs)]
    if unknown:
        raise ValueError(
            f"unknown job {', '.join(unknown)}; known: {', '.join(j.name for j in jobs)}, "
            "data, metadata, workload, rss"
        )
    return [j for j in jobs if any(_matches(j, w) for w in wanted)]


def missing_programs(job):
    return [prog for prog in job.needs if shutil.which(prog) is None]
