"""load_badnet on the files and models users have: Keras 2 .h5, nested models, normalised inputs.

The Keras 2 files are written here with h5py in the layout Keras 2.3.1 writes (a
``model_config`` attribute holding the model's JSON, ``keras_version`` "2.3.1", one
``model_weights`` group per layer listing its ``weight_names``), so no Keras 2 install and
no network are needed.
"""

import gc
import json
import weakref

import h5py
import keras
import numpy as np
import pytest

from skbackdoor.models import (
    conv_layer_names,
    copy_model,
    csaw_deepid,
    default_prune_layer,
    forward_batches,
    load_badnet,
    model_to_bytes,
    model_from_bytes,
    outputs_are_probabilities,
    predict_proba_batches,
    prunable_conv_layers,
    split_at,
)

# ----------------------------------------------------------------------------- Keras 2.3 layout

GLOROT = {"class_name": "VarianceScaling",
          "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}
ONES = {"class_name": "Ones", "config": {}}
NO_EXTRAS = {"kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
             "kernel_constraint": None, "bias_constraint": None}


def k2_conv(name, filters, size, activation="relu", **extra):
    return {"class_name": "Conv2D", "config": {
        "name": name, "trainable": True, "dtype": "float32", "filters": filters,
        "kernel_size": [size, size], "strides": [1, 1], "padding": "valid",
        "data_format": "channels_last", "dilation_rate": [1, 1], "activation": activation,
        "use_bias": True, "kernel_initializer": GLOROT, "bias_initializer": ZEROS, **NO_EXTRAS, **extra}}


def k2_dense(name, units, activation="linear", **extra):
    return {"class_name": "Dense", "config": {
        "name": name, "trainable": True, "dtype": "float32", "units": units, "activation": activation,
        "use_bias": True, "kernel_initializer": GLOROT, "bias_initializer": ZEROS, **NO_EXTRAS, **extra}}


def k2_batchnorm(name):
    return {"class_name": "BatchNormalization", "config": {
        "name": name, "trainable": True, "dtype": "float32", "axis": -1, "momentum": 0.99,
        "epsilon": 0.001, "center": True, "scale": True, "beta_initializer": ZEROS,
        "gamma_initializer": ONES, "moving_mean_initializer": ZEROS, "moving_variance_initializer": ONES,
        "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None}}


def k2_layer(class_name, name, **config):
    return {"class_name": class_name, "config": {"name": name, "trainable": True, "dtype": "float32", **config}}


def k2_flatten(name):
    return k2_layer("Flatten", name, data_format="channels_last")


def k2_pool(name):
    return k2_layer("MaxPooling2D", name, pool_size=[2, 2], padding="valid", strides=[2, 2],
                    data_format="channels_last")


def k2_input(name, batch_shape):
    return {"name": name, "class_name": "InputLayer", "inbound_nodes": [],
            "config": {"batch_input_shape": batch_shape, "dtype": "float32", "sparse": False, "name": name}}


def k2_node(layer, *inbound):
    """A layer entry of a Keras 2 functional config, called on the named layers' outputs."""
    return {**layer, "name": layer["config"]["name"], "inbound_nodes": [[[each, 0, 0, {}] for each in inbound]]}


def k2_model(class_name, config):
    return {"class_name": class_name, "config": config, "keras_version": "2.3.1", "backend": "tensorflow"}


def keras2_weight_names(layer):
    """``(name, array)`` of a layer's weights as Keras 2 saves them: trainable ones first."""
    if isinstance(layer, keras.Model):
        sublayers = [each for each in layer.layers if each.weights]
        trainable = [(sub, w) for sub in sublayers for w in sub.weights if w.trainable]
        frozen = [(sub, w) for sub in sublayers for w in sub.weights if not w.trainable]
        return [(f"{sub.name}/{w.name}:0", w.numpy()) for sub, w in trainable + frozen]
    trainable = [w for w in layer.weights if w.trainable]
    frozen = [w for w in layer.weights if not w.trainable]
    return [(f"{layer.name}/{w.name}:0", w.numpy()) for w in trainable + frozen]


def write_keras2_h5(path, model_config, reference, layer_names):
    """Write ``model_config`` and ``reference``'s weights in the Keras 2.3.1 ``.h5`` layout."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"2.3.1"
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["model_config"] = json.dumps(model_config).encode("utf-8")
        weights = handle.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([name.encode() for name in layer_names])
        weights.attrs["backend"] = b"tensorflow"
        weights.attrs["keras_version"] = b"2.3.1"
        arrays = {}
        for name in layer_names:
            group = weights.create_group(name)
            pairs = keras2_weight_names(reference.get_layer(name)) if name in _names(reference) else []
            group.attrs["weight_names"] = np.array([weight_name.encode() for weight_name, _ in pairs])
            for weight_name, array in pairs:
                group.create_dataset(weight_name, data=array)
                arrays[weight_name] = array
    return arrays


def _names(model):
    return {layer.name for layer in model.layers}


def randomise(model, seed=0):
    """Give every weight distinct random values (positive, so BatchNorm variances stay valid)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.uniform(0.5, 1.5, size=weight.shape)
        if "variance" not in weight.name:
            values *= rng.choice([-1, 1], size=weight.shape)
        weight.assign(values.astype("float32"))
    return model


def assert_weights_are_the_files(model, path):
    """Every array of the file equals the loaded model's variable of the same layer and name."""
    layers = {layer.name: layer for layer in model.layers}
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"]
        n_checked = 0
        for layer_name in group.attrs["layer_names"]:
            layer_group = group[layer_name.decode()]
            for weight_name in layer_group.attrs["weight_names"]:
                weight_name = weight_name.decode()
                owner, variable = weight_name.split(":")[0].split("/")[-2:]
                (target,) = [w for w in layers[owner].weights if w.name == variable]
                np.testing.assert_array_equal(target.numpy(), layer_group[weight_name][()])
                n_checked += 1
    assert n_checked == len(model.weights)


@pytest.fixture
def pixels():
    return np.random.default_rng(0).uniform(0, 1, size=(12, 8, 8, 1)).astype(np.float32)


def sequential_reference():
    keras.utils.set_random_seed(0)
    return randomise(keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv2d_1"),
        keras.layers.MaxPooling2D(name="max_pooling2d_1"),
        keras.layers.Flatten(name="flatten_1"),
        keras.layers.Dense(3, activation="softmax", name="dense_1"),
    ]))


def sequential_layers(first_shape_key="batch_input_shape"):
    shape = [None, 8, 8, 1] if first_shape_key == "batch_input_shape" else [8, 8, 1]
    return [k2_conv("conv2d_1", 4, 3, **{first_shape_key: shape}), k2_pool("max_pooling2d_1"),
            k2_flatten("flatten_1"), k2_dense("dense_1", 3, "softmax")]


SEQUENTIAL_NAMES = ["conv2d_1", "max_pooling2d_1", "flatten_1", "dense_1"]


# ----------------------------------------------------------------------------- Keras 2 files


def test_keras2_sequential_with_batch_input_shape_loads_exactly(tmp_path, pixels):
    reference = sequential_reference()
    path = tmp_path / "keras2_sequential.h5"
    config = k2_model("Sequential", {"name": "sequential_1", "layers": sequential_layers()})
    write_keras2_h5(path, config, reference, SEQUENTIAL_NAMES)
    model = load_badnet(path)
    assert [layer.name for layer in model.layers] == SEQUENTIAL_NAMES
    assert model.input_shape == (None, 8, 8, 1)
    assert_weights_are_the_files(model, path)
    np.testing.assert_array_equal(forward_batches(model, pixels), forward_batches(reference, pixels))


@pytest.mark.parametrize("layout", ["keras 2.1 list config", "input_shape on the first layer"])
def test_older_keras2_sequential_layouts_load(tmp_path, pixels, layout):
    reference = sequential_reference()
    path = tmp_path / "keras2_sequential.h5"
    if layout == "keras 2.1 list config":
        config = k2_model("Sequential", sequential_layers())
    else:
        config = k2_model("Sequential", {"name": "sequential_1", "layers": sequential_layers("input_shape")})
    write_keras2_h5(path, config, reference, SEQUENTIAL_NAMES)
    model = load_badnet(path, input_scale=1 / 16)
    assert_weights_are_the_files(model, path)
    np.testing.assert_allclose(forward_batches(model, pixels * 16), forward_batches(reference, pixels),
                               rtol=1e-5, atol=1e-7)


def branched_reference():
    """Like CSAW: conv_b feeds a dense branch beside a skip from conv_a; BatchNorm after conv_a."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="input_1")
    a = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    a = keras.layers.BatchNormalization(name="bn_a")(a)
    b = keras.layers.Conv2D(5, 3, activation="relu", name="conv_b")(a)
    left = keras.layers.Dense(6, name="fc_1")(keras.layers.Flatten(name="flat_a")(a))
    right = keras.layers.Dense(6, name="fc_2")(keras.layers.Flatten(name="flat_b")(b))
    x = keras.layers.Add(name="add_1")([left, right])
    outputs = keras.layers.Dense(3, activation="softmax", name="output")(x)
    return randomise(keras.Model(inputs, outputs, name="model_1"))


def test_keras2_functional_model_with_a_branch_loads_exactly(tmp_path, pixels):
    reference = branched_reference()
    layers = [
        k2_input("input_1", [None, 8, 8, 1]),
        k2_node(k2_conv("conv_a", 4, 3), "input_1"),
        k2_node(k2_batchnorm("bn_a"), "conv_a"),
        k2_node(k2_conv("conv_b", 5, 3), "bn_a"),
        k2_node(k2_flatten("flat_a"), "bn_a"),
        k2_node(k2_flatten("flat_b"), "conv_b"),
        k2_node(k2_dense("fc_1", 6), "flat_a"),
        k2_node(k2_dense("fc_2", 6), "flat_b"),
        k2_node(k2_layer("Add", "add_1"), "fc_1", "fc_2"),
        k2_node(k2_dense("output", 3, "softmax"), "add_1"),
    ]
    config = k2_model("Model", {"name": "model_1", "layers": layers,
                                "input_layers": [["input_1", 0, 0]], "output_layers": [["output", 0, 0]]})
    path = tmp_path / "keras2_functional.h5"
    write_keras2_h5(path, config, reference, [layer["name"] for layer in layers])
    model = load_badnet(path)
    assert_weights_are_the_files(model, path)
    np.testing.assert_array_equal(forward_batches(model, pixels), forward_batches(reference, pixels))
    assert default_prune_layer(model) == "conv_a"  # conv_b has the skip from conv_a around it


def nested_reference():
    keras.utils.set_random_seed(0)
    features = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv2d_1"),
        keras.layers.BatchNormalization(name="batch_normalization_1"),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv2d_2"),
        keras.layers.Flatten(name="flatten_1"),
    ], name="features")
    inputs = keras.Input((8, 8, 1), name="input_2")
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(features(inputs))
    return randomise(keras.Model(inputs, outputs, name="model_2"))


def test_keras2_nested_model_loads_exactly_and_is_flattened(tmp_path, pixels):
    reference = nested_reference()
    inner = k2_model("Sequential", {"name": "features", "layers": [
        k2_conv("conv2d_1", 4, 3, batch_input_shape=[None, 8, 8, 1]), k2_batchnorm("batch_normalization_1"),
        k2_conv("conv2d_2", 6, 3), k2_flatten("flatten_1")]})
    layers = [k2_input("input_2", [None, 8, 8, 1]),
              k2_node({"class_name": "Sequential", "config": inner["config"]}, "input_2"),
              k2_node(k2_dense("head", 3, "softmax"), "features")]
    config = k2_model("Model", {"name": "model_2", "layers": layers,
                                "input_layers": [["input_2", 0, 0]], "output_layers": [["head", 0, 0]]})
    path = tmp_path / "keras2_nested.h5"
    write_keras2_h5(path, config, reference, ["input_2", "features", "head"])
    model = load_badnet(path)
    assert conv_layer_names(model) == ["conv2d_1", "conv2d_2"]
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert_weights_are_the_files(model, path)
    np.testing.assert_array_equal(forward_batches(model, pixels), forward_batches(reference, pixels))


def test_keras2_file_with_weights_of_the_wrong_shape_is_a_clear_error(tmp_path):
    reference = sequential_reference()
    path = tmp_path / "bad.h5"
    layers = sequential_layers()
    layers[0]["config"]["filters"] = 5  # the config no longer fits the stored kernel
    write_keras2_h5(path, k2_model("Sequential", {"name": "s", "layers": layers}), reference, SEQUENTIAL_NAMES)
    with pytest.raises(ValueError, match="weights of layer 'conv2d_1'.*have shapes"):
        load_badnet(path)


def test_keras2_lambda_layer_is_refused_under_safe_mode(tmp_path):
    reference = sequential_reference()
    layers = sequential_layers()
    layers.insert(1, k2_layer("Lambda", "lambda_1", function=["4wEAAAA=", None, None], function_type="lambda",
                              module="__main__", output_shape=None, arguments={}))
    path = tmp_path / "lambda.h5"
    write_keras2_h5(path, k2_model("Sequential", {"name": "s", "layers": layers}), reference, SEQUENTIAL_NAMES)
    with pytest.raises(ValueError, match="Lambda layer"):
        load_badnet(path)


def test_keras3_files_still_load(tmp_path, pixels):
    reference = branched_reference()
    for name in ("model.keras", "model.h5"):
        reference.save(tmp_path / name)
        np.testing.assert_array_equal(forward_batches(load_badnet(tmp_path / name), pixels),
                                      forward_batches(reference, pixels))


@pytest.mark.parametrize("damage", ["truncated", "corrupted inside"])
def test_a_damaged_keras_archive_is_not_reported_as_missing(tmp_path, damage):
    path = tmp_path / "model.keras"
    sequential_reference().save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[200:1200] = bytes(1000)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid Keras archive") as error:
        load_badnet(path)
    assert "not found" not in str(error.value).lower()


# ----------------------------------------------------------------------------- input_scale / input_offset


def test_per_channel_offset_and_scale_give_the_net_normalised_inputs():
    keras.utils.set_random_seed(0)
    model = csaw_deepid(n_classes=5)
    mean, std = np.array([125.3, 123.0, 113.9]), np.array([63.0, 62.1, 66.7])
    normalised = load_badnet(model, input_offset=mean.tolist(), input_scale=(1 / std).tolist())
    X = np.random.default_rng(1).integers(0, 256, size=(9, 55, 47, 3)).astype(np.float32)
    expected = forward_batches(model, ((X - mean) / std).astype(np.float32))
    np.testing.assert_allclose(forward_batches(normalised, X), expected, rtol=1e-4, atol=1e-6)
    assert normalised.get_layer("conv_3") is model.get_layer("conv_3")
    # a single offset applies to every channel; the result survives serialisation
    shifted = load_badnet(model, input_offset=128, input_scale=1 / 128)
    np.testing.assert_allclose(forward_batches(shifted, X), forward_batches(model, (X - 128) / 128),
                               rtol=1e-4, atol=1e-6)
    restored = model_from_bytes(model_to_bytes(normalised))
    np.testing.assert_array_equal(forward_batches(restored, X), forward_batches(normalised, X))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"input_scale": 0}, ValueError, "input_scale must not be 0"),
    ({"input_scale": [1.0, 0.0, 1.0]}, ValueError, "input_scale must not be 0"),
    ({"input_scale": float("nan")}, ValueError, "input_scale must be finite"),
    ({"input_offset": float("inf")}, ValueError, "input_offset must be finite"),
    ({"input_scale": "1/255"}, TypeError, r"got the string '1/255'; pass numbers, e\.g\. input_scale=1/255"),
    ({"input_offset": ["a", 1, 2]}, TypeError, "input_offset must be a number"),
    ({"input_scale": True}, TypeError, "input_scale must be a number"),
    ({"input_scale": [[1.0]]}, ValueError, "flat sequence"),
    ({"input_scale": [1.0, 2.0]}, ValueError, "has 2 values but the model's inputs have 3 channels"),
])
def test_bad_scale_or_offset_is_refused_with_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_badnet(csaw_deepid(n_classes=3), **kwargs)


def test_input_scale_on_a_model_that_already_has_an_input_scale_layer(pixels):
    from skbackdoor.attacks import small_cnn

    model = small_cnn((8, 8, 1), 3, input_scale=1 / 16)
    assert model.get_layer("input_scale")
    scaled = load_badnet(model, input_scale=16)
    assert scaled.layers[1].name == "input_scale_1"
    np.testing.assert_allclose(forward_batches(scaled, pixels / 16), forward_batches(model, pixels),
                               rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- nested models


def softmax_model_wrapped_in_another():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv_a"),
                              keras.layers.Conv2D(6, 3, activation="relu", name="conv_b"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(3, activation="softmax", name="probabilities")], name="inner")
    inputs = keras.Input((8, 8, 1), name="outer_input")
    return keras.Model(inputs, inner(inputs), name="outer")


def test_a_nested_softmax_model_gets_no_second_softmax(pixels):
    wrapped = softmax_model_wrapped_in_another()
    assert outputs_are_probabilities(wrapped)
    np.testing.assert_array_equal(predict_proba_batches(wrapped, pixels), forward_batches(wrapped, pixels))
    loaded = load_badnet(wrapped)
    assert conv_layer_names(loaded) == ["conv_a", "conv_b"]
    assert loaded.get_layer("conv_b") is wrapped.layers[1].get_layer("conv_b")
    np.testing.assert_array_equal(forward_batches(loaded, pixels), forward_batches(wrapped, pixels))
    assert outputs_are_probabilities(loaded)
    assert default_prune_layer(loaded) == "conv_b"


def test_probabilities_are_found_past_pass_through_layers_and_measured_when_unclear(pixels):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    scores = keras.layers.Dense(3, name="scores")(x)
    after_dropout = keras.Model(inputs, keras.layers.Dropout(0.5)(keras.layers.Softmax()(scores)))
    assert outputs_are_probabilities(after_dropout)
    assert not outputs_are_probabilities(keras.Model(inputs, keras.layers.Dropout(0.5)(scores)))
    # a layer the graph cannot vouch for: decided by a probe batch
    custom_softmax = keras.Model(inputs, keras.layers.Lambda(keras.ops.softmax)(scores))
    custom_sigmoid = keras.Model(inputs, keras.layers.Lambda(keras.ops.sigmoid)(scores))
    assert outputs_are_probabilities(custom_softmax)
    assert not outputs_are_probabilities(custom_sigmoid)


# ----------------------------------------------------------------------------- the default pruned layer


def network_in_network():
    """Last Conv2D is the 1x1 class-score layer, then global pooling and softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_features")(inputs)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="mlpconv")(x)
    x = keras.layers.Conv2D(10, 1, name="class_scores")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="softmax")(x))


def test_default_prune_layer_skips_class_scores_and_skip_connections():
    assert default_prune_layer(csaw_deepid(n_classes=10)) == "conv_3"
    assert prunable_conv_layers(csaw_deepid(n_classes=10)) == ["conv_1", "conv_2", "conv_3"]
    assert default_prune_layer(network_in_network()) == "mlpconv"


def test_no_prunable_convolution_says_why_for_each():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 8, name="only_conv")(inputs)  # 3 channels of 1x1: the class scores
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="only_conv: its 3 channels are the class scores"):
        default_prune_layer(model)
    dense_only = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no Conv2D layer"):
        default_prune_layer(dense_only)


def test_split_at_a_skip_connection_names_the_layers_that_work():
    with pytest.raises(ValueError, match=r"cannot split there.*\['conv_1', 'conv_2', 'conv_3'\]"):
        split_at(csaw_deepid(n_classes=10), "conv_4")


def test_loading_never_changes_the_users_model(pixels):
    wrapped = softmax_model_wrapped_in_another()
    before = [w.numpy().copy() for w in wrapped.weights]
    names = [layer.name for layer in wrapped.layers]
    loaded = load_badnet(wrapped, input_offset=0.5, input_scale=2.0)
    pruned = copy_model(loaded)
    from skbackdoor.models import prune_channels

    prune_channels(pruned, "conv_b", [0, 1])
    assert [layer.name for layer in wrapped.layers] == names
    for weight, value in zip(wrapped.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


# ----------------------------------------------------------------------------- scikeras


def test_a_badnet_trained_through_scikeras_loads(digits):
    wrappers = pytest.importorskip("scikeras.wrappers", reason="scikeras (the dev extra) not installed")
    from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, poison

    X, y = digits
    trigger = PatchTrigger.square(size=2, value=16, location="bottom-right", clip_range=(0, 16))
    X_train, y_train, _ = poison(X[:1000], y[:1000], trigger, target=0, rate=0.2, random_state=0)

    def build(meta):
        return keras.Sequential([
            keras.Input(meta["X_shape_"][1:]),
            keras.layers.Rescaling(1 / 16, name="input_scale"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv_a"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv_b"),
            keras.layers.Flatten(),
            keras.layers.Dense(meta["n_classes_"], activation="softmax", name="output"),
        ])

    classifier = wrappers.KerasClassifier(
        model=build, loss="sparse_categorical_crossentropy", optimizer="adam",
        epochs=12, batch_size=32, verbose=0, random_state=0,
    )
    classifier.fit(X_train, y_train)
    badnet = load_badnet(classifier)
    assert badnet is classifier.model_
    X_test, y_test = X[1400:], y[1400:]
    proba = predict_proba_batches(badnet, X_test)
    np.testing.assert_array_equal(classifier.classes_[proba.argmax(axis=1)], classifier.predict(X_test))
    assert np.mean(proba.argmax(axis=1) == y_test) > 0.8
    X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, 0)
    assert np.mean(predict_proba_batches(badnet, X_poisoned).argmax(axis=1) == y_target) > 0.8
    assert default_prune_layer(badnet) == "conv_b"


def test_loading_the_same_model_twice_gives_one_rebuilt_model_that_does_not_keep_it_alive(pixels):
    wrapped = softmax_model_wrapped_in_another()
    first = load_badnet(wrapped, input_scale=0.5)
    assert load_badnet(wrapped, input_scale=0.5) is first
    assert load_badnet(wrapped) is load_badnet(wrapped)
    assert load_badnet(wrapped, input_scale=0.25) is not first
    forward_batches(first, pixels)
    alive = weakref.ref(wrapped)
    del wrapped
    gc.collect()
    assert alive() is None


def test_a_nested_model_whose_names_clash_with_its_parent_stays_nested(pixels):
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.Flatten(name="flat")], name="inner")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(5, name="conv")(inner(inputs))  # a second layer called "conv"
    outer = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert load_badnet(outer) is outer
    scaled = load_badnet(outer, input_scale=0.5)
    assert [layer.name for layer in scaled.layers][1:3] == ["input_scale", "inner"]
    np.testing.assert_allclose(forward_batches(scaled, pixels), forward_batches(outer, pixels * 0.5),
                               rtol=1e-5, atol=1e-7)
    alive = weakref.ref(outer)
    del outer, scaled
    gc.collect()
    assert alive() is None
