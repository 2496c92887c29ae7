"""STRIPDetector's false rejection rate on held-out clean data, on the repair matrix's BadNets.

Usage: ``python benchmarks/bench_strip_calibration.py [--quick] [--names NET ...]``

Does ``STRIPDetector(frr=f)`` reject about ``f`` of new clean inputs on BadNets nobody
here chose anything on? For each BadNet of ``_zoo.py`` the detector is fitted, with
its defaults otherwise (10 overlays, entropy, sequential, ``random_state=0``), on the
defender's clean set alone (5 % of the attacker's training set, at most 1,000 images:
350-1,000 here) and applied to at most :data:`N_EVAL` clean images of the evaluation set
(never seen by the net's training nor by the fit), at ``frr`` 1 % and 5 %, with the
default threshold (``"quantile"``, the empirical quantile of the pool's scores) and
the paper's (``"gaussian"``). The FAR is the share of the triggered evaluation images
it lets through. Each setting is fitted with ``random_state`` 0 (the table's row) and
again with 1 to 4 (other random overlays for the pool and the held-out images): the
mean and spread of the achieved FRR over those fits show whether the rule delivers
``frr`` on average or only happens to on one draw.

Goal (issue 12): the achieved FRR within 1 point of ``frr``, or within sampling error
where the pool is too small for that: the column "2 SE" is twice the standard error
of the achieved rate, ``sqrt(frr * (1 - frr) * (1 / n_pool + 1 / n_eval))`` (the
threshold's own spread from the pool plus the binomial spread of the held-out count).

``--quick``: the three report-half MNIST / Fashion-MNIST nets of ``bench_repair.py``'s
quick mode, 2 seeds. Writes ``results/strip_calibration[_quick].md|json``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _harness  # noqa: E402
import _zoo  # noqa: E402

N_EVAL = 3000
FRRS = (0.01, 0.05)
THRESHOLDS = ("quantile", "gaussian")
QUICK_NAMES = ("fmnist-blend", "mnist-patch-1pct", "mnist-pruning-aware")
# Fits per (net, frr, threshold), random_state 0, 1, ...: the first is the table's row,
# all of them give the mean and spread of the achieved FRR over pool draws of overlays.
N_SEEDS, QUICK_N_SEEDS = 5, 2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"the nets {', '.join(QUICK_NAMES)} only")
    parser.add_argument("--names", nargs="*", default=None, help="BadNets of _zoo.ZOO (default: by mode)")
    return parser.parse_args()


def standard_error(frr, n_pool, n_eval):
    return float(np.sqrt(frr * (1 - frr) * (1 / n_pool + 1 / n_eval)))


def measure(net, n_seeds):
    """One row per (frr, threshold) for the BadNet ``net``: ``random_state=0``, then the mean over ``n_seeds``."""
    import warnings

    from skbackdoor import STRIPDetector

    X_eval, X_poisoned = net.X_test[:N_EVAL], net.X_poisoned[:N_EVAL]
    rows = []
    for frr in FRRS:
        for threshold in THRESHOLDS:
            achieved, far, messages, seconds = [], [], set(), []
            for seed in range(n_seeds):
                detector = STRIPDetector(model=net.model, frr=frr, threshold=threshold, random_state=seed)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    _, fit_seconds, _ = _harness.timed(lambda: detector.fit(net.X_clean))
                messages |= {str(w.message).split(":")[0][:80] for w in caught}
                seconds.append(fit_seconds)
                achieved.append(float(np.mean(detector.predict(X_eval) == -1)))
                far.append(float(np.mean(detector.predict(X_poisoned) == 1)))
            se = standard_error(frr, len(net.X_clean), len(X_eval))
            rows.append(dict(
                badnet=net.name, half=net.half, n_classes=net.n_classes, n_pool=len(net.X_clean),
                n_eval=len(X_eval), n_poisoned=len(X_poisoned), frr=frr, threshold=threshold,
                achieved_frr=round(100 * achieved[0], 2), far=round(100 * far[0], 2), two_se=round(200 * se, 2),
                within_1_point=bool(abs(achieved[0] - frr) <= 0.01 + 1e-9),
                within_2_se=bool(abs(achieved[0] - frr) <= 2 * se + 1e-9),
                n_seeds=n_seeds, mean_achieved_frr=round(100 * float(np.mean(achieved)), 2),
                sd_achieved_frr=round(100 * float(np.std(achieved)), 2), mean_far=round(100 * float(np.mean(far)), 2),
                fit_seconds=round(float(np.median(seconds)), 1), warnings=sorted(messages),
            ))
            _harness.log(f"  {net.name} frr={frr} {threshold}: FRR {100 * achieved[0]:.2f} % (mean of {n_seeds} "
                         f"seeds {100 * np.mean(achieved):.2f} %), FAR {100 * far[0]:.2f} %")
    return rows


def report(rows, quick):
    lines = [
        "# STRIPDetector: false rejection rate on held-out clean data, on the repair matrix",
        "",
        _harness.environment_sentence(_harness.environment("quick" if quick else "full")),
        "",
        "Each BadNet of `benchmarks/_zoo.py` (pinned in `benchmarks/zoo/`): `STRIPDetector(frr=..., threshold=...,"
        " random_state=0)`, its other parameters at their defaults (10 overlays, entropy, sequential), fitted on "
        "the defender's clean set only (the pool) and applied to clean images of the evaluation set that neither "
        "the net nor the fit saw. Achieved FRR: the share of those rejected (%); FAR: the share of the triggered "
        "evaluation images let through (%). 2 SE: twice the standard error of the achieved FRR, "
        "`sqrt(frr (1 - frr) (1 / pool + 1 / held-out))`, in points. Every column but the last two is the "
        "`random_state=0` fit; the mean (sd) column repeats the fit with `random_state` 0, 1, ... (other random "
        "overlays for the pool and the held-out images). Nothing was tuned on these nets for STRIP.",
        "",
    ]
    if quick:
        lines += [f"Quick mode (`--quick`): the nets {', '.join(QUICK_NAMES)}; `python "
                  "benchmarks/bench_strip_calibration.py` measures all 13.", ""]
    lines += [
        "## Achieved FRR",
        "",
        "| BadNet | classes | pool | held-out clean | target FRR | threshold | achieved FRR | 2 SE | within 1 point "
        "| within 2 SE | FAR | mean (sd) achieved FRR over seeds | warning in fit |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: | ---: | --- |",
    ]
    yes = {True: "yes", False: "no"}
    for r in rows:
        lines.append(
            f"| {r['badnet']} | {r['n_classes']} | {r['n_pool']:,} | {r['n_eval']:,} | {100 * r['frr']:.0f}% | "
            f"{r['threshold']} | {r['achieved_frr']:.2f}% | {r['two_se']:.2f} | {yes[r['within_1_point']]} | "
            f"{yes[r['within_2_se']]} | {r['far']:.2f}% | {r['mean_achieved_frr']:.2f}% ({r['sd_achieved_frr']:.2f}, "
            f"{r['n_seeds']} seeds) | {'; '.join(r['warnings'])} |"
        )
    lines += ["", "## Summary", "", "| target FRR | threshold | within 1 point | within 2 SE | mean achieved FRR "
              "| range | mean over every seed | median FAR |", "| ---: | --- | --- | --- | ---: | --- | ---: | ---: |"]
    for frr in FRRS:
        for threshold in THRESHOLDS:
            mine = [r for r in rows if r["frr"] == frr and r["threshold"] == threshold]
            if not mine:
                continue
            achieved = [r["achieved_frr"] for r in mine]
            lines.append(
                f"| {100 * frr:.0f}% | {threshold} | {sum(r['within_1_point'] for r in mine)} of {len(mine)} | "
                f"{sum(r['within_2_se'] for r in mine)} of {len(mine)} | {np.mean(achieved):.2f}% | "
                f"{min(achieved):.2f}-{max(achieved):.2f}% | {np.mean([r['mean_achieved_frr'] for r in mine]):.2f}% | "
                f"{np.median([r['far'] for r in mine]):.2f}% |"
            )
    lines += [
        "",
        "The real CSAW-HackML-2020 nets are not in this table: the 16 real clean faces we have are fewer than the "
        "99 pool images `frr=0.01` needs, with none left to hold out.",
    ]
    return lines


def main():
    args = parse_args()
    names = args.names or (list(QUICK_NAMES) if args.quick else _zoo.names())
    rows = []
    for name in names:
        net = _zoo.load(name, log=_harness.log)
        _harness.log(f"{name}: pool {len(net.X_clean)}, held-out {min(N_EVAL, len(net.X_test))}")
        rows += measure(net, QUICK_N_SEEDS if args.quick else N_SEEDS)
        # After every net, so that an interrupted run keeps what it measured.
        _harness.write_results("strip_calibration", quick=args.quick, lines=report(rows, args.quick),
                               data={"rows": rows})


if __name__ == "__main__":
    main()
