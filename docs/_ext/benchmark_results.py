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

``% benchmark-anchors``
    The table of published numbers, from ``ANCHORS`` in ``benchmarks/run_all.py``
    (the one place they are written down).
"""

import importlib.util
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MARKER = re.compile(r"^% benchmark-results:(?P<spec>.*)$", re.MULTILINE)
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


def _matches(pattern):
    if not RESULTS.is_dir():
        return []
    for alternative in pattern.split("|"):
        found = [path for path in sorted(RESULTS.glob(alternative)) if path.is_file()]
        if found:
            return found
    return []


def _expand_results(spec, docdir):
    level, end_before, skip_title, names = 2, None, False, []
    for word in spec.split():
        if word == "skip-title":
            skip_title = True
        elif word.startswith("level="):
            level = int(word.split("=", 1)[1])
        elif word.startswith("end-before="):
            end_before = word.split("=", 1)[1].replace("_", " ")
        else:
            names.append(word)
    blocks = []
    for pattern in names:
        matches = _matches(pattern)
        if not matches:
            blocks.append(_missing_note(pattern))
        blocks.extend(_include_block(path, docdir, level, end_before, skip_title) for path in matches)
    return "\n".join(blocks)


def _anchor_table():
    spec = importlib.util.spec_from_file_location("_skbackdoor_run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "\n".join(module.anchor_table()) + "\n"


def _on_source_read(app, docname, source):
    text = source[0]
    has_results = RESULTS_MARKER.search(text) is not None
    has_anchors = ANCHORS_MARKER.search(text) is not None
    if not (has_results or has_anchors):
        return
    app.env.benchmark_result_docs = getattr(app.env, "benchmark_result_docs", set()) | {docname}
    docdir = Path(app.env.doc2path(docname)).parent
    text = RESULTS_MARKER.sub(lambda match: _expand_results(match.group("spec"), docdir), text)
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
