"""Benchmark of STRIPDetector: speed, memory and detection quality.

Measures, in one run:

1. Speed on the real CSAW-HackML-2020 DeepID BadNet (``sunglasses_bd_weights.h5``,
   1283 classes) and on a Fashion-MNIST BadNet:

   - inputs/s of ``STRIPDetector.score_samples``;
   - the limit: the net's forward-pass images/s (same compiled call, same batch size)
     divided by ``n_overlays``, and the ratio STRIP / limit (goal >= 0.8);
   - a naive loop, one ``model.predict`` per input as in the CSAW challenge reports
     (goal on the CSAW net: STRIPDetector >= 30x faster);
   - ART's STRIP (adversarial-robustness-toolbox 1.20) on the same model and inputs.

2. Peak memory (resident set, ``VmHWM``) of a fresh process scoring 50,000 inputs
   (goal < 3 GB), next to the same for 2,000 inputs to show it stays flat.

3. FRR and FAR on the shared Fashion-MNIST BadNets of ``_fashion.py`` (4x4 corner patch
   and blended noise, target 0; trained once and cached in ``benchmarks/.cache``) at a
   target FRR of 1 % and 5 % (goal: FAR <= 1 % at FRR 1 % on the patch trigger), ART's
   abstentions on the same inputs, and (full run) a BadNet whose patch sits one pixel
   in from the corner, where bright clothes overlap it.

4. Sequential STRIP (``sequential=True``, the default) against the full computation
   (``sequential=False``), side by side in one run: inputs/s on clean held-out inputs
   (median ratio of interleaved timings), blends run per input, and the FRR on held-out
   clean data and FAR of each, on the digits test BadNet of ``tests/conftest.py``, the
   shared Fashion-MNIST patch BadNet and the CSAW net (random inputs: speed only).

The CSAW clean and poisoned face datasets are not available, so the CSAW net is fed
uniform random 0-255 images: enough for speed and memory (the cost of a forward pass
does not depend on the pixels), meaningless for detection quality.

Usage::

    python benchmarks/bench_strip.py            # full run (about 6 minutes on 2 idle cores
                                                # once the BadNets are cached)
    python benchmarks/bench_strip.py --quick    # less of each: see below

``--quick`` answers the same questions with less: the quick BadNets of ``_fashion.py``,
no inset-patch BadNet, 3 interleaved timing pairs instead of 7, FRR / FAR on the first
2,500 held-out clean and triggered images (instead of 5,000 and 4,500), fewer inputs for
the speed and sequential rows, and memory on the CSAW net only (where its weights are
present) at 2,000 and 10,000 inputs.

Writes ``benchmarks/results/strip.md``, ``strip.json`` and ``strip_entropy.png``
(``--quick`` writes ``strip_quick.*``).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import _fashion  # the shared Fashion-MNIST BadNets
import _harness

CSAW_WEIGHTS = _harness.CSAW_WEIGHTS
QUICK_EVAL_IMAGES = 2500
RESULTS = _harness.RESULTS
SEED = 0


# --------------------------------------------------------------------------- models


def load_csaw():
    return _harness.load_csaw()


def csaw_inputs(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 55, 47, 3), dtype=np.uint8)


def fashion_mnist():
    from skbackdoor.datasets import load_fashion_mnist

    X_train, y_train = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    return X_train, y_train, X_test, y_test


def inset_badnet(quick, log):
    """A BadNet like the shared patch one, but the square sits 1 pixel in from the corner.

    Trained like ``_fashion.badnet`` (same data, split and settings) and cached beside it.
    """
    from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet

    _, _, X_val, y_val, X_test, y_test = _fashion.split()
    trigger = PatchTrigger.square(size=4, value=255, location="bottom-right", margin=1)

    def train():
        X_train, y_train = _fashion.training_set(quick)
        return train_badnet(
            X_train, y_train, trigger=trigger, target=0, epochs=_fashion.epochs(quick), poison_rate=0.1,
            batch_size=128, learning_rate=2e-3, random_state=SEED, n_classes=10,
        )

    model = _harness.cached_model(f"strip-patch-inset-{'quick' if quick else 'full'}-seed{SEED}", train, log=log)
    X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, 0)
    return SimpleNamespace(
        model=model, X_val=X_val, X_test=X_test, y_test=y_test, X_poisoned=X_poisoned,
        y_target=y_target,
        description="trained here: the shared patch BadNet's settings, 4x4 square 1 px in from the corner",
    )


# --------------------------------------------------------------------------- timing


def best_rate(count, fn, repeats):
    """Highest count/second over ``repeats`` calls of ``fn`` (the least disturbed one)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = max(best, count / (time.perf_counter() - start))
    return best


def forward_share(detector, X):
    """Share of ``detector.score_samples(X)``'s time spent in the network's forward pass."""
    from skbackdoor import _strip

    original = _strip.predict_proba_batches
    spent = [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    _strip.predict_proba_batches = timed
    try:
        start = time.perf_counter()
        detector.score_samples(X)
        total = time.perf_counter() - start
    finally:
        _strip.predict_proba_batches = original
    return spent[0] / total


def naive_strip_scores(model, pool, X, n_overlays, alpha, beta, low, high, seed):
    """STRIP as in the CSAW challenge reports: blend in Python, one predict per input."""
    rng = np.random.default_rng(seed)
    scores = []
    for x in X:
        chosen = rng.choice(len(pool), n_overlays, replace=False)
        blends = np.array([np.clip(alpha * x + beta * pool[i], low, high) for i in chosen])
        proba = model.predict(blends, verbose=0)
        entropies = -np.sum(proba * np.log2(np.clip(proba, 1e-12, None)), axis=1)
        scores.append(entropies.mean())
    return np.array(scores)


def art_strip(model, n_classes, input_shape, pool, n_overlays, frr):
    """ART's STRIP wrapped around ``model``, mitigated on ``pool``; (defence, seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.defences.transformer.poisoning import STRIP
        from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=n_classes, input_shape=input_shape, clip_values=(0, 255)
    )
    defence = STRIP(classifier)(num_samples=n_overlays, false_acceptance_rate=frr)
    np.random.seed(SEED)  # ART draws its overlays from NumPy's global generator
    start = time.perf_counter()
    defence.mitigate(np.asarray(pool, dtype=np.float32))
    return defence, time.perf_counter() - start


def art_abstains(defence, X):
    """ART's STRIP abstains (answers all zeros) on inputs it judges poisoned."""
    return ~np.asarray(defence.predict(np.asarray(X, dtype=np.float32))).any(axis=1)


def quiet_tqdm():
    os.environ["TQDM_DISABLE"] = "1"


# --------------------------------------------------------------------------- memory


def memory_child(net, n_inputs, n_overlays, batch_size):
    """Run in a fresh process: score ``n_inputs`` and report peak resident memory."""
    from skbackdoor._strip import STRIPDetector

    if net == "csaw":
        model = load_csaw()
        pool = csaw_inputs(1000, seed=1)
        X = csaw_inputs(n_inputs, seed=2)
    else:
        from skbackdoor.models import model_from_bytes

        model = model_from_bytes(Path(net).read_bytes())
        X_train, _, X_test, _ = fashion_mnist()
        pool = X_test[:2000]
        X = np.resize(X_train, (n_inputs,) + X_train.shape[1:])
    detector = STRIPDetector(model=model, n_overlays=n_overlays, batch_size=batch_size, random_state=SEED)
    detector.fit(pool)
    detector.score_samples(X[:batch_size])  # warm up
    before = _vm_kib("VmRSS")
    start = time.perf_counter()
    scores = detector.score_samples(X)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "n_inputs": n_inputs,
                "input_array_mb": X.nbytes / 2**20,
                "input_dtype": str(X.dtype),
                "rss_before_scoring_mb": before / 1024,
                "peak_rss_mb": _vm_kib("VmHWM") / 1024,
                "inputs_per_s": n_inputs / seconds,
                "finite": bool(np.isfinite(scores).all()),
            }
        )
    )


def _vm_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(net, n_inputs, n_overlays, batch_size):
    command = [
        sys.executable, __file__, "--memory-child", net, str(n_inputs),
        "--n-overlays", str(n_overlays), "--batch-size", str(batch_size),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- sections


def speed_section(name, model, pool, X, args, *, art_inputs, naive_inputs, log):
    """Speed of STRIPDetector, the forward limit, the naive loop and ART on one net."""
    from skbackdoor._strip import STRIPDetector
    from skbackdoor.models import forward_batches, model_n_classes, predict_proba_batches

    k, batch_size = args.n_overlays, args.batch_size
    detector = STRIPDetector(model=model, n_overlays=k, batch_size=batch_size, random_state=SEED).fit(pool)
    low, high = detector.pixel_range_
    rows = np.arange(4 * batch_size)
    blends = np.clip(
        np.asarray(X[rows % len(X)], np.float32) + np.asarray(pool[rows % len(pool)], np.float32),
        low, high,
    )  # images like the blends STRIP runs, for the forward-pass limit
    detector.score_samples(X[:batch_size])  # warm up
    forward_batches(model, blends[:batch_size], batch_size=batch_size)
    # Alternate short timings of the forward pass and of STRIPDetector on as many network
    # images, so that each pair sees about the same load from other jobs on the CPUs;
    # the ratio is the median over pairs, the speeds the best over pairs.
    X_pair = X[: max(1, len(blends) // k)]
    forward_rates, strip_rates = [], []
    for _ in range(args.repeats):
        forward_rates.append(best_rate(len(blends), lambda: forward_batches(model, blends, batch_size=batch_size), 1))
        strip_rates.append(best_rate(len(X_pair), lambda: detector.score_samples(X_pair), 1))
    forward, strip = max(forward_rates), max(strip_rates)
    limit = forward / k
    pair_ratio = float(np.median(np.array(strip_rates) * k / np.array(forward_rates)))
    share = forward_share(detector, X)
    log(f"[{name}] forward {forward:,.0f} img/s -> limit {limit:,.0f} inputs/s; "
        f"STRIPDetector {strip:,.0f} inputs/s (ratio {pair_ratio:.2f}); "
        f"{share:.0%} of STRIPDetector's time is spent in the network")

    X_naive = X[:naive_inputs]
    model.predict(np.asarray(X_naive[:k], np.float32), verbose=0)  # warm up
    start = time.perf_counter()
    naive_scores = naive_strip_scores(model, np.asarray(pool, np.float32), np.asarray(X_naive, np.float32),
                                      k, 1.0, 1.0, low, high, SEED)
    naive = len(X_naive) / (time.perf_counter() - start)
    log(f"[{name}] naive predict-per-input loop {naive:,.1f} inputs/s -> STRIPDetector "
        f"{strip / naive:,.0f}x faster")

    art = {"inputs": art_inputs, "overlays": k}
    # ART normalises each class over the overlays: a class whose probability is exactly 0
    # in every overlay gives 0/0. Count how often the net outputs exact zeros here.
    probabilities = predict_proba_batches(model, np.asarray(X[:200], np.float32))
    art["exact_zero_probabilities_per_output"] = float((probabilities == 0).sum(axis=1).mean())
    try:
        defence, mitigate_s = art_strip(model, model_n_classes(model), tuple(X.shape[1:]),
                                        pool[: args.art_pool], k, args.frr)
        art["mitigate_s"] = mitigate_s
        art["mitigate_pool"] = int(min(len(pool), args.art_pool))
        start = time.perf_counter()
        art_abstains(defence, X[:art_inputs])
        art["inputs_per_s"] = art_inputs / (time.perf_counter() - start)
        art["error"] = None
        log(f"[{name}] ART STRIP {art['inputs_per_s']:,.1f} inputs/s (mitigate on "
            f"{art['mitigate_pool']} images: {mitigate_s:.1f} s)")
    except Exception as exc:  # report, do not hide, what ART does on this net
        art["inputs_per_s"] = None
        art["error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{name}] ART STRIP failed: {art['error']}")
    return {
        "inputs_per_timing": len(X_pair),
        "n_overlays": k,
        "batch_size": batch_size,
        "forward_img_per_s": forward,
        "limit_inputs_per_s": limit,
        "strip_inputs_per_s": strip,
        "ratio_to_limit": pair_ratio,
        "ratio_of_best_rates": strip / limit,
        "forward_share_of_strip_time": share,
        "forward_img_per_s_repeats": forward_rates,
        "strip_inputs_per_s_repeats": strip_rates,
        "naive_inputs_per_s": naive,
        "naive_inputs": len(X_naive),
        "speedup_vs_naive": strip / naive,
        "naive_scores_finite": bool(np.isfinite(naive_scores).all()),
        "art": art,
    }


def counting_blends():
    """Context manager counting the images STRIPDetector sends through the network."""
    import contextlib

    from skbackdoor import _strip

    @contextlib.contextmanager
    def manager():
        original = _strip.predict_proba_batches
        counted = [0]

        def counting(model, blends, **kwargs):
            counted[0] += len(blends)
            return original(model, blends, **kwargs)

        _strip.predict_proba_batches = counting
        try:
            yield counted
        finally:
            _strip.predict_proba_batches = original

    return manager()


def sequential_section(name, model, pool, X_clean, X_poisoned, args, log, *, timing_inputs):
    """Sequential against full STRIP on one net: speed ratio, blends per input, FRR / FAR.

    Timed on ``timing_inputs`` clean inputs (``X_clean`` repeated when it has fewer: a
    stream long enough to fill the network calls of every round, as in serving).
    """
    from sklearn.base import clone

    from skbackdoor._strip import STRIPDetector

    rows = []
    for frr in (0.01, 0.05):
        full = STRIPDetector(model=model, n_overlays=args.n_overlays, frr=frr, sequential=False,
                             batch_size=args.batch_size, random_state=SEED).fit(pool)
        seq = clone(full).set_params(sequential=True).fit(pool)
        X_time = X_clean[np.arange(timing_inputs) % len(X_clean)]
        full.score_samples(X_time[:64]), seq.score_samples(X_time[:64])  # warm up
        full_rates, seq_rates = [], []
        for _ in range(args.repeats):
            full_rates.append(best_rate(len(X_time), lambda: full.score_samples(X_time), 1))
            seq_rates.append(best_rate(len(X_time), lambda: seq.score_samples(X_time), 1))
        row = {
            "net": name, "n_overlays": args.n_overlays, "target_frr": frr, "pool": len(pool),
            "offset": full.offset_, "stopping_margin": seq.stopping_margin_,
            "timing_inputs": len(X_time), "distinct_timing_inputs": int(min(len(X_clean), timing_inputs)),
            "full_inputs_per_s": max(full_rates), "sequential_inputs_per_s": max(seq_rates),
            "speed_ratio": float(np.median(np.array(seq_rates) / np.array(full_rates))),
            "full_inputs_per_s_repeats": full_rates, "sequential_inputs_per_s_repeats": seq_rates,
        }
        for kind, X in (("clean", X_clean), ("poisoned", X_poisoned)):
            if X is None or not len(X):
                continue
            for label, detector in (("full", full), ("sequential", seq)):
                with counting_blends() as counted:
                    flagged = detector.predict(X) == -1
                row[f"{label}_blends_per_{kind}_input"] = counted[0] / len(X)
                row[f"{label}_{'frr' if kind == 'clean' else 'far'}"] = float(
                    np.mean(flagged) if kind == "clean" else np.mean(~flagged)
                )
        rows.append(row)
        far = (f", FAR {row['full_far']:.2%} -> {row['sequential_far']:.2%}"
               if "full_far" in row else "")
        log(f"[sequential {name}] target FRR {frr:.0%}: {row['full_inputs_per_s']:,.0f} -> "
            f"{row['sequential_inputs_per_s']:,.0f} inputs/s (ratio {row['speed_ratio']:.2f}); "
            f"blends per clean input {row['sequential_blends_per_clean_input']:.2f}; "
            f"FRR {row['full_frr']:.2%} -> {row['sequential_frr']:.2%}{far}")
    return rows


def digits_badnet():
    """The digits patch BadNet of the test suite (tests/conftest.py), trained in seconds."""
    from sklearn.datasets import load_digits

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _digits_net

    data = load_digits()
    net = _digits_net((data.images.astype(np.float32)[..., np.newaxis], data.target), poisoned=True)
    from skbackdoor.models import predict_proba_batches

    fires = predict_proba_batches(net.model, net.X_poisoned).argmax(axis=1) == net.y_target
    return net, net.X_poisoned[fires]


def detection_settings(trigger_name, n_overlays):
    """(statistic, alpha, beta, n_overlays) rows measured for a trigger."""
    settings = [("entropy", 1.0, 1.0, n_overlays), ("entropy", 1.0, 1.0, 32)]
    if trigger_name == "patch":
        settings += [("entropy", 0.9, 0.5, n_overlays), ("agreement", 1.0, 1.0, n_overlays)]
    return list(dict.fromkeys(settings))


def detection_section(trigger_name, model, data, args, log, *, art_subset=None):
    """FRR / FAR of STRIPDetector (and ART) on a Fashion-MNIST BadNet."""
    from skbackdoor._strip import STRIPDetector
    from skbackdoor.models import predict_proba_batches

    X_pool, X_clean, y_clean, X_poisoned, y_target = data
    cca = float(np.mean(predict_proba_batches(model, X_clean).argmax(axis=1) == y_clean))
    fires = predict_proba_batches(model, X_poisoned).argmax(axis=1) == y_target
    asr = float(np.mean(fires))
    log(f"[fmnist-{trigger_name}] BadNet CCA {cca:.3f}, ASR {asr:.3f}")
    rows, scores = [], {}
    for statistic, alpha, beta, n_overlays in detection_settings(trigger_name, args.n_overlays):
        # sequential=False: other thresholds than the fit's own are applied to these scores.
        detector = STRIPDetector(model=model, n_overlays=n_overlays, alpha=alpha, beta=beta, frr=0.01,
                                 statistic=statistic, sequential=False, random_state=SEED,
                                 batch_size=args.batch_size)
        detector.fit(X_pool)
        clean = detector.score_samples(X_clean)
        poisoned = detector.score_samples(X_poisoned)
        scores[(statistic, alpha, beta, n_overlays)] = (clean, poisoned, detector)
        # The scores do not depend on frr: the thresholds of other settings are computed
        # from clean_scores_ as fit does (checked against fit's own for FRR 1 %).
        assert np.isclose(_offset(detector.clean_scores_, 0.01, "quantile"), detector.offset_)
        for frr in (0.01, 0.05):
            offsets = {
                "gaussian": _offset(detector.clean_scores_, frr, "gaussian"),
                "quantile": _offset(detector.clean_scores_, frr, "quantile"),
                # Separability alone: the threshold giving exactly this FRR on the test set.
                "test-set quantile": np.quantile(clean, frr),
            }
            for threshold, offset in offsets.items():
                rows.append({
                    "trigger": trigger_name, "statistic": statistic, "alpha": alpha, "beta": beta,
                    "n_overlays": n_overlays, "target_frr": frr, "threshold": threshold,
                    "frr": float(np.mean(clean < offset)),
                    "far": float(np.mean(poisoned >= offset)),
                    "far_backdoor_fires": float(np.mean(poisoned[fires] >= offset)),
                })
    for row in rows:
        log(f"[fmnist-{trigger_name}] {row['statistic']:9s} a={row['alpha']} b={row['beta']} "
            f"k={row['n_overlays']:<3d} target FRR {row['target_frr']:.0%} ({row['threshold']}): "
            f"FRR {row['frr']:.2%}, FAR {row['far']:.2%} ({row['far_backdoor_fires']:.2%} where it fires)")

    art = None
    if art_subset:
        clean_sub, poisoned_sub = X_clean[:art_subset], X_poisoned[:art_subset]
        art = {"inputs": 2 * art_subset, "target_frr": args.frr, "n_overlays": args.n_overlays,
               "pool": int(min(args.art_pool, len(X_pool)))}
        try:
            defence, _ = art_strip(model, 10, tuple(X_clean.shape[1:]), X_pool[: args.art_pool],
                                   args.n_overlays, args.frr)
            art["frr"] = float(np.mean(art_abstains(defence, clean_sub)))
            art["far"] = float(np.mean(~art_abstains(defence, poisoned_sub)))
            art["error"] = None
        except Exception as exc:
            art["error"] = f"{type(exc).__name__}: {exc}"
        ours = STRIPDetector(model=model, n_overlays=args.n_overlays, frr=args.frr, random_state=SEED)
        ours.fit(X_pool[: args.art_pool])
        art["ours_frr"] = float(np.mean(ours.predict(clean_sub) == -1))
        art["ours_far"] = float(np.mean(ours.predict(poisoned_sub) == 1))
        log(f"[fmnist-{trigger_name}] same {2 * art_subset} inputs, pool {art['pool']}, target FRR "
            f"{args.frr:.0%}: ART FRR {art.get('frr')}, FAR {art.get('far')} (error: {art['error']}); "
            f"STRIPDetector FRR {art['ours_frr']:.2%}, FAR {art['ours_far']:.2%}")
    return {"cca": cca, "asr": asr, "n_clean": len(X_clean), "n_poisoned": len(X_poisoned),
            "rows": rows, "art": art}, scores


def _offset(clean_scores, frr, threshold):
    from scipy.stats import norm

    if threshold == "gaussian":
        mean, std = norm.fit(clean_scores)
        return mean + norm.ppf(frr) * std
    return np.quantile(clean_scores, frr, method="weibull")  # as STRIPDetector's default


# --------------------------------------------------------------------------- report


def comparison_rows(results):
    """FRR / FAR at the detector's own threshold (entropy, default quantile threshold, alpha = beta = 1)."""
    speed = next((s for key, s in results["speed"].items() if "fashion" in key.lower()), None)
    throughput = f"{speed['strip_inputs_per_s']:,.0f} inputs/s" if speed else None
    rows = []
    for trigger, detection in results["detection"].items():
        badnet = f"Fashion-MNIST {trigger}"
        rows.append({"badnet": badnet, "defense": "none (the BadNet B)", "cca": detection["cca"],
                     "asr": detection["asr"]})
        for row in detection["rows"]:
            if (row["statistic"], row["threshold"], row["alpha"], row["beta"]) != ("entropy", "quantile", 1.0, 1.0):
                continue
            rows.append({
                "badnet": badnet, "frr": row["frr"], "far": row["far"],
                "defense": f"STRIPDetector ({row['n_overlays']} overlays, target FRR {row['target_frr']:.0%})",
                # The speed section is timed at the script's default number of overlays.
                "throughput": throughput if row["n_overlays"] == results["n_overlays"] else None,
                "note": "detector: the BadNet's own CCA / ASR are unchanged for inputs it passes",
            })
    return rows


def write_report(results, suffix):
    lines = [
        "# STRIPDetector benchmark",
        "",
        f"Generated by `python benchmarks/bench_strip.py{' --quick' if suffix else ''}` on "
        f"{results['machine']}. n_overlays={results['n_overlays']}, batch_size="
        f"{results['batch_size']} blended images per network call.",
        "",
    ]
    if suffix:
        lines += [
            "Quick mode: the quick BadNets (15,000 training images, 2 epochs), 3 interleaved timing pairs, "
            f"FRR / FAR on the first {QUICK_EVAL_IMAGES:,} held-out clean and triggered images, no inset-patch "
            "BadNet, memory on one net; the full run (`python "
            "benchmarks/bench_strip.py`, `strip.md`) has them all.",
            "",
        ]
    lines += [
        "## Speed (inputs/s)",
        "",
        "| net | STRIPDetector | limit (forward img/s / n_overlays) | ratio | time in forward pass | naive loop | speed-up vs naive | ART STRIP |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, speed in results["speed"].items():
        art = speed["art"]
        art_cell = f"{art['inputs_per_s']:,.1f}" if art["inputs_per_s"] else f"failed: `{art['error']}`"
        lines.append(
            f"| {name} | {speed['strip_inputs_per_s']:,.0f} | {speed['limit_inputs_per_s']:,.0f} "
            f"({speed['forward_img_per_s']:,.0f} img/s) | {speed['ratio_to_limit']:.2f} | "
            f"{speed['forward_share_of_strip_time']:.0%} | "
            f"{speed['naive_inputs_per_s']:,.1f} | {speed['speedup_vs_naive']:,.0f}x | {art_cell} |"
        )
    lines += [
        "",
        "## Peak memory (fresh process, resident set high-water mark)",
        "",
        "| net | inputs | input array | RSS before scoring | peak RSS | inputs/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["memory"]:
        lines.append(
            f"| {row['net']} | {row['n_inputs']:,} | {row['input_array_mb']:,.0f} MB "
            f"{row['input_dtype']} | {row['rss_before_scoring_mb']:,.0f} MB | "
            f"{row['peak_rss_mb']:,.0f} MB | {row['inputs_per_s']:,.0f} |"
        )
    lines += [
        "",
        "## Detection on Fashion-MNIST BadNets (target label 0, pool: the 5,000 clean validation images)",
        "",
        "FRR on clean test images, FAR on triggered test images of the other classes. "
        "`gaussian` / `quantile`: the detector's own threshold from its clean pool; "
        "`test-set quantile`: the threshold giving exactly the target FRR on the test set "
        "(separability alone).",
        "",
    ]
    for trigger, detection in results["detection"].items():
        lines.append(
            f"- {trigger} ({detection.get('badnet', 'own BadNet')}): clean accuracy "
            f"{detection['cca']:.3f}, attack success rate {detection['asr']:.3f}; "
            f"{detection['n_clean']} clean and {detection['n_poisoned']} triggered test images"
        )
    lines += [
        "",
        "| trigger | statistic | alpha / beta | overlays | target FRR | threshold | achieved FRR on held-out clean data | FAR | FAR where the backdoor fires |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for detection in results["detection"].values():
        for row in detection["rows"]:
            lines.append(
                f"| {row['trigger']} | {row['statistic']} | {row['alpha']} / {row['beta']} | "
                f"{row['n_overlays']} | {row['target_frr']:.0%} | {row['threshold']} | "
                f"{row['frr']:.2%} | {row['far']:.2%} | {row['far_backdoor_fires']:.2%} |"
            )
    art = results["detection"]["patch"]["art"]
    if art:
        lines += [
            "",
            f"### ART STRIP vs STRIPDetector on the same {art['inputs']} inputs (patch trigger)",
            "",
            f"Half clean, half triggered; both mitigated/fitted on the same {art['pool']} clean "
            f"images with {art['n_overlays']} overlays and a target rate of {art['target_frr']:.0%} "
            "(ART calls it false_acceptance_rate; it sets the share of clean inputs rejected).",
            "",
            "| | achieved FRR on held-out clean data | FAR |",
            "| --- | ---: | ---: |",
        ]
        if art["error"]:
            lines.append(f"| ART STRIP | failed: `{art['error']}` | |")
        else:
            lines.append(f"| ART STRIP | {art['frr']:.2%} | {art['far']:.2%} |")
        lines.append(f"| STRIPDetector | {art['ours_frr']:.2%} | {art['ours_far']:.2%} |")
    if results.get("sequential"):
        lines += [
            "",
            "## Sequential STRIP (`sequential=True`, the default) vs the full computation",
            "",
            "Same detector, same random_state, fitted on the same pool; speeds on a stream of "
            "clean held-out inputs (column 'timed': how many, and how many distinct; the digits "
            "test set has 397), interleaved (ratio: median of the per-pair ratios). Blends: images sent "
            "through the network per input (the full computation sends n_overlays).",
            "",
            "| net | overlays (max) | pool | target FRR | timed (distinct) | inputs/s full | inputs/s sequential | ratio | "
            "blends per clean input | blends per poisoned input | achieved FRR on held-out clean data "
            "full / sequential | FAR full / sequential |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in results["sequential"]:
            poisoned = (f"{row['sequential_blends_per_poisoned_input']:.2f}"
                        if "sequential_blends_per_poisoned_input" in row else "n/a")
            far = (f"{row['full_far']:.2%} / {row['sequential_far']:.2%}" if "full_far" in row
                   else "n/a (no poisoned inputs)")
            lines.append(
                f"| {row['net']} | {row['n_overlays']} | {row['pool']:,} | {row['target_frr']:.0%} | "
                f"{row['timing_inputs']:,} ({row['distinct_timing_inputs']:,}) | {row['full_inputs_per_s']:,.0f} | {row['sequential_inputs_per_s']:,.0f} | "
                f"{row['speed_ratio']:.2f} | {row['sequential_blends_per_clean_input']:.2f} | {poisoned} | "
                f"{row['full_frr']:.2%} / {row['sequential_frr']:.2%} | {far} |"
            )
    if results.get("figure"):
        lines += ["", f"![entropy histogram]({results['figure']})"]
    notes = list(results["notes"])
    never_flags = [
        f"{row['trigger']} {row['statistic']} {row['alpha']} / {row['beta']}, {row['n_overlays']} overlays, "
        f"target FRR {row['target_frr']:.0%}"
        for detection in results["detection"].values()
        for row in detection["rows"]
        if row["threshold"] == "gaussian" and row["frr"] == 0 and row["far"] == 1
    ]
    if never_flags:
        notes.append(
            "Gaussian threshold at or below 0 (the clean scores are skewed towards 0, the "
            "normal fit puts the quantile at or under the lowest possible score, nothing is flagged; "
            "STRIPDetector warns in fit): " + "; ".join(never_flags) + "."
        )
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes] + [""]
    _harness.write_results("strip", quick=bool(suffix), lines=lines, data=results,
                           comparison=comparison_rows(results), notes=notes,
                           figures=[results["figure"]] if results.get("figure") else [])


def plot_histogram(scores, suffix):
    try:
        import matplotlib

        matplotlib.use("Agg")
        from skbackdoor.plotting import plot_entropy_histogram
    except ImportError:
        return None
    clean, poisoned, detector = scores
    ax = plot_entropy_histogram(
        clean, poisoned, threshold=detector.offset_,
        title=f"STRIP, Fashion-MNIST patch BadNet, {detector.n_overlays} overlays (threshold: FRR 1 %)",
    )
    path = RESULTS / f"strip_entropy{suffix}.png"
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    return path.name


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs, no inset-patch BadNet")
    parser.add_argument("--n-overlays", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--frr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved timing pairs (default 7, quick 3)")
    parser.add_argument("--art-pool", type=int, default=None, help="images ART's mitigate runs on")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite strip.md from strip.json without measuring")
    parser.add_argument("--memory-child", nargs=2, metavar=("NET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_tqdm()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), args.n_overlays, args.batch_size)
        return
    quick = args.quick
    if args.report_only:
        suffix = "_quick" if quick else ""
        record = json.loads((RESULTS / f"strip{suffix}.json").read_text())
        write_report(record.get("data", record), suffix)
        return
    args.art_pool = args.art_pool or (100 if quick else 300)
    args.repeats = args.repeats or (3 if quick else 7)
    n_eval = QUICK_EVAL_IMAGES if quick else None  # quick: the first held-out clean / triggered images
    suffix = "_quick" if quick else ""
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    def log(message):
        print(f"{time.perf_counter() - started:6.1f}s  {message}", flush=True)

    import tensorflow as tf

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.python_version()}, TensorFlow {tf.__version__}",
        "n_overlays": args.n_overlays,
        "batch_size": args.batch_size,
        "speed": {},
        "memory": [],
        "detection": {},
        "notes": [],
    }

    # --- CSAW net: speed
    if CSAW_WEIGHTS.exists():
        model = load_csaw()
        pool = csaw_inputs(1000, seed=1)
        X = csaw_inputs(500 if quick else 2000, seed=2)
        results["speed"]["CSAW DeepID (sunglasses, 1283 classes, 55x47x3)"] = speed_section(
            "csaw", model, pool, X, args, art_inputs=20 if quick else 100,
            naive_inputs=20 if quick else 40, log=log,
        )
    else:
        results["notes"].append(f"CSAW weights not found at {CSAW_WEIGHTS}: CSAW rows skipped.")

    # --- Fashion-MNIST BadNets: the shared patch and blend BadNets of _fashion.py (the
    # same as the other defense benchmarks), and in the full run one trained here with
    # the patch one pixel in from the corner.
    models, scores = {}, {}
    attacks = ("patch", "blend") if quick else ("patch", "blend", "patch-inset")
    for trigger_name in attacks:
        net = inset_badnet(quick, log) if trigger_name == "patch-inset" else _fashion.badnet(trigger_name, quick=quick, log=log)
        models[trigger_name] = net.model
        X_clean, y_clean = net.X_test[:n_eval], net.y_test[:n_eval]
        data = (net.X_val, X_clean, y_clean, net.X_poisoned[:n_eval], net.y_target[:n_eval])
        detection, section_scores = detection_section(
            trigger_name, net.model, data, args, log,
            art_subset=(100 if quick else 300) if trigger_name == "patch" else None,
        )
        detection["badnet"] = getattr(
            net, "description", f"shared benchmarks/_fashion.py '{trigger_name}' BadNet"
        )
        results["detection"][trigger_name] = detection
        scores[trigger_name] = section_scores
        if trigger_name == "patch":
            results["speed"]["Fashion-MNIST small CNN (10 classes, 28x28x1)"] = speed_section(
                "fmnist", net.model, net.X_val, X_clean[: 2000 if quick else 5000], args,
                art_inputs=100 if quick else 300, naive_inputs=30 if quick else 100, log=log,
            )
    results["shared_badnets"] = True

    # --- Sequential against full STRIP, side by side
    results["sequential"] = []
    digits, digits_poisoned = digits_badnet()
    results["sequential"] += sequential_section(
        "digits patch BadNet (tests/conftest.py)", digits.model, digits.X_val, digits.X_test,
        digits_poisoned, args, log, timing_inputs=4096,
    )
    patch = _fashion.badnet("patch", quick=quick, log=log)
    results["sequential"] += sequential_section(
        "Fashion-MNIST patch BadNet (_fashion.py)", patch.model, patch.X_val, patch.X_test[:n_eval],
        patch.X_poisoned[:n_eval], args, log, timing_inputs=2048 if quick else 8192,
    )
    if CSAW_WEIGHTS.exists():
        results["sequential"] += sequential_section(
            "CSAW DeepID sunglasses (random uint8 inputs)", load_csaw(), csaw_inputs(1000, seed=1),
            csaw_inputs(500 if quick else 1000, seed=2), None, args, log,
            timing_inputs=200 if quick else 500,
        )

    # --- Memory, in fresh processes
    from skbackdoor.models import model_to_bytes

    net_file = RESULTS / ".fmnist_patch_badnet.keras"
    RESULTS.mkdir(parents=True, exist_ok=True)
    net_file.write_bytes(model_to_bytes(models["patch"]))
    sizes = (2000, 10000) if quick else (2000, 50000)
    try:
        nets = [("CSAW DeepID", "csaw")] if CSAW_WEIGHTS.exists() else []
        if not (quick and nets):  # quick: the CSAW net only, where present
            nets.append(("Fashion-MNIST CNN", str(net_file)))
        for label, net in nets:
            for n_inputs in sizes:
                row = measure_memory(net, n_inputs, args.n_overlays, args.batch_size)
                row["net"] = label
                results["memory"].append(row)
                log(f"[memory] {label}, {n_inputs:,} inputs ({row['input_array_mb']:.0f} MB "
                    f"{row['input_dtype']}): peak RSS {row['peak_rss_mb']:,.0f} MB "
                    f"(before scoring {row['rss_before_scoring_mb']:,.0f} MB), "
                    f"{row['inputs_per_s']:,.0f} inputs/s")
    finally:
        net_file.unlink(missing_ok=True)

    figure = plot_histogram(scores["patch"][("entropy", 1.0, 1.0, args.n_overlays)], suffix)
    if figure:
        results["figure"] = figure
    results["notes"] += [
        "CSAW inputs are uniform random 0-255 images (the challenge's face data is not "
        "available): valid for speed and memory only.",
        f"Speeds are the best of {args.repeats} alternating timings after warm-up: the forward "
        f"pass on {4 * args.batch_size} images like the blends (same compiled call, same batch "
        "size), then STRIPDetector on as many network images; the ratio is the median of the "
        "per-pair ratios (each pair sees about the same load from other jobs). 'time in forward pass' is the share of one "
        "STRIPDetector run spent inside the network call (the rest is drawing, blending, "
        "clipping and the entropy): unlike the ratio it hardly depends on other jobs' load.",
        "Memory rows run in a fresh process each: 'RSS before scoring' includes TensorFlow, the "
        "model, the pool and the input array; the peak minus it is what scoring adds.",
        "The agreement statistic is discrete (n_overlays + 1 values): when more than the target "
        "share of clean inputs sit on the lowest value, no threshold can reject exactly that share "
        "and nothing below it is flagged (FAR 100 %).",
        "The speed table runs STRIPDetector with its defaults, sequential=True: a ratio above 1 "
        "to the fixed-overlay limit comes from inputs that stop early (the same net, input "
        "and pool with sequential=False is in the sequential table).",
        "Sequential rows: FRR and FAR are measured on the whole held-out clean and triggered "
        "(backdoor fires) test sets; on the CSAW net the 'clean' inputs are random images, "
        "as is its pool, so only its speed and the FRR agreement mean anything.",
        "Detection rows use sequential=False so that every threshold is applied to the same "
        "full scores; 'quantile' is STRIPDetector's default threshold (rank frr * (n + 1)).",
        "Naive loop: for each input, blend in Python and call keras `model.predict` on its "
        "n_overlays blends, as the CSAW-HackML-2020 reports did.",
        "ART STRIP (adversarial-robustness-toolbox "
        f"{_art_version()}) wraps the model in TensorFlowV2Classifier; num_samples = "
        "n_overlays; its blend is 0.5 x + 0.5 overlay (fixed) and its entropy is taken across "
        "overlays for each class rather than across classes for each overlay.",
        "ART's STRIP computes scipy.stats.entropy(predictions, axis=0): each class's "
        "probabilities are normalised over the overlays, so a class that gets exactly 0 in "
        "every overlay yields 0/0 = NaN and its mitigate() then fails in scipy's norm.fit with "
        "'ValueError: The data contains non-finite values.' Confident inputs of a 1283-class "
        "softmax can produce such exact zeros. On the inputs benchmarked here the nets output "
        + " and ".join(
            f"{speed['art']['exact_zero_probabilities_per_output']:.1f} ({name.split(' (')[0]})"
            for name, speed in results["speed"].items()
        )
        + " exact-zero probabilities per output row on average, and ART ran.",
        f"Total run time {time.perf_counter() - started:.0f} s; 1-minute load average "
        f"{load_at_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other "
        "jobs sharing the CPUs lower every speed figure).",
    ]
    write_report(results, suffix)
    log(f"wrote {RESULTS / f'strip{suffix}.md'}")


def _art_version():
    try:
        from importlib.metadata import version

        return version("adversarial-robustness-toolbox")
    except Exception:
        return "not installed"


if __name__ == "__main__":
    main()
