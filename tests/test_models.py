"""skbackdoor.models: loading BadNets, batched forward passes, cutting, pruning, copying."""

import gc
import logging
import weakref

import h5py
import keras
import numpy as np
import pytest

from skbackdoor._forward import compiled_forward
from skbackdoor.models import (
    ARCHITECTURES,
    conv_layer_names,
    copy_model,
    csaw_deepid,
    forward_batches,
    layer_activations,
    load_badnet,
    model_from_bytes,
    model_input_shape,
    model_n_classes,
    model_to_bytes,
    predict_proba_batches,
    prune_channels,
    pruned_channel_mask,
    resolve_conv_layer,
    split_at,
)

CSAW_FILES = [
    "sunglasses_bd_weights.h5",
    "anonymous_1_bd_weights.h5",
    "anonymous_2_bd_weights.h5",
    "multi_trigger_multi_target_bd_weights.h5",
    "lab3_bd_weights.h5",
]


def tiny_model(n_classes=3, *, logits=False, lambda_layer=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(n_classes, activation=None if logits else "softmax", name="output")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 16, size=(37, 8, 8, 1)).astype(np.float32)


# ----------------------------------------------------------------------------- building


def test_csaw_deepid_matches_the_challenge_architecture():
    model = csaw_deepid()
    assert model.count_params() == 601_643
    assert model_input_shape(model) == (55, 47, 3)
    assert model_n_classes(model) == 1283
    expected = ["conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "flatten_1",
                "fc_1", "conv_4", "flatten_2", "fc_2", "add_1", "activation_1", "output"]
    assert set(expected) <= {layer.name for layer in model.layers}
    assert conv_layer_names(model) == ["conv_1", "conv_2", "conv_3", "conv_4"]
    assert model_n_classes(csaw_deepid(n_classes=7)) == 7


# ----------------------------------------------------------------------------- loading


def test_load_badnet_returns_a_model_unchanged():
    model = tiny_model()
    assert load_badnet(model) is model


@pytest.mark.parametrize("filename", CSAW_FILES)
def test_every_csaw_weight_file_loads_with_the_files_weights(csaw_dir, filename):
    path = csaw_dir / filename
    model = load_badnet(path, architecture="csaw-deepid")
    with h5py.File(path, "r") as handle:
        for layer in ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output"):
            kernel = handle[f"{layer}/{layer}/kernel:0"][()]
            bias = handle[f"{layer}/{layer}/bias:0"][()]
            np.testing.assert_array_equal(model.get_layer(layer).kernel.numpy(), kernel)
            np.testing.assert_array_equal(model.get_layer(layer).bias.numpy(), bias)


def test_input_scale_keeps_layer_names_and_takes_raw_pixels(csaw_dir):
    path = csaw_dir / "sunglasses_bd_weights.h5"
    plain = load_badnet(path, architecture="csaw-deepid")
    scaled = load_badnet(path, architecture="csaw-deepid", input_scale=1 / 255)
    assert scaled.get_layer("input_scale") is not None
    assert [layer.name for layer in scaled.layers][2:] == [layer.name for layer in plain.layers][1:]
    assert load_badnet(plain, input_scale=0.5).get_layer("conv_3") is plain.get_layer("conv_3")
    X = np.random.default_rng(1).integers(0, 256, size=(16, 55, 47, 3)).astype(np.float32)
    np.testing.assert_allclose(
        forward_batches(scaled, X), forward_batches(plain, X / 255.0), rtol=1e-4, atol=1e-6
    )


def test_input_scale_on_a_sequential_model(images):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
    scaled = load_badnet(model, input_scale=0.5)
    np.testing.assert_allclose(forward_batches(scaled, images), forward_batches(model, images * 0.5),
                               rtol=1e-5, atol=1e-6)
    assert scaled.get_layer("c") is model.get_layer("c")


def test_full_model_files_load(tmp_path, images):
    model = tiny_model()
    keras_path = tmp_path / "model.keras"
    model.save(keras_path)
    h5_path = tmp_path / "legacy.h5"
    model.save(h5_path)
    for path in (keras_path, str(h5_path)):
        loaded = load_badnet(path)
        np.testing.assert_allclose(forward_batches(loaded, images), forward_batches(model, images), rtol=1e-6)


def test_weights_only_file_with_a_callable_architecture(tmp_path, images):
    model = tiny_model()
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    loaded = load_badnet(path, architecture=lambda: tiny_model(seed=1))
    np.testing.assert_allclose(forward_batches(loaded, images), forward_batches(model, images), rtol=1e-6)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        load_badnet(tmp_path / "absent.h5", architecture="csaw-deepid")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_corrupt_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ValueError, match="Could not"):
        load_badnet(path, architecture="csaw-deepid" if suffix == ".h5" else None)


def test_weights_only_file_needs_an_architecture(csaw_dir):
    with pytest.raises(ValueError, match="holds weights only"):
        load_badnet(csaw_dir / "lab3_bd_weights.h5")


def test_unknown_architecture_names_the_known_ones(csaw_dir):
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'.*csaw-deepid"):
        load_badnet(csaw_dir / "lab3_bd_weights.h5", architecture="resnet")
    assert "csaw-deepid" in ARCHITECTURES


def test_weights_that_do_not_fit_the_architecture(csaw_dir):
    with pytest.raises(ValueError, match="do not match the architecture"):
        load_badnet(csaw_dir / "lab3_bd_weights.h5", architecture=lambda: csaw_deepid(n_classes=10))


def test_lambda_layers_are_refused_in_files_under_safe_mode(tmp_path):
    model = tiny_model(lambda_layer=True)
    # an in-memory model is the user's own object, already built: not refused
    assert load_badnet(model) is model
    assert load_badnet(model, safe_mode=False) is model
    keras_path = tmp_path / "lambda.keras"
    model.save(keras_path)
    with pytest.raises(ValueError, match="Lambda layer"):
        load_badnet(keras_path)
    h5_path = tmp_path / "lambda.h5"
    model.save(h5_path)
    with pytest.raises(ValueError, match="Lambda layer"):
        load_badnet(h5_path)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="source must be a keras.Model"):
        load_badnet(42)


def test_fitted_scikeras_classifier_is_unwrapped():
    scikeras = pytest.importorskip("scikeras.wrappers", reason="scikeras (optional extra) not installed")
    model = tiny_model()
    clf = scikeras.KerasClassifier(model=model)
    clf.model_ = model  # what fit leaves behind; fitting scikeras itself is not under test
    assert load_badnet(clf) is model


# ----------------------------------------------------------------------------- running


def test_forward_batches_matches_a_direct_call_for_any_batch_size(images):
    model = tiny_model()
    direct = np.asarray(model(images, training=False))
    for batch_size in (1, 5, 64):
        np.testing.assert_allclose(forward_batches(model, images, batch_size=batch_size), direct, rtol=1e-5, atol=1e-7)
    assert forward_batches(model, images[:0]).shape == (0, 3)


def test_predict_proba_applies_softmax_to_logits_only(images):
    logits_model = tiny_model(logits=True)
    proba = predict_proba_batches(logits_model, images)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(proba, keras.ops.convert_to_numpy(keras.ops.softmax(logits_model(images))), rtol=1e-5, atol=1e-7)
    softmax_model = tiny_model()
    np.testing.assert_array_equal(predict_proba_batches(softmax_model, images), forward_batches(softmax_model, images))


def test_progress_callback_counts_every_image(images):
    seen = []
    forward_batches(tiny_model(), images, batch_size=10, progress=seen.append)
    assert seen == [10, 10, 10, 7]


def test_split_at_a_layer_that_feeds_two_branches(csaw_dir):
    model = load_badnet(csaw_dir / "sunglasses_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    X = np.random.default_rng(2).integers(0, 256, size=(20, 55, 47, 3)).astype(np.float32)
    head, tail = split_at(model, "conv_3")
    activations = forward_batches(head, X)
    assert activations.shape == (20, 10, 8, 60)
    np.testing.assert_allclose(forward_batches(tail, activations), forward_batches(model, X), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(layer_activations(model, X, "conv_3"), activations)


def test_split_at_unknown_layer():
    with pytest.raises(ValueError, match="Unknown layer 'nope'"):
        split_at(tiny_model(), "nope")


def test_resolve_conv_layer_defaults_to_the_last_convolution_and_lists_names():
    model = tiny_model()
    assert resolve_conv_layer(model).name == "conv_b"
    assert resolve_conv_layer(model, "conv_a").name == "conv_a"
    with pytest.raises(ValueError, match=r"Unknown layer 'conv_z'.*\['conv_a', 'conv_b'\]"):
        resolve_conv_layer(model, "conv_z")
    with pytest.raises(ValueError, match=r"'output' is a Dense, not a Conv2D.*\['conv_a', 'conv_b'\]"):
        resolve_conv_layer(model, "output")


# ----------------------------------------------------------------------------- pruning and copying


def test_pruned_channels_stay_zero_through_training(images):
    model = tiny_model()
    pruned = copy_model(model)
    prune_channels(pruned, "conv_b", [1, 4])
    conv = pruned.get_layer("conv_b")
    pruned.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    pruned.fit(images, np.arange(len(images)) % 3, epochs=3, batch_size=8, verbose=0)
    assert np.all(conv.kernel.numpy()[..., [1, 4]] == 0) and np.all(conv.bias.numpy()[[1, 4]] == 0)
    assert np.any(conv.kernel.numpy()[..., 0] != 0)
    np.testing.assert_array_equal(pruned_channel_mask(pruned, "conv_b"), [1, 0, 1, 1, 0, 1])
    assert np.all(layer_activations(pruned, images, "conv_b")[..., [1, 4]] == 0)
    # the original is untouched
    assert np.any(model.get_layer("conv_b").kernel.numpy()[..., 1] != 0)
    np.testing.assert_array_equal(pruned_channel_mask(model, "conv_b"), np.ones(6, bool))


def test_pruning_accumulates_and_rejects_bad_channels():
    model = copy_model(tiny_model())
    prune_channels(model, "conv_b", [0])
    prune_channels(model, "conv_b", [2])
    assert pruned_channel_mask(model, "conv_b").tolist() == [False, True, False, True, True, True]
    with pytest.raises(ValueError, match=r"Channels must lie in \[0, 6\)"):
        prune_channels(model, "conv_b", [6])


def test_pruning_refuses_an_activation_that_does_not_silence_the_channel():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, activation="sigmoid", name="conv_sig")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="does not map 0 to 0"):
        prune_channels(model, "conv_sig", [0])


def test_copy_and_bytes_round_trip_keep_weights_and_masks(images):
    model = tiny_model()
    prune_channels(model, "conv_b", [3])
    copied = copy_model(model)
    assert copied is not model
    np.testing.assert_array_equal(forward_batches(copied, images), forward_batches(model, images))
    assert pruned_channel_mask(copied, "conv_b").tolist() == pruned_channel_mask(model, "conv_b").tolist()
    restored = model_from_bytes(model_to_bytes(model))
    np.testing.assert_array_equal(forward_batches(restored, images), forward_batches(model, images))
    assert pruned_channel_mask(restored, "conv_b").tolist() == [True, True, True, False, True, True]
    copied.get_layer("conv_a").kernel.assign(np.zeros_like(copied.get_layer("conv_a").kernel.numpy()))
    assert np.any(model.get_layer("conv_a").kernel.numpy() != 0)


# ----------------------------------------------------------------------------- compiled passes


def test_repeated_passes_trace_once_per_model_and_layer(images):
    model = tiny_model()
    for batch_size in (1, 5, 64, 256):
        forward_batches(model, images, batch_size=batch_size)
        predict_proba_batches(model, images[:7], batch_size=batch_size)
        layer_activations(model, images, "conv_a", batch_size=batch_size)
        layer_activations(model, images, "conv_b", batch_size=batch_size)
    assert compiled_forward(model).experimental_get_tracing_count() == 1
    assert compiled_forward(model, "conv_a").experimental_get_tracing_count() == 1
    assert compiled_forward(model, "conv_b").experimental_get_tracing_count() == 1
    assert compiled_forward(model, "conv_a") is compiled_forward(model, "conv_a")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_many_models_print_no_retracing_warning(images):
    records = _Records()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(records)
    try:
        model = tiny_model()
        for _ in range(12):  # what a grid search does: a fresh copy per candidate
            copied = copy_model(model)
            forward_batches(copied, images)
            layer_activations(copied, images, "conv_b")
    finally:
        logger.removeHandler(records)
    assert not [message for message in records.messages if "retracing" in message]


def test_compiled_passes_do_not_keep_a_model_alive(images):
    model = tiny_model()
    forward_batches(model, images)
    layer_activations(model, images, "conv_a")
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
