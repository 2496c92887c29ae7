"""Clean-data-only scorers: surrogate poisoned inputs from reverse-engineered triggers."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from skbackdoor import FinePruner, STRIPDetector
from skbackdoor.metrics import (
    attack_success_rate,
    best_cca_under_asr,
    best_far_under_frr,
    surrogate_backdoor_scoring,
    surrogate_detection_scoring,
    surrogate_poisoned_inputs,
)
from skbackdoor.models import predict_proba_batches

STEPS = 300


@pytest.fixture(scope="module")
def surrogate(patch_badnet):
    return surrogate_poisoned_inputs(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )


@pytest.fixture
def no_attack_code(monkeypatch):
    """Make every way of stamping the attacker's trigger fail while the test runs."""
    import skbackdoor.attacks as attacks

    def refuse(*args, **kwargs):
        raise AssertionError("the surrogate touched the attacker's trigger or poisoned data")

    for name in ("make_poisoned_test_set", "poison", "poison_multi"):
        monkeypatch.setattr(attacks, name, refuse)
    monkeypatch.setattr(attacks.Trigger, "apply", refuse)


def test_surrogate_finds_the_backdoor_target_from_clean_data_only(patch_badnet, no_attack_code):
    X_surrogate, y_target = surrogate_poisoned_inputs(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )
    np.testing.assert_array_equal(np.unique(y_target), [patch_badnet.target])
    # one surrogate input per clean image of another label, built from it
    others = patch_badnet.X_val[patch_badnet.y_val != patch_badnet.target]
    assert X_surrogate.shape == others.shape
    # most pixels untouched (to within 0.05 grey levels of 16): a small trigger
    assert np.mean(np.isclose(X_surrogate, others, atol=0.05)) > 0.5
    # the reversed trigger works on the BadNet, about as well as the attacker's
    badnet_labels = predict_proba_batches(patch_badnet.model, X_surrogate).argmax(axis=1)
    assert attack_success_rate(y_target, badnet_labels) > 0.9


def test_same_random_state_same_surrogate(patch_badnet, surrogate):
    again = surrogate_poisoned_inputs(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )
    np.testing.assert_array_equal(again[0], surrogate[0])
    np.testing.assert_array_equal(again[1], surrogate[1])


def test_more_targets_stack_the_next_most_suspicious_labels(patch_badnet):
    X_surrogate, y_target = surrogate_poisoned_inputs(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, n_targets=2, steps=STEPS, random_state=0
    )
    labels = list(dict.fromkeys(y_target.tolist()))
    assert len(labels) == 2 and labels[0] == patch_badnet.target
    assert len(X_surrogate) == sum(int(np.sum(patch_badnet.y_val != label)) for label in labels)


def test_surrogate_scoring_tunes_a_repair_like_the_true_scorer_would(patch_badnet):
    scoring = surrogate_backdoor_scoring(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )
    assert sorted(scoring) == ["asr", "cca"]
    search = GridSearchCV(
        FinePruner(model=patch_badnet.model, fine_tuning="plain", epochs=4, batch_size=32, random_state=0),
        {"learning_rate": [1e-4, 1e-2], "prune_fraction": [0.5]},
        scoring=scoring, refit=best_cca_under_asr(0.3), cv=2,
    ).fit(patch_badnet.X_val, patch_badnet.y_val)
    surrogate_asr = -search.cv_results_["mean_test_asr"]
    assert np.all((surrogate_asr >= 0) & (surrogate_asr <= 1))
    # a learning rate of 1e-4 barely moves the weights: the surrogate must see the backdoor survive
    assert surrogate_asr[0] > 0.5 and surrogate_asr[1] < surrogate_asr[0] - 0.2
    assert search.best_index_ == 1
    badnet_asr = attack_success_rate(
        patch_badnet.y_target, predict_proba_batches(patch_badnet.model, patch_badnet.X_poisoned).argmax(axis=1)
    )
    true_asr = attack_success_rate(patch_badnet.y_target, search.best_estimator_.predict(patch_badnet.X_poisoned))
    assert true_asr < badnet_asr - 0.2


def test_surrogate_detection_scoring_for_a_detector(patch_badnet):
    scoring = surrogate_detection_scoring(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )
    assert sorted(scoring) == ["far", "frr"]
    search = GridSearchCV(
        STRIPDetector(model=patch_badnet.model, n_overlays=5, threshold="quantile", random_state=0),
        {"frr": [0.02, 0.2]},
        scoring=scoring, refit=best_far_under_frr(0.1), cv=2,
    ).fit(patch_badnet.X_val)
    far = -search.cv_results_["mean_test_far"]
    assert np.all((far >= 0) & (far <= 1))
    assert far[1] <= far[0]  # a larger rejection budget never accepts more surrogate inputs


def test_errors(patch_badnet):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    with pytest.raises(InvalidParameterError, match="n_targets"):
        surrogate_poisoned_inputs(patch_badnet.model, X, y, n_targets=0)
    with pytest.raises(InvalidParameterError, match="steps"):
        surrogate_backdoor_scoring(patch_badnet.model, X, y, steps=0)
    with pytest.raises(ValueError, match="label 12 but the model has 10 classes"):
        surrogate_detection_scoring(patch_badnet.model, X, np.full(len(X), 12), steps=1)
