"""FinePruner on the Fashion-MNIST BadNets: repair quality, sweep cost, fine-tuning speed.

Usage: ``python benchmarks/bench_fine_pruning.py [--quick] [--attacks patch,blend]``

1. Repair. For each BadNet (patch, blend, multi-target, pruning-aware; see
   ``_fashion.py``) the defender holds a clean validation set drawn from the
   Fashion-MNIST test split and is evaluated on the rest of it: CCA and ASR of the
   BadNet, pruning only (``epochs=0``), fine-tuning only (``prune_fraction=0``) and
   fine-pruning. Every FinePruner runs with its defaults (nothing tuned to one
   attack); full runs add fine-pruning at two higher learning rates, to show the
   trade-off behind the default. Goal: ASR <= 2% with a CCA drop <= 2 points.
2. Sweep cost. The validation accuracy for every number of channels pruned from the
   whole layer, as ``fit`` computes it, divided by one forward pass of the network over
   the validation set (goal <= 2); beside it the naive sweep (prune one more channel of
   a copy and re-run the whole network) and the masked sweep (the cached prefix, and
   everything after it re-run per step: FinePruner's fallback for layers it cannot
   update incrementally). Wall and CPU (process) time, cold (first call: graph
   tracing included, as in every ``fit``) and warm. Also on the real CSAW DeepID
   ``conv_3`` when ``../shared/csaw`` is present (synthetic inputs: only the speed
   matters there).
3. Fine-tuning throughput. Images per second of FinePruner's fine-tuning (inside
   ``fit``) against a plain ``model.fit`` of the same network with the same optimiser,
   loss, metric, batch size and epochs (goal >= 0.9), timed per epoch by a callback.

``--quick`` (its time budget: ``run_all.QUICK_BUDGETS_S``) asks the same three
questions with less: the quick BadNets (15,000 training images, 2 epochs), the repair
on the patch BadNet and the pruning-aware one (the attack built against pruning) only,
pruning only and fine-pruning (no fine-tuning-only or learning-rate rows), the sweeps on
1,000 CSAW inputs instead of 2,000 with the best of 2 timings instead of 3 and no naive
sweep on the CSAW net, 3 fine-tuning epochs timed twice instead of 5 epochs 4 times.
"""

import argparse
import contextlib
import time

import numpy as np

import _fashion
import _harness
from _harness import timed

GOAL_ASR, GOAL_CCA_DROP, GOAL_SWEEP_RATIO, GOAL_THROUGHPUT_RATIO = 0.02, 0.02, 2.0, 0.9
BADNET_NAMES = {attack: f"Fashion-MNIST {attack}" for attack in _fashion.ATTACKS}
QUICK_ATTACKS = ("patch", "pruning-aware")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick BadNets (15,000 images, 2 epochs), the patch and pruning-aware BadNets, no fine-tuning-only or learning-rate rows, 1,000 CSAW inputs instead of 2,000, fewer timing repeats")
    parser.add_argument("--attacks", default=None, help="comma-separated; default all (quick: patch,pruning-aware)")
    return parser.parse_args()


# ---------------------------------------------------------------------------- repair


def repair(data, log, *, learning_rates=(), fine_tuning_only=True):
    from skbackdoor import FinePruner

    def scores(predict):
        return _harness.scores(predict, data)

    rows = {"BadNet": scores(_harness.model_predict(data.model))}
    rows["BadNet"].update(seconds=0.0, n_pruned=0)
    variants = {
        "pruning only": {"epochs": 0},
        "fine-tuning only": {"prune_fraction": 0.0},
        "fine-pruning": {},
    }
    if not fine_tuning_only:
        del variants["fine-tuning only"]
    for learning_rate in learning_rates:
        if learning_rate != FinePruner().learning_rate:
            variants[f"fine-pruning, learning_rate={learning_rate:g} (not the default)"] = {"learning_rate": learning_rate}
    variants["head re-fit only, fine_tuning='lda', prune_fraction=0 (not the default)"] = {
        "fine_tuning": "lda", "prune_fraction": 0.0,
    }
    for name, params in variants.items():
        pruner = FinePruner(model=data.model, random_state=0, **params)
        _, seconds, _ = timed(lambda: pruner.fit(data.X_val, data.y_val))
        rows[name] = scores(pruner.predict)
        rows[name].update(seconds=round(seconds, 2), n_pruned=int(len(pruner.pruned_channels_)))
        rows[name]["n_channels"] = int(pruner.n_channels_)
        log(f"  {name}: CCA {rows[name]['cca']:.2%}, ASR {rows[name]['asr']:.2%}, "
            f"{len(pruner.pruned_channels_)}/{pruner.n_channels_} channels, {seconds:.1f} s")
    return rows


# ----------------------------------------------------------------------------- sweep


def _best(runs):
    """Best wall and best CPU time of several ``timed`` runs (each taken on its own)."""
    return {"wall": min(run[1] for run in runs), "cpu": min(run[2] for run in runs)}


def sweep_timing(model, X, y, layer, *, naive, repeats, log, fallback=True):
    """Cold and warm time of each sweep, and of one forward pass, over ``X``.

    Cold runs use a fresh copy of the model (so a fresh sweep and fresh compiled
    functions, as in every ``fit``); warm runs repeat the call on the same objects.
    Each figure is the best of ``repeats`` runs, wall and CPU time taken separately.
    ``fallback=False`` leaves out the masked sweep (``bench_speed.py`` times only
    FinePruner's own).
    """
    from skbackdoor._fine_pruning import _naive_pruning_curve, _PruningSweep
    from skbackdoor.models import copy_model, forward_batches

    def forward_cold():
        fresh = copy_model(model)
        return timed(lambda: forward_batches(fresh, X))

    forward_batches(model, X)
    cold, warm = _best([forward_cold() for _ in range(repeats)]), _best(
        [timed(lambda: forward_batches(model, X)) for _ in range(repeats)]
    )
    result = {
        "n_images": int(len(X)),
        "forward": {"cold_wall": cold["wall"], "cold_cpu": cold["cpu"], "warm_wall": warm["wall"], "warm_cpu": warm["cpu"]},
    }
    curves = {}
    methods = (("cached (FinePruner)", True), ("masked (fallback)", False))
    for name, incremental in methods if fallback else methods[:1]:
        cold_runs, warm_runs = [], []
        for _ in range(repeats):
            sweep = _PruningSweep(copy_model(model), layer, incremental=incremental)

            def run():
                cached, sums = sweep.cache(X)
                return sweep.accuracy_curve(cached, y, np.argsort(sums, kind="stable"))

            cold_runs.append(timed(run))
            warm_runs.append(timed(run))
        curves[name] = warm_runs[-1][0]
        if incremental:
            result["n_channels"] = sweep.n_channels
            result["incremental_layers"] = None if sweep.frontier is None else [p.layer.name for p in sweep.frontier]
        cold, warm = _best(cold_runs), _best(warm_runs)
        result[name] = {"cold_wall": cold["wall"], "cold_cpu": cold["cpu"], "warm_wall": warm["wall"], "warm_cpu": warm["cpu"]}
        log(f"  {name} sweep: cold {cold['wall']:.2f} s, warm {warm['wall']:.2f} s "
            f"(forward pass {result['forward']['warm_wall']:.3f} s)")
    if naive:
        order = np.argsort(_PruningSweep(model, layer).cache(X)[1], kind="stable")
        curve, wall, cpu = timed(lambda: _naive_pruning_curve(model, layer, X, y, order))
        curves["naive"] = curve
        result["naive (re-run everything)"] = {"cold_wall": wall, "cold_cpu": cpu, "warm_wall": None, "warm_cpu": None}
        log(f"  naive sweep: {wall:.2f} s")
    result["repeats"] = repeats
    reference = curves["cached (FinePruner)"]
    result["curves_identical"] = all(np.array_equal(reference, curve) for curve in curves.values())
    return result


# --------------------------------------------------------------------- fine-tuning


class EpochTimer:
    """Per-epoch ``(wall, CPU)`` seconds of every ``keras.Model.fit`` run inside ``patched()``."""

    def __init__(self):
        self.runs = []

    @contextlib.contextmanager
    def patched(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                timer.runs.append([])

            def on_epoch_begin(self, epoch, logs=None):
                self.start = (time.perf_counter(), time.process_time())

            def on_epoch_end(self, epoch, logs=None):
                wall, cpu = self.start
                timer.runs[-1].append((time.perf_counter() - wall, time.process_time() - cpu))

        original = keras.Model.fit

        def fit(model, *args, **kwargs):
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [Callback()]
            return original(model, *args, **kwargs)

        keras.Model.fit = fit
        try:
            yield
        finally:
            keras.Model.fit = original


def throughput(data, *, epochs, repeats, log):
    import keras

    from skbackdoor import FinePruner
    from skbackdoor.models import copy_model

    X, y = data.X_val, data.y_val
    defaults = FinePruner()
    timer = EpochTimer()

    def plain_fit():
        model = copy_model(data.model)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=defaults.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        model.fit(X, y, epochs=epochs, batch_size=defaults.batch_size, shuffle=True, verbose=0)

    def fine_pruning_fit():
        FinePruner(model=data.model, epochs=epochs, random_state=0).fit(X, y)

    runs = {"plain model.fit": [], "FinePruner fine-tuning": []}
    with timer.patched():
        for _ in range(repeats):
            for name, run in (("plain model.fit", plain_fit), ("FinePruner fine-tuning", fine_pruning_fit)):
                run()
                runs[name].append(timer.runs[-1])
    result = {"n_images": int(len(X)), "epochs": epochs, "batch_size": defaults.batch_size, "repeats": repeats}
    for name, per_run in runs.items():
        rates = {}
        for clock, index in (("wall", 0), ("cpu", 1)):
            rates[f"steady_img_per_{clock}_s"] = max(
                len(X) * (epochs - 1) / sum(epoch[index] for epoch in times[1:]) for times in per_run
            )
            rates[f"all_epochs_img_per_{clock}_s"] = max(
                len(X) * epochs / sum(epoch[index] for epoch in times) for times in per_run
            )
        result[name] = rates
        log(f"  {name}: {rates['steady_img_per_wall_s']:,.0f} img/s after the first epoch "
            f"({rates['steady_img_per_cpu_s']:,.0f} img per CPU second)")
    plain, tuned = result["plain model.fit"], result["FinePruner fine-tuning"]
    for key in plain:
        result[f"ratio_{key.replace('_img_per', '')}"] = tuned[key] / plain[key]
    return result


# ----------------------------------------------------------------------------- report


def comparison_rows(result):
    rows = []
    for attack, variants in result["repair"].items():
        for name, row in variants.items():
            if name == "BadNet":
                continue
            rows.append({
                "badnet": BADNET_NAMES.get(attack, attack),
                "defense": f"FinePruner, {name}" + ("" if "not the default" in name else " (defaults)"),
                "cca": row["cca"], "asr": row["asr"], "frr": None, "far": None,
                "seconds": row["seconds"], "throughput": None,
                "note": f"{row['n_pruned']}/{row.get('n_channels', '?')} channels pruned",
            })
    return rows


def _ratio(numerator, denominator):
    return "-" if numerator is None or not denominator else f"{numerator / denominator:.2f}"


def summary_lines(result):
    """The goals, checked against the measured numbers."""
    met, attacks = [], list(result["repair"])
    for attack, variants in result["repair"].items():
        row, base = variants["fine-pruning"], variants["BadNet"]["cca"]
        if row["asr"] <= GOAL_ASR and base - row["cca"] <= GOAL_CCA_DROP:
            met.append(attack)
    asr = ", ".join(f"{a} {v['fine-pruning']['asr']:.1%}" for a, v in result["repair"].items())
    change = ", ".join(
        f"{a} {100 * (v['fine-pruning']['cca'] - v['BadNet']['cca']):+.1f}" for a, v in result["repair"].items()
    )
    lines = [
        f"- Repair goal (ASR <= {GOAL_ASR:.0%}, CCA drop <= {GOAL_CCA_DROP * 100:.0f} points) met with the "
        f"defaults on {len(met)} of {len(attacks)} BadNets{': ' + ', '.join(met) if met else ''}. "
        f"Fine-pruning ASR: {asr}; CCA change against the BadNet, in points: {change}.",
    ]
    for title, sweep in result["sweeps"].items():
        cached, forward = sweep["cached (FinePruner)"], sweep["forward"]
        naive = sweep.get("naive (re-run everything)")
        lines.append(
            f"- Sweep, {title}: {cached['warm_wall'] / forward['warm_wall']:.2f}x a forward pass warm "
            f"({cached['warm_cpu'] / forward['warm_cpu']:.2f}x in CPU time), "
            f"{cached['cold_cpu'] / forward['cold_cpu']:.2f}x cold in CPU time (goal <= {GOAL_SWEEP_RATIO:g})"
            + (f"; the naive sweep takes {naive['cold_cpu'] / forward['cold_cpu']:.0f}x." if naive else ".")
        )
    tuning = result["throughput"]
    lines.append(
        f"- Fine-tuning throughput: {tuning['ratio_steady_wall_s']:.2f}x plain `model.fit` in wall time, "
        f"{tuning['ratio_steady_cpu_s']:.2f}x per CPU second, after the first epoch "
        f"(goal >= {GOAL_THROUGHPUT_RATIO:g})."
    )
    return lines


def write_report(result, quick):
    from skbackdoor import FinePruner

    env = _harness.environment("quick" if quick else "full", _harness.command_line("fine_pruning", quick))
    defaults = FinePruner().get_params()
    settings = ", ".join(
        f"{key}={defaults[key]!r}"
        for key in ("layer", "ranking", "prune_fraction", "max_accuracy_drop", "learning_rate", "epochs", "batch_size",
                    "validation_fraction")
    )
    lines = [
        "# FinePruner on Fashion-MNIST BadNets",
        "",
        f"Produced by `{_harness.command_line('fine_pruning', quick)}`"
        f"{' (quick BadNets: 15,000 training images, 2 epochs)' if quick else ''}. "
        f"Defender's clean validation set: {result['n_val']} images from the Fashion-MNIST test split"
        f"{' (quick: the patch and pruning-aware BadNets only, no fine-tuning-only rows, no naive sweep on the CSAW net)' if quick else ''}; "
        f"evaluation on the other {result['n_test']} test images and their triggered copies (ASR over the "
        "triggered images whose class is not the target). FinePruner defaults throughout: "
        f"{settings}; `pruning only` sets epochs=0, `fine-tuning only` prune_fraction=0. "
        f"Goal: ASR <= {GOAL_ASR:.0%} with a CCA drop <= {GOAL_CCA_DROP * 100:.0f} points.",
        "",
        "## Repair",
        "",
        "| BadNet | defense | CCA | ASR | channels pruned | fit time (s) | goal met |",
        "|---|---|---|---|---|---|---|",
    ]
    for attack, variants in result["repair"].items():
        base = variants["BadNet"]["cca"]
        for name, row in variants.items():
            met = "-" if name == "BadNet" else (
                "yes" if row["asr"] <= GOAL_ASR and base - row["cca"] <= GOAL_CCA_DROP else "no"
            )
            pruned = "-" if name == "BadNet" else f"{row['n_pruned']}/{row['n_channels']}"
            lines.append(
                f"| {attack} | {name} | {row['cca']:.2%} | {row['asr']:.2%} | {pruned} | {row['seconds']:.1f} | {met} |"
            )
    for title, sweep in result["sweeps"].items():
        forward = sweep["forward"]
        lines += [
            "",
            f"## Sweep cost: {title}",
            "",
            f"Validation accuracy for 0..{sweep['n_channels']} channels pruned over {sweep['n_images']} images, "
            f"divided by one forward pass of the network over the same images (goal <= {GOAL_SWEEP_RATIO:g} "
            "for the sweep FinePruner runs). Cold: the first call, graph tracing included (what one `fit` "
            f"pays); warm: the same call again. Each figure is the best of {sweep.get('repeats', 3)} runs (wall and CPU time "
            "taken separately; CPU time counts every thread of the process). "
            f"Layers updated incrementally: {sweep['incremental_layers']}. "
            f"Curves of all methods identical: {'yes' if sweep['curves_identical'] else 'NO'}.",
            "",
            "| method | cold wall (s) | cold CPU (s) | warm wall (s) | warm CPU (s) | ratio warm wall | ratio warm CPU | ratio cold wall | ratio cold CPU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in ("forward", "cached (FinePruner)", "masked (fallback)", "naive (re-run everything)"):
            if name not in sweep:
                continue
            row = sweep[name]
            label = "one forward pass" if name == "forward" else name

            def cell(value):
                return "-" if value is None else f"{value:.3f}"

            lines.append(
                f"| {label} | {cell(row['cold_wall'])} | {cell(row['cold_cpu'])} | {cell(row['warm_wall'])} | "
                f"{cell(row['warm_cpu'])} | {_ratio(row['warm_wall'], forward['warm_wall'])} | "
                f"{_ratio(row['warm_cpu'], forward['warm_cpu'])} | {_ratio(row['cold_wall'], forward['cold_wall'])} | "
                f"{_ratio(row['cold_cpu'], forward['cold_cpu'])} |"
            )
    tuning = result["throughput"]
    lines += [
        "",
        f"## Fine-tuning throughput ({result['throughput_badnet']} BadNet)",
        "",
        f"{tuning['n_images']} images, {tuning['epochs']} epochs, batch size {tuning['batch_size']}, Adam, "
        "sparse categorical cross-entropy and an accuracy metric in both; FinePruner fine-tunes with its "
        "pruned channels held at zero by a weight constraint. The two alternate, "
        f"{tuning['repeats']} runs each; best run per column (wall and CPU time taken separately). The first "
        f"epoch includes graph tracing. Goal: ratio >= {GOAL_THROUGHPUT_RATIO:g}.",
        "",
        "| run | img/s after the first epoch | img/s over all epochs | img per CPU s after the first epoch | img per CPU s over all epochs |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("plain model.fit", "plain `model.fit`"), ("FinePruner fine-tuning", "FinePruner fine-tuning")):
        row = tuning[name]
        lines.append(
            f"| {label} | {row['steady_img_per_wall_s']:,.0f} | {row['all_epochs_img_per_wall_s']:,.0f} | "
            f"{row['steady_img_per_cpu_s']:,.0f} | {row['all_epochs_img_per_cpu_s']:,.0f} |"
        )
    lines += [
        f"| ratio | {tuning['ratio_steady_wall_s']:.2f} | {tuning['ratio_all_epochs_wall_s']:.2f} | "
        f"{tuning['ratio_steady_cpu_s']:.2f} | {tuning['ratio_all_epochs_cpu_s']:.2f} |",
        "",
        "## Summary",
        "",
        *summary_lines(result),
        "",
        _harness.environment_sentence(env)
        + f" Total run time {result['total_seconds']:.0f} s. Other jobs shared the cores (see the load "
        "average): wall times are noisy, CPU times less so.",
        "",
    ]
    _harness.write_results("fine_pruning", quick=quick, lines=lines, data=result,
                           comparison=comparison_rows(result), seconds=result["total_seconds"],
                           environment_override=env)
    print("\n".join(lines))


def main():
    args = parse_args()
    start = time.perf_counter()
    log = _harness.log
    # Quick runs take the best of 2 timings instead of 3 (about 30 s less on 2 cores).
    repeats = 2 if args.quick else 3
    result = {"repair": {}, "sweeps": {}}
    attacks = args.attacks.split(",") if args.attacks else (QUICK_ATTACKS if args.quick else _fashion.ATTACKS)
    for attack in attacks:
        data = _fashion.badnet(attack, quick=args.quick, log=log)
        result["n_val"], result["n_test"] = len(data.X_val), len(data.X_test)
        log(f"{attack} BadNet")
        # Full runs add a learning-rate sensitivity check: the trade-off behind the default.
        result["repair"][attack] = repair(data, log, learning_rates=() if args.quick else (3e-3, 3e-2),
                                          fine_tuning_only=not args.quick)

    patch = _fashion.badnet("patch", quick=args.quick, log=log)
    log("sweep cost, Fashion-MNIST patch BadNet, last convolution")
    from skbackdoor.models import resolve_conv_layer

    layer = resolve_conv_layer(patch.model).name
    result["sweeps"][f"Fashion-MNIST patch BadNet, {layer}"] = sweep_timing(
        patch.model, patch.X_val, patch.y_val, layer, naive=True, repeats=repeats, log=log
    )
    csaw = _harness.load_csaw()
    if csaw is not None:
        from skbackdoor.models import predict_proba_batches

        log("sweep cost, CSAW DeepID conv_3 (real weights, synthetic inputs)")
        n = 1000 if args.quick else 2000
        X = np.random.default_rng(0).integers(0, 256, size=(n, 55, 47, 3)).astype(np.float32)
        y = predict_proba_batches(csaw, X).argmax(axis=1)
        result["sweeps"]["CSAW-HackML DeepID (sunglasses BadNet), conv_3, synthetic inputs"] = sweep_timing(
            csaw, X, y, "conv_3", naive=not args.quick, repeats=repeats, log=log
        )
    log("fine-tuning throughput")
    result["throughput_badnet"] = "Fashion-MNIST patch"
    result["throughput"] = throughput(patch, epochs=3 if args.quick else 5, repeats=2 if args.quick else 4, log=log)
    result["total_seconds"] = time.perf_counter() - start
    write_report(result, args.quick)


if __name__ == "__main__":
    main()
