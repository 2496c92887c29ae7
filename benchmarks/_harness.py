"""What every benchmark script shares: the environment, scoring, cached models, timing, results.

A script measures, renders its report as Markdown lines, and hands both to
:func:`write_results`, which writes ``benchmarks/results/<script>[_quick].md`` (the lines)
and ``<script>[_quick].json`` in the one format every script uses and ``run_all.py`` reads
without knowing the script::

    {
      "format": "skbackdoor-benchmark/1",
      "script": "fine_pruning",                 # bench_<script>.py
      "mode": "quick" | "full",
      "command": "python benchmarks/bench_fine_pruning.py --quick",
      "title": "FinePruner on Fashion-MNIST BadNets",   # the report's first heading
      "seconds": 151.2,                         # the script's run time (null if unknown)
      "environment": {...},                     # environment(): versions, cores, load, commit
      "tables": [{"title": "Repair", "columns": ["BadNet", ...], "rows": [["patch", ...], ...]}],
      "comparison": [{"badnet", "defense", "cca", "asr", "frr", "far", "seconds",
                      "throughput", "note"}],  # rows for the combined table of run_all.py
      "figures": ["fine_pruning_sweep.png"],    # files beside the report
      "notes": ["..."],
      "data": {...}                             # the script's own measurements, as measured
    }

``tables`` are the report's Markdown tables, cell for cell as shown (strings); the
measured numbers themselves are in ``data``. ``comparison`` rows hold rates as fractions
in [0, 1] (null where not measured), ``seconds`` the fitting time, ``throughput`` free
text; name the shared BadNets ``Fashion-MNIST <attack>`` so that rows of different
scripts line up.

Adding a script: ``benchmarks/bench_<name>.py`` with a ``--quick`` flag that ends with
``_harness.write_results(name, quick=..., lines=..., comparison=..., data=...)``;
``run_all.py`` finds it by its name.
"""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

# Before any benchmark imports Keras: skbackdoor's runtime imports TensorFlow without the
# start-up lines it prints on stderr, as it does for a user of the estimators.
import skbackdoor._runtime  # noqa: E402,F401

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
CACHE = BENCHMARKS / ".cache"
CSAW_WEIGHTS = ROOT.parent / "shared" / "csaw" / "sunglasses_bd_weights.h5"
CSAW_FACES = ROOT.parent / "shared" / "data" / "csaw_faces" / "faces.npz"
FORMAT = "skbackdoor-benchmark/1"
COMPARISON_KEYS = ("badnet", "defense", "cca", "asr", "frr", "far", "seconds", "throughput", "note")

PACKAGES = [
    "skbackdoor",
    "numpy",
    "scipy",
    "scikit-learn",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "joblib",
    "h5py",
    "matplotlib",
    "adversarial-robustness-toolbox",
]

if str(ROOT) not in sys.path:  # the scripts import the skbackdoor of this checkout
    sys.path.insert(0, str(ROOT))


def _load_average():
    """1-minute load average: other work on the machine slows every timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


_STARTED = time.perf_counter()
_LOAD_AT_START = _load_average()


# ---------------------------------------------------------------------- environment


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def environment(mode=None, command=None):
    """What the numbers depend on: versions, cores, platform, commit, load of the machine."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "command": command,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES if _version(name)},
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "git_commit": None if commit is None else commit + (" (modified files)" if dirty else ""),
        "load_average_at_start": _LOAD_AT_START,
        "load_average_at_end": _load_average(),
    }
    tf = sys.modules.get("tensorflow")  # counted where the script has imported it, never imported here
    env["gpus"] = None if tf is None else len(tf.config.list_physical_devices("GPU"))
    return env


def environment_lines(env):
    """The environment as Markdown bullet lines."""
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items())
    load = f"- Load average (1 min) at start: {env.get('load_average_at_start')}"
    if env.get("load_average_at_end") is not None:
        load += f", at end: {env['load_average_at_end']}"
    return [
        f"- Generated: {env['date_utc']} by `{env.get('command') or '?'}` ({env.get('mode')} mode)",
        f"- Machine: {env['cpu_count']} CPU cores ({env['usable_cores']} usable), "
        f"{env['cpu_model'] or 'unknown CPU'}, {env['memory_gib'] or '?'} GiB RAM",
        f"- Platform: {env['platform']}, Python {env['python']}",
        f"- Packages: {packages}",
        f"- Commit: {env['git_commit'] or 'unknown'}",
        load,
    ]


def environment_sentence(env):
    """The environment in one line, for the end of a report."""
    packages = env.get("packages", {})
    versions = ", ".join(f"{name} {packages[name]}" for name in ("tensorflow", "tensorflow-cpu", "keras",
                                                                   "scikit-learn", "numpy") if name in packages)
    return (f"Environment: Python {env['python']}, {versions}; {env['usable_cores']} usable CPU cores "
            f"({env['machine']}); load average (1 min) {env.get('load_average_at_start')} at the start and "
            f"{env.get('load_average_at_end')} at the end; commit {env.get('git_commit') or 'unknown'}.")


def elapsed():
    """Seconds since this script started (since the harness was imported)."""
    return time.perf_counter() - _STARTED


def log(message):
    print(f"{elapsed():7.1f}s  {message}", flush=True)


# --------------------------------------------------------------------------- timing


def timed(function):
    """``(result, wall seconds, CPU seconds of this process)`` of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


# --------------------------------------------------------------------------- models


def cached_model(name, train, *, log=log):
    """The Keras model ``benchmarks/.cache/<name>.keras``, trained by ``train()`` if absent.

    ``name`` must say everything the model depends on (attack, sizes, seed): a second
    script of the same run, or a later run, loads it instead of training it again.
    """
    import keras

    path = CACHE / f"{name}.keras"
    if path.exists():
        return keras.saving.load_model(path, compile=False)
    log(f"training {name} (cached in {path.relative_to(ROOT)})")
    model = train()
    CACHE.mkdir(exist_ok=True)
    model.save(path)
    return model


def load_csaw():
    """The real CSAW-HackML-2020 sunglasses DeepID BadNet (None when its weights are absent)."""
    if not CSAW_WEIGHTS.exists():
        return None
    from skbackdoor.models import load_badnet

    return load_badnet(CSAW_WEIGHTS, architecture="csaw-deepid", input_scale=1 / 255)


def load_csaw_faces(kinds=("clean", "clean_hackml2019")):
    """The real CSAW-HackML face images of ``kinds`` (float32, 0-255; None when absent).

    The default kinds are the 16 real clean faces (13 of 2020, 3 of 2019); ``None``: all
    73 faces, clean and triggered (the kinds are listed in ``../shared/data/README.md``).
    """
    if not CSAW_FACES.exists():
        return None
    import numpy as np

    data = np.load(CSAW_FACES)
    keep = slice(None) if kinds is None else np.isin(data["kind"], list(kinds))
    return data["x"][keep].astype(np.float32)


# -------------------------------------------------------------------------- scoring


def model_predict(model):
    """``predict(X)``: the labels of a bare Keras model, through the compiled batched pass."""
    from skbackdoor.models import predict_proba_batches

    return lambda X: predict_proba_batches(model, X).argmax(axis=1)


def scores(predict, data):
    """CCA on ``data.X_test`` and ASR on ``data.X_poisoned`` of a ``predict`` function."""
    from skbackdoor.metrics import attack_success_rate, clean_accuracy_score

    return {
        "cca": float(clean_accuracy_score(data.y_test, predict(data.X_test))),
        "asr": float(attack_success_rate(data.y_target, predict(data.X_poisoned))),
    }


# -------------------------------------------------------------------------- results


def suffix(quick):
    return "_quick" if quick else ""


def command_line(script, quick):
    """The command that runs ``bench_<script>.py``: this process's own, options included."""
    path = f"benchmarks/bench_{script}.py"
    if Path(sys.argv[0]).name == f"bench_{script}.py":
        return " ".join(["python", path] + sys.argv[1:])
    return f"python {path}" + (" --quick" if quick else "")


def comparison_row(badnet, defense, **values):
    """One row of the combined table; missing values are null."""
    row = {key: None for key in COMPARISON_KEYS}
    row.update(badnet=badnet, defense=defense, **values)
    unknown = set(row) - set(COMPARISON_KEYS)
    if unknown:
        raise ValueError(f"comparison rows take {COMPARISON_KEYS}, not {sorted(unknown)}")
    return row


_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _cells(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def tables_from_markdown(lines):
    """The Markdown tables of ``lines``: ``[{"title", "columns", "rows"}]``.

    A table is a header row, a ``|---|`` separator and its body rows; its title is the
    nearest heading above it.
    """
    tables, title, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1].strip()):
            columns, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append({"title": title, "columns": columns, "rows": rows})
            continue
        i += 1
    return tables


def write_results(script, *, quick, lines, data, comparison=(), notes=(), figures=(), seconds=None,
                  environment_override=None):
    """Write ``results/<script>[_quick].md`` (``lines``) and ``.json`` (the one format).

    Returns the JSON record. ``seconds`` defaults to the time since the script started.
    """
    mode = "quick" if quick else "full"
    command = command_line(script, quick)
    title = next((m.group(2).strip() for m in map(_HEADING.match, lines) if m), script)
    record = {
        "format": FORMAT,
        "script": script,
        "mode": mode,
        "command": command,
        "title": title,
        "seconds": round(elapsed() if seconds is None else seconds, 1),
        "environment": environment_override or environment(mode, command),
        "tables": tables_from_markdown(lines),
        "comparison": [comparison_row(**row) for row in comparison],
        "figures": list(figures),
        "notes": list(notes),
        "data": data,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{script}{suffix(quick)}"
    text = "\n".join(lines)
    (RESULTS / f"{stem}.md").write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2, default=_json_default) + "\n",
                                          encoding="utf-8")
    return record


def read_results(script, *, quick):
    """The record a script wrote last, or None."""
    path = RESULTS / f"{script}{suffix(quick)}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _json_default(value):
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
