"""The pruning sweep engine: its cache, rows=, and agreement with re-running the pruned network."""

import keras
import numpy as np
import pytest

from skbackdoor._pruning_sweep import _naive_pruning_curve, _PruningSweep
from skbackdoor.models import predict_proba_batches


@pytest.fixture(scope="module")
def net_and_data(digits):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 16)(inputs)
    x = keras.layers.Conv2D(10, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    X, _ = digits
    X = X[:240]
    y = predict_proba_batches(model, X).argmax(axis=1)
    y[::3] = (y[::3] + 1) % 10
    return model, X, y


def test_the_cache_knows_its_images_and_channel_means(net_and_data):
    model, X, _ = net_and_data
    sweep = _PruningSweep(model, "conv")
    cache, sums = sweep.cache(X)
    assert cache.n_images == len(X) and sums is cache.channel_sums
    activations = keras.Model(model.inputs, model.get_layer("conv").output).predict(X, verbose=0)
    np.testing.assert_allclose(cache.channel_means, activations.mean(axis=(0, 1, 2)), rtol=1e-5)


def test_rows_measure_the_curve_on_a_subset_without_copying_the_cache(net_and_data):
    model, X, y = net_and_data
    sweep = _PruningSweep(model, "conv")
    cache, sums = sweep.cache(X)
    order = np.argsort(sums, kind="stable")
    rows = np.sort(np.random.default_rng(0).choice(len(X), size=70, replace=False))
    on_rows = sweep.accuracy_curve(cache, y, order, rows=rows)
    np.testing.assert_array_equal(on_rows, _naive_pruning_curve(model, "conv", X[rows], y[rows], order))
    np.testing.assert_array_equal(sweep.accuracy_curve(cache, y, order, rows=rows, floats_per_call=500), on_rows)
    np.testing.assert_array_equal(sweep.accuracy_curve(cache, y, order), _naive_pruning_curve(model, "conv", X, y, order))
    assert len(on_rows) == sweep.n_channels + 1


def test_bad_calls_are_refused(net_and_data):
    model, X, y = net_and_data
    sweep = _PruningSweep(model, "conv")
    cache, sums = sweep.cache(X)
    order = np.argsort(sums)
    with pytest.raises(ValueError, match="y has 10 labels but the cache holds 240 images"):
        sweep.accuracy_curve(cache, y[:10], order)
    with pytest.raises(ValueError, match="at least one image"):
        sweep.accuracy_curve(cache, y, order, rows=np.array([], dtype=int))


def test_building_the_sweep_leaves_the_model(net_and_data):
    model, X, _ = net_and_data
    before = [w.copy() for w in model.get_weights()]
    sweep = _PruningSweep(model, "conv")
    cache, sums = sweep.cache(X)
    sweep.accuracy_curve(cache, np.zeros(len(X), dtype=int), np.argsort(sums))
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert sweep.frontier is not None and [part.layer.name for part in sweep.frontier] == [model.layers[-1].name]


def test_a_dense_classifier_reading_the_channels_needs_no_compiled_loop(net_and_data):
    model, X, y = net_and_data
    sweep = _PruningSweep(model, "conv")
    cache, sums = sweep.cache(X)
    order = np.argsort(sums, kind="stable")
    np.testing.assert_array_equal(sweep.accuracy_curve(cache, y, order), _naive_pruning_curve(model, "conv", X, y, order))
    assert "incremental" not in sweep._functions  # the steps ran as eager operations, nothing was traced

    # A hidden Dense layer between: the frontier is not the output, the compiled loop runs.
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 16)(inputs))
    x = keras.layers.Dense(12, activation="relu")(keras.layers.Flatten()(x))
    deeper = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    sweep = _PruningSweep(deeper, "conv")
    cache, sums = sweep.cache(X)
    order = np.argsort(sums, kind="stable")
    np.testing.assert_array_equal(sweep.accuracy_curve(cache, y, order), _naive_pruning_curve(deeper, "conv", X, y, order))
    assert "incremental" in sweep._functions
