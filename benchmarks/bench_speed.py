"""The speed ratios of issue 14 in one table, each measured side by side in one run.

Usage: ``python benchmarks/bench_speed.py [--quick] [--only grid_search ...]``

Each row compares a candidate with its baseline on the same work, one right after the
other in this process, so both see the same machine (other jobs on the cores slow both).
Rows:

- ``grid_search``: ``GridSearchCV`` over ``FinePruner`` candidates, ``n_jobs=2`` against
  ``n_jobs=1`` on the same grid (goal >= 1.8x on 2 cores). Each loky worker sizes
  TensorFlow's thread pools to its share of the cores (``skbackdoor._runtime``); a third
  run gives each worker every core (``inner_max_num_threads``), the behaviour before
  that sizing, to show what it changes. Workers are started (and TensorFlow imported in
  them) before the timings; that start-up is reported on its own.

Rows still to come, one function each in ``ROWS`` (see "Adding a row" below): STRIP
sequential against fixed overlays, the pruning sweep against one forward pass on CSAW
``conv_3``, NeuralCleanse scan times, STRIP's peak memory on 50,000 CSAW-shaped inputs.

Adding a row: write ``def my_row(quick, log) -> list of dict`` returning rows with the
keys of ``COLUMNS`` (``value`` is the ratio or measured number the goal is about,
``met`` True / False / None) and the raw timings under ``"data"``; register it in
``ROWS``. ``--quick`` must keep the whole script to about a minute on 2 cores.
"""

import argparse
import os
from pathlib import Path

import numpy as np

import _fashion
import _harness

COLUMNS = ("measure", "setting", "baseline", "candidate", "value", "goal", "met", "note")
GOAL_GRID_SPEEDUP = 1.8


# -------------------------------------------------------------------- grid search


def _worker_threads(n_jobs):
    """Start the loky workers (importing TensorFlow there); their ``(intra, inter)`` sizes."""
    from joblib import Parallel, delayed

    from skbackdoor._runtime import tensorflow_threads

    return Parallel(n_jobs=n_jobs)(delayed(tensorflow_threads)() for _ in range(2 * n_jobs))


def _workers_cpu_seconds():
    """CPU seconds (user + system) used so far by the running loky workers (Linux only)."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    total = 0.0
    for pid in list(getattr(executor, "_processes", {}) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def grid_search(quick, log, *, compare_unsized=None):
    """GridSearchCV over FinePruner candidates: n_jobs=2 against n_jobs=1, same grid."""
    from joblib import parallel_config
    from sklearn.model_selection import GridSearchCV

    from skbackdoor import FinePruner
    from skbackdoor.metrics import backdoor_scoring, best_cca_under_asr

    data = _fashion.badnet("patch", quick=quick, log=log)
    if quick:
        grid, cv, n_images, epochs = {"prune_fraction": [0.1, 0.3], "learning_rate": [1e-3, 1e-2]}, 2, 1000, 1
    else:
        grid = {"prune_fraction": [0.1, 0.3, 0.5], "learning_rate": [1e-4, 1e-3, 1e-2]}
        cv, n_images, epochs = 3, 3000, 2
    X, y = data.X_val[:n_images], data.y_val[:n_images]
    scoring = backdoor_scoring(data.X_poisoned[:500], data.y_target[:500])
    n_candidates = int(np.prod([len(values) for values in grid.values()]))
    setting = (f"FinePruner on the {'quick ' if quick else ''}patch BadNet, {n_candidates} candidates "
               f"({' x '.join(grid)}), cv={cv}: {n_candidates * cv} fits + refit on {n_images} images, "
               f"{epochs} epoch(s) each")

    cpu = {}

    def search(n_jobs, name):
        estimator = FinePruner(model=data.model, epochs=epochs, random_state=0)
        searcher = GridSearchCV(estimator, grid, cv=cv, n_jobs=n_jobs, scoring=scoring,
                                refit=best_cca_under_asr(0.05), error_score="raise")
        workers_before = _workers_cpu_seconds() if n_jobs > 1 else 0.0
        _, wall, own_cpu = _harness.timed(lambda: searcher.fit(X, y))
        workers_after = _workers_cpu_seconds() if n_jobs > 1 else 0.0
        workers = None if workers_before is None or workers_after is None else workers_after - workers_before
        cpu[name] = None if workers is None else own_cpu + workers
        return wall, searcher.cv_results_

    cores = _harness.usable_cores()
    runs = {}
    log(f"grid search: {setting}")
    runs["n_jobs=1"], results_1 = search(1, "n_jobs=1")
    log(f"  n_jobs=1: {runs['n_jobs=1']:.1f} s")
    # loky's default: each worker gets OMP_NUM_THREADS = cores // n_jobs, which sizes TensorFlow.
    (threads_sized, start_sized, _) = _harness.timed(lambda: _worker_threads(2))
    runs["n_jobs=2"], results_2 = search(2, "n_jobs=2")
    log(f"  n_jobs=2, workers sized {threads_sized[0]}: {runs['n_jobs=2']:.1f} s (workers started in {start_sized:.1f} s)")
    same_scores = all(np.allclose(results_1[key], results_2[key], atol=1e-6)
                      for key in ("mean_test_cca", "mean_test_asr"))
    data_out = {"setting": setting, "cores": cores, "seconds": runs, "cpu_seconds": cpu,
                "worker_threads_sized": threads_sized,
                "worker_start_seconds_sized": start_sized, "same_scores_n_jobs_1_and_2": same_scores}
    rows = [{
        "measure": "GridSearchCV n_jobs=2 / n_jobs=1",
        "setting": setting,
        "baseline": f"n_jobs=1: {runs['n_jobs=1']:.1f} s",
        "candidate": f"n_jobs=2, TensorFlow sized {threads_sized[0][0]} thread(s) per worker: {runs['n_jobs=2']:.1f} s",
        "value": round(runs["n_jobs=1"] / runs["n_jobs=2"], 2),
        "goal": f">= {GOAL_GRID_SPEEDUP} on 2 cores",
        "met": runs["n_jobs=1"] / runs["n_jobs=2"] >= GOAL_GRID_SPEEDUP if cores == 2 else None,
        "note": (f"{cores} usable cores; worker start-up (TensorFlow import in 2 workers) {start_sized:.1f} s, "
                 f"not in the timing; CPU seconds (all processes) {_cpu_text(cpu, 'n_jobs=1')} with n_jobs=1, "
                 f"{_cpu_text(cpu, 'n_jobs=2')} with n_jobs=2; cv scores identical to n_jobs=1: "
                 f"{'yes' if same_scores else 'NO'}"),
    }]
    if compare_unsized or (compare_unsized is None and not quick):
        # Before the sizing: every worker's TensorFlow takes all the cores.
        with parallel_config(backend="loky", inner_max_num_threads=cores):
            (threads_all, start_all, _) = _harness.timed(lambda: _worker_threads(2))
            runs["n_jobs=2, unsized"], _ = search(2, "n_jobs=2, unsized")
        log(f"  n_jobs=2, workers with every core: {runs['n_jobs=2, unsized']:.1f} s")
        data_out.update(worker_threads_unsized=threads_all, worker_start_seconds_unsized=start_all)
        rows.append({
            "measure": "GridSearchCV n_jobs=2 / n_jobs=1, workers unsized",
            "setting": setting,
            "baseline": f"n_jobs=1: {runs['n_jobs=1']:.1f} s",
            "candidate": (f"n_jobs=2, TensorFlow {threads_all[0][0]} threads per worker (every core, as before "
                          f"the sizing): {runs['n_jobs=2, unsized']:.1f} s"),
            "value": round(runs["n_jobs=1"] / runs["n_jobs=2, unsized"], 2),
            "goal": "(the sizing's effect: compare with the row above)",
            "met": None,
            "note": (f"worker start-up {start_all:.1f} s, not in the timing; CPU seconds (all processes) "
                     f"{_cpu_text(cpu, 'n_jobs=2, unsized')}"),
        })
    rows[0]["data"] = data_out
    return rows


def _cpu_text(cpu, name):
    return "?" if cpu.get(name) is None else f"{cpu[name]:.1f}"


ROWS = {"grid_search": grid_search}


# -------------------------------------------------------------------------- report


def _met(value):
    return "-" if value is None else ("yes" if value else "NO")


def write_report(rows, quick):
    env = _harness.environment("quick" if quick else "full", _harness.command_line("speed", quick))
    lines = [
        "# Speed ratios (issue 14)",
        "",
        f"Produced by `{_harness.command_line('speed', quick)}`. Each row times a candidate and its "
        "baseline on the same work, one right after the other in one process. Other jobs on the machine "
        "slow both sides of a ratio, not always equally: see the load average below.",
        "",
        "## Ratios",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [row["measure"], row["setting"], row["baseline"], row["candidate"], f"{row['value']}",
                 row["goal"], _met(row["met"]), row.get("note") or ""]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    lines += ["", _harness.environment_sentence(env), ""]
    data = {"rows": rows}
    _harness.write_results("speed", quick=quick, lines=lines, data=data, environment_override=env)
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids and inputs: about a minute on 2 cores")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="measure only these rows")
    parser.add_argument("--compare-unsized", action="store_true",
                        help="grid_search: also time workers whose TensorFlow takes every core (always in full runs)")
    args = parser.parse_args()
    rows = []
    for name in args.only or ROWS:
        options = {"compare_unsized": True} if name == "grid_search" and args.compare_unsized else {}
        rows += ROWS[name](args.quick, _harness.log, **options)
    write_report(rows, args.quick)


if __name__ == "__main__":
    main()
