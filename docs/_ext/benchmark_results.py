"""Sphinx extension: put the benchmark scripts' own reports into the docs.

Two MyST comment lines are expanded when a page is read:

``% benchmark-results: NAME [NAME ...] [level=N] [end-before=TEXT] [skip-title]``
    Each ``NAME`` is a file name or glob under ``benchmarks/results/``; ``a.md|b.md``
    takes the first that exists (e.g. the full run, else the quick one). Each match
    becomes a MyST ``{include}`` of the file, its headings shifted to start at level
    ``N`` (default 2), cut before the line starting with ``TEXT`` (underscores stand
    for spaces) when given, without its first heading with ``skip-title`` (the page
    gives its own). A name that matches nothing becomes a note telling the
    reader to run ``benchmarks/run_all.py``: the docs show only numbers the benchmark
    scripts wrote and never invent any.

    ``mode=summary`` picks, among ``a.md|b.md``, the file of the run mode of the
    summary below (``_quick`` names for quick mode), so that a page never mixes the
    numbers of two run modes. ``dropdown=TITLE`` (underscores for spaces) puts each
    include in a collapsed sphinx-design dropdown.

``% benchmark-summary``
    A compact table from ``comparison.json`` (the full run) or else
    ``comparison_quick.json``: for the main defenses, CCA / ASR (detectors: FRR / FAR)
    on each BadNet, in percent, and which run mode it comes from.

``% benchmark-anchors``
    The table of published numbers, from ``ANCHORS`` in ``benchmarks/run_all.py``
    (the one place they are written down).
"""

import json

import importlib.util
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MARKER = re.compile(r"^% benchmark-results:(?P<spec>.*)$", re.MULTILINE)
SUMMARY_MARKER = re.compile(r"^% benchmark-summary\s*$", re.MULTILINE)
SUMMARY_FILES = ("comparison.json", "comparison_quick.json")
# (row title, defense name in the comparison JSON, metrics shown)
SUMMARY_ROWS = (
    ("undefended BadNet B", "none (the BadNet B)", ("cca", "asr")),
    ("FinePruner (defaults)", "FinePruner, fine-pruning (defaults)", ("cca", "asr")),
    ("NeuralCleanse (defaults)", "NeuralCleanse (defaults)", ("cca", "asr")),
    ("STRIPDetector, 10 overlays, target FRR 5 %", "STRIPDetector (10 overlays, target FRR 5%)", ("frr", "far")),
    ("GoodNet G(B, B') + STRIP", "G(B, B') + STRIP", ("cca", "asr")),
)
SUMMARY_BADNETS = ("patch", "blend", "multi-target", "pruning-aware")
METRIC_NAMES = {"cca": "CCA", "asr": "ASR", "frr": "FRR", "far": "FAR"}
ANCHORS_MARKER = re.compile(r"^% benchmark-anchors\s*$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s")
FENCE = re.compile(r"^(```|~~~)")


def _smallest_heading_level(lines):
    smallest, in_fence = None, False
    for line in lines:
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            level = len(match.group(1))
            smallest = level if smallest is None else min(smallest, level)
    return smallest


def _include_block(path, docdir, level, end_before, skip_title):
    lines = path.read_text(encoding="utf-8").splitlines()
    options = []
    start = 0
    if skip_title:
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if first is not None and HEADING.match(lines[first]):
            start = first + 1
            options.append(f":start-line: {start}")
    if end_before:
        cut = next((i for i, line in enumerate(lines) if line.startswith(end_before)), None)
        if cut is not None:
            lines = lines[:cut]
            options.append(f":end-line: {cut}")
    smallest = _smallest_heading_level(lines[start:])
    options.append(f":heading-offset: {0 if smallest is None else max(0, level - smallest)}")
    options.append(":relative-images:")
    relative = os.path.relpath(path, docdir).replace(os.sep, "/")
    return "```{include} " + relative + "\n" + "\n".join(options) + "\n```\n"


def _missing_note(pattern):
    shown = " or ".join(f"`benchmarks/results/{name}`" for name in pattern.split("|"))
    return (
        f"```{{note}}\nNo {shown} in this build: run `python benchmarks/run_all.py` (or "
        "`--quick`) from the repository root, then rebuild the docs. These pages show "
        "only numbers the benchmark scripts wrote.\n```\n"
    )


def _summary_file():
    return next((RESULTS / name for name in SUMMARY_FILES if (RESULTS / name).is_file()), None)


def _summary_is_quick():
    found = _summary_file()
    return found is not None and found.name.endswith("_quick.json")


def _matches(pattern, same_mode=False):
    if not RESULTS.is_dir():
        return []
    alternatives = pattern.split("|")
    if same_mode and _summary_file() is not None:
        quick = _summary_is_quick()
        alternatives = [a for a in alternatives if ("_quick" in a) == quick] or alternatives
    for alternative in alternatives:
        found = [path for path in sorted(RESULTS.glob(alternative)) if path.is_file()]
        if found:
            return found
    return []


def _expand_results(spec, docdir):
    level, end_before, skip_title, names = 2, None, False, []
    same_mode, dropdown = False, None
    for word in spec.split():
        if word == "skip-title":
            skip_title = True
        elif word == "mode=summary":
            same_mode = True
        elif word.startswith("dropdown="):
            dropdown = word.split("=", 1)[1].replace("_", " ")
        elif word.startswith("level="):
            level = int(word.split("=", 1)[1])
        elif word.startswith("end-before="):
            end_before = word.split("=", 1)[1].replace("_", " ")
        else:
            names.append(word)
    blocks = []
    for pattern in names:
        matches = _matches(pattern, same_mode)
        if not matches:
            blocks.append(_missing_note(pattern))
        for path in matches:
            block = _include_block(path, docdir, level, end_before, skip_title)
            if dropdown:
                block = f"::::{{dropdown}} {dropdown} (`{path.name}`)\n{block}::::\n"
            blocks.append(block)
    return "\n".join(blocks)


def _percent(value):
    return "" if value is None else f"{100 * value:.2f}"


def _summary_table():
    found = _summary_file()
    if found is None:
        return _missing_note("|".join(SUMMARY_FILES))
    data = json.loads(found.read_text(encoding="utf-8"))
    environment = data.get("environment", {})
    rows = data.get("measured", [])

    def find(defense, badnet):
        for row in rows:
            if row.get("defense") == defense and row.get("badnet") == f"Fashion-MNIST {badnet}":
                return row
        return None

    mode = environment.get("mode", "quick" if found.name.endswith("_quick.json") else "full")
    lines = [
        f"From one run, `{environment.get('command', 'benchmarks/run_all.py')}` ({mode} mode, "
        f"{environment.get('date_utc', 'date unknown')}, {environment.get('usable_cores', '?')} CPU "
        f"cores), file `benchmarks/results/{found.name}`. Fashion-MNIST BadNets on a small CNN; "
        "percent; each cell is CCA / ASR (the detector row: FRR / FAR). Lower ASR, FRR and FAR "
        "are better. Every number of the reports below comes from the same run mode.",
        "",
        "| defense | " + " | ".join(SUMMARY_BADNETS) + " |",
        "| --- |" + " ---: |" * len(SUMMARY_BADNETS),
    ]
    for title, defense, metrics in SUMMARY_ROWS:
        cells = []
        for badnet in SUMMARY_BADNETS:
            row = find(defense, badnet)
            cells.append("" if row is None else " / ".join(_percent(row.get(m)) for m in metrics))
        shown = " / ".join(METRIC_NAMES[m] for m in metrics)
        lines.append(f"| {title} ({shown}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _anchor_table():
    spec = importlib.util.spec_from_file_location("_skbackdoor_run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "\n".join(module.anchor_table()) + "\n"


def _on_source_read(app, docname, source):
    text = source[0]
    has_results = RESULTS_MARKER.search(text) is not None
    has_anchors = ANCHORS_MARKER.search(text) is not None
    has_summary = SUMMARY_MARKER.search(text) is not None
    if not (has_results or has_anchors or has_summary):
        return
    app.env.benchmark_result_docs = getattr(app.env, "benchmark_result_docs", set()) | {docname}
    docdir = Path(app.env.doc2path(docname)).parent
    text = RESULTS_MARKER.sub(lambda match: _expand_results(match.group("spec"), docdir), text)
    if has_summary:
        summary = _summary_table()
        text = SUMMARY_MARKER.sub(lambda match: summary, text)
    if has_anchors:
        table = _anchor_table()
        text = ANCHORS_MARKER.sub(lambda match: table, text)
    source[0] = text


def _always_outdated(app, env, added, changed, removed):
    # Result files may appear or change between builds while the page itself does not.
    return sorted(getattr(env, "benchmark_result_docs", set()) - set(removed))


def setup(app):
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _always_outdated)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
