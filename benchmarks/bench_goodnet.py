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
"""

import argparse
import time

import numpy as np

import _fashion
import _harness

GOAL_ASR, GOAL_CCA_DROP = 0.01, 0.02
QUICK_ATTACKS = ("patch", "blend")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller training set, fewer epochs, 2 attacks, no grid timing")
    parser.add_argument("--attacks", default=None, help="comma-separated; default all (quick: patch,blend)")
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


def main():
    args = parse_args()
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
