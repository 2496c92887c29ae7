"""The speed ratios of issue 14 in one table, each measured side by side in one run.

Usage: ``python benchmarks/bench_speed.py [--quick] [--only grid_search ...]``

Each row compares a candidate with its baseline on the same work, one right after the
other in this process, so both see the same machine (other jobs on the cores slow both).
Rows:

- ``grid_search``: ``GridSearchCV`` over ``FinePruner`` candidates, ``n_jobs=2`` against
  ``n_jobs=1`` on the same grid (goal >= 1.8x on 2 cores). Each loky worker sizes
  TensorFlow's thread pools to its share of the cores (``skbackdoor._runtime``). Two
  more rows explain the ratio: ``n_jobs=1`` run inside one such worker (TensorFlow on 1
  thread, as each worker of ``n_jobs=2``) against ``n_jobs=2`` (how the parallel search
  itself scales; the refit runs alone after the parallel fits, which caps it below 2)
  and against ``n_jobs=1`` in this process (what TensorFlow's own threads already take
  from the second core). Full runs add a run whose workers get every core
  (``inner_max_num_threads``), the behaviour before that sizing. Workers are started
  (and TensorFlow imported in them) before the timings; that start-up is reported on
  its own. CPU seconds count this process and every child process, including workers
  loky replaced during the search (it replaces a worker whose memory grew by more than
  300 MB), which the notes count.
- ``strip_sequential``: ``STRIPDetector(sequential=True)`` against ``sequential=False``
  at the default ``n_overlays``, at the default ``frr`` (1 %) and at 5 %, on the shared
  Fashion-MNIST patch BadNet of ``_fashion.py``: the same fitted pool (the 5,000 clean
  validation images), the same held-out inputs; inputs/s (median of interleaved
  timings, ``bench_strip.sequential_section``), FRR on the clean and FAR on the
  triggered held-out test images (goal: >= 2x, FRR and FAR each within 1 point).
- ``pruning_sweep``: the pruning sweep ``FinePruner.fit`` runs (cold: a fresh copy of
  the model, graph tracing included) against one cold forward pass of the same images
  (``bench_fine_pruning.sweep_timing``), on the real CSAW DeepID ``conv_3`` (goal <= 2x;
  random 0-255 images as in ``bench_fine_pruning.py``, and in full runs the 73 real CSAW
  faces, repeated) and on the Fashion-MNIST patch BadNet's last convolution (goal <= 1.5x).
  The note splits a cold sweep (``_sweep_breakdown``) into the cached part of the
  network (traced and run once: on the Fashion-MNIST net nearly all of its work, so about
  one forward pass by itself) and the pruning steps (run, after tracing their compiled
  loop where they have one, and run again), each in cold forward passes.
- ``neural_cleanse``: a default ``NeuralCleanse`` fit on the 43-class ``gtsrb-patch``
  BadNet of ``_zoo.py`` with 1,000 clean images (``bench_repair.timing_set``; goal
  <= 300 s, the target flagged), and the default scan (``projection_rounds=0, epochs=0``: no repair) of
  all 1,283 labels of the real CSAW sunglasses net with its 16 real clean faces (goal
  <= 480 s, label 0 flagged). ``--quick`` measures neither (the GTSRB fit takes about 2
  minutes, the CSAW scan about 5): ``bench_repair.py --quick`` and
  ``bench_neural_cleanse.py --quick`` run default NeuralCleanse fits.
- ``strip_memory``: peak resident memory of a fresh process scoring 10,000 and 50,000
  random CSAW-shaped uint8 inputs with a default ``STRIPDetector`` on the CSAW net
  (``bench_strip.measure_memory``; goal < 3 GiB at 50,000 and flat: the peak grows by no
  more than the input array, plus 10 %). Both sizes exceed the chunk sequential scoring
  converts to float32 at once (4,096 inputs at the defaults, 127 MiB of CSAW inputs),
  below which the peak is smaller. ``--quick`` leaves it to ``bench_strip.py --quick``,
  which measures the same (``measure_memory``, the CSAW net) at 2,000 and 10,000 inputs.

Adding a row: write ``def my_row(quick, log) -> list of dict`` returning rows with the
keys of ``COLUMNS`` (``value`` is the ratio or measured number the goal is about,
``met`` True / False / None) and the raw timings under ``"data"``; register it in
``ROWS``. ``--quick`` must keep the whole script to about a minute or two on 2 idle cores.

The report is written again after each row, so an interrupted run keeps the rows it
measured (marked partial). ``--only`` measures some rows and keeps the other rows of the
last report of the same mode, each marked with the time it was measured.
"""

import argparse
import datetime
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import _fashion
import _harness

COLUMNS = ("measure", "setting", "baseline", "candidate", "value", "goal", "met", "note")
GOAL_GRID_SPEEDUP = 1.8
GOAL_STRIP_SPEEDUP, GOAL_STRIP_RATE_SHIFT = 2.0, 0.01  # FRR and FAR each within 1 point
GOAL_SWEEP_RATIO = {"csaw": 2.0, "fashion": 1.5}
GOAL_NC_GTSRB_S, GOAL_NC_CSAW_S = 300, 480
GOAL_STRIP_PEAK_MIB = 3 * 1024


# -------------------------------------------------------------------- grid search


def _worker_threads(n_jobs):
    """Start the loky workers (importing TensorFlow there); their ``(intra, inter)`` sizes."""
    from joblib import Parallel, delayed

    from skbackdoor._runtime import tensorflow_threads

    return Parallel(n_jobs=n_jobs)(delayed(tensorflow_threads)() for _ in range(2 * n_jobs))


def _children_cpu_seconds():
    """CPU seconds (user + system) of every child process so far, exited ones included (Linux only).

    The live children (the loky workers and their resource tracker) are read from
    ``/proc``; the ones that exited and were reaped are in ``RUSAGE_CHILDREN``. Loky
    replaces a worker whose memory grows by more than 300 MB after a task, so reading only
    the workers alive at the end loses the CPU time of the replaced ones.
    """
    import resource

    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    me, live = os.getpid(), 0.0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # fields[1] is the parent's pid
            live += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return live + usage.ru_utime + usage.ru_stime


def _worker_pids():
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    return set(getattr(executor, "_processes", {}) or {}) if executor is not None else set()


def _search_in_this_process(estimator, params):
    """Fit ``GridSearchCV(estimator, **params)`` here: ``(wall, CPU of this process, fitted search, threads)``.

    Sent to one loky worker to time the sequential search with TensorFlow sized as each
    worker of ``n_jobs=2`` is; imports inside, as the function travels by value.
    """
    import time as _time

    from sklearn.model_selection import GridSearchCV

    from skbackdoor._runtime import tensorflow_threads

    X, y = params.pop("X"), params.pop("y")
    searcher = GridSearchCV(estimator, n_jobs=1, **params)
    wall, cpu = _time.perf_counter(), _time.process_time()
    searcher.fit(X, y)
    wall, cpu = _time.perf_counter() - wall, _time.process_time() - cpu
    searcher.best_estimator_ = None  # the refitted Keras model need not travel back
    return wall, cpu, searcher, tensorflow_threads()


def _fit_seconds(results):
    """Fit + score seconds of every (candidate, split) of ``cv_results_``, summed."""
    n_splits = sum(1 for key in results if key.startswith("split") and key.endswith("_test_cca"))
    return float(np.sum(results["mean_fit_time"] + results["mean_score_time"]) * n_splits)


def grid_search(quick, log, *, compare_unsized=None):
    """GridSearchCV over FinePruner candidates: n_jobs=2 against n_jobs=1, same grid.

    Three runs of the same search: ``n_jobs=1`` in this process (TensorFlow on every
    core), ``n_jobs=2`` (each loky worker's TensorFlow sized to 1 thread of 2 cores) and
    ``n_jobs=1`` inside one of those workers (TensorFlow on 1 thread, as each worker of
    ``n_jobs=2``): the first ratio is the goal's, the second how the parallel search
    itself scales, the third what TensorFlow's own threads already take from the second
    core (the first is the second divided by the third).
    """
    from joblib import Parallel, delayed, parallel_config
    from sklearn.model_selection import GridSearchCV

    from skbackdoor import FinePruner
    from skbackdoor.metrics import backdoor_scoring, best_cca_under_asr

    data = _fashion.badnet("patch", quick=quick, log=log)
    if quick:
        grid, cv, n_images, epochs = {"prune_fraction": [0.1, 0.3], "learning_rate": [1e-2]}, 2, 1000, 1
    else:
        grid = {"prune_fraction": [0.1, 0.3, 0.5], "learning_rate": [1e-4, 1e-3, 1e-2]}
        cv, n_images, epochs = 3, 3000, 2
    X, y = data.X_val[:n_images], data.y_val[:n_images]
    scoring = backdoor_scoring(data.X_poisoned[:500], data.y_target[:500])
    n_candidates = int(np.prod([len(values) for values in grid.values()]))
    setting = (f"FinePruner on the {'quick ' if quick else ''}patch BadNet, {n_candidates} candidates "
               f"({' x '.join(grid)}), cv={cv}: {n_candidates * cv} fits + refit on {n_images} images, "
               f"{epochs} epoch(s) each")

    def estimator():
        return FinePruner(model=data.model, epochs=epochs, random_state=0)

    def params():
        return dict(param_grid=grid, cv=cv, scoring=scoring, refit=best_cca_under_asr(0.05), error_score="raise")

    runs, cpu, fits, refits, restarts = {}, {}, {}, {}, {}

    def search(n_jobs, name):
        searcher = GridSearchCV(estimator(), n_jobs=n_jobs, **params())
        pids_before = _worker_pids()
        children_before = _children_cpu_seconds() if n_jobs > 1 else 0.0
        _, wall, own_cpu = _harness.timed(lambda: searcher.fit(X, y))
        children_after = _children_cpu_seconds() if n_jobs > 1 else 0.0
        if n_jobs > 1:
            restarts[name] = len(_worker_pids() - pids_before)
        runs[name] = wall
        cpu[name] = None if children_before is None or children_after is None else (
            own_cpu + children_after - children_before)
        fits[name], refits[name] = _fit_seconds(searcher.cv_results_), searcher.refit_time_
        return searcher.cv_results_

    def in_one_worker(name):
        task = delayed(_search_in_this_process)(estimator(), dict(params(), X=X, y=y))
        wall, worker_cpu, searcher, threads = Parallel(n_jobs=2)([task])[0]
        runs[name], cpu[name] = wall, worker_cpu
        fits[name], refits[name] = _fit_seconds(searcher.cv_results_), searcher.refit_time_
        return searcher.cv_results_, threads

    cores = _harness.usable_cores()
    log(f"grid search: {setting}")
    results_1 = search(1, "n_jobs=1")
    log(f"  n_jobs=1: {runs['n_jobs=1']:.1f} s")
    # loky's default: each worker gets OMP_NUM_THREADS = cores // n_jobs, which sizes TensorFlow.
    (threads_sized, start_sized, _) = _harness.timed(lambda: _worker_threads(2))
    results_2 = search(2, "n_jobs=2")
    log(f"  n_jobs=2, workers sized {threads_sized[0]}: {runs['n_jobs=2']:.1f} s (workers started in "
        f"{start_sized:.1f} s; {restarts['n_jobs=2']} worker(s) replaced by loky during the search)")
    results_1t, threads_1t = in_one_worker("n_jobs=1, 1 thread")
    log(f"  n_jobs=1 in one worker, TensorFlow threads {threads_1t}: {runs['n_jobs=1, 1 thread']:.1f} s")
    same_scores = all(np.allclose(results_1[key], other[key], atol=1e-6)
                      for other in (results_2, results_1t) for key in ("mean_test_cca", "mean_test_asr"))

    def overhead(name, n_jobs):
        # What the wall time holds beyond the refit and the fits themselves spread over n_jobs.
        return runs[name] - refits[name] - fits[name] / n_jobs

    def breakdown(name, n_jobs):
        return (f"{name}: refit {refits[name]:.1f} s, fits + scoring {fits[name]:.1f} s in all, the rest "
                f"{overhead(name, n_jobs):.1f} s")

    data_out = {"setting": setting, "cores": cores, "seconds": runs, "cpu_seconds": cpu,
                "fit_and_score_seconds": fits, "refit_seconds": refits, "worker_replacements": restarts,
                "worker_threads_sized": threads_sized, "worker_threads_one_thread_run": threads_1t,
                "worker_start_seconds_sized": start_sized, "same_scores_all_runs": same_scores}
    speedup = runs["n_jobs=1"] / runs["n_jobs=2"]
    scaling = runs["n_jobs=1, 1 thread"] / runs["n_jobs=2"]
    # With the refit alone after the parallel part, n_jobs=2 can at best halve the rest.
    limit = runs["n_jobs=1, 1 thread"] / (refits["n_jobs=1, 1 thread"]
                                          + (runs["n_jobs=1, 1 thread"] - refits["n_jobs=1, 1 thread"]) / 2)
    rows = [{
        "measure": "GridSearchCV n_jobs=2 / n_jobs=1",
        "setting": setting,
        "baseline": f"n_jobs=1 (TensorFlow on every core): {runs['n_jobs=1']:.1f} s",
        "candidate": f"n_jobs=2, TensorFlow sized {threads_sized[0][0]} thread(s) per worker: {runs['n_jobs=2']:.1f} s",
        "value": round(speedup, 2),
        "goal": f">= {GOAL_GRID_SPEEDUP} on 2 cores",
        "met": speedup >= GOAL_GRID_SPEEDUP if cores == 2 else None,
        "note": (f"{cores} usable cores; = (n_jobs=2 / n_jobs=1 on 1 thread) / (n_jobs=1 on 1 thread / on every "
                 f"core): the two rows below; worker start-up (TensorFlow import in 2 workers) {start_sized:.1f} s, "
                 f"not in the timing; workers replaced by loky (memory grown > 300 MB) during the search: "
                 f"{restarts['n_jobs=2']}; CPU seconds (this process + every child, exited ones included) "
                 f"{_cpu_text(cpu, 'n_jobs=1')} with n_jobs=1, {_cpu_text(cpu, 'n_jobs=2')} with n_jobs=2; "
                 f"{breakdown('n_jobs=1', 1)}; {breakdown('n_jobs=2', 2)}; cv scores identical in all three runs: "
                 f"{'yes' if same_scores else 'NO'}"),
    }, {
        "measure": "GridSearchCV n_jobs=2 / n_jobs=1, both on 1 TensorFlow thread per process",
        "setting": setting,
        "baseline": (f"n_jobs=1 inside one loky worker, TensorFlow {threads_1t[0]} thread(s) (as each worker of "
                     f"n_jobs=2): {runs['n_jobs=1, 1 thread']:.1f} s"),
        "candidate": f"n_jobs=2 (the row above): {runs['n_jobs=2']:.1f} s",
        "value": round(scaling, 2),
        "goal": "(how the parallel search scales; 2 at most)",
        "met": None,
        "note": (f"the refit runs alone after the parallel fits: with it, n_jobs=2 can reach {limit:.2f} here; "
                 f"{breakdown('n_jobs=1, 1 thread', 1)}; CPU seconds of the worker "
                 f"{_cpu_text(cpu, 'n_jobs=1, 1 thread')}"),
    }, {
        "measure": "GridSearchCV n_jobs=1 on 1 TensorFlow thread / on every core",
        "setting": setting,
        "baseline": f"n_jobs=1, TensorFlow on every core: {runs['n_jobs=1']:.1f} s",
        "candidate": f"n_jobs=1, TensorFlow on {threads_1t[0]} thread(s): {runs['n_jobs=1, 1 thread']:.1f} s",
        "value": round(runs["n_jobs=1, 1 thread"] / runs["n_jobs=1"], 2),
        "goal": "(what TensorFlow's own threads take from the second core; 1 = nothing)",
        "met": None,
        "note": "the goal's ratio is the row above divided by this one",
    }]
    if compare_unsized or (compare_unsized is None and not quick):
        # Before the sizing: every worker's TensorFlow takes all the cores.
        with parallel_config(backend="loky", inner_max_num_threads=cores):
            (threads_all, start_all, _) = _harness.timed(lambda: _worker_threads(2))
            search(2, "n_jobs=2, unsized")
        log(f"  n_jobs=2, workers with every core: {runs['n_jobs=2, unsized']:.1f} s")
        data_out.update(worker_threads_unsized=threads_all, worker_start_seconds_unsized=start_all)
        rows.append({
            "measure": "GridSearchCV n_jobs=2 / n_jobs=1, workers unsized",
            "setting": setting,
            "baseline": f"n_jobs=1 (TensorFlow on every core): {runs['n_jobs=1']:.1f} s",
            "candidate": (f"n_jobs=2, TensorFlow {threads_all[0][0]} threads per worker (every core, as before "
                          f"the sizing): {runs['n_jobs=2, unsized']:.1f} s"),
            "value": round(runs["n_jobs=1"] / runs["n_jobs=2, unsized"], 2),
            "goal": "(the sizing's effect: compare with the first row)",
            "met": None,
            "note": (f"worker start-up {start_all:.1f} s, not in the timing; workers replaced by loky during the "
                     f"search: {restarts['n_jobs=2, unsized']}; CPU seconds (this process + every child) "
                     f"{_cpu_text(cpu, 'n_jobs=2, unsized')}; {breakdown('n_jobs=2, unsized', 2)}"),
        })
    rows[0]["data"] = data_out
    return rows


def _cpu_text(cpu, name):
    return "?" if cpu.get(name) is None else f"{cpu[name]:.1f}"


# --------------------------------------------------------------- sequential STRIP


def _strip_defaults():
    from skbackdoor import STRIPDetector

    return STRIPDetector().get_params()


def strip_sequential(quick, log):
    """STRIPDetector(sequential=True) against sequential=False: inputs/s, FRR and FAR."""
    import bench_strip

    defaults = _strip_defaults()
    data = _fashion.badnet("patch", quick=quick, log=log)
    n_eval = 2000 if quick else None  # full: the 5,000 clean and 4,538 triggered test images
    X_clean, X_poisoned = data.X_test[:n_eval], data.X_poisoned[:n_eval]
    settings = SimpleNamespace(n_overlays=defaults["n_overlays"], batch_size=defaults["batch_size"],
                               repeats=3 if quick else 7)
    timing_inputs = 2048 if quick else 8192
    badnet = f"Fashion-MNIST patch BadNet{' (quick)' if quick else ''}"
    log(f"sequential STRIP: {badnet}, {timing_inputs} timed inputs, {settings.repeats} interleaved pairs")
    measured = bench_strip.sequential_section(badnet, data.model, data.X_val, X_clean, X_poisoned, settings, log,
                                              timing_inputs=timing_inputs)
    rows = []
    for row in measured:
        frr = row["target_frr"]
        frr_shift, far_shift = row["sequential_frr"] - row["full_frr"], row["sequential_far"] - row["full_far"]
        ratio = row["speed_ratio"]
        rows.append({
            "measure": "STRIP inputs/s, sequential=True / sequential=False",
            "setting": (f"{badnet}, n_overlays={row['n_overlays']} (default), frr={frr:g}"
                        f"{' (default)' if frr == defaults['frr'] else ''}, random_state=0; both fitted on the same "
                        f"{row['pool']:,} clean validation images; timed on {row['timing_inputs']:,} held-out clean "
                        f"inputs; FRR on {len(X_clean):,} held-out clean, FAR on {len(X_poisoned):,} triggered "
                        "test images"),
            "baseline": (f"sequential=False: {row['full_inputs_per_s']:,.0f} inputs/s, FRR {row['full_frr']:.2%}, "
                         f"FAR {row['full_far']:.2%}"),
            "candidate": (f"sequential=True: {row['sequential_inputs_per_s']:,.0f} inputs/s, FRR "
                          f"{row['sequential_frr']:.2%}, FAR {row['sequential_far']:.2%}"),
            "value": round(ratio, 2),
            "goal": f">= {GOAL_STRIP_SPEEDUP:g}, FRR and FAR each within {100 * GOAL_STRIP_RATE_SHIFT:g} point",
            "met": bool(ratio >= GOAL_STRIP_SPEEDUP and abs(frr_shift) <= GOAL_STRIP_RATE_SHIFT
                        and abs(far_shift) <= GOAL_STRIP_RATE_SHIFT),
            "note": (f"ratio: median of {settings.repeats} interleaved per-pair ratios (inputs/s: the best run); "
                     f"FRR {100 * frr_shift:+.2f} points, FAR {100 * far_shift:+.2f} points; blends per input "
                     f"{row['sequential_blends_per_clean_input']:.2f} clean, "
                     f"{row['sequential_blends_per_poisoned_input']:.2f} triggered (sequential=False: "
                     f"{row['n_overlays']})"),
            "data": row,
        })
    return rows


# ------------------------------------------------------------------ pruning sweep


def _sweep_breakdown(model, X, y, layer, repeats):
    """Where a cold sweep's time goes: ``{stage: best wall seconds}`` over ``repeats`` fresh copies.

    ``cache``: the network up to the cached tensors (its compiled function traced, then
    run on ``X``); ``steps``: the pruning steps (their compiled loop, where they have one,
    traced, then run); ``steps_warm``: the same steps again, with nothing left to trace.
    """
    from skbackdoor._pruning_sweep import _PruningSweep
    from skbackdoor.models import copy_model

    runs = []
    for _ in range(repeats):
        sweep = _PruningSweep(copy_model(model), layer)
        (cache, sums), cache_s, _ = _harness.timed(lambda: sweep.cache(X))
        order = np.argsort(sums, kind="stable")
        _, steps_s, _ = _harness.timed(lambda: sweep.accuracy_curve(cache, y, order))
        _, warm_s, _ = _harness.timed(lambda: sweep.accuracy_curve(cache, y, order))
        runs.append({"cache": cache_s, "steps": steps_s, "steps_warm": warm_s})
    return {stage: min(run[stage] for run in runs) for stage in runs[0]}



def pruning_sweep(quick, log):
    """The pruning sweep FinePruner.fit runs against one forward pass, both cold."""
    import bench_fine_pruning
    from skbackdoor.models import predict_proba_batches, resolve_conv_layer

    repeats = 2 if quick else 3
    cases = []
    csaw = _harness.load_csaw()
    if csaw is not None:
        n = 1000 if quick else 2000
        X = np.random.default_rng(0).integers(0, 256, size=(n, 55, 47, 3)).astype(np.float32)
        cases.append(("csaw", csaw, "conv_3", X, f"CSAW DeepID sunglasses BadNet (real weights), conv_3, {n:,} "
                                                 "random 0-255 images (as bench_fine_pruning.py)"))
        faces = _harness.load_csaw_faces(kinds=None)
        if faces is not None and not quick:
            X = faces[np.arange(n) % len(faces)]
            cases.append(("csaw", csaw, "conv_3", X, f"CSAW DeepID sunglasses BadNet (real weights), conv_3, the "
                                                     f"{len(faces)} real CSAW faces repeated to {n:,} images"))
    data = _fashion.badnet("patch", quick=quick, log=log)
    layer = resolve_conv_layer(data.model).name
    cases.append(("fashion", data.model, layer, data.X_val,
                  f"Fashion-MNIST patch BadNet{' (quick)' if quick else ''}, {layer} (last convolution), the "
                  f"{len(data.X_val):,} clean validation images"))
    rows = []
    for net, model, layer, X, setting in cases:
        log(f"pruning sweep: {setting}")
        y = predict_proba_batches(model, X).argmax(axis=1) if net == "csaw" else data.y_val
        result = bench_fine_pruning.sweep_timing(model, X, y, layer, naive=False, repeats=repeats, log=log,
                                                 fallback=False)
        forward, sweep = result["forward"], result["cached (FinePruner)"]
        ratio = sweep["cold_wall"] / forward["cold_wall"]
        result["cold_breakdown"] = parts = _sweep_breakdown(model, X, y, layer, repeats)
        cold = forward["cold_wall"]
        goal = GOAL_SWEEP_RATIO[net]
        rows.append({
            "measure": "pruning sweep / one forward pass, cold",
            "setting": f"{setting}; 0..{result['n_channels']} channels pruned",
            "baseline": f"forward pass (fresh copy of the model): {forward['cold_wall']:.3f} s",
            "candidate": f"FinePruner's sweep (fresh copy, as in fit): {sweep['cold_wall']:.3f} s",
            "value": round(ratio, 2),
            "goal": f"<= {goal:g}",
            "met": bool(ratio <= goal),
            "note": (f"wall time, best of {repeats}; the accuracy curve on every image (fit runs it on its "
                     f"held-out rows only); cold CPU-time ratio "
                     f"{sweep['cold_cpu'] / forward['cold_cpu']:.2f}; warm (the same call again) "
                     f"{sweep['warm_wall'] / forward['warm_wall']:.2f} in wall, "
                     f"{sweep['warm_cpu'] / forward['warm_cpu']:.2f} in CPU time; where the cold sweep's time "
                     f"goes, in cold forward passes (best of {repeats} fresh copies each): the cached part of the "
                     f"network, traced and run, {parts['cache'] / cold:.2f}, the pruning steps, traced and run, "
                     f"{parts['steps'] / cold:.2f} ({parts['steps_warm'] / cold:.2f} once traced); layers updated "
                     f"incrementally: {', '.join(result['incremental_layers'] or ['none'])}"),
            "data": result,
        })
    return rows


# ------------------------------------------------------------------ NeuralCleanse


def neural_cleanse(quick, log):
    """A default NeuralCleanse fit on the 43-class GTSRB BadNet; the 1,283-label CSAW scan."""
    return [_neural_cleanse_gtsrb(quick, log), _neural_cleanse_csaw(quick, log)]


def _not_measured(measure, setting, goal, why):
    return {"measure": measure, "setting": setting, "baseline": "-", "candidate": "-", "value": None,
            "goal": goal, "met": None, "note": f"not measured: {why}", "data": {"skipped": why}}


def _neural_cleanse_gtsrb(quick, log):
    import _zoo
    import bench_repair
    from skbackdoor import NeuralCleanse

    measure = "NeuralCleanse default fit, seconds"
    goal = f"<= {GOAL_NC_GTSRB_S} s, target flagged"
    setting = "gtsrb-patch (_zoo.py, 43 classes, target 0), 1,000 clean images (bench_repair.timing_set)"
    if quick:
        return _not_measured(measure, setting, goal, "--quick (about 2 minutes; bench_repair.py --quick and "
                                                     "bench_neural_cleanse.py --quick run default fits)")
    try:
        net = _zoo.load("gtsrb-patch", train_missing=False, log=log)
    except FileNotFoundError as exc:
        return _not_measured(measure, setting, goal, str(exc))
    X_clean, y_clean, keep = bench_repair.timing_set(net)
    targets = sorted(int(t) for t in np.unique(net.y_target))
    log(f"NeuralCleanse: {setting}")
    estimator = NeuralCleanse(model=net.model, random_state=0)
    _, wall, cpu = _harness.timed(lambda: estimator.fit(X_clean, y_clean))
    flagged = [int(label) for label in estimator.flagged_labels_]
    cca = 100 * float(np.mean(estimator.predict(net.X_test[keep]) == net.y_test[keep]))
    asr = 100 * float(np.mean(estimator.predict(net.X_poisoned) == net.y_target))
    index = {int(t): round(float(estimator.anomaly_index_[t]), 2) for t in targets}
    log(f"  {wall:.1f} s, flagged {flagged}, CCA {cca:.1f} %, ASR {asr:.1f} %")
    detected = set(targets) <= set(flagged)
    return {
        "measure": measure,
        "setting": setting,
        "baseline": f"the BadNet: CCA {net.badnet_cca:.1f} %, ASR {net.badnet_asr:.1f} %",
        "candidate": (f"NeuralCleanse(random_state=0): {wall:.0f} s ({cpu:.0f} CPU s); flagged {flagged}; "
                      f"CCA {cca:.1f} %, ASR {asr:.1f} %"),
        "value": round(wall, 1),
        "goal": goal,
        "met": bool(wall <= GOAL_NC_GTSRB_S and detected),
        "note": (f"anomaly index of the target {index} (threshold {estimator.anomaly_threshold_:.2f}); "
                 f"{len(estimator.scanned_labels_)} labels fully optimised; CCA on the evaluation images not in "
                 "the clean set, ASR on all triggered evaluation images"),
        "data": {"seconds": wall, "cpu_seconds": cpu, "flagged": flagged, "targets": targets, "cca": cca,
                 "asr": asr, "badnet_cca": net.badnet_cca, "badnet_asr": net.badnet_asr,
                 "anomaly_threshold": estimator.anomaly_threshold_,
                 "anomaly_index": estimator.anomaly_index_, "search_steps": estimator.search_steps_,
                 "n_clean": len(y_clean)},
    }


def _neural_cleanse_csaw(quick, log):
    from skbackdoor import NeuralCleanse
    from skbackdoor.models import predict_proba_batches

    measure = "NeuralCleanse scan of all labels, seconds"
    goal = f"<= {GOAL_NC_CSAW_S} s, label 0 flagged"
    setting = ("CSAW DeepID sunglasses BadNet (real weights, 1,283 classes, target 0), its 16 real clean faces "
               "labelled by the net; NeuralCleanse(projection_rounds=0, epochs=0, random_state=0): the default scan, no repair")
    if quick:
        return _not_measured(measure, setting, goal, "--quick (the scan takes about 5 minutes)")
    model, X = _harness.load_csaw(), _harness.load_csaw_faces()
    if model is None or X is None:
        return _not_measured(measure, setting, goal, f"{_harness.CSAW_WEIGHTS} or {_harness.CSAW_FACES} absent")
    y = predict_proba_batches(model, X).argmax(axis=1)
    log(f"NeuralCleanse: {setting}")
    estimator = NeuralCleanse(model=model, projection_rounds=0, epochs=0, random_state=0)
    _, wall, cpu = _harness.timed(lambda: estimator.fit(X, y))
    flagged = [int(label) for label in estimator.flagged_labels_]
    log(f"  {wall:.1f} s, flagged {flagged}")
    return {
        "measure": measure,
        "setting": setting,
        "baseline": "524 s measured in the last session (/work/exp-nc/scan_default.py, under heavy load)",
        "candidate": f"{wall:.0f} s ({cpu:.0f} CPU s); flagged {flagged}",
        "value": round(wall, 1),
        "goal": goal,
        "met": bool(wall <= GOAL_NC_CSAW_S and 0 in flagged),
        "note": (f"anomaly index of label 0: {float(estimator.anomaly_index_[0]):.2f} (threshold "
                 f"{estimator.anomaly_threshold_:.2f}); {len(estimator.candidates_)} candidates after screening, "
                 f"{len(estimator.scanned_labels_)} labels fully optimised"),
        "data": {"seconds": wall, "cpu_seconds": cpu, "flagged": flagged, "n_faces": len(X),
                 "anomaly_threshold": estimator.anomaly_threshold_,
                 "anomaly_index_label_0": float(estimator.anomaly_index_[0]),
                 "candidates": estimator.candidates_, "scanned_labels": estimator.scanned_labels_},
    }


# ------------------------------------------------------------------- STRIP memory


def strip_memory(quick, log):
    """Peak resident memory of STRIP scoring many CSAW-shaped inputs, in fresh processes."""
    import bench_strip

    defaults = _strip_defaults()
    sizes = (10000, 50000)
    measure = "STRIP peak memory (MiB), fresh process"
    goal = f"< {GOAL_STRIP_PEAK_MIB:,} MiB (3 GiB) at 50,000 inputs, flat"
    setting = (f"STRIPDetector defaults (n_overlays={defaults['n_overlays']}, batch_size={defaults['batch_size']}, "
               f"sequential={defaults['sequential']}) on the CSAW DeepID net, pool 1,000, scoring "
               f"{' then '.join(f'{n:,}' for n in sizes)} random uint8 55x47x3 inputs, one fresh process each")
    if quick:
        return [_not_measured(measure, setting, goal, "--quick (bench_strip.py --quick measures the same on the CSAW "
                                                      "net at 2,000 and 10,000 inputs)")]
    if not _harness.CSAW_WEIGHTS.exists():
        return [_not_measured(measure, setting, goal, f"{_harness.CSAW_WEIGHTS} absent")]
    measured = []
    for n in sizes:
        row = bench_strip.measure_memory("csaw", n, defaults["n_overlays"], defaults["batch_size"])
        log(f"STRIP memory: {n:,} inputs, peak {row['peak_rss_mb']:,.0f} MiB "
            f"(before scoring {row['rss_before_scoring_mb']:,.0f} MiB)")
        measured.append(row)

    def text(run):
        return (f"{run['n_inputs']:,} inputs: peak {run['peak_rss_mb']:,.0f} MiB (before scoring "
                f"{run['rss_before_scoring_mb']:,.0f}), {run['inputs_per_s']:,.0f} inputs/s")

    small, large = measured
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    array_growth = large["input_array_mb"] - small["input_array_mb"]
    flat = growth <= array_growth + 0.1 * small["peak_rss_mb"]
    return [{"measure": measure, "setting": setting, "baseline": text(small), "candidate": text(large),
             "value": round(large["peak_rss_mb"]), "goal": goal,
             "met": bool(large["peak_rss_mb"] < GOAL_STRIP_PEAK_MIB and flat),
             "note": (f"peak grew {growth:,.0f} MiB for {array_growth:,.0f} MiB more input array (flat: at most "
                      "the array plus 10 % of the smaller peak); VmHWM of each process"),
             "data": {"runs": measured, "flat": flat}}]


# The longest row last: an interrupted full run keeps the others.
ROWS = {"grid_search": grid_search, "strip_sequential": strip_sequential, "pruning_sweep": pruning_sweep,
        "strip_memory": strip_memory, "neural_cleanse": neural_cleanse}


# -------------------------------------------------------------------------- report


def _met(value):
    return "-" if value is None else ("yes" if value else "NO")


def write_report(rows, quick, *, pending=(), elsewhere=()):
    """The table of ``rows``; ``pending``: rows still to measure, ``elsewhere``: rows of an earlier run."""
    env = _harness.environment("quick" if quick else "full", _harness.command_line("speed", quick))
    lines = [
        "# Speed ratios (issue 14)",
        "",
        f"Produced by `{_harness.command_line('speed', quick)}`. Each row times a candidate and its "
        "baseline on the same work, one right after the other in one process. Other jobs on the machine "
        "slow both sides of a ratio, not always equally: see the load average below and in each note.",
        "",
    ]
    if pending:
        lines += [f"**Partial run**: still to measure: {', '.join(pending)}.", ""]
    if elsewhere:
        lines += [f"Rows kept from an earlier run of this mode (`--only`): {', '.join(elsewhere)}; the time each "
                  "row was measured is in its note.", ""]
    lines += [
        "## Ratios",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']}"
        cells = [row["measure"], row["setting"], row["baseline"], row["candidate"], value,
                 row["goal"], _met(row["met"]), row.get("note") or ""]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    lines += ["", _harness.environment_sentence(env), ""]
    data = {"rows": rows, "pending": list(pending), "kept_from_earlier_run": list(elsewhere)}
    _harness.write_results("speed", quick=quick, lines=lines, data=data, environment_override=env)
    return lines


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def measure_row(name, quick, log, **options):
    """The rows of ``ROWS[name]``, each marked with its name, when and under what load it ran."""
    load_before, started = _load(), datetime.datetime.now(datetime.timezone.utc)
    rows = ROWS[name](quick, log, **options)
    load_after = _load()
    for row in rows:
        row["row"] = name
        row["measured_utc"] = started.strftime("%Y-%m-%d %H:%M UTC")
        row["load_average_1min"] = [load_before, load_after]
        row["note"] = (f"{row.get('note') or ''}; measured {row['measured_utc']}, load average (1 min) "
                       f"{load_before} before, {load_after} after").lstrip("; ")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about a minute or two on 2 idle cores")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS),
                        help="measure only these rows (in this order); the other rows of the last report are kept")
    parser.add_argument("--compare-unsized", action="store_true",
                        help="grid_search: also time workers whose TensorFlow takes every core (always in full runs)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    names = list(dict.fromkeys(args.only or ROWS))
    kept = {}
    if args.only:
        previous = _harness.read_results("speed", quick=args.quick) or {}
        for row in (previous.get("data") or {}).get("rows", []):
            if row.get("row") in ROWS and row["row"] not in names:
                kept.setdefault(row["row"], []).append(row)
    measured = {}

    def ordered():
        return [row for name in ROWS for row in measured.get(name, kept.get(name, []))]

    for i, name in enumerate(names):
        options = {"compare_unsized": True} if name == "grid_search" and args.compare_unsized else {}
        measured[name] = measure_row(name, args.quick, _harness.log, **options)
        lines = write_report(ordered(), args.quick, pending=names[i + 1:], elsewhere=list(kept))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
