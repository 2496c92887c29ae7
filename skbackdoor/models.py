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
import zipfile
from pathlib import Path

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
    model_input_shape,
    model_n_classes,
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
    "forward_batches",
    "layer_activations",
    "load_badnet",
    "model_from_bytes",
    "model_input_shape",
    "model_n_classes",
    "model_to_bytes",
    "predict_proba_batches",
    "prune_channels",
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


def load_badnet(source, *, architecture=None, input_scale=None, safe_mode=True):
    """Load a (possibly backdoored) Keras classifier from any of the usual forms.

    Parameters
    ----------
    source : keras.Model, str or path-like, or fitted scikeras KerasClassifier
        - a ``keras.Model``: used as it is (never modified);
        - a full-model file: Keras 3 ``.keras`` or a legacy Keras 2 ``.h5`` holding a
          model configuration;
        - a weights-only ``.h5`` file (as shipped by the CSAW-HackML challenge),
          together with ``architecture``;
        - a fitted scikeras ``KerasClassifier`` (its ``model_`` is used).
    architecture : {"csaw-deepid"} or callable, default=None
        What to build for a weights-only file: a name from ``ARCHITECTURES`` or a
        callable returning an uncompiled ``keras.Model``.
    input_scale : float, default=None
        If given, a ``Rescaling(input_scale)`` layer named ``input_scale`` is placed in
        front of the network so the returned model takes raw pixel values; use
        ``1/255`` for models trained on pixels / 255. The original layer names are kept
        at the top level, so layers such as ``conv_3`` stay reachable by name.
    safe_mode : bool, default=True
        Refuse models containing ``Lambda`` layers, whose deserialisation can run
        arbitrary code. Only set to False for files you trust.

    Returns
    -------
    model : keras.Model

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the file is corrupt, holds only weights and no ``architecture`` was given,
        the weights do not fit the architecture, the architecture name is unknown, or a
        ``Lambda`` layer is found under ``safe_mode``.
    TypeError
        If ``source`` is none of the accepted kinds.

    Examples
    --------
    >>> from skbackdoor.models import csaw_deepid, load_badnet
    >>> model = load_badnet(csaw_deepid(n_classes=10), input_scale=1 / 255)
    >>> model.layers[1].name
    'input_scale'
    """
    if isinstance(source, keras.Model):
        model = source
    elif _is_fitted_scikeras(source):
        model = source.model_
    elif isinstance(source, (str, os.PathLike)):
        model = _load_file(Path(source), architecture=architecture, safe_mode=safe_mode)
    else:
        raise TypeError(
            "source must be a keras.Model, a path to a .keras/.h5 file or a fitted scikeras "
            f"KerasClassifier; got {type(source).__name__}."
        )
    if safe_mode:
        _refuse_lambda_layers(model, what=str(source) if not isinstance(source, keras.Model) else "the model")
    if input_scale is not None:
        model = _prepend_rescaling(model, float(input_scale))
    return model


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
    suffix = path.suffix.lower()
    if suffix == ".keras" or zipfile.is_zipfile(path):
        if architecture is not None:
            raise ValueError(
                f"{str(path)!r} is a full .keras model; architecture applies only to "
                "weights-only .h5 files."
            )
        return _load_keras_archive(path, safe_mode=safe_mode)
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            model_config = handle.attrs.get("model_config")
    except OSError as exc:
        raise ValueError(
            f"Could not read {str(path)!r}: it is neither a .keras archive nor a readable "
            f"HDF5 file ({exc})."
        ) from exc
    if model_config is not None:
        if architecture is not None:
            raise ValueError(
                f"{str(path)!r} holds a full model; architecture applies only to "
                "weights-only .h5 files."
            )
        if isinstance(model_config, bytes):
            model_config = model_config.decode("utf-8")
        if safe_mode and _config_has_lambda(json.loads(model_config)):
            raise ValueError(_lambda_message(str(path)))
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


def _load_keras_archive(path, *, safe_mode):
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        if "lambda" in str(exc).lower() and safe_mode:
            raise ValueError(_lambda_message(str(path))) from exc
        raise ValueError(f"Could not load the model in {str(path)!r}: {exc}") from exc


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


def _prepend_rescaling(model, scale):
    inputs = keras.Input(shape=model_input_shape(model), name="pixels")
    scaled = keras.layers.Rescaling(scale, name="input_scale")(inputs)
    if isinstance(model, keras.Sequential):
        x = scaled
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    # Re-threading the original graph on the rescaled input reuses the layer objects, so
    # every layer keeps its name at the top level (a nested model would hide them).
    outputs = model._run_through_graph(scaled, operation_fn=lambda operation: operation)
    return keras.Model(inputs, outputs, name=model.name)


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
