"""The closed-form head re-fit (shrinkage linear discriminant) and FinePruner(fine_tuning="lda")."""

import warnings

import keras
import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

from skbackdoor import FinePruner
from skbackdoor._head_refit import head_features, linear_discriminant, refit_head, refittable_head
from skbackdoor.models import copy_model, predict_proba_batches


def _asr(model, net):
    return float(np.mean(predict_proba_batches(model, net.X_poisoned).argmax(1) == net.y_target))


def _reference_discriminant(X, y):
    """The same discriminant written out directly: per-class Ledoit-Wolf, d x d solve."""
    classes, counts = np.unique(y, return_counts=True)
    priors = counts / len(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    sigma = sum(p * ledoit_wolf(X[y == c] - m, assume_centered=True)[0] for c, p, m in zip(classes, priors, means))
    coef = np.linalg.solve(sigma, means.T)
    return coef, -0.5 * np.sum(means.T * coef, axis=0) + np.log(priors)


@pytest.mark.parametrize("n, d", [(300, 40), (60, 200)])
def test_the_discriminant_is_per_class_ledoit_wolf_lda(n, d):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, d) + 0.3 * y[:, None]
    reference_coef, reference_intercept = _reference_discriminant(X, y)
    coef, intercept = linear_discriminant(X, y, 4)
    np.testing.assert_allclose(coef, reference_coef, rtol=1e-7, atol=1e-9 * np.abs(reference_coef).max())
    np.testing.assert_allclose(intercept, reference_intercept, rtol=1e-7, atol=1e-7)


def test_classes_without_clean_images_are_never_predicted():
    rng = np.random.default_rng(1)
    y = rng.choice([0, 2, 3], size=90)
    X = rng.normal(size=(90, 12)) + y[:, None]
    coef, intercept = linear_discriminant(X, y, 5)
    scores = X @ coef + intercept
    assert set(np.unique(scores.argmax(1))) <= {0, 2, 3}
    assert np.all(coef[:, [1, 4]] == 0)


def test_a_constant_feature_gets_no_weight():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 50)
    X = rng.normal(size=(50, 80)) + y[:, None]
    X[:, 5] = 0.0  # a pruned channel's feature
    coef, intercept = linear_discriminant(X, y, 3)
    assert np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))
    np.testing.assert_allclose(coef[5], 0.0, atol=1e-12)


@pytest.fixture(scope="module")
def refitted(patch_badnet):
    model = copy_model(patch_badnet.model)
    before = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    refit_head(model, patch_badnet.X_val, patch_badnet.y_val)
    return model, before


def test_refit_changes_the_head_only(refitted):
    model, before = refitted
    head = refittable_head(model)
    changed = {w.path for w in model.weights if not np.array_equal(keras.ops.convert_to_numpy(w), before[w.path])}
    assert changed == {head.kernel.path, head.bias.path}


def test_the_refitted_model_predicts_the_discriminant(refitted, patch_badnet):
    model, _ = refitted
    coef, intercept = linear_discriminant(
        head_features(model, patch_badnet.X_val), patch_badnet.y_val, 10
    )
    scores = head_features(model, patch_badnet.X_test) @ coef + intercept
    predicted = predict_proba_batches(model, patch_badnet.X_test).argmax(1)
    assert np.mean(predicted == scores.argmax(1)) == 1.0


def test_refit_removes_the_digits_patch_backdoor_and_keeps_accuracy(refitted, patch_badnet):
    model, _ = refitted
    badnet_accuracy = np.mean(predict_proba_batches(patch_badnet.model, patch_badnet.X_test).argmax(1) == patch_badnet.y_test)
    accuracy = np.mean(predict_proba_batches(model, patch_badnet.X_test).argmax(1) == patch_badnet.y_test)
    before = _asr(patch_badnet.model, patch_badnet)
    after = _asr(model, patch_badnet)
    assert before > 0.9
    assert after < 0.1, after
    assert accuracy > badnet_accuracy - 0.05, (badnet_accuracy, accuracy)


def _nin(n_classes=10):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 16)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.Conv2D(n_classes, 1, name="classifier")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def test_a_1x1_convolution_head_before_global_pooling_is_refitted(digits):
    X, y = digits
    keras.utils.set_random_seed(0)
    model = _nin()
    refit_head(model, X[:400], y[:400])
    coef, intercept = linear_discriminant(head_features(model, X[:400]), y[:400], 10)
    scores = head_features(model, X[400:600]) @ coef + intercept
    np.testing.assert_array_equal(predict_proba_batches(model, X[400:600]).argmax(1), scores.argmax(1))


@pytest.mark.parametrize(
    "head, message",
    [
        (keras.layers.Dense(10, activation="sigmoid", name="head"), "linear or softmax head"),
        (keras.layers.Conv2D(10, 3, name="head"), "1x1 convolution"),
        # softmax per position, then averaging: not a linear head on the averaged features
        (keras.layers.Conv2D(10, 1, activation="softmax", name="head"), "1x1 convolution"),
        (keras.layers.Dense(10, use_bias=False, activation="softmax", name="head"), "no bias"),
    ],
    ids=["sigmoid-dense", "3x3-conv", "softmax-1x1-conv", "dense-without-bias"],
)
def test_heads_that_are_not_linear_classifiers_are_refused(head, message):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    if isinstance(head, keras.layers.Dense):
        x = head(keras.layers.Flatten()(x))
    else:
        x = keras.layers.GlobalAveragePooling2D()(head(x))
    model = keras.Model(inputs, x)
    weights = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match=message):
        refit_head(model, np.zeros((4, 8, 8, 1), "float32"), np.arange(4))
    for before, after in zip(weights, model.weights):  # refused before any change
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))


def test_fine_pruner_lda_refits_the_pruned_network(patch_badnet):
    original = [keras.ops.convert_to_numpy(w).copy() for w in patch_badnet.model.weights]
    pruner = FinePruner(model=patch_badnet.model, fine_tuning="lda", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guard passes: no fallback warning
        pruner.fit(patch_badnet.X_val, patch_badnet.y_val)
    assert pruner.fine_tuning_ == "lda" and pruner.history_ == {}
    assert pruner.fine_tuning_check_["passed"]
    conv = pruner.model_.get_layer(pruner.layer_)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv.kernel)[..., pruner.pruned_channels_], 0.0)
    assert _asr(pruner.model_, patch_badnet) < 0.1
    for before, after in zip(original, patch_badnet.model.weights):  # the user's model is untouched
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    again = FinePruner(model=patch_badnet.model, fine_tuning="lda", random_state=0).fit(
        patch_badnet.X_val, patch_badnet.y_val
    )
    np.testing.assert_array_equal(pruner.predict_proba(patch_badnet.X_test), again.predict_proba(patch_badnet.X_test))


def test_fine_pruner_lda_refuses_a_head_it_cannot_refit(digits):
    X, y = digits
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Dense(10, activation="sigmoid", name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="linear or softmax head"):
        FinePruner(model=model, fine_tuning="lda", prune_fraction=0.25).fit(X[:200], y[:200])


def test_the_head_refit_is_grid_searchable_and_round_trips(patch_badnet, tmp_path):
    import joblib
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(
        FinePruner(model=patch_badnet.model, prune_fraction=0.0, epochs=1, random_state=0),
        {"fine_tuning": ["sgd", "lda"]},
        cv=2,
    ).fit(patch_badnet.X_val, patch_badnet.y_val)
    assert search.cv_results_["param_fine_tuning"].tolist() == ["sgd", "lda"]
    fitted = clone(search.best_estimator_).set_params(fine_tuning="lda").fit(patch_badnet.X_val, patch_badnet.y_val)
    joblib.dump(fitted, tmp_path / "pruner.joblib")
    loaded = joblib.load(tmp_path / "pruner.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(patch_badnet.X_test), fitted.predict_proba(patch_badnet.X_test))
