"""Turns a run's results into JSON, a Markdown table (figures and ratios to kernel overlayfs), PNG
charts, and the block --publish puts into docs/perf.md. The Markdown and charts are drawn from the
JSON alone, so a stored latest.json can be re-rendered."""

import dataclasses
import os
import shutil
import statistics

from .runner import result_keys
from .workloads import REQUESTS_IN, REQUESTS_OF, headline_figures

SCHEMA = 1
GROUPS = (("data", "Data path"), ("metadata", "Metadata"), ("workload", "Real workloads"))
BEGIN_MARK = "<!-- perf-results:begin -->"
END_MARK = "<!-- perf-results:end -->"
CHART_FILES = ("data.png", "metadata.png", "resources.png")


def build(profile, jobs, contenders, results, machine, started, duration_s, caches_dropped):
    names = [c.name for c in contenders]
    report = {
        "schema": SCHEMA,
        "profile": profile.name,
        "sizes": dataclasses.asdict(profile),
        "started": started,
        "duration_s": round(duration_s, 1),
        "caches_dropped": caches_dropped,
        "foreign_cache_drops": results.foreign_drops,
        "machine": machine,
        "contenders": {c.name: c.describe() for c in contenders},
        "jobs": [],
        "daemon_peak_rss_mib": {},
        "daemon_peak_rss_mib_runs": {},
    }
    for job in jobs:
        for key, mode in result_keys(job):
            entry = {
                "key": key,
                "job": job.name,
                "mode": mode,
                "group": job.group,
                "title": job.title if mode in job.modes else f"{job.title}: the {mode} phase",
                "unit": job.unit,
                "higher_is_better": job.higher_is_better,
                "results": {},
            }
            kernel = results.median(key, "kernel")
            for name in names:
                median = results.median(key, name)
                slot = results.runs.get(key, {}).get(
                    name, {"values": [], "errors": [], "disturbed": 0}
                )
                ratio = median / kernel if median is not None and kernel else None
                entry["results"][name] = {
                    "median": median,
                    "runs": slot["values"],
                    "errors": slot["errors"],
                    "ratio_to_kernel": ratio,
                    "daemon_cpu_s": results.cpu_median(key, name),
                    "disturbed_runs": slot["disturbed"],
                    "extra": results.extra_medians(key, name),
                }
            report["jobs"].append(entry)
    for name, values in results.rss.items():
        # VmHWM of each run's daemon; the median like every other figure, every run in _runs.
        report["daemon_peak_rss_mib"][name] = statistics.median(values)
        report["daemon_peak_rss_mib_runs"][name] = values
    report["targets"] = evaluate_targets(report)
    return report


# The targets of docs/perf.md, checked against laminafs (and fuse-overlayfs for reference).
def evaluate_targets(report):
    jobs = {j["key"]: j for j in report["jobs"]}
    walk_files = report["sizes"]["walk_files"]
    targets = []

    def ratio(key, name):
        j = jobs.get(key)
        return j["results"].get(name, {}).get("ratio_to_kernel") if j else None

    def at_least(key, floor, label):
        row = {"target": label, "results": {}}
        for name in ("laminafs", "fuse-overlayfs"):
            r = ratio(key, name)
            row["results"][name] = None if r is None else {"value": f"{r:.2f}x", "met": r >= floor}
        targets.append(row)

    def at_most(key, ceiling, label):
        row = {"target": label, "results": {}}
        for name in ("laminafs", "fuse-overlayfs"):
            r = ratio(key, name)
            row["results"][name] = (
                None if r is None else {"value": f"{r:.2f}x", "met": r <= ceiling}
            )
        targets.append(row)

    at_least("seqread-cold", 0.5, "cold sequential read ≥ 0.5x kernel")
    at_least("randread-cold", 0.8, "cold random read ≥ 0.8x kernel")
    row = {"target": "every metadata job within 3x kernel time", "results": {}}
    for name in ("laminafs", "fuse-overlayfs"):
        ratios = [(ratio(k, name), k) for k, j in jobs.items() if j["group"] == "metadata"]
        ratios = [(r, k) for r, k in ratios if r is not None]
        if ratios:
            worst, worst_key = max(ratios)
            row["results"][name] = {"value": f"worst {worst:.2f}x ({worst_key})", "met": worst <= 3}
        else:
            row["results"][name] = None
    targets.append(row)
    at_most("podman", 2.5, "podman job within 2.5x kernel (moonshot 1.3x)")
    at_most("build", 1.3, "build within 1.3x kernel")
    missing_key = "missing-cold"
    layers = report["sizes"]["include_layers"][-1] if report["sizes"]["include_layers"] else 0
    at_most(missing_key, 2, f"missing-name lookups at {layers} layers within 2x kernel")
    row = {"target": "faster than fuse-overlayfs on every job", "results": {}}
    slower, compared = [], 0
    for key, j in jobs.items():
        ours = j["results"].get("laminafs", {}).get("median")
        theirs = j["results"].get("fuse-overlayfs", {}).get("median")
        if ours is None or theirs is None:
            continue
        compared += 1
        better = ours > theirs if j["higher_is_better"] else ours < theirs
        if not better:
            slower.append(key)
    if compared:
        value = f"{compared - len(slower)} of {compared}" + (
            f"; not in {', '.join(slower)}" if slower else ""
        )
        row["results"]["laminafs"] = {"value": value, "met": not slower}
    else:
        row["results"]["laminafs"] = None
    row["results"]["fuse-overlayfs"] = None
    targets.append(row)
    label = "daemon peak RSS < 100 MiB for 100,000 files"
    if walk_files != 100_000:
        label += f" (this profile walks {walk_files:,})"
    row = {"target": label, "results": {}}
    for name in ("laminafs", "fuse-overlayfs"):
        rss = report["daemon_peak_rss_mib"].get(name)
        row["results"][name] = (
            None if rss is None else {"value": f"{rss:.1f} MiB", "met": rss < 100}
        )
    targets.append(row)
    return targets


def fmt(value):
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(result, repeat):
    if result is None:
        return "n/a"
    if result["median"] is None:
        if result["errors"] and all(e.startswith("skipped:") for e in result["errors"]):
            return "skipped"
        return "error" if result["errors"] else "n/a"
    text = fmt(result["median"])
    if result["errors"]:
        text += f" ({len(result['errors'])} failed)"
    elif len(result["runs"]) < repeat:
        text += f" ({len(result['runs'])} run{'s' if len(result['runs']) > 1 else ''})"
    if result.get("disturbed_runs"):
        text += " †"
    shown = [f"{fmt(v)} {name}" for name, v in headline_figures(result.get("extra")).items()]
    if shown:
        text += " (" + ", ".join(shown) + ")"
    return text


def _table(header, rows):
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _summary(report):
    m = report["machine"]
    parts = [
        f"Linux {m['kernel']}",
        f"{m['cpu']} ({m['cores']} cores)",
        f"{m['memory_gib']} GiB RAM",
        f"{m['fs_type']} under {m['workdir']}",
    ]
    versions = []
    for name, info in report["contenders"].items():
        if name == "plain":
            continue
        if info["available"]:
            versions.append(f"{name} {info['version']}" if info["version"] else name)
        else:
            versions.append(f"{name}: unavailable ({info['reason']})")
    lines = [
        f"Profile `{report['profile']}`, run {report['started']} in {report['duration_s']:.0f} s; "
        f"median of {report['sizes']['repeat']} run{'s' if report['sizes']['repeat'] > 1 else ''}.",
        "",
        f"Machine: {', '.join(parts)}; {m['libfuse']}; {m['fio'] or 'fio missing'}; lamina {m['lamina_revision'] or '?'}.",
        "",
        "Contenders: " + "; ".join(versions) + ".",
    ]
    if report.get("foreign_cache_drops"):
        lines += [
            "",
            f"**Another process dropped the page cache {report['foreign_cache_drops']:,} times while "
            "this run measured.** A warm figure marked † had its cache dropped under it: it is not "
            "a warm figure.",
        ]
    if not report["caches_dropped"]:
        lines += [
            "",
            "**Caches were not dropped (a smoke run, or not root): the cold figures are not cold.**",
        ]
    return lines


def render_markdown(report, chart_prefix=None, level=2):
    """The results as Markdown; headings start at `level` (2 in latest.md, 3 inside docs/perf.md)."""
    names = list(report["contenders"])
    others = [n for n in names if n != "kernel"]
    has_kernel = "kernel" in names
    h = "#" * (level + 1)
    lines = [f"{'#' * level} Results ({report['profile']})", ""] + _summary(report) + [""]
    lines += [
        "Cold: caches dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) after a fresh mount; "
        "warm: the same job again on that mount. MiB/s: higher is better; s: lower is better. "
        "A ratio is the contender's figure divided by kernel overlayfs's in this run. "
        '"(1 run)": the first run took so long it was not repeated.',
        "",
    ]
    problems = {}
    for group, heading in GROUPS:
        entries = [j for j in report["jobs"] if j["group"] == group]
        if not entries:
            continue
        header = ["job", "unit"] + names + ([f"{n} ÷ kernel" for n in others] if has_kernel else [])
        rows = []
        for j in entries:
            arrow = "↑" if j["higher_is_better"] else "↓"
            row = [f"`{j['key']}`", f"{j['unit']} {arrow}"]
            row += [_cell(j["results"].get(n), report["sizes"]["repeat"]) for n in names]
            if has_kernel:
                for n in others:
                    r = j["results"].get(n, {}).get("ratio_to_kernel")
                    row.append("n/a" if r is None else f"{r:.2f}x")
            rows.append(row)
            for n in names:
                for err in j["results"].get(n, {}).get("errors", []):
                    problems.setdefault(f"{n}: {err}", []).append(j["key"])
        lines += [f"{h} {heading}", ""] + _table(header, rows) + [""]
        if chart_prefix:
            lines += [f"![{heading}: ratio to kernel overlayfs]({chart_prefix}{group}.png)", ""]
    lines += _requests_section(report, h)
    lines += _resources_section(report, chart_prefix, h)
    lines += _targets_section(report, h)
    lines += [f"{h} What each job does", ""]
    seen = set()
    for j in report["jobs"]:
        if j["job"] in seen:
            continue
        seen.add(j["job"])
        lines.append(f"- `{j['job']}`: {j['title']}")
    lines.append("")
    if problems:
        lines += [f"{h} Problems", ""]
        for message, keys in problems.items():
            lines.append(f"- {message} ({', '.join(keys)})")
        lines.append("")
    return "\n".join(lines)


def _requests_section(report, h):
    """The FUSE requests per file of each job that counted them (podman), in all, per phase and
    per operation, one column per contender."""
    lines = []
    for j in report["jobs"]:
        counted = {
            n: r["extra"]
            for n, r in j["results"].items()
            if (r.get("extra") or {}).get("requests/file") is not None
        }
        if not counted:
            continue
        names = list(counted)
        seen = list(dict.fromkeys(k for extra in counted.values() for k in extra))
        phases = [k for k in seen if k.startswith(REQUESTS_IN)]
        ops = [k for k in seen if k.startswith(REQUESTS_OF)]
        ops.sort(key=lambda k: -max(extra.get(k, 0) for extra in counted.values()))
        rows = []
        for k in ["requests/file"] + phases + ops:
            label = (
                "all"
                if k == "requests/file"
                else f"in {k[len(REQUESTS_IN):]}"
                if k.startswith(REQUESTS_IN)
                else f"`{k[len(REQUESTS_OF):]}`"
            )
            rows.append([label] + [fmt(counted[n].get(k, 0)) for n in names])
        lines += [
            f"{h} FUSE requests per file, `{j['key']}`",
            "",
            "Requests the kernel sent the daemon (its `fuse_request_send` tracepoint, or laminafs's "
            "own count of requests over io_uring where tracing is not available) over the "
            "container's three phases, divided by the tar's entries: in all, in each phase and of "
            "each operation.",
            "",
        ]
        lines += _table(["requests per file", *names], rows) + [""]
    return lines


def _resources_section(report, chart_prefix, h):
    fuse = [n for n, info in report["contenders"].items() if info["kind"] == "fuse"]
    if not fuse:
        return []
    walk_files = report["sizes"]["walk_files"]
    rows = [
        [f"peak RSS after walking {walk_files:,} files (MiB)"]
        + [fmt(report["daemon_peak_rss_mib"].get(n)) for n in fuse]
    ]
    for j in report["jobs"]:
        cells = [fmt(j["results"].get(n, {}).get("daemon_cpu_s")) for n in fuse]
        if all(c == "n/a" for c in cells):
            continue
        rows.append([f"daemon CPU s, `{j['key']}`"] + cells)
    lines = [f"{h} FUSE daemon resources", ""] + _table(["", *fuse], rows) + [""]
    if chart_prefix:
        lines += [f"![FUSE daemon resources]({chart_prefix}resources.png)", ""]
    return lines


def _targets_section(report, h):
    rows = []
    for t in report["targets"]:
        row = [t["target"]]
        for name in ("laminafs", "fuse-overlayfs"):
            r = t["results"].get(name)
            row.append("n/a" if r is None else f"{r['value']} {'✅' if r['met'] else '❌'}")
        rows.append(row)
    return (
        [f"{h} Targets", ""]
        + _table(["target", "laminafs", "fuse-overlayfs (for reference)"], rows)
        + [""]
    )


def write_charts(report, out_dir):
    """One PNG of ratios to kernel per job group, and one of the FUSE daemons' resources. Returns the
    files written, or [] (with the reason) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (apt-get install python3-matplotlib)"
    os.makedirs(out_dir, exist_ok=True)
    written = []
    # Contenders with at least one figure (an unavailable laminafs gets no empty legend entry).
    names = [
        n
        for n in report["contenders"]
        if n != "kernel"
        and any(j["results"].get(n, {}).get("median") is not None for j in report["jobs"])
    ]
    colours = {
        "plain": "#8c8c8c",
        "fuse-overlayfs": "#d95f02",
        "laminafs": "#1b9e77",
        "laminafs-plain": "#7570b3",
    }
    for group, heading in GROUPS:
        entries = [j for j in report["jobs"] if j["group"] == group]
        if not entries or "kernel" not in report["contenders"]:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(entries) + 2), 4.2))
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            xs, ys = [], []
            for x, j in enumerate(entries):
                r = j["results"].get(name, {}).get("ratio_to_kernel")
                if r is not None and r > 0:
                    xs.append(x + (i - (len(names) - 1) / 2) * width)
                    ys.append(r)
            ax.bar(xs, ys, width, label=name, color=colours.get(name))
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels(
            [f"{j['key']} {'↑' if j['higher_is_better'] else '↓'}" for j in entries],
            rotation=35,
            ha="right",
            fontsize=8,
        )
        ax.set_ylabel("contender ÷ kernel overlayfs (log)")
        ax.set_title(
            f"{heading}: ratio to kernel overlayfs ({report['profile']} run)\n"
            "↑ MiB/s, higher is better; ↓ seconds, lower is better",
            fontsize=9,
        )
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        path = os.path.join(out_dir, f"{group}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fuse = [
        n
        for n, info in report["contenders"].items()
        if info["kind"] == "fuse" and info["available"]
    ]
    if fuse:
        fig, (left, right) = plt.subplots(
            1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 3]}
        )
        rss = [report["daemon_peak_rss_mib"].get(n) or 0 for n in fuse]
        bars = left.bar(fuse, rss, color=[colours.get(n) for n in fuse])
        left.bar_label(bars, labels=[f"{v:.1f}" if v else "n/a" for v in rss], fontsize=8)
        left.axhline(100, color="red", linewidth=0.8, linestyle="--")
        left.set_ylabel("MiB")
        left.set_title(
            f"peak RSS after walking {report['sizes']['walk_files']:,} files", fontsize=9
        )
        keys = [
            j
            for j in report["jobs"]
            if any(j["results"].get(n, {}).get("daemon_cpu_s") is not None for n in fuse)
        ]
        width = 0.8 / len(fuse)
        for i, name in enumerate(fuse):
            ys = [j["results"].get(name, {}).get("daemon_cpu_s") or 0 for j in keys]
            right.bar(
                [x + (i - (len(fuse) - 1) / 2) * width for x in range(len(keys))],
                ys,
                width,
                label=name,
                color=colours.get(name),
            )
        right.set_xticks(range(len(keys)))
        right.set_xticklabels([j["key"] for j in keys], rotation=35, ha="right", fontsize=8)
        right.set_ylabel("daemon CPU seconds (user + system)")
        right.set_title("daemon CPU per job", fontsize=9)
        right.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "resources.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written, ""


def publish(
    markdown_for_docs, docs_md, chart_paths, docs_chart_dir, begin=BEGIN_MARK, end=END_MARK
):
    """Puts the results block between the markers of docs/perf.md (the lazy job has markers of
    its own) and copies the charts beside it."""
    with open(docs_md) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise ValueError(f"{docs_md}: markers {begin} / {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{markdown_for_docs.strip()}\n{end}{tail}"
    with open(docs_md, "w") as f:
        f.write(new)
    os.makedirs(docs_chart_dir, exist_ok=True)
    for path in chart_paths:
        shutil.copyfile(path, os.path.join(docs_chart_dir, os.path.basename(path)))


def check_report(report, markdown):
    """The smoke test's check that the output parses: every job has a row and every figure is a
    number or an explained error. Returns a list of problems."""
    problems = []
    for field in ("schema", "profile", "machine", "contenders", "jobs", "targets"):
        if field not in report:
            problems.append(f"JSON lacks {field}")
    for j in report.get("jobs", []):
        if f"`{j['key']}`" not in markdown:
            problems.append(f"Markdown lacks a row for {j['key']}")
        for name, r in j["results"].items():
            if r["median"] is None and not r["errors"] and report["contenders"][name]["available"]:
                problems.append(f"{j['key']}/{name}: neither a figure nor an error")
            if r["median"] is not None and not isinstance(r["median"], (int, float)):
                problems.append(f"{j['key']}/{name}: median is not a number")
    return problems
