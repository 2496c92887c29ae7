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


@pytest.mark.parametrize("attack", ["adaptive", "fixed"])
def test_surrogate_scoring_tunes_a_repair_like_the_true_scorer_would(patch_badnet, attack):
    scoring = surrogate_backdoor_scoring(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, attack=attack, random_state=0
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
    with pytest.raises(InvalidParameterError, match="attack"):
        surrogate_backdoor_scoring(patch_badnet.model, X, y, attack="pgd")
    with pytest.raises(InvalidParameterError, match="mask_budget"):
        surrogate_backdoor_scoring(patch_badnet.model, X, y, mask_budget=1.5)


@pytest.fixture(scope="module")
def adaptive_scoring(patch_badnet):
    return surrogate_backdoor_scoring(
        patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, steps=STEPS, random_state=0
    )


@pytest.fixture(scope="module")
def unrepaired(patch_badnet):
    """B itself behind a FinePruner that changes nothing."""
    return FinePruner(model=patch_badnet.model, prune_fraction=0.0, epochs=0).fit(patch_badnet.X_val, patch_badnet.y_val)


@pytest.fixture(scope="module")
def head_refitted(patch_badnet):
    """A repair that removes this backdoor (true ASR 0 % when measured)."""
    return FinePruner(model=patch_badnet.model, fine_tuning="lda", prune_fraction=0.0, random_state=0).fit(
        patch_badnet.X_val, patch_badnet.y_val
    )


def test_adaptive_asr_tells_a_repaired_model_from_an_unrepaired_one(
    patch_badnet, adaptive_scoring, unrepaired, head_refitted, no_attack_code
):
    X, y = patch_badnet.X_test, patch_badnet.y_test
    true_asr = {
        name: attack_success_rate(patch_badnet.y_target, estimator.predict(patch_badnet.X_poisoned))
        for name, estimator in [("unrepaired", unrepaired), ("repaired", head_refitted)]
    }
    assert true_asr["unrepaired"] > 0.9 and true_asr["repaired"] < 0.05  # what the check below relies on
    unrepaired_asr = -adaptive_scoring["asr"](unrepaired, X, y)
    repaired_asr = -adaptive_scoring["asr"](head_refitted, X, y)
    assert unrepaired_asr > 0.9
    assert repaired_asr < 0.3 and repaired_asr < unrepaired_asr - 0.6
    # deterministic: the attack's minibatches and start are fixed by random_state
    assert -adaptive_scoring["asr"](head_refitted, X, y) == repaired_asr


def test_adaptive_scorer_pickles_and_scores_the_same(patch_badnet, adaptive_scoring, unrepaired):
    import pickle

    scorer = adaptive_scoring["asr"]
    again = pickle.loads(pickle.dumps(scorer))
    X, y = patch_badnet.X_test[:120], patch_badnet.y_test[:120]
    assert again(unrepaired, X, y) == scorer(unrepaired, X, y)
    assert "attack='adaptive'" in repr(scorer) and "targets=[0]" in repr(scorer)


def test_budgeted_trigger_stays_within_its_budget_and_leaves_the_model_alone(patch_badnet):
    from skbackdoor._budgeted_trigger import budgeted_trigger

    model = patch_badnet.model
    weights = [w.copy() for w in model.get_weights()]
    X = patch_badnet.X_val[patch_badnet.y_val != 0]
    start_mask = np.full((8, 8), 0.5, dtype=np.float32)  # norm 32, far over the budget
    start_pattern = np.full((8, 8, 1), 8.0, dtype=np.float32)
    mask, pattern = budgeted_trigger(
        model, X, 0, start_mask, start_pattern, budget=4.0, pixel_range=(0.0, 16.0), seed=0
    )
    assert mask.shape == (8, 8) and pattern.shape == (8, 8, 1)
    assert mask.sum() <= 4.0 + 1e-4 and mask.min() >= 0 and mask.max() <= 1
    assert pattern.min() >= 0 and pattern.max() <= 16
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_adaptive_scorer_attacks_the_model_inside_each_estimator(patch_badnet, unrepaired, head_refitted):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from skbackdoor import GoodNetClassifier
    from skbackdoor._surrogate import _attacked_models

    assert _attacked_models(unrepaired) == [unrepaired.model_]
    goodnet = GoodNetClassifier(badnet=patch_badnet.model, repaired=head_refitted, answer="repaired").fit(
        patch_badnet.X_val, patch_badnet.y_val
    )
    assert _attacked_models(goodnet) == [goodnet.repaired_.model_]
    # A GoodNet that may answer with B's label is attacked through B too.
    for answer in ("reference", "confident"):
        judging = GoodNetClassifier(badnet=patch_badnet.model, repaired=head_refitted, answer=answer).fit(
            patch_badnet.X_val, patch_badnet.y_val
        )
        models = _attacked_models(judging)
        assert len(models) == 2 and models[0] is judging.repaired_.model_ and models[1] is judging.badnet_
    reference = FinePruner(model=patch_badnet.model, prune_fraction=0.1, epochs=0)
    with_b0 = GoodNetClassifier(
        badnet=patch_badnet.model, repaired=head_refitted, reference=reference, answer="reference"
    ).fit(patch_badnet.X_val, patch_badnet.y_val)
    assert _attacked_models(with_b0)[1] is with_b0.reference_.model_
    watched = GoodNetClassifier(
        badnet=patch_badnet.model, detector=STRIPDetector(model=patch_badnet.model, n_overlays=5, random_state=0)
    ).fit(patch_badnet.X_val, patch_badnet.y_val)
    assert _attacked_models(watched) == [watched.badnet_]
    pipeline = make_pipeline(FunctionTransformer(), unrepaired)
    with pytest.raises(TypeError, match="attack='fixed'"):
        _attacked_models(pipeline)


def test_adaptive_asr_of_a_goodnet_is_its_most_successful_attack(patch_badnet, adaptive_scoring, head_refitted):
    from skbackdoor import GoodNetClassifier

    X, y = patch_badnet.X_test[:200], patch_badnet.y_test[:200]
    scorer = adaptive_scoring["asr"]
    # frr=0: the threshold is the largest calibration score, so G answers with B on
    # whatever B' disagrees with only as much as on clean images.
    judging = GoodNetClassifier(badnet=patch_badnet.model, repaired=head_refitted, answer="reference", frr=0.0).fit(
        patch_badnet.X_val, patch_badnet.y_val
    )
    hits, total = scorer.hits_per_model(judging, X, y)
    assert hits.shape == (1, 2) and total == int(np.sum(y != 0))
    assert scorer(judging, X, y) == -hits.max() / total
    repaired_only = GoodNetClassifier(badnet=patch_badnet.model, repaired=head_refitted, answer="repaired").fit(
        patch_badnet.X_val, patch_badnet.y_val
    )
    assert scorer.hits_per_model(repaired_only, X, y)[0].shape == (1, 1)


def test_adaptive_scorer_needs_the_fold_labels(patch_badnet, adaptive_scoring, unrepaired):
    with pytest.raises(ValueError, match="needs the labels of the fold"):
        adaptive_scoring["asr"](unrepaired, patch_badnet.X_test)
    with pytest.raises(ValueError, match="shape"):
        adaptive_scoring["asr"](unrepaired, np.zeros((4, 9, 9, 1), dtype=np.float32), np.zeros(4))
