"""GoodNetClassifier's calibrated disagreement rule: a false-rejection budget on clean data."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from skbackdoor import FinePruner, GoodNetClassifier, STRIPDetector
from skbackdoor.metrics import attack_success_rate, backdoor_scoring, best_cca_under_asr
from skbackdoor.models import predict_proba_batches


@pytest.fixture(scope="module")
def pruner(patch_badnet):
    """A partly repaired B': the backdoor survives on part of the poisoned inputs."""
    return FinePruner(model=patch_badnet.model, prune_fraction=0.5, fine_tuning="plain", learning_rate=1e-3, epochs=3, random_state=0).fit(
        patch_badnet.X_val, patch_badnet.y_val
    )


def _share_rejected(goodnet, X):
    return float(np.mean(goodnet.predict(X) == goodnet.poisoned_label_))


@pytest.mark.parametrize("frr", [0.0, 0.02, 0.05, 0.1])
def test_a_fitted_repair_is_calibrated_on_all_the_fit_data_at_the_budget(patch_badnet, pruner, frr):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=frr).fit(X, y)
    assert goodnet.n_calibration_ == len(X)
    # the threshold is the k-th largest score, k = floor(frr * (n + 1)) (at least 1): k - 1 lie above it
    k = max(1, int(np.floor(frr * (len(X) + 1))))
    n_rejected = int(np.sum(goodnet.predict(X) == goodnet.poisoned_label_))
    assert k - 3 <= n_rejected <= k - 1  # fewer only on tied scores


def test_rejected_share_of_clean_data_matches_the_budget_within_sampling_error(patch_badnet):
    # G fits B' itself on part of the data and sets the threshold on the held-out rest
    frr, X, y, X_test = 0.05, patch_badnet.X_val, patch_badnet.y_val, patch_badnet.X_test
    goodnet = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=FinePruner(prune_fraction=0.5, epochs=3, random_state=0),
        frr=frr, calibration_fraction=0.5, random_state=0,
    ).fit(X, y)
    assert goodnet.n_calibration_ == 200
    again = clone(goodnet).fit(X, y)
    assert again.threshold_ == goodnet.threshold_  # same random_state, same calibration images
    # 3 sigma of the threshold's sampling error (200 calibration images) and of each measure
    error = lambda n: 3 * np.sqrt(frr * (1 - frr) / n)  # noqa: E731
    assert abs(_share_rejected(goodnet, X) - frr) <= error(200) + error(len(X))
    assert abs(_share_rejected(goodnet, X_test) - frr) <= error(200) + error(len(X_test))


def test_score_is_the_drop_of_the_reference_label_probability(patch_badnet, pruner):
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, answer="repaired")
    goodnet.fit(patch_badnet.X_val, patch_badnet.y_val)
    X = np.concatenate([patch_badnet.X_test[:40], patch_badnet.X_poisoned[:40]])
    b, b_prime = predict_proba_batches(patch_badnet.model, X), pruner.predict_proba(X)
    label = b.argmax(axis=1)
    expected = b[np.arange(len(X)), label] - b_prime[np.arange(len(X)), label]
    np.testing.assert_allclose(goodnet.disagreement_score(X), expected, atol=1e-6)
    poisoned = goodnet.disagreement_score(X) > goodnet.threshold_
    np.testing.assert_array_equal(goodnet.predict(X), np.where(poisoned, 10, b_prime.argmax(axis=1)))


def test_frr_none_is_the_plain_rule_and_the_budget_is_monotone(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    plain = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=None).fit(X_fit, y_fit)
    assert plain.threshold_ is None
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    b = predict_proba_batches(patch_badnet.model, X).argmax(axis=1)
    np.testing.assert_array_equal(plain.predict(X), np.where(b != pruner.predict(X), 10, pruner.predict(X)))
    rejected = [
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=frr).fit(X_fit, y_fit).predict(X) == 10
        for frr in (0.01, 0.05, 0.2)
    ]
    assert np.all(rejected[0] <= rejected[1]) and np.all(rejected[1] <= rejected[2])


def test_at_the_plain_rules_clean_cost_the_calibrated_rule_stops_more_poisoned_inputs(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    plain = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=None).fit(X_fit, y_fit)
    # answer="repaired": the labels of the plain rule; only the rule differs
    calibrated = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=pruner, frr=_share_rejected(plain, X_fit), answer="repaired"
    ).fit(X_fit, y_fit)
    assert _share_rejected(calibrated, patch_badnet.X_test) <= _share_rejected(plain, patch_badnet.X_test) + 0.02
    asr = {
        name: attack_success_rate(patch_badnet.y_target, goodnet.predict(patch_badnet.X_poisoned))
        for name, goodnet in [("plain", plain), ("calibrated", calibrated)]
    }
    assert asr["calibrated"] < asr["plain"]


def test_reference_and_detector_combine_with_the_calibrated_rule(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    detector = STRIPDetector(model=patch_badnet.model, frr=0.02, threshold="quantile", random_state=0).fit(X_fit)
    goodnet = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=pruner, reference=FinePruner(prune_fraction=0.1, epochs=0),
        detector=detector, frr=0.02, calibration_fraction=None, answer="repaired",
    ).fit(X_fit, y_fit)
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    disagree = goodnet.disagreement_score(X) > goodnet.threshold_
    expected = np.where(disagree | (detector.predict(X) == -1), 10, pruner.predict(X))
    np.testing.assert_array_equal(goodnet.predict(X), expected)
    # separate budgets: the clean fit images sent to N are at most the two budgets together
    assert _share_rejected(goodnet, X_fit) <= 0.02 + float(np.mean(detector.predict(X_fit) == -1)) + 1e-9


def test_answer_reference_gives_the_references_label_where_g_does_not_flag(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    b = predict_proba_batches(patch_badnet.model, X)
    kept = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, answer="reference").fit(X_fit, y_fit)
    judged = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, answer="repaired").fit(X_fit, y_fit)
    assert kept.threshold_ == judged.threshold_
    flagged = kept.disagreement_score(X) > kept.threshold_
    np.testing.assert_array_equal(kept.predict(X), np.where(flagged, 10, b.argmax(axis=1)))
    np.testing.assert_array_equal(judged.predict(X), np.where(flagged, 10, pruner.predict(X)))
    # the labels differ somewhere below the threshold, or the test would not tell the two apart
    assert np.any(kept.predict(X) != judged.predict(X))
    proba = kept.predict_proba(X)
    np.testing.assert_allclose(proba[~flagged, :10], b[~flagged], atol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), kept.predict(X))
    # the plain rule sends every disagreement to N: both answers are the same labels
    plain = [
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=None, answer=answer).fit(X_fit, y_fit).predict(X)
        for answer in ("reference", "repaired")
    ]
    np.testing.assert_array_equal(plain[0], plain[1])
    np.testing.assert_array_equal(plain[0], np.where(b.argmax(axis=1) != pruner.predict(X), 10, pruner.predict(X)))


def test_answer_reference_answers_with_b0_when_b0_is_the_reference(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    b0 = FinePruner(model=patch_badnet.model, prune_fraction=0.1, epochs=0).fit(X_fit, y_fit)
    goodnet = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=pruner, reference=b0, answer="reference"
    ).fit(X_fit, y_fit)
    X = patch_badnet.X_test
    flagged = goodnet.disagreement_score(X) > goodnet.threshold_
    np.testing.assert_array_equal(goodnet.predict(X), np.where(flagged, 10, b0.predict(X)))


def test_answer_confident_takes_the_surer_models_label_per_input(patch_badnet, pruner):
    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    b, b_prime = predict_proba_batches(patch_badnet.model, X), pruner.predict_proba(X)
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, answer="confident").fit(X_fit, y_fit)
    assert goodnet.answer_ == "confident"
    flagged = goodnet.disagreement_score(X) > goodnet.threshold_
    surer = b.max(axis=1) >= b_prime.max(axis=1)
    expected = np.where(surer, b.argmax(axis=1), b_prime.argmax(axis=1))
    np.testing.assert_array_equal(goodnet.predict(X), np.where(flagged, 10, expected))
    # both models answer somewhere below the threshold, where their labels differ
    differ = ~flagged & (b.argmax(axis=1) != b_prime.argmax(axis=1))
    assert surer[differ].any() and (~surer[differ]).any()
    proba = goodnet.predict_proba(X)
    np.testing.assert_allclose(proba[~flagged, :10], np.where(surer[:, None], b, b_prime)[~flagged], atol=1e-6)


def test_answer_auto_answers_with_the_more_accurate_model_on_the_calibration_images(patch_badnet, pruner):
    import keras

    X_fit, y_fit = patch_badnet.X_val, patch_badnet.y_val
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    broken = keras.models.clone_model(patch_badnet.model)  # zero weights: chance accuracy
    broken.set_weights([np.zeros_like(w) for w in broken.get_weights()])
    for repaired, expected in [(broken, "confident"), (patch_badnet.model, "repaired"), (pruner, None)]:
        goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=repaired, answer="auto").fit(X_fit, y_fit)
        check = goodnet.repaired_check_
        if expected is None:  # the pruner: whichever the calibration images say
            expected = "confident" if check["reference_accuracy"] > check["accuracy"] else "repaired"
        assert goodnet.answer_ == expected
        fixed = GoodNetClassifier(badnet=patch_badnet.model, repaired=repaired, answer=expected).fit(X_fit, y_fit)
        np.testing.assert_array_equal(goodnet.predict(X), fixed.predict(X))
    assert check["reference_accuracy"] == check["badnet_accuracy"]  # no reference: B is the reference
    detector_only = GoodNetClassifier(badnet=patch_badnet.model, detector=STRIPDetector(n_overlays=2), answer="auto")
    assert detector_only.fit(X_fit, y_fit).answer_ == "reference"  # the BadNet answers


class _LabelsOnly(ClassifierMixin, BaseEstimator):
    """A repaired model without predict_proba: the BadNet's labels."""

    def __init__(self, *, model=None):
        self.model = model

    def fit(self, X, y):
        self.classes_ = np.arange(10)
        return self

    def predict(self, X):
        return predict_proba_batches(self.model, X).argmax(axis=1)


def test_errors(patch_badnet, pruner):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    for frr in (1.0, -0.1, "0.01"):
        with pytest.raises(InvalidParameterError, match="frr"):
            GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, frr=frr).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'answer' parameter"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, answer="badnet").fit(X, y)
    for fraction in (0.0, 1.0):
        with pytest.raises(InvalidParameterError, match="calibration_fraction"):
            GoodNetClassifier(badnet=patch_badnet.model, repaired=pruner, calibration_fraction=fraction).fit(X, y)
    with pytest.raises(ValueError, match="and 0 for fitting"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=FinePruner(), calibration_fraction=0.9).fit(X[:4], y[:4])
    with pytest.raises(TypeError, match="pass frr=None"):
        GoodNetClassifier(badnet=patch_badnet.model, repaired=_LabelsOnly()).fit(X, y)
    plain = GoodNetClassifier(badnet=patch_badnet.model, repaired=_LabelsOnly(), frr=None).fit(X, y)
    assert (plain.predict(X) != 10).all()  # B' = B: they never disagree
    detector_only = GoodNetClassifier(badnet=patch_badnet.model, detector=STRIPDetector(n_overlays=2)).fit(X, y)
    assert detector_only.threshold_ is None
    with pytest.raises(ValueError, match="no repaired model"):
        detector_only.disagreement_score(X)


def test_clone_grid_search_and_joblib_round_trip(patch_badnet, tmp_path):
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=FinePruner(epochs=2, random_state=0), frr=0.02)
    copy = clone(goodnet)
    assert copy.frr == 0.02 and copy.badnet is patch_badnet.model
    search = GridSearchCV(
        goodnet,
        {"frr": [0.01, 0.05], "repaired__prune_fraction": [0.5]},
        scoring=backdoor_scoring(patch_badnet.X_poisoned, patch_badnet.y_target, poisoned_label=10),
        refit=best_cca_under_asr(0.5), cv=2,
    ).fit(patch_badnet.X_val, patch_badnet.y_val)
    best = search.best_estimator_
    assert best.frr == search.best_params_["frr"] and best.threshold_ is not None
    path = tmp_path / "goodnet.joblib"
    joblib.dump(best, path)
    loaded = joblib.load(path)
    assert loaded.threshold_ == best.threshold_
    X = np.concatenate([patch_badnet.X_test[:60], patch_badnet.X_poisoned[:60]])
    np.testing.assert_array_equal(loaded.predict(X), best.predict(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(best)).predict(X), best.predict(X))
