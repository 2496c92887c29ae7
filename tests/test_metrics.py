"""Tests for skbackdoor.metrics: metric functions, scorers and refit rules."""

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, OutlierMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from skbackdoor.metrics import (
    attack_success_rate,
    backdoor_scoring,
    best_cca_under_asr,
    best_far_under_frr,
    clean_accuracy_score,
    detection_scoring,
    false_acceptance_rate,
    false_rejection_rate,
    make_asr_scorer,
    make_cca_scorer,
    make_far_scorer,
    make_frr_scorer,
)

TARGET = 0


class CornerTriggerClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on flattened images with a planted backdoor: an image whose
    top-left pixel exceeds ``trigger_threshold`` is classified as ``target_label``.

    ``C`` sets the clean accuracy and ``trigger_threshold`` the attack success rate, so
    a grid over both has a known trade-off.
    """

    def __init__(self, *, C=1.0, trigger_threshold=np.inf, target_label=TARGET):
        self.C = C
        self.trigger_threshold = trigger_threshold
        self.target_label = target_label

    def fit(self, X, y):
        X = np.asarray(X)
        self.model_ = LogisticRegression(C=self.C, max_iter=500).fit(_flatten(X), y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        X = np.asarray(X)
        y_pred = self.model_.predict(_flatten(X))
        y_pred[X[:, 0, 0, 0] > self.trigger_threshold] = self.target_label
        return y_pred


class CornerTriggerDetector(OutlierMixin, BaseEstimator):
    """Flags an image as poisoned (-1) when its top-left pixel exceeds ``threshold``."""

    def __init__(self, *, threshold=0.5):
        self.threshold = threshold

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.where(np.asarray(X)[:, 0, 0, 0] > self.threshold, -1, 1)


def _flatten(X):
    # The trigger pixel is left out so that the trigger acts only through the backdoor.
    return X.reshape(len(X), -1)[:, 1:] / 16.0


@pytest.fixture(scope="module")
def digits_backdoor():
    """Clean digit images and a poisoned set whose trigger intensity rises from 1 to 16.

    The top-left pixel of every clean digit is 0, so the planted backdoor never fires on
    clean data; on the poisoned set a threshold t fires on the share (16 - t) / 15.
    """
    digits = load_digits()
    X = digits.images[:450, :, :, np.newaxis].astype(np.float32)
    y = digits.target[:450]
    assert (X[:, 0, 0, 0] == 0).all()
    X_poisoned = digits.images[450:, :, :, np.newaxis].astype(np.float32)
    X_poisoned = X_poisoned[digits.target[450:] != TARGET][:100].copy()
    X_poisoned[:, 0, 0, 0] = np.linspace(1, 16, len(X_poisoned))
    return X, y, X_poisoned


# ---------------------------------------------------------------- metric functions


def test_clean_accuracy_counts_poisoned_label_as_wrong():
    assert clean_accuracy_score([0, 1, 2, 2], [0, 1, 2, 3], poisoned_label=3) == 0.75
    assert clean_accuracy_score([0, 1, 2, 2], [0, 1, 2, 3]) == 0.75
    assert clean_accuracy_score([5, 5], [10, 10], poisoned_label=10) == 0.0


def test_clean_accuracy_sample_weight():
    score = clean_accuracy_score([0, 1, 1], [0, 0, 1], sample_weight=[2, 1, 1])
    assert score == pytest.approx(0.75)


def test_clean_accuracy_refuses_poisoned_label_in_y_true():
    with pytest.raises(ValueError, match="poisoned label 3 for 1 input"):
        clean_accuracy_score([0, 3], [0, 3], poisoned_label=3)


def test_attack_success_rate_single_and_multi_target():
    assert attack_success_rate(0, [0, 0, 5, 10]) == 0.5
    assert attack_success_rate(np.int64(7), np.array([7, 7, 7, 7])) == 1.0
    assert attack_success_rate([0, 7, 7], [0, 7, 3]) == pytest.approx(2 / 3)
    assert attack_success_rate(0, [0, 1], sample_weight=[3, 1]) == pytest.approx(0.75)
    assert attack_success_rate(1.0, np.array([1.0, 2.0])) == 0.5


def test_attack_success_rate_poisoned_label_is_not_a_success():
    n_classes = 10
    assert attack_success_rate(0, [n_classes, n_classes, 0, 3]) == 0.25


def test_detection_rates_outlier_convention():
    clean_pred = np.array([1, 1, 1, -1])
    poisoned_pred = np.array([-1, -1, 1, -1, -1])
    assert false_rejection_rate(clean_pred) == 0.25
    assert false_acceptance_rate(poisoned_pred) == 0.2
    assert false_rejection_rate(clean_pred, sample_weight=[1, 1, 1, 5]) == 0.625


def test_detection_rates_goodnet_convention():
    n_classes = 10
    clean_pred = np.array([4, 2, n_classes, n_classes])
    poisoned_pred = np.array([n_classes, 0, n_classes, n_classes])
    assert false_rejection_rate(clean_pred, poisoned_label=n_classes) == 0.5
    assert false_acceptance_rate(poisoned_pred, poisoned_label=n_classes) == 0.25
    # With the default -1 these labels are not a detector's +1/-1: refused, not a
    # silent FRR of 0 and FAR of 1.
    with pytest.raises(ValueError, match="neither \\+1 \\(clean\\) nor -1.*poisoned_label=N"):
        false_rejection_rate(clean_pred)
    with pytest.raises(ValueError, match="y_pred_poisoned holds the labels 0, 10, neither"):
        false_acceptance_rate(poisoned_pred)


def test_column_vectors_are_accepted():
    assert clean_accuracy_score(np.array([[0], [1]]), np.array([[0], [0]])) == 0.5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: clean_accuracy_score([], []), "y_true is empty"),
        (lambda: clean_accuracy_score([0, 1], [0, 1, 1]), "same length; got 2 and 3"),
        (lambda: clean_accuracy_score([0, 1], np.eye(2)), "y_pred must be a 1-D array"),
        (lambda: attack_success_rate(0, []), "y_pred is empty"),
        (lambda: attack_success_rate([0, 1], [0, 1, 1]), "same length"),
        (lambda: attack_success_rate(None, [0, 1]), "'y_target' parameter of attack_success_rate must be"),
        (lambda: attack_success_rate(0, [0, 1], sample_weight=[1]), "sample_weight has 1"),
        (lambda: attack_success_rate(0, [0, 1], sample_weight=[1, -1]), "non-negative"),
        (lambda: attack_success_rate(0, [0, 1], sample_weight=[0, 0]), "sums to zero"),
        (lambda: false_rejection_rate([]), "y_pred_clean is empty"),
        (lambda: false_acceptance_rate(np.ones((2, 2))), "y_pred_poisoned must be a 1-D"),
        (lambda: false_rejection_rate([1], poisoned_label=0.5), "'poisoned_label' parameter .* must be an integer label"),
        (lambda: false_acceptance_rate([1], poisoned_label=None), "'poisoned_label' parameter .* must be an integer label"),
        (lambda: false_rejection_rate([1], poisoned_label=True), "'poisoned_label' parameter"),
    ],
)
def test_metric_input_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_text_target_against_numeric_predictions_is_refused():
    # "0" never equals 0: the rate would silently be 0.0 (issue 15).
    with pytest.raises(ValueError, match="y_target holds text labels but y_pred holds numbers.*0 rather than '0'"):
        attack_success_rate("0", [0, 0, 1])
    with pytest.raises(ValueError, match="y_pred holds text labels but y_target holds numbers"):
        attack_success_rate([0, 1], np.array(["0", "1"]))
    with pytest.raises(ValueError, match="y_true holds text labels but y_pred holds numbers"):
        clean_accuracy_score(["0", "1"], [0, 1])
    # Text on both sides is fine.
    assert attack_success_rate("cat", ["cat", "dog"]) == 0.5


def test_detection_rates_refuse_labels_of_another_convention():
    # A GoodNet's (or classifier's) labels with the detector default -1 (issue 15).
    with pytest.raises(ValueError, match=r"y_pred_clean holds the label 0, neither \+1 \(clean\) nor -1"):
        false_rejection_rate([0, 1, 1])
    # A detector's +1/-1 with a GoodNet's poisoned label N.
    with pytest.raises(ValueError, match=r"holds the label -1, outside the labels 0 .. 10.*poisoned_label=-1"):
        false_acceptance_rate([1, -1, 1], poisoned_label=10)
    with pytest.raises(ValueError, match="label 11, outside the labels 0 .. 10"):
        false_rejection_rate([0, 11], poisoned_label=10)
    with pytest.raises(ValueError, match="poisoned_label holds text labels but y_pred_clean holds numbers"):
        false_rejection_rate([1, -1], poisoned_label="poisoned")
    assert false_rejection_rate(np.array(["ok", "poisoned"]), poisoned_label="poisoned") == 0.5
    assert false_acceptance_rate([1.0, -1.0]) == 0.5


def test_frr_scorer_refuses_goodnet_labels_with_the_detector_default(digits_backdoor):
    X, y, _ = digits_backdoor
    clf = CornerTriggerClassifier().fit(X, y)
    with pytest.raises(ValueError, match="pass poisoned_label=N"):
        make_frr_scorer()(clf, X, None)
    assert make_frr_scorer(poisoned_label=10)(clf, X, None) == 0.0


# ------------------------------------------------------------------------- scorers


def test_asr_scorer_returns_negated_rate_and_ignores_fold(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    clf = CornerTriggerClassifier(trigger_threshold=8.0).fit(X, y)
    expected = attack_success_rate(TARGET, clf.predict(X_poisoned))
    assert 0.4 < expected < 0.6
    scorer = make_asr_scorer(X_poisoned, TARGET)
    assert scorer(clf, X, y) == -expected
    assert scorer(clf, None, None) == -expected
    per_input_target = np.full(len(X_poisoned), TARGET)
    assert make_asr_scorer(X_poisoned, per_input_target)(clf, X, y) == -expected


def test_asr_scorer_of_undefended_and_defended_model(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    scorer = make_asr_scorer(X_poisoned, TARGET)
    assert scorer(CornerTriggerClassifier(trigger_threshold=0).fit(X, y), X, y) == -1.0
    # A defended model never answers the target on these inputs (their true class is
    # not TARGET, the trigger is ignored): ASR 0 unless the clean model itself errs.
    defended = CornerTriggerClassifier().fit(X, y)
    assert scorer(defended, X, y) == -attack_success_rate(TARGET, defended.predict(X_poisoned))
    assert scorer(defended, X, y) > -0.1


def test_cca_scorer_matches_clean_accuracy(digits_backdoor):
    X, y, _ = digits_backdoor
    clf = CornerTriggerClassifier().fit(X, y)
    expected = clean_accuracy_score(y, clf.predict(X))
    assert make_cca_scorer()(clf, X, y) == expected
    assert make_cca_scorer(poisoned_label=10)(clf, X, y) == expected
    with pytest.raises(ValueError, match="poisoned label 1 "):
        make_cca_scorer(poisoned_label=1)(clf, X, y)


def test_detection_scorers(digits_backdoor):
    X, _, X_poisoned = digits_backdoor
    detector = CornerTriggerDetector(threshold=8.0).fit(X)
    assert make_frr_scorer()(detector, X, None) == 0.0
    far = false_acceptance_rate(detector.predict(X_poisoned))
    assert 0.4 < far < 0.6
    assert make_far_scorer(X_poisoned)(detector, X, None) == -far
    scoring = detection_scoring(X_poisoned)
    assert set(scoring) == {"frr", "far"}
    assert scoring["far"](detector, X, None) == -far

    flag_everything = CornerTriggerDetector(threshold=-1.0).fit(X)
    assert make_frr_scorer()(flag_everything, X, None) == -1.0
    assert make_far_scorer(X_poisoned)(flag_everything, X, None) == 0.0


def test_goodnet_labels_with_detection_scorers(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    n_classes = 10
    clf = CornerTriggerClassifier(trigger_threshold=8.0, target_label=n_classes).fit(X, y)
    scorer = make_far_scorer(X_poisoned, poisoned_label=n_classes)
    assert scorer(clf, None, None) == -false_acceptance_rate(
        clf.predict(X_poisoned), poisoned_label=n_classes
    )
    assert make_asr_scorer(X_poisoned, TARGET)(clf, None, None) > -0.1


def test_scorer_factories_validate_inputs(digits_backdoor):
    _, _, X_poisoned = digits_backdoor
    with pytest.raises(ValueError, match="single image"):
        make_asr_scorer(X_poisoned[0], TARGET)
    with pytest.raises(ValueError, match="X_poisoned is empty"):
        make_asr_scorer(X_poisoned[:0], TARGET)
    with pytest.raises(ValueError, match="same length"):
        make_asr_scorer(X_poisoned, [TARGET, TARGET])
    with pytest.raises(ValueError, match="'y_target' parameter of make_asr_scorer must be"):
        make_asr_scorer(X_poisoned, None)
    with pytest.raises(ValueError, match="X_poisoned must be an image array"):
        make_far_scorer(X_poisoned.reshape(len(X_poisoned), -1))
    with pytest.raises(ValueError, match="'poisoned_label' parameter of make_frr_scorer must be"):
        make_frr_scorer(poisoned_label=1.5)


def test_scorer_keeps_uint8_pixels():
    X_poisoned = np.zeros((3, 4, 4, 1), dtype=np.uint8)
    scorer = make_asr_scorer(X_poisoned, TARGET)
    assert scorer.X_poisoned.dtype == np.uint8
    assert "uint8 images of shape (3, 4, 4, 1)" in repr(scorer)


def test_scorers_and_refit_rules_pickle(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    clf = CornerTriggerClassifier(trigger_threshold=8.0).fit(X, y)
    # The classifier answers the classes 0..9, a GoodNet's labels with no poisoned one.
    scoring = {**backdoor_scoring(X_poisoned, TARGET), **detection_scoring(X_poisoned, poisoned_label=10)}
    for name, scorer in scoring.items():
        restored = pickle.loads(pickle.dumps(scorer))
        assert restored(clf, X, y) == scorer(clf, X, y), name
    refit = best_cca_under_asr(0.1)
    restored = pickle.loads(pickle.dumps(refit))
    cv_results = {"mean_test_cca": [0.9, 0.8], "mean_test_asr": [-0.5, 0.0]}
    assert restored(cv_results) == refit(cv_results) == 1
    assert repr(restored) == "best_cca_under_asr(max_asr=0.1, cca_key='cca', asr_key='asr')"


# ------------------------------------------------------------------- refit rules

# Candidates of the grid below: a stronger clean model (larger C) gives a better CCA;
# a lower trigger threshold gives a higher ASR (share of trigger intensities 1..16 above
# it), and the weakest clean model adds a few natural mistakes into the target class.
TRADE_OFF_GRID = [
    {"C": [1.0], "trigger_threshold": [8.0]},  # CCA ~0.90, ASR ~0.53
    {"C": [0.1], "trigger_threshold": [12.0]},  # CCA ~0.88, ASR ~0.27
    {"C": [0.01], "trigger_threshold": [np.inf]},  # CCA ~0.80, ASR ~0.09
]


@pytest.mark.parametrize("max_asr, expected_index", [(0.15, 2), (0.4, 1), (0.6, 0), (1.0, 0)])
def test_grid_search_picks_best_cca_under_asr(digits_backdoor, max_asr, expected_index):
    X, y, X_poisoned = digits_backdoor
    search = GridSearchCV(
        CornerTriggerClassifier(),
        TRADE_OFF_GRID,
        scoring=backdoor_scoring(X_poisoned, TARGET),
        refit=best_cca_under_asr(max_asr=max_asr),
        cv=3,
    ).fit(X, y)
    cca = search.cv_results_["mean_test_cca"]
    asr = -search.cv_results_["mean_test_asr"]
    assert cca[0] > cca[1] > cca[2]
    assert 0.5 < asr[0] < 0.6 and 0.2 < asr[1] < 0.3 and 0.0 < asr[2] < 0.15
    assert search.best_index_ == expected_index
    best = search.best_estimator_
    assert best.get_params()["C"] == TRADE_OFF_GRID[expected_index]["C"][0]
    assert attack_success_rate(TARGET, best.predict(X_poisoned)) <= max_asr


def test_grid_search_falls_back_to_lowest_asr(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    search = GridSearchCV(
        CornerTriggerClassifier(),
        TRADE_OFF_GRID,
        scoring=backdoor_scoring(X_poisoned, TARGET),
        refit=best_cca_under_asr(max_asr=0.02),
        cv=3,
    ).fit(X, y)
    assert (-search.cv_results_["mean_test_asr"] > 0.02).all()
    assert search.best_index_ == 2


def test_grid_search_in_parallel_processes(digits_backdoor):
    X, y, X_poisoned = digits_backdoor
    search = GridSearchCV(
        CornerTriggerClassifier(),
        TRADE_OFF_GRID,
        scoring=backdoor_scoring(X_poisoned, TARGET),
        refit=best_cca_under_asr(max_asr=0.4),
        cv=3,
        n_jobs=2,
        error_score="raise",
    ).fit(X, y)
    assert search.best_index_ == 1


def test_grid_search_tunes_a_detector(digits_backdoor):
    X, _, X_poisoned = digits_backdoor
    # Thresholds below 0 flag every clean digit (FRR 1); higher ones accept more
    # poisoned inputs. The lowest FAR at FRR <= 0.05 is threshold 0.
    search = GridSearchCV(
        CornerTriggerDetector(),
        {"threshold": [-1.0, 0.0, 4.0, 8.0]},
        scoring=detection_scoring(X_poisoned),
        refit=best_far_under_frr(max_frr=0.05),
        cv=3,
    ).fit(X)
    assert search.best_params_ == {"threshold": 0.0}
    assert search.cv_results_["mean_test_frr"][0] == -1.0
    assert search.cv_results_["mean_test_far"][1] == 0.0


def test_refit_rule_tie_breaks_and_nan():
    rule = best_cca_under_asr(max_asr=0.05)
    # Equal CCA: the lower ASR wins; then the earlier candidate.
    assert rule({"mean_test_cca": [0.9, 0.9, 0.9], "mean_test_asr": [-0.04, -0.01, -0.01]}) == 1
    # A failed fit (NaN) never wins, even when its other score looks good.
    assert rule({"mean_test_cca": [np.nan, 0.5], "mean_test_asr": [0.0, -0.02]}) == 1
    assert rule({"mean_test_cca": [0.9, 0.5], "mean_test_asr": [np.nan, -0.5]}) == 1
    # Fallback: lowest ASR, then higher CCA.
    assert rule({"mean_test_cca": [0.9, 0.6, 0.7], "mean_test_asr": [-0.9, -0.3, -0.3]}) == 2
    with pytest.raises(ValueError, match="NaN"):
        rule({"mean_test_cca": [np.nan], "mean_test_asr": [np.nan]})


def test_refit_rule_custom_keys_and_missing_keys():
    rule = best_cca_under_asr(max_asr=0.1, cca_key="accuracy", asr_key="neg_asr")
    assert rule({"mean_test_accuracy": [0.9, 0.8], "mean_test_neg_asr": [-0.2, -0.05]}) == 1
    with pytest.raises(ValueError, match=r"no 'mean_test_cca'.*\['accuracy'\]"):
        best_cca_under_asr()({"mean_test_accuracy": [0.9]})


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", None, True])
def test_refit_rule_bound_validation(bad):
    with pytest.raises(ValueError, match=r"'max_asr' parameter .* must be a float in the range \[0.0, 1.0\]"):
        best_cca_under_asr(max_asr=bad)
    with pytest.raises(ValueError, match=r"'max_frr' parameter .* must be a float in the range \[0.0, 1.0\]"):
        best_far_under_frr(max_frr=bad)
