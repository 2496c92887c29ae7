"""Tests of the closed-form head projection (``skbackdoor._head_projection``) and its use in NeuralCleanse."""

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

import keras

from skbackdoor import NeuralCleanse
from skbackdoor._head_projection import HeadProjection, projectable_head
from skbackdoor.models import copy_model, predict_proba_batches


def _accuracy(predicted, truth):
    return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def _dense_net(seed=0, *, head_bias=True, head_activation="softmax"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Dense(12, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Dense(4, activation=head_activation, use_bias=head_bias, name="head")(hidden)
    return keras.Model(inputs, outputs)


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 6, 6, 1)).astype("float32")


def _head_input(model, X):
    return keras.Model(model.inputs, model.get_layer("head").input).predict(X, verbose=0).astype(np.float64)


def test_fold_is_the_oblique_projection_written_out():
    model = _dense_net()
    X, X_triggered = _images(40), _images(40, seed=1)
    X_triggered[:, :2, :2] = 1.0
    kernel, bias = [w.astype(np.float64) for w in model.get_layer("head").get_weights()]
    projection = HeadProjection(model, X).add(X_triggered)
    projection.fold()

    F = _head_input(model, X)
    m = F.mean(axis=0)
    D = (_head_input(model, X_triggered) - F).mean(axis=0)[:, None]
    sigma = ledoit_wolf(F)[0]
    A = np.linalg.solve(sigma, D)
    P = D @ np.linalg.solve(A.T @ D, A.T)  # f -> f - P (f - m)
    new_kernel, new_bias = model.get_layer("head").get_weights()
    np.testing.assert_allclose(new_kernel, kernel - P.T @ kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_bias, bias + (P @ m) @ kernel, rtol=1e-4, atol=1e-6)
    # Blind to the shift, and the clean mean's scores are kept.
    np.testing.assert_allclose(D[:, 0] @ new_kernel, 0, atol=1e-5)
    np.testing.assert_allclose(m @ new_kernel + new_bias, m @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_every_added_shift_is_removed_and_folds_start_from_the_original_head():
    model, twin = _dense_net(), _dense_net()
    X = _images(30)
    triggered = []
    for corner in (slice(0, 2), slice(4, 6)):
        Xt = X.copy()
        Xt[:, corner, corner] = 1.0
        triggered.append(Xt)
    original = [w.copy() for w in model.get_weights()]
    projection = HeadProjection(model, X)
    projection.add(triggered[0]).fold()
    projection.add(triggered[1]).fold()
    kernel = model.get_layer("head").get_weights()[0]
    assert projection.shifts.shape == (2, 12)
    np.testing.assert_allclose(projection.shifts @ kernel, 0, atol=1e-5)
    # Only the head changed.
    for before, after, weight in zip(original, model.get_weights(), model.weights):
        if "head" not in weight.path:
            np.testing.assert_array_equal(before, after)
    # Folding twice equals folding both shifts at once into the untouched head.
    at_once = HeadProjection(twin, X).add(triggered[0]).add(triggered[1])
    at_once.fold()
    for a, b in zip(model.get_layer("head").get_weights(), twin.get_layer("head").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_1x1_convolution_head_is_projected_at_every_position():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    scores = keras.layers.Conv2D(3, 1, name="head")(features)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(scores)))
    X, Xt = _images(30), _images(30)
    Xt[:, :2, :2] = 1.0
    projection = HeadProjection(model, X).add(Xt)
    projection.fold()
    kernel = model.get_layer("head").get_weights()[0].reshape(8, 3)
    np.testing.assert_allclose(projection.shifts @ kernel, 0, atol=1e-5)
    assert projection.features(X).shape == (30, 8)  # averaged over the 6 x 6 positions


@pytest.mark.parametrize("make, message", [
    (lambda: _dense_net(head_bias=False), "no bias"),
    (lambda: keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 6), keras.layers.Flatten()]),
     "neither a Dense layer nor a 1x1"),
])
def test_unsupported_heads_are_refused_before_any_change(make, message):
    model = make()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message) as error:
        HeadProjection(model, _images(10))
    assert "projection_rounds=0" in str(error.value)
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, a)


def test_a_head_inside_a_nested_model_is_refused_with_the_way_out():
    # The head's input belongs to the inner model's graph, which the outer inputs do not reach.
    inner = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(3, activation="softmax", name="head")])
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, inner(inputs))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="cannot be read from the model's graph.*projection_rounds=0"):
        HeadProjection(model, _images(10))
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, a)


def test_any_dense_activation_is_accepted():
    assert projectable_head(_dense_net(head_activation="sigmoid")).name == "head"


# ---------------------------------------------------------------- in NeuralCleanse


def test_projection_alone_removes_the_digits_backdoor_and_keeps_clean_accuracy(patch_badnet):
    net = patch_badnet
    cleanse = NeuralCleanse(model=net.model, steps=300, epochs=0, random_state=0).fit(net.X_val, net.y_val)
    assert cleanse.history_ == {} and cleanse.unlearning_rounds_ == 0
    assert cleanse.unlearned_labels_.tolist() == [net.target]
    assert cleanse.projection_mask_norms_.shape == (cleanse.projection_rounds - 1, 1)
    asr_before = _accuracy(predict_proba_batches(net.model, net.X_poisoned).argmax(1), net.y_target)
    cca_before = _accuracy(predict_proba_batches(net.model, net.X_test).argmax(1), net.y_test)
    assert asr_before > 0.8
    assert _accuracy(cleanse.predict(net.X_poisoned), net.y_target) < 0.1
    assert cleanse.score(net.X_test, net.y_test) >= cca_before - 0.02
    # Only the head of the repaired copy differs from the BadNet.
    changed = [not np.array_equal(a, b) for a, b in zip(net.model.get_weights(), cleanse.model_.get_weights())]
    assert sum(changed) == 2 and changed[-2:] == [True, True]


def test_projection_is_deterministic(patch_badnet):
    net = patch_badnet
    fits = [NeuralCleanse(model=net.model, steps=30, projection_rounds=3, epochs=0, random_state=0).fit(
        net.X_val, net.y_val) for _ in range(2)]
    np.testing.assert_array_equal(fits[0].projection_mask_norms_, fits[1].projection_mask_norms_)
    for a, b in zip(fits[0].model_.get_weights(), fits[1].model_.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_unsupported_head_is_refused_before_the_search(patch_badnet, monkeypatch):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(10, 8), keras.layers.Flatten(),
                              keras.layers.Softmax()])

    def no_search(*args, **kwargs):
        raise AssertionError("the search ran")

    monkeypatch.setattr(NeuralCleanse, "_trigger_search", no_search)
    with pytest.raises(ValueError, match="projection_rounds=0"):
        NeuralCleanse(model=model, steps=5).fit(patch_badnet.X_val, patch_badnet.y_val)


def test_the_users_model_is_untouched(patch_badnet):
    before = [w.copy() for w in patch_badnet.model.get_weights()]
    copy = copy_model(patch_badnet.model)
    NeuralCleanse(model=copy, steps=30, projection_rounds=2, epochs=0, random_state=0).fit(
        patch_badnet.X_val, patch_badnet.y_val)
    for b, a in zip(before, copy.get_weights()):
        np.testing.assert_array_equal(b, a)
