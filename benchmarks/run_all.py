"""Run every skbackdoor benchmark and write the combined report.

One command, from the repository root (after ``bash tools/install.sh``)::

    .venv/bin/python benchmarks/run_all.py --quick   # smaller sizes, < 10 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py           # full sizes

Each ``benchmarks/bench_*.py`` script runs in its own fresh process (with ``--quick``
when asked), one after the other so that timings do not compete for the cores, and
writes its own ``benchmarks/results/<name>[_quick].md|json`` and figures. This script
then writes, next to them:

- ``summary[_quick].md|json``: the environment (Python and library versions, CPU cores,
  platform, git commit), and for every script its status, wall time and report;
- ``comparison[_quick].md|json`` and ``comparison[_quick].png``: each defense on each
  BadNet (CCA, ASR, FRR / FAR, time): the ``comparison`` rows of every script's JSON
  (one format for all, see ``_harness.py``), beside the published numbers of
  BackdoorBench, the CSAW-HackML-2020 reports and the STRIP paper, with the differences
  of setting spelled out.

``--quick`` must stay under :data:`QUICK_BUDGET_S` (600 s) in all on 2 idle cores. Each
script's share, :data:`QUICK_BUDGETS_S` (the summary shows it beside each wall time; each
script's docstring says what its quick mode leaves out):

=================  ======  ==========================================================
script             budget  quick mode
=================  ======  ==========================================================
train_badnet        15 s   the 15,000-image quick BadNet (cached after the first run)
strip              120 s   quick BadNets, 2,500 evaluation images, 3 timing pairs
fine_pruning       110 s   patch and pruning-aware BadNets, pruning only and fine-pruning
neural_cleanse      80 s   patch BadNet, the clean net (scan only), CSAW extrapolation
goodnet             40 s   patch and blend BadNets, no grid timing
repair             100 s   the defaults of each defense on 3 MNIST / Fashion-MNIST nets
speed               80 s   2-candidate grid, 2,000 STRIP inputs, no NeuralCleanse / memory
strip_calibration   30 s   3 MNIST / Fashion-MNIST nets of the repair matrix, 2 seeds
(total)            575 s   leaves 25 s for a slower machine
=================  ======  ==========================================================

``--collect-only`` skips running and rebuilds the comparison from the JSON files already
in ``benchmarks/results`` (the summary of the last real run is kept). Logs of each script go to
``benchmarks/results/logs/``. Seeds are fixed inside each script; this runner adds
``PYTHONHASHSEED=0``.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness when loaded from elsewhere (the docs)

import _harness  # noqa: E402
from _harness import BENCHMARKS, RESULTS, ROOT, environment_lines  # noqa: E402

# The BadNets are trained first (other scripts may reuse what it caches), then each
# defense; any other bench_*.py found is run after these, in name order.
ORDER = ["train_badnet", "strip", "fine_pruning", "neural_cleanse", "goodnet", "repair", "speed"]

QUICK_BUDGET_S = 600
# Each script's share of it, in seconds on 2 idle cores (the table of the docstring).
QUICK_BUDGETS_S = {"train_badnet": 15, "strip": 120, "fine_pruning": 110, "neural_cleanse": 80, "goodnet": 40,
                   "repair": 100, "speed": 80, "strip_calibration": 30}

# --------------------------------------------------------------------------- anchors

# Published numbers, quoted (percent). They come from other datasets, architectures and
# implementations: the "setting" column says how each differs from ours.
ANCHORS = [
    {
        "source": "BackdoorBench leaderboard",
        "url": "https://backdoorbench.github.io",
        "setting": "CIFAR-10, BadNets, PreAct-ResNet18, 10 % poisoning",
        "defense": "Fine-Pruning (FP)",
        "cca": 91.31,
        "asr": 57.13,
    },
    {
        "source": "BackdoorBench leaderboard",
        "url": "https://backdoorbench.github.io",
        "setting": "CIFAR-10, BadNets, PreAct-ResNet18, 10 % poisoning",
        "defense": "Fine-tuning (FT)",
        "cca": 89.96,
        "asr": 1.48,
    },
    {
        "source": "BackdoorBench leaderboard",
        "url": "https://backdoorbench.github.io",
        "setting": "CIFAR-10, BadNets, PreAct-ResNet18, 10 % poisoning",
        "defense": "Neural Cleanse (NC)",
        "cca": 89.05,
        "asr": 1.27,
    },
    {
        "source": "BackdoorBench leaderboard",
        "url": "https://backdoorbench.github.io",
        "setting": "CIFAR-10, BadNets, PreAct-ResNet18, 10 % poisoning",
        "defense": "ANP (not in skbackdoor)",
        "cca": 84.17,
        "asr": 0.73,
    },
    {
        "source": "CSAW-HackML-2020 report (pruning only, G(B, B'))",
        "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
        "setting": "YouTube Aligned Faces 55x47x3, 1283 classes, DeepID, sunglasses trigger",
        "defense": "Prune until 2 % accuracy drop, GoodNet G(B, B')",
        "cca": 95.74,
        "asr": 100.0,
    },
    {
        "source": "CSAW-HackML-2020 report (pruning only, G(B, B'))",
        "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
        "setting": "YouTube Aligned Faces 55x47x3, 1283 classes, DeepID, sunglasses trigger",
        "defense": "Prune until 4 % accuracy drop, GoodNet G(B, B')",
        "cca": 92.13,
        "asr": 99.98,
    },
    {
        "source": "CSAW-HackML-2020 report (pruning only, G(B, B'))",
        "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
        "setting": "YouTube Aligned Faces 55x47x3, 1283 classes, DeepID, sunglasses trigger",
        "defense": "Prune until 10 % accuracy drop, GoodNet G(B, B')",
        "cca": 84.33,
        "asr": 77.21,
    },
    {
        "source": "CSAW-HackML-2020 report (fine-pruning)",
        "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
        "setting": "YouTube Aligned Faces 55x47x3, 1283 classes, DeepID, sunglasses BadNet",
        "defense": "Fine-Pruning, repaired B'",
        "cca": 90.43,
        "asr": 3.07,
    },
    {
        "source": "CSAW-HackML-2020 report (fine-pruning)",
        "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
        "setting": "YouTube Aligned Faces 55x47x3, 1283 classes, DeepID",
        "defense": "Fine-Pruning, repaired B'",
        "cca": 92.09,
        "asr": 5.15,
    },
    {
        "source": "STRIP paper (Gao et al., ACSAC 2019)",
        "url": "https://arxiv.org/abs/1902.06531",
        "setting": "MNIST, CIFAR-10, GTSRB; their own trojaned nets",
        "defense": "STRIP",
        "frr": 1.0,
        "far": "< 1",
    },
]

# ---------------------------------------------------------------------- environment


def environment(mode):
    """What the numbers depend on (``_harness.environment``), for this runner's command."""
    return _harness.environment(mode, "python benchmarks/run_all.py" + (" --quick" if mode == "quick" else ""))


# --------------------------------------------------------------------------- running


def discover():
    """``{name: path}`` of the benchmark scripts, in running order."""
    found = {path.stem[len("bench_"):]: path for path in sorted(BENCHMARKS.glob("bench_*.py"))}
    ordered = [name for name in ORDER if name in found]
    ordered += [name for name in sorted(found) if name not in ORDER]
    return {name: found[name] for name in ordered}


def _pump(stream, log_handle, prefix):
    for line in iter(stream.readline, ""):
        log_handle.write(line)
        log_handle.flush()
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def run_script(name, path, *, quick, timeout, log_dir):
    """Run one benchmark in a fresh process; return its status record."""
    command = [sys.executable, str(path)] + (["--quick"] if quick else [])
    log_path = log_dir / f"{name}{'_quick' if quick else ''}.log"
    env = dict(os.environ, PYTHONHASHSEED="0", MPLBACKEND="Agg")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"=== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log_handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )
        pump = threading.Thread(target=_pump, args=(process.stdout, log_handle, f"[{name}] "), daemon=True)
        pump.start()
        timed_out = False
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            try:
                returncode = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                returncode = process.wait()
        pump.join(timeout=10)
    seconds = time.perf_counter() - start
    status = "timed out" if timed_out else ("ok" if returncode == 0 else f"failed (exit {returncode})")
    print(f"=== {name}: {status} in {seconds:.0f} s (log: {log_path.relative_to(ROOT)})", flush=True)
    return {
        "name": name,
        "script": str(path.relative_to(ROOT)),
        "command": " ".join(["python", str(path.relative_to(ROOT))] + command[2:]),
        "status": status,
        "returncode": returncode,
        "seconds": round(seconds, 1),
        "log": str(log_path.relative_to(ROOT)),
    }


# ------------------------------------------------------------------------ collecting


def result_files(name, suffix):
    """The JSON and Markdown reports a script wrote (``<name><suffix>.*``)."""
    json_path = RESULTS / f"{name}{suffix}.json"
    md_path = RESULTS / f"{name}{suffix}.md"
    return (json_path if json_path.is_file() else None, md_path if md_path.is_file() else None)


def collect(names, suffix):
    """Comparison rows from every script's JSON, and notes on what could not be read."""
    rows, notes = [], []
    for name in names:
        json_path, _ = result_files(name, suffix)
        if json_path is None:
            notes.append(f"`{name}`: no `{name}{suffix}.json` in benchmarks/results (not run, or failed).")
            continue
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            notes.append(f"`{name}`: could not read {json_path.name}: {exc}")
            continue
        if not isinstance(record, dict) or record.get("format") != _harness.FORMAT:
            notes.append(f"`{name}`: {json_path.name} is not in the `{_harness.FORMAT}` format "
                         "(written by an older script?); re-run the script.")
            continue
        # An empty list is a script with nothing to compare (bench_speed.py): no note.
        rows.extend(dict(row, benchmark=name) for row in record.get("comparison", []))
    return _without_repeated_badnet_rows(rows), notes


def _without_repeated_badnet_rows(rows):
    """One undefended row per BadNet when several scripts measured the same numbers."""
    kept, seen = [], set()
    for row in rows:
        if row["defense"].startswith("none"):
            key = (row["badnet"], row["cca"], row["asr"])
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept


# --------------------------------------------------------------------------- writing


def _percent(value):
    return "" if value is None else f"{100 * value:.2f}"


def _time_cell(row):
    parts = []
    if row.get("seconds") is not None:
        parts.append(f"{row['seconds']:,.1f} s")
    if row.get("throughput"):
        parts.append(str(row["throughput"]))
    return ", ".join(parts)


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def comparison_table(rows):
    lines = [
        "| BadNet | defense | CCA % | ASR % | FRR % | FAR % | time | benchmark |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    # Per BadNet: the undefended model first, then each benchmark's rows in its order.
    for row in sorted(rows, key=lambda r: (r["badnet"], not r["defense"].startswith("none"), r["benchmark"])):
        lines.append(
            f"| {_cell(row['badnet'])} | {_cell(row['defense'])} | {_percent(row['cca'])} | "
            f"{_percent(row['asr'])} | {_percent(row['frr'])} | {_percent(row['far'])} | "
            f"{_cell(_time_cell(row))} | `{row['benchmark']}` |"
        )
    return lines


def anchor_table():
    lines = [
        "| source | setting (how it differs from ours) | defense | CCA % | ASR % | FRR % | FAR % |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for anchor in ANCHORS:
        cells = [anchor.get(key, "") for key in ("cca", "asr", "frr", "far")]
        cells = [f"{value:.2f}" if isinstance(value, float) else str(value) for value in cells]
        lines.append(
            f"| [{anchor['source']}]({anchor['url']}) | {anchor['setting']} | {anchor['defense']} | "
            + " | ".join(cells) + " |"
        )
    return lines


def plot_comparison(rows, path):
    """CCA against ASR, one panel per BadNet, and a panel of the published anchors."""
    points = [row for row in rows if row["cca"] is not None and row["asr"] is not None]
    groups = {}
    for row in points:
        groups.setdefault(row["badnet"], []).append(row)
    # A panel holding the undefended BadNet alone says nothing about defenses.
    groups = {name: group for name, group in groups.items() if len(group) > 1}
    anchors = [a for a in ANCHORS if isinstance(a.get("cca"), float) and isinstance(a.get("asr"), float)]
    if not groups:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = list(groups.items()) + [("published (other datasets and nets)", None)]
    n_columns = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(4.2 * n_columns, 3.6 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, group) in zip(axes.ravel(), panels):
        if group is None:
            labelled = [(a["asr"], a["cca"], f"{a['defense'].split(',')[0]} [{a['source'].split(' ')[0]}]")
                        for a in anchors]
            color = "0.45"
        else:
            labelled = [(100 * r["asr"], 100 * r["cca"], r["defense"]) for r in group]
            color = "tab:blue"
        for asr, cca, label in labelled:
            undefended = label.startswith("none")
            ax.scatter(asr, cca, s=36, marker="x" if undefended else "o",
                       color="tab:red" if undefended else color)
            note = ax.annotate("BadNet B" if undefended else label, (asr, cca), fontsize=6.5,
                               xytext=(4, 2), textcoords="offset points", annotation_clip=False)
            note.set_in_layout(False)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-5, 130)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("ASR % (lower is better)", fontsize=8)
        ax.set_ylabel("CCA % (higher is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Clean accuracy against attack success, per BadNet", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_reports(env, runs, rows, notes, suffix, *, write_summary=True):
    RESULTS.mkdir(parents=True, exist_ok=True)
    total = sum(run["seconds"] for run in runs if run.get("seconds") is not None)
    if write_summary:
        _write_summary(env, runs, total, suffix)
    _write_comparison(env, rows, notes, suffix)


def _write_summary(env, runs, total, suffix):
    summary = ["# Benchmark summary", ""] + environment_lines(env) + [""]
    if runs:
        quick = env["mode"] == "quick"
        summary += [
            "| benchmark | command | status | wall time |" + (" quick budget |" if quick else "") + " report |",
            "| --- | --- | --- | ---: |" + (" ---: |" if quick else "") + " --- |",
        ]
        for run in runs:
            _, md_path = result_files(run["name"], suffix)
            report = f"`{md_path.name}`" if md_path else "none written"
            seconds = "" if run.get("seconds") is None else f"{run['seconds']:,.0f} s"
            budget = ""
            if quick:
                budget = f" {QUICK_BUDGETS_S[run['name']]} s |" if run["name"] in QUICK_BUDGETS_S else " - |"
            summary.append(f"| {run['name']} | `{run['command']}` | {run['status']} | {seconds} |{budget} {report} |")
        summary += ["", f"Total wall time of the benchmark scripts: {total:,.0f} s."]
        if env["mode"] == "quick" and total > QUICK_BUDGET_S:
            summary.append(f"The quick mode exceeded its {QUICK_BUDGET_S} s budget on this machine.")
    else:
        summary.append("No benchmark was run (`--collect-only`): the tables come from the JSON files present.")
    summary += [
        "",
        "Every script runs in a fresh process, one at a time, with its seeds fixed; speed ratios "
        "are measured side by side inside one script run. The combined table is in "
        f"`comparison{suffix}.md`; each script's log is in `benchmarks/results/logs/`.",
        "",
    ]
    (RESULTS / f"summary{suffix}.md").write_text("\n".join(summary), encoding="utf-8")
    (RESULTS / f"summary{suffix}.json").write_text(
        json.dumps({"environment": env, "runs": runs, "total_seconds": round(total, 1)}, indent=2) + "\n",
        encoding="utf-8",
    )


def _write_comparison(env, rows, notes, suffix):
    figure = plot_comparison(rows, RESULTS / f"comparison{suffix}.png")
    comparison = ["# Defenses compared", ""] + environment_lines(env) + [
        "",
        "## Measured here",
        "",
        "Each defense on each BadNet, from the benchmark scripts' JSON files. CCA: clean "
        "test accuracy; ASR: share of triggered test images (of classes other than the "
        "target) classified as the target; FRR: clean inputs flagged as poisoned; FAR: "
        "poisoned inputs not flagged. A blank cell was not measured by that benchmark. "
        "Time: fitting time and/or throughput as the benchmark reports it.",
        "",
    ]
    comparison += comparison_table(rows) if rows else ["No comparable results yet: run `python benchmarks/run_all.py`."]
    if figure:
        comparison += ["", f"![CCA against ASR]({figure})"]
    if notes:
        comparison += ["", "Missing or unreadable results:", ""] + [f"- {note}" for note in notes]
    comparison += [
        "",
        "## Published numbers (quoted, not measured here)",
        "",
        "Quoted for orientation only: the datasets, architectures, triggers and "
        "implementations differ from ours (Fashion-MNIST and a small CNN here), so compare "
        "trends, not digits. BackdoorBench and the CSAW reports give CCA / ASR in percent; "
        "the STRIP paper reports FAR below 1 % at an FRR of 1 %.",
        "",
    ] + anchor_table() + [
        "",
        "The CSAW-HackML-2020 reports are student reports on the challenge's DeepID face "
        "BadNets (sunglasses trigger unless noted); the prune-only rows are a GoodNet that "
        "flags disagreements between B and the pruned B' (no fine-tuning), which keeps the "
        "backdoor's ASR high until much accuracy is lost.",
        "",
    ]
    (RESULTS / f"comparison{suffix}.md").write_text("\n".join(comparison), encoding="utf-8")
    (RESULTS / f"comparison{suffix}.json").write_text(
        json.dumps({"environment": env, "measured": rows, "notes": notes, "published": ANCHORS,
                    "figure": figure}, indent=2) + "\n",
        encoding="utf-8",
    )


# ------------------------------------------------------------------------------ main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under 10 minutes on 2 cores")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (e.g. strip goodnet)")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="do not run these benchmarks")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which one script is stopped")
    parser.add_argument("--collect-only", action="store_true", help="do not run; rebuild the report from existing JSON")
    parser.add_argument("--list", action="store_true", help="list the benchmark scripts and exit")
    args = parser.parse_args(argv)

    scripts = discover()
    if args.list:
        for name, path in scripts.items():
            print(f"{name}\t{path.relative_to(ROOT)}")
        return 0
    unknown = [name for name in (args.only or []) + args.skip if name not in scripts]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(scripts)}")
    selected = [name for name in scripts if (not args.only or name in args.only) and name not in args.skip]
    suffix = "_quick" if args.quick else ""
    env = environment("quick" if args.quick else "full")

    runs = []
    if not args.collect_only:
        log_dir = RESULTS / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in selected:
            runs.append(run_script(name, scripts[name], quick=args.quick, timeout=args.timeout, log_dir=log_dir))

    rows, notes = collect(selected, suffix)
    env["load_average_at_end"] = _harness.environment()["load_average_at_end"]
    # --collect-only keeps the summary of the last real run (its timings and statuses).
    summary_exists = (RESULTS / f"summary{suffix}.md").is_file()
    write_reports(env, runs, rows, notes, suffix, write_summary=not (args.collect_only and summary_exists))
    written = f"comparison{suffix}.md" if args.collect_only and summary_exists else f"summary{suffix}.md and comparison{suffix}.md"
    print(f"wrote {RESULTS.relative_to(ROOT)}/{written}")
    return 0 if all(run["status"] == "ok" for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
