"""The public face of skbackdoor's model handling: loading, building, copying.

- :func:`load_badnet` turns a model, a file or a scikeras classifier into a
  ``keras.Model`` that takes raw pixels;
- :func:`csaw_deepid` builds the CSAW-HackML-2020 DeepID architecture;
- :func:`copy_model`, :func:`model_to_bytes`, :func:`model_from_bytes` copy and
  serialise models so that estimators never touch the user's model and pickle cleanly.

It also re-exports what lives in the private modules beside it, so callers import
everything from here:

- ``_forward``: :func:`forward_batches`, :func:`predict_proba_batches` and
  :func:`layer_activations` run a network over many images inside one compiled
  function, cached per model and layer;
- ``_graph``: :func:`split_at` cuts a model at a layer so that a sweep can cache what
  comes before; :func:`resolve_conv_layer` and friends read the layer graph;
- ``_pruning``: :func:`prune_channels` zeroes convolution channels and keeps them at
  zero while the model is trained (:class:`ChannelMask`).
"""

import io
import json
import os
import tempfile
import weakref
import zipfile
from numbers import Real
from pathlib import Path

import h5py
import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._forward import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    forward_batches,
    iter_batches,
    layer_activations,
    outputs_are_probabilities,
    predict_proba_batches,
)
from ._graph import (  # noqa: E402
    conv_layer_names,
    default_prune_layer,
    model_input_shape,
    model_n_classes,
    producer,
    prunable_conv_layers,
    resolve_conv_layer,
    split_at,
    walk_layers,
)
from ._pruning import ChannelMask, prune_channels, pruned_channel_mask  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_BATCH_SIZE",
    "ChannelMask",
    "conv_layer_names",
    "copy_model",
    "csaw_deepid",
    "default_prune_layer",
    "forward_batches",
    "layer_activations",
    "load_badnet",
    "model_from_bytes",
    "model_input_shape",
    "model_n_classes",
    "model_to_bytes",
    "predict_proba_batches",
    "prune_channels",
    "prunable_conv_layers",
    "pruned_channel_mask",
    "iter_batches",
    "outputs_are_probabilities",
    "resolve_conv_layer",
    "split_at",
]

# --------------------------------------------------------------------------- building


def csaw_deepid(n_classes=1283, *, input_shape=(55, 47, 3)):
    """Build the DeepID-style face classifier of the CSAW-HackML-2020 challenge.

    Layer names match the challenge's weight files, so ``model.load_weights`` works on
    them. With 1283 classes the model has 601,643 parameters.

    Parameters
    ----------
    n_classes : int, default=1283
        Number of output classes (YouTube Aligned Faces identities in the challenge).
    input_shape : tuple of int, default=(55, 47, 3)
        Height, width and channels of the input images.

    Returns
    -------
    model : keras.Model
        An uncompiled functional model ending in a softmax layer named ``output``.

    Examples
    --------
    >>> from skbackdoor.models import csaw_deepid
    >>> model = csaw_deepid()
    >>> model.count_params()
    601643
    """
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Conv2D(20, (4, 4), activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool_1")(x)
    x = layers.Conv2D(40, (3, 3), activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool_2")(x)
    x = layers.Conv2D(60, (3, 3), activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D((2, 2), name="pool_3")(x)
    fc_1 = layers.Dense(160, name="fc_1")(layers.Flatten(name="flatten_1")(pool_3))
    conv_4 = layers.Conv2D(80, (2, 2), activation="relu", name="conv_4")(pool_3)
    fc_2 = layers.Dense(160, name="fc_2")(layers.Flatten(name="flatten_2")(conv_4))
    x = layers.Add(name="add_1")([fc_1, fc_2])
    x = layers.Activation("relu", name="activation_1")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="csaw_deepid")


ARCHITECTURES = {"csaw-deepid": csaw_deepid}


# --------------------------------------------------------------------------- loading


def load_badnet(source, *, architecture=None, input_scale=None, input_offset=None, safe_mode=True):
    """Load a (possibly backdoored) Keras classifier from any of the usual forms.

    The forms that load:

    - a ``keras.Model`` (Functional or Sequential, possibly with nested sub-models);
    - a Keras 3 ``.keras`` archive, or an ``.h5`` full model written by Keras 3;
    - an ``.h5`` full model written by Keras 2.1-2.3 (or ``tf.keras`` 2.x): Sequential
      models whose first layer carries ``batch_input_shape``/``input_shape`` (which
      Keras 3's own ``load_model`` cannot build), functional and nested models; the
      legacy configuration is rewritten into a Keras 3 one and the file's weights are
      assigned exactly, layer by layer;
    - a weights-only ``.h5`` (as shipped by the CSAW-HackML challenge) together with
      ``architecture``;
    - a fitted scikeras ``KerasClassifier`` (its ``model_``).

    Nested sub-models are flattened into one graph (the same layer objects), so every
    layer is reachable by name at the top level, e.g. for pruning.

    Parameters
    ----------
    source : keras.Model, str or path-like, or fitted scikeras KerasClassifier
        The model, or the file it is in. An in-memory model is never modified.
    architecture : {"csaw-deepid"} or callable, default=None
        What to build for a weights-only file: a name from ``ARCHITECTURES`` or a
        callable returning an uncompiled ``keras.Model``.
    input_scale : float or sequence of float, default=None
        One number, or one per input channel. With ``input_offset``, the network gets
        ``(x - input_offset) * input_scale``: a ``Rescaling`` layer named
        ``input_scale`` (``input_scale_1``, ... if the model already has a layer of that
        name) is placed in front of the network so the returned model takes raw pixel
        values. Use ``1/255`` for models trained on pixels / 255, and
        ``input_offset=mean, input_scale=1/std`` (per channel) for ``(x - mean) / std``.
        The original layer names are kept at the top level.
    input_offset : float or sequence of float, default=None
        Subtracted from the raw pixels before ``input_scale`` (0 if not given).
    safe_mode : bool, default=True
        Refuse model *files* containing ``Lambda`` layers, whose deserialisation can run
        arbitrary code. Only set to False for files you trust. An in-memory model has
        already been built by its owner and is not refused.

    Returns
    -------
    model : keras.Model

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the file is corrupt, holds only weights and no ``architecture`` was given,
        the weights do not fit the architecture, the architecture name is unknown, a
        ``Lambda`` layer is found in a file under ``safe_mode``, or ``input_scale`` /
        ``input_offset`` is zero, not finite or of the wrong length.
    TypeError
        If ``source`` is none of the accepted kinds, or ``input_scale`` /
        ``input_offset`` is not a number or a sequence of numbers.

    Examples
    --------
    >>> from skbackdoor.models import csaw_deepid, load_badnet
    >>> model = load_badnet(csaw_deepid(n_classes=10), input_scale=1 / 255)
    >>> model.layers[1].name
    'input_scale'
    >>> mean, std = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
    >>> model = load_badnet(csaw_deepid(n_classes=10), input_offset=mean,
    ...                     input_scale=[1 / s for s in std])
    """
    scale = _check_preprocessing(input_scale, "input_scale")
    offset = _check_preprocessing(input_offset, "input_offset")
    if isinstance(source, keras.Model):
        model = source
    elif _is_fitted_scikeras(source):
        model = source.model_
    elif isinstance(source, (str, os.PathLike)):
        model = _load_file(Path(source), architecture=architecture, safe_mode=safe_mode)
        if safe_mode:
            _refuse_lambda_layers(model, what=str(source))
    else:
        raise TypeError(
            "source must be a keras.Model, a path to a .keras/.h5 file or a fitted scikeras "
            f"KerasClassifier; got {type(source).__name__}."
        )
    if scale is None and offset is None and not _has_nested_models(model):
        return model
    # The same request on the same model gives the same rebuilt model, so that its
    # compiled passes are traced once however often an estimator loads it.
    key = (repr(scale), repr(offset), tuple(id(layer) for layer in model.layers))
    rebuilt = _REBUILT.setdefault(model, {})
    if key not in rebuilt:
        result = _rebuild(model, scale=scale, offset=offset)
        rebuilt[key] = None if result is model else result  # never a strong ref to the key
    return model if rebuilt[key] is None else rebuilt[key]


# model -> {(scale, offset, layer ids): the model rebuilt from it}; weakly keyed, so the
# rebuilt models (which share the user's layers, not the model object) go with it.
_REBUILT = weakref.WeakKeyDictionary()


def _check_preprocessing(value, name):
    """``None``, a float, or a list of floats (one per channel); clear errors otherwise."""
    if value is None:
        return None
    example = "1/255" if name == "input_scale" else "(125.3, 123.0, 113.9)"
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a number or one number per input channel, got the string "
            f"{value!r}; pass numbers, e.g. {name}={example}."
        )
    values = np.asarray(value, dtype=object)
    if values.ndim > 1 or (values.ndim == 1 and len(values) == 0):
        raise ValueError(
            f"{name} must be a number or a flat sequence of one number per input channel; "
            f"got {value!r}."
        )
    flat = values.reshape(-1)
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (Real, np.number)) for v in flat):
        raise TypeError(
            f"{name} must be a number or one number per input channel, got {value!r}; "
            f"pass numbers, e.g. {name}={example}."
        )
    numbers = flat.astype(np.float64)
    if not np.all(np.isfinite(numbers)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if name == "input_scale" and np.any(numbers == 0):
        raise ValueError(
            f"input_scale must not be 0 (got {value!r}): the network would see the same "
            "input for every image. Use e.g. input_scale=1/255 for a net trained on pixels / 255."
        )
    return float(numbers[0]) if values.ndim == 0 else [float(v) for v in numbers]


def _has_nested_models(model):
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def _rebuild(model, *, scale, offset):
    """One functional graph: optional input rescaling, then ``model`` with nested models inlined.

    Re-threading the original graph reuses the layer objects, so every layer keeps its
    name at the top level (a nested model would hide them) and shares its weights with
    ``model``, which itself is left as it is.
    """
    shape = model_input_shape(model)
    if scale is None and offset is None:
        inputs = keras.Input(shape=shape, name=producer(model.inputs[0])[0].name)
        x = inputs
    else:
        n_channels = shape[-1]
        for name, value in (("input_scale", scale), ("input_offset", offset)):
            if isinstance(value, list) and len(value) not in (1, n_channels):
                raise ValueError(
                    f"{name} has {len(value)} values but the model's inputs have {n_channels} "
                    "channels; give one number, or one per channel."
                )
        scale = 1.0 if scale is None else scale
        offset = 0.0 if offset is None else offset
        # Rescaling computes x * scale + offset; the user's offset is subtracted first.
        shift = (-np.asarray(offset, np.float64) * np.asarray(scale, np.float64)).tolist()
        taken = {layer.name for layer in walk_layers(model)}
        name, suffix = "input_scale", 0
        while name in taken:
            suffix += 1
            name = f"input_scale_{suffix}"
        inputs = keras.Input(shape=shape, name="pixels")
        x = keras.layers.Rescaling(scale, offset=shift, name=name)(inputs)
    try:
        return keras.Model(inputs, _inlined(model)(x), name=model.name)
    except ValueError as exc:
        if "unique" not in str(exc).lower():
            raise
    # A nested model's layer names clash with its parent's: keep the nesting.
    if x is inputs:
        return model
    return keras.Model(inputs, _inlined(model, depth=1)(x), name=model.name)


def _inlined(operation, depth=None):
    """A callable applying ``operation`` that calls nested models' layers one by one.

    ``depth`` limits how many levels of models are opened (None: all).
    """
    if not isinstance(operation, keras.Model) or depth == 0:
        return operation
    inner_depth = None if depth is None else depth - 1
    if isinstance(operation, keras.Sequential):

        def run_sequential(x, *args, **kwargs):
            for layer in operation.layers:
                x = _inlined(layer, inner_depth)(x)
            return x

        return run_sequential
    if hasattr(operation, "_run_through_graph") and getattr(operation, "_nodes_by_depth", None):

        def run_functional(*args, **kwargs):
            inputs = args[0] if len(args) == 1 else list(args)
            return operation._run_through_graph(
                inputs, operation_fn=lambda each: _inlined(each, inner_depth)
            )

        return run_functional
    return operation  # a subclassed model: its layers cannot be re-threaded


def _is_fitted_scikeras(obj):
    return type(obj).__module__.startswith("scikeras") and isinstance(
        getattr(obj, "model_", None), keras.Model
    )


def _build_architecture(architecture):
    if callable(architecture):
        model = architecture()
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"architecture callable must return a keras.Model, got {type(model).__name__}."
            )
        return model
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; known architectures: "
            f"{sorted(ARCHITECTURES)} (or pass a callable that builds the model)."
        )
    return ARCHITECTURES[architecture]()


def _load_file(path, *, architecture, safe_mode):
    if not path.exists():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    if path.is_dir():
        raise ValueError(
            f"{str(path)!r} is a directory; TensorFlow SavedModel folders are not supported "
            "by Keras 3. Pass a .keras or .h5 file."
        )
    if path.suffix.lower() == ".keras" or zipfile.is_zipfile(path):
        if architecture is not None:
            raise ValueError(
                f"{str(path)!r} is a full .keras model; architecture applies only to "
                "weights-only .h5 files."
            )
        return _load_keras_archive(path, safe_mode=safe_mode)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(
            f"Could not read {str(path)!r}: it is neither a .keras archive nor a readable "
            f"HDF5 file ({exc})."
        ) from exc
    with handle:
        model_config = _text(handle.attrs.get("model_config"))
        version = _text(handle.attrs.get("keras_version")) or ""
        if model_config is not None:
            if architecture is not None:
                raise ValueError(
                    f"{str(path)!r} holds a full model; architecture applies only to "
                    "weights-only .h5 files."
                )
            config = json.loads(model_config)
            if safe_mode and _config_has_lambda(config):
                raise ValueError(_lambda_message(str(path)))
            if version.split(".")[0] in ("1", "2"):
                return _load_keras2_model(handle, config, path=path, version=version)
    if model_config is not None:
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
        except Exception as exc:
            raise ValueError(f"Could not load the model in {str(path)!r}: {exc}") from exc
    if architecture is None:
        raise ValueError(
            f"{str(path)!r} holds weights only; pass architecture='csaw-deepid' (one of "
            f"{sorted(ARCHITECTURES)}) or a callable that builds the model."
        )
    model = _build_architecture(architecture)
    try:
        model.load_weights(path)
    except Exception as exc:
        name = architecture if isinstance(architecture, str) else getattr(architecture, "__name__", "callable")
        raise ValueError(
            f"The weights in {str(path)!r} do not match the architecture {name!r}: {exc}"
        ) from exc
    return model


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _load_keras_archive(path, *, safe_mode):
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Could not load {str(path)!r}: it is not a valid Keras archive (a .keras file "
            "is a zip archive; this one is corrupt or truncated). Save the model again with "
            "model.save('model.keras')."
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        if "lambda" in str(exc).lower() and safe_mode:
            raise ValueError(_lambda_message(str(path))) from exc
        if isinstance(exc, zipfile.BadZipFile) or "File not found" in str(exc):
            raise ValueError(
                f"Could not load {str(path)!r}: it is not a valid Keras archive (the zip "
                f"file is corrupt: {exc}). Save the model again with model.save('model.keras')."
            ) from exc
        raise ValueError(f"Could not load the model in {str(path)!r}: {exc}") from exc


# ------------------------------------------------------------ Keras 2 files


def _load_keras2_model(handle, config, *, path, version):
    """Build a Keras 2.x ``.h5`` full model in Keras 3 and assign the file's weights."""
    try:
        config = _keras3_model_config(config)
        kind = config["class_name"]
        if kind == "Sequential":
            model = keras.Sequential.from_config(config["config"])
        else:
            model = keras.Model.from_config(config["config"])
    except Exception as exc:
        raise ValueError(
            f"Could not build the Keras {version} model in {str(path)!r} with Keras "
            f"{keras.__version__}: {exc}"
        ) from exc
    if "model_weights" not in handle:
        raise ValueError(f"{str(path)!r} holds a Keras {version} model configuration but no 'model_weights'.")
    _assign_keras2_weights(handle["model_weights"], model, path=path)
    return model


def _keras3_model_config(config):
    """Rewrite a Keras 2 ``{"class_name", "config"}`` of a layer or model for Keras 3.

    What Keras 3 cannot read by itself: a Sequential model's input shape given on its
    first layer (``batch_input_shape`` / ``input_shape``) rather than by an
    ``InputLayer``, and Keras 2.1's Sequential config, a bare list of layers.
    """
    config = json.loads(json.dumps(config))  # a deep copy
    kind, inner = config.get("class_name"), config.get("config")
    if kind == "Merge":
        raise ValueError("Keras 1 'Merge' layers are not supported; use Add/Concatenate layers.")
    if kind == "Sequential":
        if isinstance(inner, list):
            inner = {"name": "sequential", "layers": inner}
        layers = [_keras3_model_config(layer) for layer in inner["layers"]]
        if layers and layers[0].get("class_name") != "InputLayer":
            first = layers[0].get("config", {})
            batch_shape = _pop_input_shape(first)
            if batch_shape is not None:
                layers.insert(0, {
                    "class_name": "InputLayer",
                    "config": {
                        "batch_shape": batch_shape,
                        "dtype": first.get("dtype") or "float32",
                        "name": f"{first.get('name', 'sequential')}_input",
                    },
                })
        for layer in layers[1:]:
            if layer.get("class_name") != "InputLayer":
                _pop_input_shape(layer.get("config", {}))
        config["config"] = {**inner, "layers": layers}
    elif kind in ("Model", "Functional"):
        layers = []
        for layer in inner["layers"]:
            rewritten = _keras3_model_config(layer)
            if rewritten.get("class_name") != "InputLayer":
                _pop_input_shape(rewritten.get("config", {}))
            layers.append(rewritten)
        config["config"] = {**inner, "layers": layers}
    elif kind == "InputLayer" and "batch_input_shape" in inner:
        inner["batch_shape"] = inner.pop("batch_input_shape")
    return config


def _pop_input_shape(layer_config):
    """Remove a Keras 2 layer's input-shape keys; return the batch shape they gave."""
    batch_shape = layer_config.pop("batch_input_shape", None)
    input_shape = layer_config.pop("input_shape", None)
    batch_size = layer_config.pop("batch_size", None)
    if batch_shape is None and input_shape is not None:
        batch_shape = [batch_size] + list(input_shape)
    return batch_shape


def _assign_keras2_weights(group, model, *, path):
    """Assign the arrays of a Keras 2 ``model_weights`` group to ``model``'s layers.

    Each layer's group lists its weights in ``weight_names``; they are matched to the
    Keras 3 variables by layer and variable name where those are unique, else in
    Keras 2's order (trainable weights, then the others), and every shape is checked.
    """
    layer_names = [_text(name) for name in group.attrs.get("layer_names", [])]
    assigned = set()
    for layer_name in layer_names:
        weight_names = [_text(name) for name in group[layer_name].attrs.get("weight_names", [])]
        if not weight_names:
            continue
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(
                f"{str(path)!r} holds weights for a layer {layer_name!r} that its model "
                "configuration does not have."
            ) from None
        values = [np.asarray(group[layer_name][name]) for name in weight_names]
        targets = _match_by_name(layer, weight_names) or (
            list(layer.trainable_weights) + list(layer.non_trainable_weights)
        )
        shapes = [tuple(target.shape) for target in targets]
        if shapes != [value.shape for value in values]:
            raise ValueError(
                f"The weights of layer {layer_name!r} in {str(path)!r} have shapes "
                f"{[value.shape for value in values]}; the rebuilt layer expects {shapes}."
            )
        for target, value in zip(targets, values):
            target.assign(value)
        assigned.add(layer_name)
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in assigned]
    if missing:
        raise ValueError(f"{str(path)!r} holds no weights for the layers {missing} of its model.")


def _match_by_name(layer, weight_names):
    """The variables named like ``.../<layer>/<variable>:0``, or None if any is ambiguous."""
    candidates = [layer] + (list(walk_layers(layer)) if isinstance(layer, keras.Model) else [])
    matched = []
    for weight_name in weight_names:
        parts = weight_name.split(":")[0].split("/")
        if len(parts) < 2:
            return None
        owners = [each for each in candidates if each.name == parts[-2]]
        if len(owners) != 1:
            return None
        own = [w for w in owners[0].weights if w.name == parts[-1]]
        if len(own) != 1:
            return None
        matched.append(own[0])
    if len({id(w) for w in matched}) != len(matched):
        return None
    return matched


# ------------------------------------------------------------ safe mode


def _lambda_message(what):
    return (
        f"{what} contains a Lambda layer, whose loading can execute arbitrary code; it is "
        "refused under safe_mode=True. Pass safe_mode=False only for a file you trust."
    )


def _config_has_lambda(config):
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            return True
        return any(_config_has_lambda(value) for value in config.values())
    if isinstance(config, list):
        return any(_config_has_lambda(value) for value in config)
    return False


def _refuse_lambda_layers(model, *, what):
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.Lambda):
            raise ValueError(_lambda_message(what))


# --------------------------------------------------------------------------- copying


def copy_model(model):
    """Return an independent copy of ``model`` (same architecture, same weights).

    Pruning masks attached by :func:`prune_channels` are carried over.
    """
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception:
        clone = model_from_bytes(model_to_bytes(model), safe_mode=False)
    for source, target in zip(model.weights, clone.weights):
        constraint = getattr(source, "constraint", None)
        if isinstance(constraint, ChannelMask):
            target.constraint = ChannelMask(constraint.keep)
    return clone


def model_to_bytes(model):
    """Serialise ``model`` to the bytes of a ``.keras`` archive (architecture + weights)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with open(path, "rb") as handle:
            data = handle.read()
    masks = {
        weight.path: list(weight.constraint.keep)
        for weight in model.weights
        if isinstance(getattr(weight, "constraint", None), ChannelMask)
    }
    if not masks:
        return data
    # Variable-level constraints are not part of a layer's config: store them beside it.
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("skbackdoor_channel_masks.json", json.dumps(masks))
    return buffer.getvalue()


def model_from_bytes(data, *, safe_mode=True):
    """Rebuild a model serialised by :func:`model_to_bytes`."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(data)
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            masks = (
                json.loads(archive.read("skbackdoor_channel_masks.json"))
                if "skbackdoor_channel_masks.json" in names
                else {}
            )
    for weight in model.weights:
        if weight.path in masks:
            weight.constraint = ChannelMask(masks[weight.path])
    return model
