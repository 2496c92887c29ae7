"""The architectures BadNets come in, on sklearn digits: loading, passes, cutting, pruning.

Each tiny net is trained for a few epochs by its "trainer", then goes through
``load_badnet`` (with ``input_scale``), the compiled forward passes, ``split_at`` at the
default pruned layer, and ``prune_channels``; a cached sweep (the head run once, the
tail once per step) must equal the naive sweep (prune a copy, re-run everything), and
the trainer's model must come out untouched.
"""

import json

import keras
import numpy as np
import pytest

from skbackdoor.models import (
    copy_model,
    default_prune_layer,
    forward_batches,
    layer_activations,
    load_badnet,
    model_from_bytes,
    model_to_bytes,
    outputs_are_probabilities,
    predict_proba_batches,
    prune_channels,
    pruned_channel_mask,
    split_at,
)

layers = keras.layers


def sequential():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, activation="relu", name="conv_a"),
        layers.Conv2D(8, 3, activation="relu", name="conv_b"),
        layers.Flatten(name="flat"),
        layers.Dense(10, activation="softmax", name="output"),
    ])


def branch():
    """Like the CSAW DeepID net: a dense branch from conv_a beside the one through conv_b."""
    inputs = keras.Input((8, 8, 1))
    a = layers.Conv2D(6, 3, activation="relu", name="conv_a")(inputs)
    b = layers.Conv2D(8, 3, activation="relu", name="conv_b")(a)
    left = layers.Dense(16, name="fc_1")(layers.Flatten(name="flat_a")(a))
    right = layers.Dense(16, name="fc_2")(layers.Flatten(name="flat_b")(b))
    x = layers.Activation("relu", name="relu")(layers.Add(name="add")([left, right]))
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="output")(x))


def batchnorm():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, name="conv_a"), layers.BatchNormalization(name="bn_a"), layers.Activation("relu"),
        layers.Conv2D(8, 3, name="conv_b"), layers.BatchNormalization(name="bn_b"), layers.Activation("relu"),
        layers.Flatten(), layers.Dense(10, activation="softmax", name="output"),
    ])


def global_pool():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        layers.Conv2D(12, 3, activation="relu", name="conv_b"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(10, activation="softmax", name="output"),
    ])


def conv_head():
    """Network in network: the last convolution (1x1, 10 channels) gives the class scores."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(12, 3, activation="relu", name="conv_a"),
        layers.Conv2D(10, 1, name="class_scores"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Softmax(name="softmax"),
    ])


def dropout():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, activation="relu", name="conv_a"), layers.Dropout(0.2),
        layers.Conv2D(8, 3, activation="relu", name="conv_b"), layers.SpatialDropout2D(0.2),
        layers.Flatten(), layers.Dropout(0.3), layers.Dense(10, activation="softmax", name="output"),
    ])


def logits():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, activation="relu", name="conv_a"),
        layers.Conv2D(8, 3, activation="relu", name="conv_b"),
        layers.Flatten(), layers.Dense(10, name="logits"),
    ])


def nested():
    features = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, activation="relu", name="conv_a"),
        layers.Conv2D(8, 3, activation="relu", name="conv_b"),
        layers.Flatten(name="flat"),
    ], name="features")
    inputs = keras.Input((8, 8, 1), name="image")
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="output")(features(inputs)))


# architecture -> (builder, the default pruned layer, whether the output is probabilities)
ARCHITECTURES = {
    "sequential": (sequential, "conv_b", True),
    "branch": (branch, "conv_a", True),
    "batchnorm": (batchnorm, "conv_b", True),
    "global_pool": (global_pool, "conv_b", True),
    "conv_head": (conv_head, "conv_a", True),
    "dropout": (dropout, "conv_b", True),
    "logits": (logits, "conv_b", False),
    "nested": (nested, "conv_b", True),
}


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:600], y[:600], X[1200:1500], y[1200:1500]


def trained(name, data):
    """What the trainer ships: the architecture, trained on pixels / 16."""
    build, _, probabilities = ARCHITECTURES[name]
    keras.utils.set_random_seed(0)
    model = build()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    X_train, y_train, _, _ = data
    model.fit(X_train / 16.0, y_train, epochs=3, batch_size=32, verbose=0)
    return model


def snapshot(model):
    return (
        json.dumps(model.get_config(), default=str),
        [w.numpy().copy() for w in model.weights],
        [getattr(w, "constraint", None) for w in model.weights],
    )


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_loads_runs_cuts_and_prunes(name, data):
    _, expected_layer, probabilities = ARCHITECTURES[name]
    model = trained(name, data)
    before = snapshot(model)
    _, _, X, y = data

    badnet = load_badnet(model, input_scale=1 / 16)
    outputs = forward_batches(badnet, X, batch_size=64)
    np.testing.assert_allclose(outputs, np.asarray(model(X / 16.0, training=False)), rtol=1e-4, atol=1e-6)
    assert outputs_are_probabilities(badnet) is probabilities
    proba = predict_proba_batches(badnet, X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(proba.argmax(axis=1) == y) > 0.2  # trained (3 epochs), chance is 0.1

    layer = default_prune_layer(badnet)
    assert layer == expected_layer
    head, tail = split_at(badnet, layer)
    activations = forward_batches(head, X)
    np.testing.assert_array_equal(layer_activations(badnet, X, layer), activations)
    np.testing.assert_allclose(forward_batches(tail, activations), outputs, rtol=1e-4, atol=1e-6)

    # the cached sweep (head once, tail per step) equals pruning a copy and re-running it all
    order = np.argsort(activations.mean(axis=(0, 1, 2)))
    n_channels = activations.shape[-1]
    pruned = copy_model(badnet)
    for step in range(n_channels):
        keep = np.ones(n_channels, dtype=np.float32)
        keep[order[:step]] = 0
        cached = forward_batches(tail, activations * keep)
        prune_channels(pruned, layer, order[:step])
        naive = forward_batches(pruned, X)
        np.testing.assert_allclose(cached, naive, rtol=1e-4, atol=1e-5)
    assert pruned_channel_mask(pruned, layer).sum() == 1

    restored = model_from_bytes(model_to_bytes(pruned))
    np.testing.assert_array_equal(forward_batches(restored, X), forward_batches(pruned, X))

    after = snapshot(model)
    assert after[0] == before[0]
    for weight_after, weight_before in zip(after[1], before[1]):
        np.testing.assert_array_equal(weight_after, weight_before)
    assert after[2] == before[2]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_estimator_fits_and_predicts_on_every_architecture(name, data):
    """The four estimators on each architecture, loading it themselves; the compiled
    pruning sweep of FinePruner equals the naive one; the trainer's model is untouched."""
    from skbackdoor import FinePruner, GoodNetClassifier, NeuralCleanse, STRIPDetector
    from skbackdoor._pruning_sweep import _naive_pruning_curve, _PruningSweep

    model = trained(name, data)
    before = snapshot(model)
    X_fit, y_fit, X, y = data
    X_fit, y_fit = X_fit[:300], y_fit[:300]
    loading = dict(input_scale=1 / 16)

    pruner = FinePruner(model=model, fine_tuning="plain", epochs=1, prune_fraction=0.25,
                        random_state=0, **loading).fit(X_fit, y_fit)
    assert pruner.layer_ == ARCHITECTURES[name][1]
    assert pruner.predict(X).shape == (len(X),) and np.mean(pruner.predict(X) == y) > 0.2
    cleanse = NeuralCleanse(model=model, steps=20, epochs=1, random_state=0, **loading).fit(X_fit, y_fit)
    assert cleanse.predict_proba(X).shape == (len(X), 10)
    detector = STRIPDetector(model=model, n_overlays=3, frr=0.05, random_state=0, **loading).fit(X_fit)
    assert set(np.unique(detector.predict(X))) <= {-1, 1}
    goodnet = GoodNetClassifier(badnet=model, repaired=pruner, detector=detector, **loading).fit(X_fit, y_fit)
    assert set(np.unique(goodnet.predict(X))) <= set(range(11))

    badnet = load_badnet(model, **loading)
    layer = pruner.layer_
    sweep = _PruningSweep(badnet, layer)
    cache, sums = sweep.cache(X)
    order = np.argsort(sums)
    np.testing.assert_allclose(sweep.accuracy_curve(cache, y, order), _naive_pruning_curve(badnet, layer, X, y, order),
                               atol=1.5 / len(y))  # a tie in the argmax may flip one image

    after = snapshot(model)
    assert after[0] == before[0] and after[2] == before[2]
    for weight_after, weight_before in zip(after[1], before[1]):
        np.testing.assert_array_equal(weight_after, weight_before)
