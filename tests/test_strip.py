"""Tests of STRIPDetector on a tiny patch BadNet and on the real CSAW net."""

import os
import pickle
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import joblib
import keras
import numpy as np
import pytest
from scipy.special import entr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.utils import check_random_state

from skbackdoor import _strip
from skbackdoor._strip import STRIPDetector, _content_hashes, _draw_overlays, _mix, _superimpose


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fitted(patch_badnet):
    return STRIPDetector(model=patch_badnet.model, n_overlays=16, frr=0.05, random_state=0).fit(patch_badnet.X_val)


def _successful_poisoned(patch_badnet):
    """Poisoned inputs on which the backdoor fires (the ones STRIP is meant to catch)."""
    predicted = patch_badnet.model.predict(patch_badnet.X_poisoned, verbose=0).argmax(axis=1)
    return patch_badnet.X_poisoned[predicted == patch_badnet.y_target]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("statistic", ["entropy", "agreement"])
def test_poisoned_inputs_score_lower_than_clean(patch_badnet, statistic):
    detector = STRIPDetector(
        model=patch_badnet.model, n_overlays=16, frr=0.05, threshold="quantile", statistic=statistic, random_state=0
    ).fit(patch_badnet.X_val)
    clean = detector.score_samples(patch_badnet.X_test)
    poisoned = detector.score_samples(_successful_poisoned(patch_badnet))
    assert poisoned.mean() < clean.mean()
    labels = np.r_[np.ones(len(clean)), np.zeros(len(poisoned))]
    assert roc_auc_score(labels, np.r_[clean, poisoned]) > 0.9
    frr = np.mean(clean < detector.offset_)
    far = np.mean(poisoned >= detector.offset_)
    assert frr < 0.12
    if statistic == "entropy":
        assert far <= 0.05


def test_entropy_is_in_bits_and_averaged_over_overlays():
    # A network that ignores its input answers uniformly: log2(n_classes) bits.
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(8, activation="softmax", kernel_initializer="zeros")]
    )
    X = np.random.default_rng(0).uniform(0, 1, (12, 4, 4, 1))
    detector = STRIPDetector(model=model, n_overlays=3, random_state=0).fit(X)
    np.testing.assert_allclose(detector.score_samples(X), 3.0, rtol=1e-6)
    np.testing.assert_allclose(detector.clean_scores_, 3.0, rtol=1e-6)


def test_scores_match_a_naive_per_input_loop(patch_badnet):
    detector = STRIPDetector(
        model=patch_badnet.model, n_overlays=5, alpha=0.9, beta=0.5, threshold="quantile",
        sequential=False, random_state=3, batch_size=16,
    ).fit(patch_badnet.X_val[:60])
    X = np.concatenate([patch_badnet.X_test[:6], patch_badnet.X_poisoned[:4]])
    scores = detector.score_samples(X)

    streams = _mix(_content_hashes(X) ^ _mix(np.full(len(X), check_random_state(3).randint(2**31 - 1), dtype=np.uint64)))
    overlays = _draw_overlays(streams, 60, 5, np.full(len(X), 60))
    low, high = detector.pixel_range_
    for x, chosen, score in zip(X, overlays, scores):
        blends = np.clip(0.9 * x + 0.5 * patch_badnet.X_val[:60][chosen], low, high)
        proba = patch_badnet.model.predict(blends, verbose=0)
        expected = np.mean(entr(proba).sum(axis=1) / np.log(2))
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- overlays


@pytest.mark.parametrize("n_pool, n_overlays", [(9, 8), (20, 7), (500, 10)])
def test_overlays_are_distinct_and_skip_the_input_itself(n_pool, n_overlays):
    excluded = np.r_[np.arange(n_pool), np.full(50, n_pool)]
    streams = _mix(np.arange(len(excluded), dtype=np.uint64))
    draws = _draw_overlays(streams, n_pool, n_overlays, excluded)
    assert draws.shape == (len(excluded), n_overlays)
    assert draws.min() >= 0 and draws.max() < n_pool
    for row, skip in zip(draws, excluded):
        assert len(set(row.tolist())) == n_overlays
        assert skip not in row
    # Each row depends on its own stream only: drawing a subset gives the same rows.
    subset = np.arange(0, len(excluded), 3)
    np.testing.assert_array_equal(_draw_overlays(streams[subset], n_pool, n_overlays, excluded[subset]), draws[subset])


def test_overlay_order_is_uniform():
    # The first overlay of many inputs hits every pool image about equally often: the
    # sequential rule's first blends are a fair sample, not the lowest pool indices.
    streams = _mix(np.arange(20000, dtype=np.uint64))
    for n_pool, n_overlays in ((30, 10), (200, 10)):
        first = _draw_overlays(streams, n_pool, n_overlays, np.full(len(streams), n_pool))[:, 0]
        counts = np.bincount(first, minlength=n_pool)
        expected = len(streams) / n_pool
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_superimposition_weights_and_clips():
    pool = np.array([[[[0.2]]], [[[0.9]]]], dtype=np.float32)
    inputs = np.array([[[[0.5]]]], dtype=np.float32)
    blends = _superimpose(inputs, pool, np.array([[0, 1]]), 1.0, 1.0, 0.0, 1.0)
    np.testing.assert_allclose(blends.ravel(), [0.7, 1.0])
    blends = _superimpose(inputs, pool, np.array([[0, 1]]), 0.5, 0.5, 0.0, 1.0)
    np.testing.assert_allclose(blends.ravel(), [0.35, 0.7])


def test_fit_never_blends_a_pool_image_with_itself():
    # With 10 pool images and 9 overlays, an image blended only with the others gets
    # exactly all of them, whatever the seed; drawing itself would make seeds differ.
    X = np.random.default_rng(1).uniform(0, 1, (10, 3, 3, 1)).astype(np.float32)
    model = keras.Sequential(
        [keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")]
    )
    first = STRIPDetector(model=model, n_overlays=9, frr=0.1, sequential=False, random_state=0).fit(X)
    second = STRIPDetector(model=model, n_overlays=9, frr=0.1, sequential=False, random_state=123).fit(X)
    np.testing.assert_allclose(first.clean_scores_, second.clean_scores_, rtol=1e-6)
    # The same rule holds at predict time for inputs equal to pool images.
    np.testing.assert_allclose(second.score_samples(X[::-1]), first.clean_scores_[::-1], rtol=1e-6)


# ------------------------------------------------------- batch independence, sequential


@pytest.mark.parametrize("sequential", [True, False])
def test_scores_do_not_depend_on_the_batch(patch_badnet, sequential):
    detector = STRIPDetector(model=patch_badnet.model, n_overlays=10, frr=0.05, sequential=sequential, random_state=0)
    detector.fit(patch_badnet.X_val)
    X = np.concatenate([patch_badnet.X_test[:40], patch_badnet.X_poisoned[:20], patch_badnet.X_val[:5]])
    together = detector.score_samples(X)
    alone = np.array([detector.score_samples(x[np.newaxis])[0] for x in X])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    order = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(detector.score_samples(X[order]), together[order], rtol=1e-5, atol=1e-6)
    small_batches = clone(detector).set_params(batch_size=7).fit(patch_badnet.X_val)
    np.testing.assert_allclose(small_batches.score_samples(X), together, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(detector.predict(X), np.array([detector.predict(x[np.newaxis])[0] for x in X]))


def _blend_entropies(detector, X):
    """Every blend's entropy, computed in full (no early stop), shape (n, n_overlays)."""
    overlays = detector._overlays(np.asarray(X, np.float32), _content_hashes(X), detector._root_seed())
    return detector._blend_values(np.asarray(X, np.float32), overlays)


def test_sequential_equals_the_full_computation_unless_it_stops(patch_badnet):
    X = np.concatenate([patch_badnet.X_test, _successful_poisoned(patch_badnet)[:100]])
    sequential = STRIPDetector(model=patch_badnet.model, n_overlays=10, frr=0.05, random_state=0).fit(patch_badnet.X_val)
    full = clone(sequential).set_params(sequential=False).fit(patch_badnet.X_val)
    assert sequential.offset_ == full.offset_
    np.testing.assert_array_equal(sequential.clean_scores_, full.clean_scores_)
    assert 0 < sequential.stopping_margin_ < np.inf
    assert np.isnan(full.stopping_margin_)

    values = _blend_entropies(sequential, X)
    cumulative = np.cumsum(values, axis=1)
    expected = cumulative[:, -1] / 10  # inputs that never stop: the full score
    stopped = np.zeros(len(X), dtype=bool)
    for m in sequential._checkpoints():
        now = ~stopped & sequential._stop(cumulative[:, m - 1], m, sequential.stopping_margin_)
        expected[now] = cumulative[now, m - 1] / m
        stopped |= now
    assert stopped.any() and not stopped.all()
    scores = sequential.score_samples(X)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[~stopped], full.score_samples(X[~stopped]), rtol=1e-5, atol=1e-6)


def test_sequential_keeps_frr_and_far_and_runs_fewer_blends(patch_badnet, monkeypatch):
    clean, poisoned = patch_badnet.X_test, _successful_poisoned(patch_badnet)
    counted = []
    original = _strip.predict_proba_batches

    def counting(model, blends, **kwargs):
        counted.append(len(blends))
        return original(model, blends, **kwargs)

    monkeypatch.setattr(_strip, "predict_proba_batches", counting)
    rates = {}
    for sequential in (False, True):
        detector = STRIPDetector(model=patch_badnet.model, n_overlays=10, frr=0.05, sequential=sequential, random_state=0)
        detector.fit(patch_badnet.X_val)
        counted.clear()
        frr = np.mean(detector.predict(clean) == -1)
        far = np.mean(detector.predict(poisoned) == 1)
        rates[sequential] = (frr, far, sum(counted))
    assert abs(rates[True][0] - rates[False][0]) <= 0.01
    assert abs(rates[True][1] - rates[False][1]) <= 0.01
    assert rates[True][2] < 0.6 * rates[False][2]


def test_fit_predict_equals_fit_then_predict_when_sequential(patch_badnet):
    detector = STRIPDetector(model=patch_badnet.model, n_overlays=10, frr=0.1, random_state=0)
    np.testing.assert_array_equal(detector.fit_predict(patch_badnet.X_val), clone(detector).fit(patch_badnet.X_val).predict(patch_badnet.X_val))


def test_agreement_statistic_never_stops_early(patch_badnet):
    detector = STRIPDetector(model=patch_badnet.model, n_overlays=6, frr=0.1, statistic="agreement", random_state=0)
    detector.fit(patch_badnet.X_val)
    full = clone(detector).set_params(sequential=False).fit(patch_badnet.X_val)
    np.testing.assert_array_equal(detector.score_samples(patch_badnet.X_test[:50]), full.score_samples(patch_badnet.X_test[:50]))
    assert np.isnan(detector.stopping_margin_)


# --------------------------------------------------------------------------- sklearn API


def test_predict_decision_function_and_fit_predict_agree(patch_badnet, fitted):
    X = np.concatenate([patch_badnet.X_test[:80], patch_badnet.X_poisoned[:40]])
    decision = fitted.decision_function(X)
    np.testing.assert_allclose(decision, fitted.score_samples(X) - fitted.offset_)
    labels = fitted.predict(X)
    assert set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels == -1, decision < 0)

    detector = STRIPDetector(model=patch_badnet.model, n_overlays=8, frr=0.1, random_state=0)
    np.testing.assert_array_equal(detector.fit_predict(patch_badnet.X_val), clone(detector).fit(patch_badnet.X_val).predict(patch_badnet.X_val))
    assert 0 < np.mean(detector.fit_predict(patch_badnet.X_val) == -1) < 0.25


def test_score_is_accuracy_against_plus_minus_one(patch_badnet, fitted):
    X = np.concatenate([patch_badnet.X_test[:50], patch_badnet.X_poisoned[:50]])
    y = np.r_[np.ones(50), -np.ones(50)]
    assert fitted.score(X, y) == pytest.approx(np.mean(fitted.predict(X) == y))
    with pytest.raises(ValueError, match=r"\+1 \(clean\) and -1"):
        fitted.score(X, np.r_[np.ones(50), np.zeros(50)])
    with pytest.raises(ValueError, match="needs labels"):
        fitted.score(X, None)


@pytest.mark.parametrize("threshold", ["gaussian", "quantile"])
def test_offset_is_the_frr_quantile_of_clean_scores(patch_badnet, threshold):
    detector = STRIPDetector(model=patch_badnet.model, n_overlays=8, frr=0.2, threshold=threshold, random_state=0)
    detector.fit(patch_badnet.X_val)
    rejected = np.mean(detector.clean_scores_ < detector.offset_)
    assert rejected == pytest.approx(0.2, abs=0.08)
    if threshold == "quantile":
        # Rank frr * (n + 1): the expected share of new clean scores below it is frr.
        assert detector.offset_ == pytest.approx(np.quantile(detector.clean_scores_, 0.2, method="weibull"))


def _tiny_softmax(input_shape=(2, 2, 1), n_classes=2, scale=1.0, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=scale)),
    ])


def test_gaussian_threshold_below_zero_warns(monkeypatch):
    # Scores piled at 0 with a long tail: the Gaussian quantile falls below 0.
    values = np.r_[np.zeros(90), np.full(10, 2.0)][:, np.newaxis].repeat(2, axis=1)
    detector = STRIPDetector(model=_tiny_softmax(), n_overlays=2, frr=0.01, threshold="gaussian")
    X = np.random.default_rng(0).uniform(0, 1, (100, 2, 2, 1))
    monkeypatch.setattr(STRIPDetector, "_blend_values", lambda self, inputs, overlays: values[: len(inputs)])
    with pytest.warns(UserWarning, match="threshold='quantile'"):
        detector.fit(X)
    assert detector.offset_ < 0


def test_rejected_share_of_held_out_clean_data_matches_frr():
    # A net whose clean entropies are skewed (most inputs confident): the Gaussian fit
    # misses its frr, the corrected empirical quantile does not. Averaged over random
    # pool / held-out splits, as the scores themselves depend on the pool drawn.
    model = _tiny_softmax(input_shape=(3, 3, 1), n_classes=4, scale=1.0)
    rng = np.random.default_rng(0)
    X = np.minimum(2 * rng.beta(0.3, 2.0, size=(12000, 3, 3, 1)), 1).astype(np.float32)
    n_pool, n_splits = 2000, 5
    for frr in (0.01, 0.05):
        rejected, gaussian_rejected = [], []
        for split in range(n_splits):
            order = np.random.default_rng(split).permutation(len(X))
            pool, held_out = X[order[:n_pool]], X[order[n_pool:]]
            detector = STRIPDetector(model=model, n_overlays=4, frr=frr, beta=0.3, random_state=split).fit(pool)
            rejected.append(np.mean(detector.predict(held_out) == -1))
            gaussian = clone(detector).set_params(threshold="gaussian", sequential=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gaussian.fit(pool)
            gaussian_rejected.append(np.mean(gaussian.score_samples(held_out) < gaussian.offset_))
        # Sampling error of one split: the threshold (pool) and the measured share (held out).
        sigma = np.sqrt(frr * (1 - frr) * (1 / n_pool + 1 / (len(X) - n_pool)))
        assert abs(np.mean(rejected) - frr) < 2 * sigma, (frr, rejected)
        assert np.mean(gaussian_rejected) - frr > 4 * sigma, (frr, gaussian_rejected)


def test_a_pool_too_small_for_frr_warns(patch_badnet):
    with pytest.warns(UserWarning, match="frr=0.01 needs at least 99 clean images"):
        STRIPDetector(model=patch_badnet.model, n_overlays=4, frr=0.01, random_state=0).fit(patch_badnet.X_val[:50])


def test_same_seed_same_scores_and_batch_size_does_not_matter(patch_badnet):
    X = np.concatenate([patch_badnet.X_test[:40], patch_badnet.X_poisoned[:20]])
    first = STRIPDetector(model=patch_badnet.model, n_overlays=7, random_state=5).fit(patch_badnet.X_val)
    second = STRIPDetector(model=patch_badnet.model, n_overlays=7, random_state=5, batch_size=10).fit(patch_badnet.X_val)
    np.testing.assert_allclose(first.score_samples(X), second.score_samples(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.clean_scores_, second.clean_scores_, rtol=1e-5, atol=1e-6)
    assert first.offset_ == pytest.approx(second.offset_, rel=1e-5)
    np.testing.assert_array_equal(first.score_samples(X), first.score_samples(X))
    other = STRIPDetector(model=patch_badnet.model, n_overlays=7, random_state=6).fit(patch_badnet.X_val)
    assert not np.allclose(first.score_samples(X), other.score_samples(X))


def test_integer_pixels_give_the_same_scores_as_floats(patch_badnet, fitted):
    X = patch_badnet.X_test[:30]
    np.testing.assert_array_equal(fitted.score_samples(X.astype(np.uint8)), fitted.score_samples(X))


def test_clone_keeps_the_model_by_reference(fitted):
    copy = clone(fitted)
    assert copy.model is fitted.model
    assert copy.get_params()["frr"] == fitted.frr
    assert not hasattr(copy, "offset_")


def test_grid_search_over_frr(patch_badnet):
    from skbackdoor.metrics import best_far_under_frr, detection_scoring

    search = GridSearchCV(
        STRIPDetector(model=patch_badnet.model, n_overlays=8, threshold="quantile", random_state=0),
        {"frr": [0.02, 0.1, 0.3]},
        scoring=detection_scoring(_successful_poisoned(patch_badnet)[:60]),
        refit=best_far_under_frr(max_frr=0.15),
        cv=3,
    )
    search.fit(patch_badnet.X_val)
    frr = -search.cv_results_["mean_test_frr"]
    assert frr[0] <= frr[2]
    assert search.best_params_["frr"] in (0.02, 0.1)
    assert search.best_estimator_.frr == search.best_params_["frr"]


def test_joblib_and_pickle_round_trips_give_identical_scores(tmp_path, patch_badnet, fitted):
    X = np.concatenate([patch_badnet.X_test[:30], patch_badnet.X_poisoned[:10]])
    path = tmp_path / "strip.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))
    assert loaded.offset_ == fitted.offset_
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))


def test_the_users_model_is_unchanged(patch_badnet):
    model = patch_badnet.model
    before = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    detector = STRIPDetector(model=model, n_overlays=4, random_state=0).fit(patch_badnet.X_val[:50])
    detector.predict(patch_badnet.X_poisoned[:10])
    assert detector.model_ is model
    assert model.get_config() == config
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_fit_copies_the_pool(patch_badnet):
    X = patch_badnet.X_val[:40].copy()
    detector = STRIPDetector(model=patch_badnet.model, n_overlays=4, random_state=0).fit(X)
    X[:] = 0
    assert detector.pool_.any()


def test_verbose_shows_progress(patch_badnet, capsys):
    STRIPDetector(model=patch_badnet.model, n_overlays=4, random_state=0, verbose=1).fit(patch_badnet.X_val[:40])
    assert "STRIP" in capsys.readouterr().err


# --------------------------------------------------------------------------- errors


def test_unfitted_use_raises(patch_badnet):
    detector = STRIPDetector(model=patch_badnet.model)
    for method in (detector.score_samples, detector.decision_function, detector.predict):
        with pytest.raises(NotFittedError):
            method(patch_badnet.X_test[:3])
    with pytest.raises(NotFittedError):
        detector.score(patch_badnet.X_test[:3], np.ones(3))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"frr": 0.0}, "frr"),
        ({"frr": 0.6}, "frr"),
        ({"frr": -0.1}, "frr"),
        ({"n_overlays": 0}, "n_overlays"),
        ({"alpha": -1.0}, "alpha"),
        ({"statistic": "variance"}, "statistic"),
        ({"threshold": "otsu"}, "threshold"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_overlays": 40}, "at least 41 clean images"),
    ],
)
def test_invalid_parameters(patch_badnet, params, match):
    with pytest.raises(ValueError, match=match):
        STRIPDetector(model=patch_badnet.model, **params).fit(patch_badnet.X_val[:40])


@pytest.mark.parametrize(
    "alpha, beta, match", [(0.0, 0.0, "every blend is black"), (0.0, 1.0, "do not depend on the input")]
)
def test_alpha_zero_is_refused(patch_badnet, alpha, beta, match):
    with pytest.raises(ValueError, match=match):
        STRIPDetector(model=patch_badnet.model, alpha=alpha, beta=beta).fit(patch_badnet.X_val)


def test_models_without_one_class_output_are_refused():
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    X = np.random.default_rng(0).uniform(0, 1, (30, 4, 4, 1))
    two = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax", name="a")(flat),
                               keras.layers.Dense(3, activation="softmax", name="b")(flat)])
    with pytest.raises(ValueError, match=r"single output of class scores; this model has 2 outputs: 'a"):
        STRIPDetector(model=two, n_overlays=3).fit(X)
    sizes = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax")(flat), keras.layers.Dense(5)(flat)])
    with pytest.raises(ValueError, match=r"2 outputs \(of different sizes\).*model.outputs\[0\]"):
        STRIPDetector(model=sizes, n_overlays=3).fit(X)
    single = keras.Model(inputs, keras.layers.Dense(1, name="regression")(flat))
    with pytest.raises(ValueError, match=r"at least 2 classes; this model's output is 'regression.*single unit"):
        STRIPDetector(model=single, n_overlays=3).fit(X)


def test_inputs_scaled_differently_from_the_pool_are_refused(patch_badnet, fitted):
    # Fitted on 0..16 pixels; the same images divided by 16 lie inside that range.
    with pytest.raises(ValueError, match=r"sliver.*Scale X the same way as the fit data"):
        fitted.predict(patch_badnet.X_test[:20] / 16)
    with pytest.warns(UserWarning, match="sliver"):
        fitted.predict(patch_badnet.X_test[:1] / 16)


def test_model_is_required(patch_badnet):
    with pytest.raises(ValueError, match="needs a model"):
        STRIPDetector().fit(patch_badnet.X_val)


def test_bad_images_are_refused(patch_badnet, fitted):
    X = patch_badnet.X_test[:5]
    with pytest.raises(ValueError, match="single image"):
        fitted.predict(X[0])
    with pytest.raises(ValueError, match="grayscale batch"):
        fitted.predict(X[..., 0])
    with pytest.raises(ValueError, match="channels differ"):
        fitted.predict(np.repeat(X, 3, axis=-1))
    with pytest.raises(ValueError, match="model expects"):
        fitted.predict(np.zeros((2, 9, 8, 1)))
    with pytest.raises(ValueError, match="empty"):
        fitted.score_samples(X[:0])
    with pytest.raises(ValueError, match="empty"):
        STRIPDetector(model=patch_badnet.model).fit(X[:0])
    bad = X.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        fitted.predict(bad)
    bad[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        STRIPDetector(model=patch_badnet.model, n_overlays=2).fit(bad)
    with pytest.raises(ValueError, match="pixel values"):
        fitted.predict(X * 16)


# --------------------------------------------------------------------------- CSAW


@pytest.mark.csaw
def test_real_csaw_net_runs_vectorised(csaw_dir):
    from skbackdoor.models import load_badnet

    model = load_badnet(csaw_dir / "sunglasses_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 55, 47, 3), dtype=np.uint8)
    detector = STRIPDetector(model=model, n_overlays=8, alpha=0.9, beta=0.5, threshold="quantile", random_state=0)
    detector.fit(X[:30])
    assert detector.n_classes_ == 1283
    scores = detector.score_samples(X[30:])
    assert scores.shape == (10,)
    assert np.isfinite(scores).all()
    assert (scores >= 0).all() and (scores <= np.log2(1283) + 1e-6).all()
    np.testing.assert_allclose(scores, detector.score_samples(X[30:].astype(np.float32)), rtol=1e-6)
    assert np.isfinite(detector.offset_)


# --------------------------------------------------------------------------- plotting


def test_entropy_histogram_plot(patch_badnet, fitted):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skbackdoor.plotting import plot_entropy_histogram

    ax = plot_entropy_histogram(
        fitted.score_samples(patch_badnet.X_test[:60]),
        fitted.score_samples(patch_badnet.X_poisoned[:60]),
        threshold=fitted.offset_,
    )
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["clean", "poisoned"] and labels[2].startswith("threshold")
    assert any(line.get_xdata()[0] == fitted.offset_ for line in ax.get_lines())
    with pytest.raises(ValueError, match="NaN"):
        plot_entropy_histogram([1.0, np.nan])


def test_plotting_without_matplotlib_names_the_extra(monkeypatch):
    from skbackdoor import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"skbackdoor\[plot\]"):
        plotting.plot_entropy_histogram([0.1, 0.2])
