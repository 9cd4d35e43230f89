"""Runs every job on every contender: fresh mount, caches dropped, cold run, warm run, unmount.

Each timed run happens in a forked child with a deadline, so a FUSE daemon that stops answering
costs one aborted connection and an error in the table, not a hung harness.
"""

import json
import os
import select
import signal
import statistics
import sys
import time

from . import contenders as contenders_mod
from . import trees
from .jobs import Context, missing_programs
from .workloads import headline_figures


def drop_caches():
    """sync; echo 3 > /proc/sys/vm/drop_caches. False when not allowed (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def cache_drop_count():
    """How many times anyone has dropped the page cache since boot (/proc/vmstat), or None."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("drop_pagecache "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def describe_error(exc):
    text = str(exc).strip().splitlines()
    text = text[-1] if text else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kill_group(pid):
    """Kills the process group of a child forked by run_isolated (it and what it started), reaps it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run_isolated(fn, ctx, timeout, on_timeout=None):
    """Runs fn(ctx) in a forked child (its own process group) and returns ("ok", value) or
    ("error", message). Past the timeout on_timeout() runs (it aborts the FUSE connection), then the
    child's process group is killed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status = 0
        try:
            os.setpgid(0, 0)
            message = {"value": fn(ctx)}
        except BaseException as e:  # the child reports everything and exits
            message = {"error": describe_error(e)}
        try:
            os.write(write_end, json.dumps(message).encode())
        except BaseException:
            status = 1
        os._exit(status)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first, or is already gone
    deadline = time.monotonic() + timeout
    chunks = []
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                data = os.read(read_end, 65536)
                if not data:
                    break
                chunks.append(data)
    except BaseException:  # interrupted: take the child down with us
        _kill_group(pid)
        raise
    finally:
        os.close(read_end)
    if timed_out:
        if on_timeout:
            on_timeout()
        _kill_group(pid)
        return "error", f"timed out after {timeout:.0f} s"
    _, status = os.waitpid(pid, 0)
    try:
        message = json.loads(b"".join(chunks).decode())
    except ValueError:
        return "error", f"child died (wait status {status})"
    if "error" in message:
        return "error", message["error"]
    return "ok", message["value"]


class Results:
    """Every run's figures, keyed by job+mode and contender."""

    def __init__(self):
        # key -> contender -> {"values": [], "cpu": [], "errors": [], "disturbed": 0}
        self.runs = {}
        self.rss = {}  # contender -> [MiB]
        self.foreign_drops = 0  # page-cache drops by other processes while this run measured

    def _slot(self, key, contender):
        return self.runs.setdefault(key, {}).setdefault(
            contender, {"values": [], "cpu": [], "errors": [], "disturbed": 0, "extra": {}}
        )

    def disturbed(self, key, contender):
        """Counts a warm run during which someone else dropped the page cache."""
        self._slot(key, contender)["disturbed"] += 1

    def add(self, key, contender, value=None, cpu=None, error=None, extra=None):
        slot = self._slot(key, contender)
        if error is not None:
            slot["errors"].append(error)
        else:
            slot["values"].append(value)
            if cpu is not None:
                slot["cpu"].append(cpu)
            for name, figure in (extra or {}).items():
                slot["extra"].setdefault(name, []).append(figure)

    def add_rss(self, contender, mib):
        self.rss.setdefault(contender, []).append(mib)

    def median(self, key, contender):
        slot = self.runs.get(key, {}).get(contender)
        if not slot or not slot["values"]:
            return None
        return statistics.median(slot["values"])

    def cpu_median(self, key, contender):
        slot = self.runs.get(key, {}).get(contender)
        if not slot or not slot["cpu"]:
            return None
        return statistics.median(slot["cpu"])

    def extra_medians(self, key, contender):
        """The median of each further figure a job reported (requests per file, say)."""
        slot = self.runs.get(key, {}).get(contender)
        if not slot:
            return {}
        return {name: statistics.median(values) for name, values in slot["extra"].items()}

    def errors(self, key, contender):
        slot = self.runs.get(key, {}).get(contender)
        return slot["errors"] if slot else []


def job_key(job, mode):
    return job.name if job.modes == ("cold",) else f"{job.name}-{mode}"


def result_keys(job):
    """(key, mode) of every row a job fills: one per mode, then one per part of a run."""
    return [(job_key(job, mode), mode) for mode in job.modes] + [
        (f"{job.name}-{part}", part) for part in job.parts
    ]


class Runner:
    def __init__(
        self,
        profile,
        stacks,
        include_tar,
        contenders,
        log=None,
        can_drop_caches=True,
        workdir=None,
    ):
        self.workdir = workdir  # where a job with its own target (podman) makes it
        self.profile = profile
        self.stacks = stacks
        self.include_tar = include_tar
        self.contenders = contenders
        self.results = Results()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.can_drop_caches = can_drop_caches

    def probe(self, stack):
        """Mounts stack once per contender; one that cannot mount is reported unavailable."""
        for c in self.contenders:
            if not c.available:
                self.log(f"  {c.name}: unavailable ({c.reason})")
                continue
            try:
                mounted = c.mount(stack, mutates=False)
                try:
                    os.listdir(mounted.path)
                finally:
                    mounted.unmount()
            # Any failure to mount makes the contender unavailable, not the run.
            except Exception as e:
                c.available = False
                c.reason = str(e) if isinstance(e, contenders_mod.MountError) else describe_error(e)
                self.log(f"  {c.name}: unavailable ({c.reason})")

    def run(self, jobs):
        for job in jobs:
            missing = missing_programs(job)
            why_not = f"{', '.join(missing)} not installed" if missing else None
            if not why_not and job.unavailable:
                why_not = job.unavailable()
            if why_not:
                self.log(f"  {job.name}: skipped ({why_not})")
            too_slow = set()  # contenders whose first run of this job took over slow_seconds
            for rep in range(self.profile.repeat):
                for c in self.contenders:
                    if not c.available or c.name in too_slow:
                        continue
                    why = why_not or (job.refuses(c) if job.refuses else None)
                    if why:
                        if rep == 0:
                            for key, _ in result_keys(job):
                                self.results.add(key, c.name, error=f"skipped: {why}")
                        continue
                    took = self._run_one(job, c, rep)
                    if rep == 0 and self.profile.repeat > 1 and took > self.profile.slow_seconds:
                        # Bounds the whole run: one figure of something this slow is telling enough.
                        too_slow.add(c.name)
                        self.log(f"  {job.name} {c.name}: ran {took:.0f} s, not repeated")

    def _run_one(self, job, contender, rep):
        """One fresh mount, its cold and warm runs and the unmount. Returns the seconds its timed
        runs took (setup, mounting and cleaning up not counted)."""
        stack = self.stacks.get(job.stack)
        keys = [job_key(job, mode) for mode in job.modes]
        part_keys = [key for key, _ in result_keys(job)[len(keys) :]]
        timeout = job.timeout or self.profile.timeout
        prefix = f"  {job.name} [{rep + 1}/{self.profile.repeat}] {contender.name}:"
        try:
            if job.target:
                mounted = job.target(contender, self)
            else:
                mounted = contender.mount(stack, writes=job.writes, mutates=job.mutates)
        except Exception as e:  # a failed mount is this job's result for this contender
            message = str(e) if isinstance(e, contenders_mod.MountError) else describe_error(e)
            for key in keys + part_keys:
                self.results.add(key, contender.name, error=message)
            self.log(f"{prefix} {message}")
            return 0.0
        said = []
        timed = 0.0
        try:
            ctx = Context(
                mnt=mounted.path,
                profile=self.profile,
                include_tar=self.include_tar,
                timeout=timeout,
                target=mounted,
            )
            failed = None
            if job.setup:
                outcome, value = run_isolated(job.setup, ctx, timeout, mounted.abort)
                if outcome == "error":
                    failed = f"setup: {value}"
            if failed is None and self.can_drop_caches:
                drop_caches()
            if failed is None and job.prime:
                job.prime(ctx)
            for mode, key in zip(job.modes, keys):
                drops_before = cache_drop_count()  # from before the warm setup: it warms the cache
                if failed is None and mode == "warm" and job.warm_setup:
                    outcome, value = run_isolated(job.warm_setup, ctx, timeout, mounted.abort)
                    if outcome == "error":
                        failed = f"warm setup: {value}"
                if failed is not None:
                    self.results.add(key, contender.name, error=failed)
                    if not said:
                        said.append(failed)
                    continue
                ctx.mode = mode
                cpu_before = mounted.daemon_cpu_seconds()
                start = time.monotonic()
                outcome, value = run_isolated(job.run, ctx, timeout, mounted.abort)
                timed += time.monotonic() - start
                cpu_after = mounted.daemon_cpu_seconds()
                drops_after = cache_drop_count()
                if drops_before is not None and drops_after != drops_before:
                    # This harness drops caches only between runs: another process did it, and a
                    # warm figure is no longer warm (a cold one is only colder).
                    self.results.foreign_drops += drops_after - drops_before
                    if mode == "warm":
                        self.results.disturbed(key, contender.name)
                cpu = None
                if cpu_before is not None and cpu_after is not None:
                    cpu = cpu_after - cpu_before
                if outcome == "error":
                    failed = value
                    for k in [key] + part_keys:
                        self.results.add(k, contender.name, error=value)
                    said.append(f"{mode} {value}")
                else:
                    recorded = self._record(job, key, part_keys, contender.name, value, cpu)
                    said.append(f"{mode} {recorded}")
            if job.record_rss and failed is None and mounted.pid:
                rss = mounted.daemon_peak_rss_mib()
                if rss is not None:
                    self.results.add_rss(contender.name, rss)
                    said.append(f"peak RSS {rss:.1f} MiB")
        finally:
            mounted.unmount()
        changed = stack.changed_guarded() if stack else []
        if changed:
            message = f"wrote through to the lower layer ({', '.join(changed)} changed)"
            for key in keys:
                self.results.add(key, contender.name, error=message)
            said.append(message)
            trees.rewrite_guarded(stack)
        self.log(f"{prefix} {', '.join(said)}")
        return timed

    def _record(self, job, key, part_keys, name, value, cpu):
        """Stores one run's figures; a job with parts returns a dict (Job.parts). Returns what
        the progress line says of it."""
        parts, extra = {}, {}
        if isinstance(value, dict):
            parts, extra = value.get("parts", {}), value.get("extra", {})
            cpu = value.get("cpu", cpu)
            value = value["value"]
        value = float(value)
        self.results.add(key, name, value=value, cpu=cpu, extra=extra)
        said = [f"{value:.4g} {job.unit}"]
        for part_key, part in zip(part_keys, job.parts):
            if part in parts:
                self.results.add(part_key, name, value=float(parts[part]))
                said.append(f"{part} {parts[part]:.4g}")
            else:
                self.results.add(part_key, name, error="no figure")
        said += [f"{figure:.3g} {what}" for what, figure in headline_figures(extra).items()]
        return " ".join(said)
