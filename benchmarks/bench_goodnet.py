"""GoodNetClassifier on the Fashion-MNIST BadNets: CCA/ASR of G(B, B'), G(B0, B'), G with STRIP.

Usage: ``python benchmarks/bench_goodnet.py [--quick]``

For each BadNet (patch, blend, multi-target, pruning-aware; see ``_fashion.py``) the
defender holds a clean validation set drawn from the Fashion-MNIST test split and is
evaluated on the rest of it. CCA counts the poisoned label N as wrong on clean inputs;
ASR counts N as a defended input (goal: ASR <= 1% with a CCA drop <= 2 points). Then the
wall time of a 3x3 GridSearchCV over the repaired model's prune fraction and learning
rate, with n_jobs=1 and n_jobs=2, measured one after the other in the same run (full
runs only: ``bench_speed.py`` measures the n_jobs ratio in every run). All defaults are
the estimators' own: nothing is tuned to one attack.

``--quick``: the quick BadNets, the patch and blend attacks only, no grid timing.

``--zoo NAMES`` (comma-separated names of ``benchmarks/_zoo.py``'s matrix, read from its
cache; ``--zoo digits`` for the tiny digits net of the tests) runs the calibration and
tuning section instead (issue 12), on each net:

- G rows: the BadNet, B' alone, G(B, B') and G(B0, B') with the plain disagreement rule
  (``frr=None``), the calibrated rule at its default budget, and with a STRIPDetector.
  Columns: CCA, ASR, share of poisoned inputs sent to N, share of clean inputs sent to N
  (evaluation set) and share of the calibration images G rejects.
- The surrogate-tuning check: one GridSearchCV over prune fraction, learning rate and
  fine-tuning recipe (FinePruner's own check of the recipe off: the search compares them),
  scored with the surrogate ASR (clean data only) and with the true ASR (poisoned images
  made from a part of the evaluation set); each refit rule ``best_cca_under_asr(0.05)``
  picks its candidate from the same ``cv_results_``, both picks are refitted on the
  defender's clean set and their true ASR is measured on the rest of the evaluation set.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import _fashion
import _harness

GOAL_ASR, GOAL_CCA_DROP = 0.01, 0.02
QUICK_ATTACKS = ("patch", "blend")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller training set, fewer epochs, 2 attacks, no grid timing")
    parser.add_argument("--attacks", default=None, help="comma-separated; default all (quick: patch,blend)")
    parser.add_argument("--zoo", default=None, help="run the calibration/tuning section on these zoo nets")
    parser.add_argument("--n-eval", type=int, default=2000, help="--zoo: clean and poisoned evaluation images per net")
    parser.add_argument("--learning-rates", default="0.001,0.01", help="--zoo: the tuning grid's learning rates")
    parser.add_argument("--prune-fractions", default="0.25,0.5", help="--zoo: the tuning grid's prune fractions")
    parser.add_argument("--recipes", default="sgd,fst", help="--zoo: the tuning grid's fine-tuning recipes")
    parser.add_argument("--head-refit-prune-fractions", default="0,0.25",
                        help="--zoo: prune fractions of the tuning grid's fine_tuning='lda' candidates ('' for none)")
    parser.add_argument("--n-targets", type=int, default=1,
                        help="--zoo: the surrogates' n_targets (suspected target labels attacked)")
    parser.add_argument("--output", default="goodnet_calibration", help="--zoo: results/<output>.md|json")
    parser.add_argument("--tuning-only", action="store_true", help="--zoo: skip the G rows")
    parser.add_argument("--rows-only", action="store_true", help="--zoo: skip the tuning check")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results/<output>.md of a --zoo run from its JSON, measuring nothing")
    parser.add_argument("--keep", action="store_true",
                        help="--zoo: keep the G rows and tuning checks of the last report that this run does not measure")
    return parser.parse_args()


def evaluate(predict, data, n_classes):
    from skbackdoor.metrics import false_rejection_rate

    predicted = {}

    def remembered(X):  # each prediction is made once, for the scores and the flagged shares
        predicted[id(X)] = predict(X)
        return predicted[id(X)]

    result = _harness.scores(remembered, data)
    clean, poisoned = predicted[id(data.X_test)], predicted[id(data.X_poisoned)]
    result["clean_flagged"] = float(false_rejection_rate(clean, poisoned_label=n_classes))
    result["poisoned_flagged"] = float(np.mean(poisoned == n_classes))
    return result


def defend(data, *, epochs, log):
    from skbackdoor import FinePruner, GoodNetClassifier, STRIPDetector

    rows = {}
    rows["BadNet B"] = evaluate(_harness.model_predict(data.model), data, 10)
    rows["BadNet B"]["seconds"] = 0.0

    start = time.perf_counter()
    repaired = FinePruner(model=data.model, epochs=epochs, random_state=0).fit(data.X_val, data.y_val)
    fine_prune_seconds = time.perf_counter() - start
    rows["B' alone (FinePruner)"] = evaluate(repaired.predict, data, 10)
    rows["B' alone (FinePruner)"]["seconds"] = fine_prune_seconds

    variants = {
        "G(B, B')": dict(repaired=repaired),
        "G(B0, B')": dict(repaired=repaired, reference=FinePruner(prune_fraction=0.1, epochs=0, random_state=0)),
        "G with STRIP": dict(detector=STRIPDetector(random_state=0)),
        "G(B, B') + STRIP": dict(repaired=repaired, detector=STRIPDetector(random_state=0)),
    }
    for name, parts in variants.items():
        start = time.perf_counter()
        goodnet = GoodNetClassifier(badnet=data.model, **parts).fit(data.X_val, data.y_val)
        fit_seconds = time.perf_counter() - start
        rows[name] = evaluate(goodnet.predict, data, 10)
        # B' is fitted once and shared; its fit time counts towards every G that uses it
        rows[name]["seconds"] = fit_seconds + (fine_prune_seconds if "repaired" in parts else 0.0)
        log(f"  {data.name:14s} {name:18s} CCA {rows[name]['cca']:.4f} ASR {rows[name]['asr']:.4f}")
    return rows


def grid_timing(data, *, epochs, n_val):
    from sklearn.model_selection import GridSearchCV

    from skbackdoor import FinePruner, GoodNetClassifier
    from skbackdoor.metrics import backdoor_scoring, best_cca_under_asr

    grid = {"repaired__prune_fraction": [0.1, 0.3, 0.5], "repaired__learning_rate": [1e-4, 1e-3, 1e-2]}
    X, y = data.X_val[:n_val], data.y_val[:n_val]
    scoring = backdoor_scoring(data.X_poisoned[:1000], data.y_target[:1000])
    timings = {}
    for n_jobs in (1, 2):
        search = GridSearchCV(
            GoodNetClassifier(badnet=data.model, repaired=FinePruner(epochs=epochs, random_state=0)),
            grid, cv=3, n_jobs=n_jobs, scoring=scoring, refit=best_cca_under_asr(0.01),
        )
        start = time.perf_counter()
        search.fit(X, y)
        timings[n_jobs] = time.perf_counter() - start
    return {
        "grid": "3x3 (prune_fraction x learning_rate), cv=3, 27 fits + refit",
        "n_val": int(n_val),
        "epochs": epochs,
        "seconds_n_jobs_1": round(timings[1], 1),
        "seconds_n_jobs_2": round(timings[2], 1),
        "speedup": round(timings[1] / timings[2], 2),
        "best_params": {k: float(v) for k, v in search.best_params_.items()},
    }


def comparison_rows(result):
    """Every variant on every BadNet; the "flagged" shares of a G give its FRR and FAR."""
    rows = []
    for attack, variants in result["attacks"].items():
        for name, record in variants.items():
            row = {"badnet": f"Fashion-MNIST {attack}", "cca": record["cca"], "asr": record["asr"],
                   "defense": "none (the BadNet B)" if name == "BadNet B" else name}
            if name != "BadNet B":
                row["seconds"] = record["seconds"]
            if name.startswith("G"):
                row["frr"], row["far"] = record["clean_flagged"], 1.0 - record["poisoned_flagged"]
            rows.append(row)
    return rows


def write_report(result, quick):
    env = _harness.environment("quick" if quick else "full", _harness.command_line("goodnet", quick))
    lines = [
        "# GoodNetClassifier on Fashion-MNIST BadNets",
        "",
        f"Produced by `{_harness.command_line('goodnet', quick)}`. "
        f"Defender's clean validation set: {result['n_val']} images from the Fashion-MNIST test split; "
        f"evaluation on the other {result['n_test']} test images and their triggered copies. "
        "CCA counts the poisoned label N as wrong; ASR counts N as defended. Goal: ASR <= 1% with a "
        "CCA drop <= 2 points. Estimators run with their defaults (FinePruner: last Conv2D, "
        f"max_accuracy_drop=0.04, {result['epochs']} epochs; STRIPDetector: frr=0.01, 10 overlays); "
        "B0 = the BadNet with 10% of the channels pruned, no fine-tuning.",
        "",
        "| BadNet | defense | CCA | ASR | clean -> N | poisoned -> N | fit time (s) | goal met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack, rows in result["attacks"].items():
        base = rows["BadNet B"]["cca"]
        for name, row in rows.items():
            met = "-" if name == "BadNet B" else ("yes" if row["asr"] <= GOAL_ASR and base - row["cca"] <= GOAL_CCA_DROP else "no")
            lines.append(
                f"| {attack} | {name} | {row['cca']:.2%} | {row['asr']:.2%} | {row['clean_flagged']:.2%} | "
                f"{row['poisoned_flagged']:.2%} | {row['seconds']:.1f} | {met} |"
            )
    grid = result.get("grid_search")
    if grid:
        lines += [
            "",
            f"## GridSearchCV wall time ({grid['grid']}, {grid['n_val']} validation images, {grid['epochs']} epochs per fit, patch BadNet)",
            "",
            "| n_jobs=1 (s) | n_jobs=2 (s) | speed-up |",
            "|---|---|---|",
            f"| {grid['seconds_n_jobs_1']} | {grid['seconds_n_jobs_2']} | {grid['speedup']}x |",
        ]
    else:
        lines += ["", "No GridSearchCV timing in quick mode: `bench_speed.py` measures the n_jobs ratio."]
    lines += ["", _harness.environment_sentence(env), ""]
    _harness.write_results("goodnet", quick=quick, lines=lines, data=result,
                           comparison=comparison_rows(result), environment_override=env)
    print("\n".join(lines))


# ------------------------------------------------- calibration and tuning (issue 12)

TUNING_MAX_ASR = 0.05


def zoo_net(name, n_eval):
    """A BadNet of the matrix (or the digits test net) with a subsampled evaluation set."""
    from types import SimpleNamespace

    if name == "digits":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from sklearn.datasets import load_digits

        from conftest import _digits_net

        digits = load_digits()
        raw = _digits_net((digits.images.astype(np.float32)[..., np.newaxis], digits.target.astype(np.int64)), poisoned=True)
        net = SimpleNamespace(name=name, model=raw.model, n_classes=10, X_clean=raw.X_val, y_clean=raw.y_val,
                              X_test=raw.X_test, y_test=raw.y_test, X_poisoned=raw.X_poisoned, y_target=raw.y_target)
    else:
        import _zoo

        net = _zoo.load(name, train_missing=False)
    rng = np.random.default_rng(0)
    clean = rng.permutation(len(net.X_test))[:n_eval]
    poisoned = rng.permutation(len(net.X_poisoned))[: 2 * n_eval]
    half = len(poisoned) // 2
    # The true scorer of the tuning check holds one half of the poisoned images, the other half measures.
    return SimpleNamespace(
        name=name, model=net.model, n_classes=net.n_classes, X_val=net.X_clean, y_val=net.y_clean,
        X_test=net.X_test[clean], y_test=net.y_test[clean],
        X_poisoned=net.X_poisoned[poisoned[half:]], y_target=net.y_target[poisoned[half:]],
        X_poisoned_scorer=net.X_poisoned[poisoned[:half]], y_target_scorer=net.y_target[poisoned[:half]],
    )


def calibrated_rows(net, log):
    """G rows. The parts are fitted once and shared: B' and B0 on the images G would fit
    them on (``calibration_fraction=0.2, random_state=0``), STRIP on all of the defender's
    set, and each G is calibrated on the held-out 20 %, as G.fit does with unfitted parts."""
    from sklearn.utils import check_random_state

    from skbackdoor import FinePruner, GoodNetClassifier, NeuralCleanse, STRIPDetector
    from skbackdoor.models import predict_proba_batches

    n = net.n_classes
    order = check_random_state(0).permutation(len(net.X_val))
    n_calibration = int(round(0.2 * len(net.X_val)))
    calibration, rest = np.sort(order[:n_calibration]), np.sort(order[n_calibration:])
    X_fit, y_fit = net.X_val[rest], net.y_val[rest]
    X_cal, y_cal = net.X_val[calibration], net.y_val[calibration]
    rows = {"BadNet B": evaluate(lambda X: predict_proba_batches(net.model, X).argmax(axis=1), net, n)}
    start = time.perf_counter()
    repaired = FinePruner(model=net.model, random_state=0).fit(X_fit, y_fit)
    repair_seconds = time.perf_counter() - start
    rows["B' alone (FinePruner defaults)"] = evaluate(repaired.predict, net, n)
    start = time.perf_counter()
    cleansed = NeuralCleanse(model=net.model, random_state=0).fit(X_fit, y_fit)
    cleanse_seconds = time.perf_counter() - start
    rows["B' alone (NeuralCleanse defaults)"] = evaluate(cleansed.predict, net, n)
    start = time.perf_counter()
    refitted = FinePruner(model=net.model, fine_tuning="lda", prune_fraction=0.0, random_state=0).fit(X_fit, y_fit)
    refit_seconds = time.perf_counter() - start
    rows["B' alone (FinePruner lda, no pruning)"] = evaluate(refitted.predict, net, n)
    b0 = FinePruner(model=net.model, prune_fraction=0.1, epochs=0, random_state=0).fit(X_fit, y_fit)
    strip = STRIPDetector(model=net.model, random_state=0).fit(net.X_val)
    variants = {
        "G(B, B') plain (frr=None)": dict(repaired=repaired, frr=None),
        "G(B0, B') plain (frr=None)": dict(repaired=repaired, reference=b0, frr=None),
        "G(B, B') calibrated (frr=0.01)": dict(repaired=repaired),
        "G(B0, B') calibrated (frr=0.01)": dict(repaired=repaired, reference=b0),
        "G(B, B') calibrated + STRIP (defaults)": dict(repaired=repaired, detector=strip),
        "G with STRIP only (defaults)": dict(detector=strip),
        "G(B, B'=NeuralCleanse) calibrated (frr=0.01)": dict(repaired=cleansed),
        "G(B, B'=NeuralCleanse) calibrated + STRIP (defaults)": dict(repaired=cleansed, detector=strip),
        "G(B, B'=FinePruner lda) calibrated (frr=0.01)": dict(repaired=refitted),
        "G(B, B'=FinePruner lda) calibrated + STRIP (defaults)": dict(repaired=refitted, detector=strip),
    }
    # Each calibrated G with every answer: B' (the reports'), B (B' only judges), the
    # surer of the two per input, and the default "auto".
    for name in [name for name in variants if "calibrated" in name]:
        parts = variants.pop(name)
        for answer in ANSWERS:
            variants[name.replace(" calibrated", f" calibrated, answer={answer}")] = dict(parts, answer=answer)
    for name, parts in variants.items():
        start = time.perf_counter()
        goodnet = GoodNetClassifier(badnet=net.model, **parts).fit(X_cal, y_cal)
        row = evaluate(goodnet.predict, net, n)
        fitted = {id(repaired): repair_seconds, id(cleansed): cleanse_seconds, id(refitted): refit_seconds}.get(
            id(parts.get("repaired")), 0.0
        )
        row["seconds"] = time.perf_counter() - start + fitted
        row["calibration_rejected"] = float(np.mean(goodnet.predict(X_cal) == n))
        row["answer"] = goodnet.answer_
        rows[name] = row
        log(f"  {net.name:20s} {name:40s} CCA {row['cca']:.4f} ASR {row['asr']:.4f} "
            f"clean->N {row['clean_flagged']:.4f} poisoned->N {row['poisoned_flagged']:.4f}")
    return rows


def tuning_check(net, grid, log, n_targets=1):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    from skbackdoor import FinePruner, GoodNetClassifier
    from skbackdoor.metrics import attack_success_rate, make_asr_scorer
    from skbackdoor.metrics import best_cca_under_asr

    from scipy.stats import spearmanr

    from skbackdoor._surrogate import _reversed_triggers, _scoring_from_search

    start = time.perf_counter()
    # surrogate_backdoor_scoring(net.model, net.X_val, net.y_val, random_state=0), its trigger search
    # shared with the fixed surrogate (the reversed triggers stamped unchanged), scored side by side.
    search, targets = _reversed_triggers(net.model, net.X_val, net.y_val, n_targets=n_targets, steps=500,
                                         random_state=0)
    scoring = _scoring_from_search(search, targets, net.X_val, net.y_val, attack="adaptive", mask_budget=0.25,
                                   poisoned_label=None)
    surrogate_seconds = time.perf_counter() - start
    # The adaptive attack until 2026-12-03 attacked a GoodNet's B' alone: its rate is the
    # first column of the same attacks (hits_per_model), read back without attacking twice.
    scoring["asr"], scoring["repaired_only_asr"] = _side_by_side(scoring["asr"])
    scoring["fixed_asr"] = _scoring_from_search(search, targets, net.X_val, net.y_val, attack="fixed", mask_budget=0.25,
                                                poisoned_label=None)["asr"]
    scoring["true_asr"] = make_asr_scorer(net.X_poisoned_scorer, net.y_target_scorer)
    # The search compares the recipes itself, so FinePruner's own check of them is off.
    repaired = FinePruner(max_fine_tuning_drop=None, random_state=0)
    goodnet = GoodNetClassifier(badnet=net.model, repaired=repaired, random_state=0)
    start = time.perf_counter()
    # refit=False: both refit rules read the same cv_results_; each pick is refitted below.
    search = GridSearchCV(goodnet, grid, scoring=scoring, refit=False, cv=2).fit(net.X_val, net.y_val)
    search_seconds = time.perf_counter() - start
    results = search.cv_results_
    picks = {
        "surrogate": best_cca_under_asr(TUNING_MAX_ASR)(results),
        "repaired_only": best_cca_under_asr(TUNING_MAX_ASR, asr_key="repaired_only_asr")(results),
        "fixed": best_cca_under_asr(TUNING_MAX_ASR, asr_key="fixed_asr")(results),
        "true": best_cca_under_asr(TUNING_MAX_ASR, asr_key="true_asr")(results),
    }
    out = {
        "grid": [{k: list(v) for k, v in part.items()} for part in _grid_parts(grid)],
        "cv_surrogate_asr": [float(-v) for v in results["mean_test_asr"]],
        "cv_repaired_only_asr": [float(-v) for v in results["mean_test_repaired_only_asr"]],
        "cv_fixed_asr": [float(-v) for v in results["mean_test_fixed_asr"]],
        "cv_true_asr": [float(-v) for v in results["mean_test_true_asr"]],
        "cv_cca": [float(v) for v in results["mean_test_cca"]],
        "surrogate_seconds": round(surrogate_seconds, 1),
        "search_seconds": round(search_seconds, 1),
    }
    refitted = {}
    for which, index in picks.items():
        if index in refitted:  # the same candidate picked by two rules: one refit
            out[f"{which}_pick"], out[f"{which}_pick_true_asr"], out[f"{which}_pick_cca"] = refitted[index]
            continue
        fitted = clone(goodnet).set_params(**results["params"][index]).fit(net.X_val, net.y_val)
        out[f"{which}_pick"] = dict(results["params"][index])
        out[f"{which}_pick_true_asr"] = float(attack_success_rate(net.y_target, fitted.predict(net.X_poisoned)))
        out[f"{which}_pick_cca"] = float(np.mean(fitted.predict(net.X_test) == net.y_test))
        refitted[index] = out[f"{which}_pick"], out[f"{which}_pick_true_asr"], out[f"{which}_pick_cca"]
    for which in ("surrogate", "repaired_only", "fixed"):
        cv = out["cv_surrogate_asr" if which == "surrogate" else f"cv_{which}_asr"]
        rho = float(spearmanr(cv, out["cv_true_asr"]).statistic)
        out[f"{which}_spearman"] = None if np.isnan(rho) else rho
        gap = out[f"{which}_pick_true_asr"] - out["true_pick_true_asr"]
        out[f"{which}_gap"] = gap
        out[f"{which}_met"] = bool(gap <= 0.01 and out[f"{which}_pick_true_asr"] <= 0.02)
    out["gap"], out["met"] = out["surrogate_gap"], out["surrogate_met"]
    log(f"  {net.name:20s} tuning: surrogate pick {out['surrogate_pick']} true ASR {out['surrogate_pick_true_asr']:.4f}; "
        f"true pick {out['true_pick']} true ASR {out['true_pick_true_asr']:.4f}")
    return out


def _side_by_side(adaptive):
    """Two scorers from one adaptive scorer: its rate, and the rate of its first attacked
    model's trigger alone (a GoodNet's B'), computed in the same call."""
    last = {}

    def asr(estimator, X, y):
        hits, total = adaptive.hits_per_model(estimator, X, y)
        last["key"], last["repaired_only"] = (id(estimator), len(X)), -(hits[:, 0].sum() / total if total else 0.0)
        return 0.0 - (hits.max(axis=1).sum() / total if total else 0.0)

    def repaired_only_asr(estimator, X, y):
        if last.get("key") != (id(estimator), len(X)):  # GridSearchCV scores "asr" first, on the same fold
            raise RuntimeError("repaired_only_asr is read after asr on the same estimator and fold")
        return last["repaired_only"]

    return asr, repaired_only_asr


def _grid_parts(grid):
    """The dicts of a ``param_grid`` (a dict, or a list of dicts as GridSearchCV takes)."""
    return [grid] if isinstance(grid, dict) else list(grid)


def _short_params(params):
    """``learning_rate=0.01, fine_tuning=fst`` from ``{"repaired__learning_rate": 0.01, ...}``."""
    return ", ".join(
        f"{key.split('__')[-1]}={value:g}" if isinstance(value, float) else f"{key.split('__')[-1]}={value}"
        for key, value in params.items()
    )


ANSWERS = ("repaired", "reference", "confident", "auto")
# The setting the user guide recommends: its summary rows come first.
RECOMMENDED = "G(B, B'=NeuralCleanse) calibrated + STRIP (defaults)"


def _goal_met(row, base):
    # 1e-9: a drop of exactly 1 point is within it, whatever the float rounding of the two shares
    return row["asr"] <= GOAL_ASR and base - row["cca"] <= 0.01 + 1e-9


def _half(name):
    import _zoo

    return _zoo.ZOO[name].half if name in _zoo.ZOO else "test net"


def _summary_lines(result):
    """How often each calibrated setting meets the goal, per answer; then the recommended setting per net."""
    settings = {}
    for rows in result["rows"].values():
        for defense in rows:
            if ", answer=" in defense:
                answer = defense.split(", answer=")[1].split()[0]
                settings.setdefault(defense.replace(f", answer={answer}", ""), None)
    halves = ("tuning", "report", "test net")
    lines = [
        "## Summary",
        "",
        "How many BadNets each calibrated G meets the goal on, by `answer` (tuning half / report half / the "
        "digits test net). The default `answer=\"auto\"` was chosen on the tuning half.",
        "",
        "| G | " + " | ".join(f"answer={a}" for a in ANSWERS) + " |",
        "|---|" + "---|" * len(ANSWERS),
    ]
    for setting in sorted(settings, key=lambda s: (s != RECOMMENDED, s)):
        cells = []
        for answer in ANSWERS:
            name = setting.replace(" calibrated", f" calibrated, answer={answer}")
            met = {half: [0, 0] for half in halves}
            for net, rows in result["rows"].items():
                if name in rows:
                    met[_half(net)][0] += _goal_met(rows[name], rows["BadNet B"]["cca"])
                    met[_half(net)][1] += 1
            cells.append(" / ".join(f"{k} of {n}" for k, n in (met[h] for h in halves) if n))
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Per BadNet, {RECOMMENDED.replace(' calibrated', ' calibrated, answer=auto')} (the defaults of G with a "
        "NeuralCleanse B' and a STRIPDetector) and the same without STRIP. Drop: the BadNet's CCA minus G's, in "
        "points; 'answer': whose labels G gave.",
        "",
        "| BadNet | half | BadNet CCA / ASR | B' alone: drop / ASR | G: drop / ASR | answer | clean -> N | "
        "G + STRIP: drop / ASR | clean -> N | goal met (G + STRIP) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    alone = "B' alone (NeuralCleanse defaults)"
    plain = RECOMMENDED.replace(" calibrated + STRIP (defaults)", " calibrated, answer=auto (frr=0.01)")
    strip = RECOMMENDED.replace(" calibrated", " calibrated, answer=auto")
    for net, rows in result["rows"].items():
        if strip not in rows:
            continue
        base, b = rows["BadNet B"]["cca"], rows["BadNet B"]
        drop_asr = lambda r: f"{100 * (base - r['cca']):+.1f} / {100 * r['asr']:.1f}"  # noqa: E731
        lines.append(
            f"| {net} | {_half(net)} | {100 * base:.1f} / {100 * b['asr']:.1f} | {drop_asr(rows[alone])} | "
            f"{drop_asr(rows[plain])} | {rows[plain].get('answer', '-')} | {rows[plain]['clean_flagged']:.2%} | "
            f"{drop_asr(rows[strip])} | {rows[strip]['clean_flagged']:.2%} | "
            f"{'yes' if _goal_met(rows[strip], base) else 'no'} |"
        )
    return lines + [""]


def write_zoo_report(result, command, env=None, seconds=None):
    """Write results/<output>.md|json; ``env`` and ``seconds``: a rewritten report's own (``--report-only``)."""
    env = env or _harness.environment("zoo", command)
    lines = [
        "# GoodNetClassifier: calibrated poisoned label and tuning from clean data (issue 12)",
        "",
        "Produced by " + ", then ".join(f"`{c}`" for c in result.get("commands", [command])) + ". "
        f"Evaluation: {result['n_eval']} clean images of each net's evaluation set and as many triggered ones. "
        "CCA counts N as wrong; ASR counts N as defended. B' and B0 are fitted on 80 % of the defender's clean "
        "set, STRIP on all of it, and G is calibrated on the other 20 % ('calibration -> N': the share of those "
        "G rejects). Goal: CCA within 1 point of the BadNet's, ASR <= 1 %.",
        "",
        *_summary_lines(result),
        "## Every row",
        "",
        "| BadNet | defense | CCA | ASR | poisoned -> N | clean -> N | calibration -> N | goal met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["rows"].items():
        base = rows["BadNet B"]["cca"]
        for defense, row in rows.items():
            met = "-" if defense == "BadNet B" else ("yes" if _goal_met(row, base) else "no")
            rejected = row.get("calibration_rejected")
            lines.append(
                f"| {name} | {defense} | {row['cca']:.2%} | {row['asr']:.2%} | {row['poisoned_flagged']:.2%} | "
                f"{row['clean_flagged']:.2%} | {'-' if rejected is None else f'{rejected:.2%}'} | {met} |"
            )
    if not result["tuning"]:
        lines += ["", _harness.environment_sentence(env), ""]
        _harness.write_results(result["output"], quick=False, lines=lines, data=result, environment_override=env,
                               seconds=seconds)
        print("\n".join(lines))
        return
    lines += [
        "",
        "## Tuning from clean data alone",
        "",
        f"GridSearchCV over {result['grid']} (GoodNet with FinePruner(max_fine_tuning_drop=None), its other "
        "parameters at their defaults, cv=2), "
        f"refit rule best_cca_under_asr({TUNING_MAX_ASR}) applied to the surrogate ASR and to the true ASR "
        "of the same search. Three surrogates from the same trigger search: the default, "
        "`surrogate_backdoor_scoring(badnet, X_clean, y_clean, "
        + ("" if result.get("n_targets", 1) == 1 else f"n_targets={result['n_targets']}, ")
        + "random_state=0)` (attack='adaptive': the reversed "
        "trigger re-optimised against each candidate's B' and, where G may answer with B's label (answer_ "
        "'confident' or 'reference'), against B too, G's predictions keeping the trigger that fooled it most; "
        "the mask norm capped at mask_budget=0.25 of the way to the median label's on a log scale), the same attack "
        "against B' alone ('B' only': the default until 2026-12-03, read from the same attacks) and attack='fixed' "
        "(the reversed trigger stamped unchanged). "
        "Goal: the surrogate pick's true ASR within 1 point of the true pick's (or lower), "
        "and <= 2 %. Where no candidate meets the bound, the rule falls back to the lowest ASR whatever its CCA: "
        "read the CCA columns before the goal columns. rho: Spearman's rank correlation over the grid's candidates "
        "between the surrogate's cross-validated ASR and the true one (blank where either is constant). Tuning "
        "half, report half and the digits test net as in the rows above; the adaptive attack and its budget were "
        "chosen on cifar10-patch-nin and digits, attacking B too after a report net (gtsrb-patch) showed G "
        "answering B's label on triggered inputs that B' alone resisted.",
        "",
        "| BadNet | half | adaptive pick | its true ASR / CCA | goal met | rho | B' only pick | its true ASR / CCA | "
        "goal met | rho | fixed pick | its true ASR / CCA | goal met | rho | true pick | its true ASR / CCA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    surrogates = ("surrogate", "repaired_only", "fixed")

    def cells(t, which):
        if f"{which}_pick" not in t:  # a check measured before this surrogate was scored side by side
            return "(not measured) | - | - | -"
        rho = t.get(f"{which}_spearman")
        return (f"{_short_params(t[f'{which}_pick'])} | {t[f'{which}_pick_true_asr']:.2%} / "
                f"{t[f'{which}_pick_cca']:.2%} | {'yes' if t[f'{which}_met'] else 'no'} | "
                f"{'' if rho is None else f'{rho:+.2f}'}")

    for name, t in result["tuning"].items():
        lines.append(
            f"| {name} | {_half(name)} | " + " | ".join(cells(t, which) for which in surrogates) + " | "
            f"{_short_params(t['true_pick'])} | {t['true_pick_true_asr']:.2%} / {t['true_pick_cca']:.2%} |"
        )
    counts = {}
    for name, t in result["tuning"].items():
        if all(f"{which}_pick" in t for which in surrogates):
            half = counts.setdefault(_half(name), {"n": 0, **{which: 0 for which in surrogates}})
            half["n"] += 1
            for which in surrogates:
                half[which] += t[f"{which}_met"]
    if counts:
        lines += ["", "Goal met, adaptive / B' only / fixed surrogate: " + "; ".join(
            (f"{half} half" if half != "test net" else half) + " " + " / ".join(str(c[w]) for w in surrogates)
            + f" of {c['n']}" for half, c in counts.items()) + "."]
    lines += ["", _harness.environment_sentence(env), ""]
    _harness.write_results(result["output"], quick=False, lines=lines, data=result, environment_override=env,
                           seconds=seconds)
    print("\n".join(lines))


def main_zoo(args):
    log = _harness.log
    grid = [{
        "repaired__prune_fraction": [float(v) for v in args.prune_fractions.split(",")],
        "repaired__learning_rate": [float(v) for v in args.learning_rates.split(",")],
        "repaired__fine_tuning": args.recipes.split(","),
    }]
    if args.head_refit_prune_fractions:
        # The closed-form head re-fit has no learning rate: its own sub-grid.
        grid.append({
            "repaired__prune_fraction": [float(v) for v in args.head_refit_prune_fractions.split(",")],
            "repaired__fine_tuning": ["lda"],
        })
    command = "python benchmarks/bench_goodnet.py " + " ".join(sys.argv[1:])
    if args.report_only:
        last = _harness.read_results(args.output, quick=False)
        if last is None:
            raise SystemExit(f"--report-only: no results/{args.output}.json to rewrite.")
        # The report of the run that measured it: its environment and run time, not this rewrite's.
        return write_zoo_report(last["data"], last["data"].get("commands", [last["command"]])[-1],
                                env=last["environment"], seconds=last["seconds"])
    result = {"nets": args.zoo.split(","), "n_eval": args.n_eval, "grid": grid, "n_targets": args.n_targets,
              "output": args.output,
              "rows": {}, "tuning": {}, "commands": [command]}
    if args.keep:
        last = _harness.read_results(args.output, quick=False)
        if last is not None:
            result["rows"], result["tuning"] = last["data"]["rows"], last["data"]["tuning"]
            result["commands"] = last["data"].get("commands", [last["command"]]) + [command]
            if last["data"]["grid"] != grid and not args.rows_only:
                raise SystemExit(f"--keep: the last report's tuning grid {last['data']['grid']} is not this run's.")
            if last["data"].get("n_targets", 1) != args.n_targets and not args.rows_only:
                raise SystemExit(f"--keep: the last report's n_targets {last['data'].get('n_targets', 1)} is not "
                                 "this run's.")
    for name in result["nets"]:
        net = zoo_net(name, args.n_eval)
        if not args.tuning_only:
            result["rows"][name] = calibrated_rows(net, log)
        if not args.rows_only:
            result["tuning"][name] = tuning_check(net, grid, log, n_targets=args.n_targets)
        write_zoo_report(result, command)  # after every net: a stopped run keeps what it measured


def main():
    args = parse_args()
    if args.zoo or args.report_only:
        return main_zoo(args)
    epochs = 3 if args.quick else 10
    log = _harness.log
    attacks = args.attacks.split(",") if args.attacks else (QUICK_ATTACKS if args.quick else _fashion.ATTACKS)

    result = {"epochs": epochs, "attacks": {}}
    for attack in attacks:
        data = _fashion.badnet(attack, quick=args.quick, log=log)
        result["n_val"], result["n_test"] = len(data.X_val), len(data.X_test)
        result["attacks"][attack] = defend(data, epochs=epochs, log=log)
    if not args.quick:
        patch = _fashion.badnet("patch", quick=args.quick, log=log)
        result["grid_search"] = grid_timing(patch, epochs=3, n_val=3000)
    write_report(result, args.quick)


if __name__ == "__main__":
    main()
