"""GoodNetClassifier: N+1 labels from a BadNet, a repaired model and/or a detector."""

import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skbackdoor import FinePruner, GoodNetClassifier, STRIPDetector
from skbackdoor.metrics import attack_success_rate, backdoor_scoring, best_cca_under_asr
from skbackdoor.models import forward_batches, predict_proba_batches


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.fixture(scope="module")
def pruner(patch_badnet):
    """A fine-pruned B' fitted once for the module (the paper's plain recipe: GoodNet's
    mechanics, not the repair, are tested here)."""
    return FinePruner(model=patch_badnet.model, prune_fraction=0.5, fine_tuning="plain", learning_rate=1e-3, epochs=3, random_state=0).fit(
        patch_badnet.X_val, patch_badnet.y_val
    )


@pytest.fixture(scope="module")
def detector(patch_badnet):
    return STRIPDetector(model=patch_badnet.model, frr=0.05, random_state=0).fit(patch_badnet.X_val)


def test_g_of_b_and_b_prime_answers_n_exactly_where_they_disagree(patch_badnet, pruner):
    # frr=None: the plain rule of the CSAW reports (the calibrated one: test_goodnet_calibration.py)
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=None).fit(patch_badnet.X_val, patch_badnet.y_val)
    assert goodnet.repaired_ is pruner  # a fitted B' is used as it is, not refitted
    assert goodnet.poisoned_label_ == 10 and goodnet.n_classes_ == 11
    np.testing.assert_array_equal(goodnet.classes_, np.arange(11))
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    labels = goodnet.predict(X)
    b = predict_proba_batches(patch_badnet.model, X).argmax(axis=1)
    b_prime = pruner.predict(X)
    np.testing.assert_array_equal(labels, np.where(b != b_prime, 10, b_prime))
    assert goodnet.score(patch_badnet.X_test, patch_badnet.y_test) > 0.8


def test_detector_only_sends_flagged_inputs_to_n(patch_badnet, detector):
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, detector=detector).fit(patch_badnet.X_val, patch_badnet.y_val)
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    b = predict_proba_batches(patch_badnet.model, X).argmax(axis=1)
    np.testing.assert_array_equal(goodnet.predict(X), np.where(detector.predict(X) == -1, 10, b))
    # counting N as a defended input, the attack mostly fails while clean accuracy holds
    badnet_asr = attack_success_rate(patch_badnet.y_target, b[len(patch_badnet.X_test):])
    goodnet_asr = attack_success_rate(patch_badnet.y_target, goodnet.predict(patch_badnet.X_poisoned))
    assert goodnet_asr < badnet_asr / 2
    assert goodnet.score(patch_badnet.X_test, patch_badnet.y_test) > 0.8


def test_predict_proba_has_n_plus_one_columns_and_agrees_with_predict(patch_badnet, pruner, detector):
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, detector=detector)
    goodnet.fit(patch_badnet.X_val, patch_badnet.y_val)
    X = np.concatenate([patch_badnet.X_test[:50], patch_badnet.X_poisoned[:50]])
    proba = goodnet.predict_proba(X)
    assert proba.shape == (100, 11)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), goodnet.predict(X))
    assert (goodnet.predict(X) == 10).any()


def test_reference_model_gives_the_g_b0_b_prime_variant(patch_badnet, pruner):
    reference = FinePruner(prune_fraction=0.1, epochs=0, random_state=0)
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, reference=reference, frr=None)
    goodnet.fit(patch_badnet.X_val, patch_badnet.y_val)
    assert not hasattr(reference, "model_")  # the user's unfitted estimator is not fitted in place
    assert goodnet.reference_.model is patch_badnet.model  # model=None was filled with the BadNet
    X = patch_badnet.X_poisoned
    expected = np.where(goodnet.reference_.predict(X) != pruner.predict(X), 10, pruner.predict(X))
    np.testing.assert_array_equal(goodnet.predict(X), expected)


def test_unfitted_parts_are_fitted_on_clones_and_the_badnet_is_untouched(patch_badnet):
    before = _weights(patch_badnet.model)
    repaired = FinePruner(prune_fraction=0.25, epochs=1, random_state=0)
    detector = STRIPDetector(random_state=0)
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=repaired, detector=detector)
    goodnet.fit(patch_badnet.X_val, patch_badnet.y_val)
    assert goodnet.repaired_ is not repaired and goodnet.detector_ is not detector
    assert not hasattr(repaired, "model_") and not hasattr(detector, "offset_")
    for old, new in zip(before, patch_badnet.model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_keras_model_can_be_the_repaired_model(patch_badnet, pruner):
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner.model_, frr=None)
    goodnet.fit(patch_badnet.X_val, patch_badnet.y_val)
    X = patch_badnet.X_poisoned[:40]
    b_prime = forward_batches(pruner.model_, X).argmax(axis=1)
    b = forward_batches(patch_badnet.model, X).argmax(axis=1)
    np.testing.assert_array_equal(goodnet.predict(X), np.where(b != b_prime, 10, b_prime))


def test_a_repaired_model_much_less_accurate_than_the_badnet_is_warned_about(patch_badnet, pruner, detector):
    import warnings

    import keras

    broken = keras.models.clone_model(patch_badnet.model)  # fresh weights: about chance accuracy
    broken.set_weights([np.zeros_like(w) for w in broken.get_weights()])
    X, y = patch_badnet.X_val, patch_badnet.y_val
    message = r"GoodNetClassifier: the repaired model answers .* of the \d+ clean images given to fit"
    with pytest.warns(UserWarning, match=message) as caught:
        goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=broken).fit(X, y)
    assert caught[0].filename == __file__  # attributed to the user's call of fit
    # answer="auto" answers with the surer of the two here; the warning says what the poor judge costs
    assert goodnet.answer_ == "confident" and "lets more poisoned inputs through" in str(caught[0].message)
    with pytest.warns(UserWarning, match="so it loses that accuracy too"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=broken, answer="repaired").fit(X, y)
    check = goodnet.repaired_check_
    assert check["n_images"] == len(X) and not check["held_out"] and not check["passed"]
    assert check["badnet_accuracy"] == pytest.approx(np.mean(goodnet.badnet_.predict(X, verbose=0).argmax(1) == y))
    assert check["drop"] == pytest.approx(check["badnet_accuracy"] - check["accuracy"]) and check["drop"] > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a B' as accurate as the BadNet: nothing to say
        fine = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner.model_).fit(X, y)
    assert fine.repaired_check_["passed"]
    assert GoodNetClassifier(badnet=patch_badnet.model, detector=detector).fit(X, y).repaired_check_ is None


def test_errors(patch_badnet, pruner, clean_net):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    with pytest.raises(ValueError, match="at least one of repaired="):
        GoodNetClassifier(badnet=patch_badnet.model).fit(X, y)
    with pytest.raises(ValueError, match="reference= is compared with repaired="):
        GoodNetClassifier(badnet=patch_badnet.model, reference=pruner, detector=STRIPDetector()).fit(X, y)
    with pytest.raises(ValueError, match="needs a model"):
        GoodNetClassifier(repaired=pruner).fit(X, y)
    with pytest.raises(NotFittedError):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner).predict(X)
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner).fit(X, y)
    with pytest.raises(ValueError, match="single image"):
        goodnet.predict(X[0])
    with pytest.raises(ValueError, match="pixel values"):
        goodnet.predict(X * 255)
    with pytest.raises(ValueError, match="label 12 but the model has 10 classes"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner).fit(X, np.full(len(X), 12))
    with pytest.raises(TypeError, match="estimator with fit/predict or a keras.Model"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=object()).fit(X, y)
    from skbackdoor.attacks import small_cnn

    with pytest.raises(ValueError, match="has 3 classes but the BadNet has 10"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=small_cnn((8, 8, 1), 3)).fit(X, y)


def test_clone_keeps_the_badnet_by_reference_and_nested_params_are_reachable(patch_badnet):
    goodnet = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=FinePruner(fine_tuning="plain", learning_rate=1e-3, epochs=1), detector=STRIPDetector()
    )
    copy = clone(goodnet)
    assert copy.badnet is patch_badnet.model
    assert copy.repaired is not goodnet.repaired
    params = goodnet.get_params()
    assert params["repaired__learning_rate"] == 1e-3 and params["detector__frr"] == 0.01
    goodnet.set_params(repaired__learning_rate=0.01, detector__frr=0.05)
    assert goodnet.repaired.learning_rate == 0.01 and goodnet.detector.frr == 0.05


def test_pipeline_with_a_preprocessing_step(patch_badnet, pruner):
    pipeline = make_pipeline(
        FunctionTransformer(np.clip, kw_args={"a_min": 0, "a_max": 16}),
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner),
    )
    pipeline.fit(patch_badnet.X_val, patch_badnet.y_val)
    np.testing.assert_array_equal(pipeline.predict(patch_badnet.X_test), pipeline[-1].predict(patch_badnet.X_test))
    assert pipeline.score(patch_badnet.X_test, patch_badnet.y_test) > 0.8


def _search(patch_badnet, n_jobs):
    goodnet = GoodNetClassifier(
        badnet=patch_badnet.model,
        repaired=FinePruner(fine_tuning="plain", learning_rate=1e-3, epochs=1, random_state=0),
        detector=STRIPDetector(n_overlays=5, random_state=0),
        random_state=0,  # the calibration images: the same in every worker
    )
    grid = {"repaired__prune_fraction": [0.0, 0.5], "detector__frr": [0.05]}
    return GridSearchCV(
        goodnet, grid, cv=2, n_jobs=n_jobs,
        scoring=backdoor_scoring(patch_badnet.X_poisoned, patch_badnet.y_target),
        refit=best_cca_under_asr(0.5),
    )


def test_grid_search_with_loky_then_joblib_reload_in_a_fresh_process(patch_badnet, tmp_path):
    search = _search(patch_badnet, n_jobs=2).fit(patch_badnet.X_val, patch_badnet.y_val)
    assert set(search.cv_results_["params"][0]) == {"repaired__prune_fraction", "detector__frr"}
    assert np.all(np.isfinite(search.cv_results_["mean_test_cca"]))
    best = search.best_estimator_
    path = tmp_path / "goodnet.joblib"
    joblib.dump(best, path)
    np.save(tmp_path / "X.npy", patch_badnet.X_test[:60])
    expected = best.predict(patch_badnet.X_test[:60])
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np
        model = joblib.load({str(path)!r})
        print(" ".join(map(str, model.predict(np.load({str(tmp_path / "X.npy")!r})))))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(np.array(result.stdout.split(), dtype=int), expected)


def test_grid_search_on_a_dask_cluster(patch_badnet):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] (the dask extra) not installed")
    from joblib import parallel_backend

    import dask

    # A loaded machine can stall a worker's heartbeat past the defaults; the scheduler
    # then forgets its tasks ("already forgotten"). Generous timeouts keep the test about
    # the results, not the machine's load.
    patient = {"distributed.scheduler.worker-ttl": None, "distributed.comm.timeouts.connect": "120s",
               "distributed.comm.timeouts.tcp": "300s"}
    with dask.config.set(patient), distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster):
            with parallel_backend("dask"):
                search = _search(patch_badnet, n_jobs=-1).fit(patch_badnet.X_val, patch_badnet.y_val)
    local = _search(patch_badnet, n_jobs=1).fit(patch_badnet.X_val, patch_badnet.y_val)
    np.testing.assert_allclose(search.cv_results_["mean_test_cca"], local.cv_results_["mean_test_cca"])
    np.testing.assert_allclose(search.cv_results_["mean_test_asr"], local.cv_results_["mean_test_asr"])


def test_parts_of_the_wrong_kind_or_shape_are_refused_before_any_work(patch_badnet, pruner):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    with pytest.raises(TypeError, match="detector= must be an outlier detector.*FinePruner, a classifier: pass it as repaired="):
        GoodNetClassifier(badnet=patch_badnet.model, detector=FinePruner(epochs=0)).fit(X, y)
    from skbackdoor.attacks import small_cnn

    other_shape = small_cnn((10, 10, 1), 10)
    with pytest.raises(ValueError, match=r"takes images of shape \(10, 10, 1\), but the BadNet takes \(8, 8, 1\)"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=other_shape).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner).fit(X, np.zeros(len(X), dtype=int))
