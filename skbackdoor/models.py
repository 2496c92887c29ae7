"""Loading BadNets and running them: the one place that touches the network.

Everything that runs a Keras model for skbackdoor goes through this module:

- :func:`load_badnet` turns a model, a file or a scikeras classifier into a
  ``keras.Model`` that takes raw pixels;
- :func:`csaw_deepid` builds the CSAW-HackML-2020 DeepID architecture;
- :func:`forward_batches`, :func:`predict_proba_batches` and :func:`layer_activations`
  run a network over many images in batches inside one compiled function (a
  ``model.predict`` call per image costs ~46 ms; the compiled batch runs thousands of
  images per second);
- :func:`split_at` cuts a model at a layer so that a sweep can cache what comes before;
- :func:`prune_channels` zeroes convolution channels and keeps them at zero while the
  model is trained;
- :func:`copy_model`, :func:`model_to_bytes`, :func:`model_from_bytes` copy and
  serialise models so that estimators never touch the user's model and pickle cleanly.
"""

import io
import json
import os
import tempfile
import weakref
import zipfile
from pathlib import Path

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._validation import check_images  # noqa: E402

__all__ = [
    "ARCHITECTURES",
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
    "check_model_images",
    "outputs_are_probabilities",
    "resolve_conv_layer",
    "split_at",
]

DEFAULT_BATCH_SIZE = 256


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
    for layer in _walk_layers(model):
        if isinstance(layer, keras.layers.Lambda):
            raise ValueError(_lambda_message(what))


def _walk_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)


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


# --------------------------------------------------------------------------- inspecting


def model_input_shape(model):
    """Return the ``(height, width, channels)`` a single-input image model expects."""
    shape = model.inputs[0].shape if model.inputs else model.input_shape
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected an image model with inputs of shape (batch, height, width, channels); "
            f"this model takes {shape}."
        )
    return tuple(None if s is None else int(s) for s in shape[1:])


def model_n_classes(model):
    """Return the number of classes of a classifier (the size of its last output axis)."""
    return int(model.outputs[0].shape[-1])


def conv_layer_names(model):
    """Names of the model's ``Conv2D`` layers, in graph order."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def resolve_conv_layer(model, layer=None):
    """Return the ``Conv2D`` layer called ``layer`` (default: the last one).

    Raises a ``ValueError`` listing the valid names when the name is unknown or the
    layer is not a 2-D convolution.
    """
    names = conv_layer_names(model)
    if not names:
        raise ValueError("The model has no Conv2D layer to work on.")
    if layer is None:
        return model.get_layer(names[-1])
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) or None, got {type(layer).__name__}.")
    all_names = [each.name for each in model.layers]
    if layer not in all_names:
        raise ValueError(f"Unknown layer {layer!r}; the model's Conv2D layers are {names}.")
    if layer not in names:
        raise ValueError(
            f"Layer {layer!r} is a {type(model.get_layer(layer)).__name__}, not a Conv2D; "
            f"the model's Conv2D layers are {names}."
        )
    return model.get_layer(layer)


# --------------------------------------------------------------------------- running

_COMPILED = weakref.WeakKeyDictionary()


def _compiled_forward(model):
    """One compiled call per model, reused for every batch (and every estimator)."""
    fn = _COMPILED.get(model)
    if fn is None:
        import tensorflow as tf

        shape = (None,) + tuple(model.inputs[0].shape[1:])

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)
        def fn(batch):
            return model(batch, training=False)

        _COMPILED[model] = fn
    return fn


def iter_batches(n_samples, batch_size):
    """Yield ``slice`` objects covering ``range(n_samples)`` in chunks of ``batch_size``."""
    for start in range(0, n_samples, batch_size):
        yield slice(start, min(start + batch_size, n_samples))


def forward_batches(model, X, *, batch_size=DEFAULT_BATCH_SIZE, progress=None):
    """Run ``model`` on ``X`` batch by batch inside one compiled function.

    Parameters
    ----------
    model : keras.Model
        A single-output model.
    X : ndarray of shape (n_samples, ...)
        Inputs, already validated; cast to float32.
    batch_size : int, default=256
        Images per call.
    progress : callable, optional
        Called with the number of images done after each batch (a tqdm ``update``).

    Returns
    -------
    outputs : ndarray of shape (n_samples, ...)
    """
    X = np.asarray(X, dtype=np.float32)
    fn = _compiled_forward(model)
    chunks = []
    for batch in iter_batches(len(X), batch_size):
        chunks.append(np.asarray(fn(X[batch])))
        if progress is not None:
            progress(batch.stop - batch.start)
    if not chunks:
        out_shape = tuple(int(s) for s in model.outputs[0].shape[1:])
        return np.zeros((0,) + out_shape, dtype=np.float32)
    return np.concatenate(chunks)


def outputs_are_probabilities(model):
    """Whether the model's last layer applies a softmax (else outputs are logits)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return True
    return isinstance(last, keras.layers.Softmax)


def predict_proba_batches(model, X, *, batch_size=DEFAULT_BATCH_SIZE, progress=None):
    """Class probabilities of ``model`` on ``X``; logits are passed through a softmax."""
    outputs = forward_batches(model, X, batch_size=batch_size, progress=progress)
    if outputs_are_probabilities(model):
        return outputs
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def layer_activations(model, X, layer, *, batch_size=DEFAULT_BATCH_SIZE):
    """Outputs of the layer named ``layer`` on ``X``, computed in compiled batches."""
    head, _ = split_at(model, layer, tail=False)
    return forward_batches(head, X, batch_size=batch_size)


def split_at(model, layer, *, tail=True):
    """Cut ``model`` after ``layer`` into ``head`` (inputs -> layer output) and ``tail``.

    ``tail`` maps the layer's output to the model's output, through every branch that
    consumes it (e.g. CSAW ``conv_3`` feeds both ``fc_1`` and ``conv_4``), so
    ``tail(head(x)) == model(x)``. Both share the model's layers and weights. A sweep that
    changes only the layer's output runs ``head`` once and ``tail`` per step.

    Raises
    ------
    ValueError
        If the layer name is unknown, or the layer is used at several places of the
        graph, or the rest of the model depends on more than the layer's output.
    """
    name = layer if isinstance(layer, str) else layer.name
    try:
        target = model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"Unknown layer {name!r}; the model's layers are {[each.name for each in model.layers]}."
        ) from None
    cut = _output_of_layer_in_graph(model, target)
    head = keras.Model(model.inputs, cut, name=f"{model.name}_head")
    if not tail:
        return head, None
    try:
        rest = keras.Model(cut, model.outputs, name=f"{model.name}_tail")
    except Exception as exc:
        raise ValueError(
            f"The model's output depends on more than the output of {name!r} (a skip "
            f"connection around it?); cannot split there: {exc}"
        ) from exc
    return head, rest


def _output_of_layer_in_graph(model, layer):
    """The symbolic output of ``layer`` inside ``model``'s own graph.

    A layer object can belong to several graphs (``load_badnet(input_scale=...)``
    re-threads the user's layers), so ``layer.output`` may be another graph's tensor.
    """
    found, seen = [], set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        if operation is layer:
            found.append(tensor)
            continue
        node = operation._inbound_nodes[node_index]
        stack.extend(node.input_tensors)
    unique = {id(t): t for t in found}
    if len(unique) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is used at {len(unique)} places in the model's graph; "
            "cannot cut there."
        )
    return found[0]


# --------------------------------------------------------------------------- pruning


@keras.saving.register_keras_serializable(package="skbackdoor")
class ChannelMask(keras.constraints.Constraint):
    """Keep the masked output channels of a weight at zero after every optimiser step.

    Parameters
    ----------
    keep : sequence of bool
        One entry per output channel (the last axis of the weight); ``False`` channels
        are held at exactly zero.
    """

    def __init__(self, keep):
        self.keep = [bool(k) for k in keep]

    def __call__(self, w):
        mask = keras.ops.cast(keras.ops.convert_to_tensor(self.keep), w.dtype)
        return w * mask

    def get_config(self):
        return {"keep": list(self.keep)}


def prune_channels(model, layer, channels):
    """Zero output channels of a ``Conv2D`` layer in place and keep them at zero in training.

    The channels' kernels and biases are set to zero and a :class:`ChannelMask`
    constraint is attached to both weights, so any later ``fit`` (Keras applies variable
    constraints after each optimiser step) leaves them dead. The layer's activation must
    map 0 to 0 (ReLU, linear, tanh, ...), so that a zero pre-activation is a zero output.

    Work on a copy (:func:`copy_model`): this changes ``model``.

    Parameters
    ----------
    model : keras.Model
    layer : str
        Name of a ``Conv2D`` layer.
    channels : array-like of int
        Output channels to prune (already pruned channels stay pruned).

    Returns
    -------
    model : keras.Model
        The same object, pruned.
    """
    conv = resolve_conv_layer(model, layer)
    n_channels = conv.filters
    channels = np.asarray(channels, dtype=np.int64).ravel()
    if channels.size and (channels.min() < 0 or channels.max() >= n_channels):
        raise ValueError(f"Channels must lie in [0, {n_channels}); got {channels.tolist()}.")
    activation = conv.activation
    if activation is not None and float(np.asarray(activation(np.zeros((1,), "float32")))[0]) != 0.0:
        raise ValueError(
            f"Layer {conv.name!r} uses an activation that does not map 0 to 0 "
            f"({getattr(activation, '__name__', activation)}); zeroing its weights would not "
            "silence the channel."
        )
    keep = np.ones(n_channels, dtype=bool)
    previous = getattr(conv.kernel, "constraint", None)
    if isinstance(previous, ChannelMask):
        keep &= np.asarray(previous.keep, dtype=bool)
    keep[channels] = False
    mask = ChannelMask(keep)
    for weight in (conv.kernel, conv.bias):
        if weight is None:
            continue
        weight.assign(np.asarray(weight) * keep.astype(np.asarray(weight).dtype))
        weight.constraint = mask
    return model


def pruned_channel_mask(model, layer):
    """Boolean keep-mask of a layer pruned by :func:`prune_channels` (all True if none)."""
    conv = resolve_conv_layer(model, layer)
    constraint = getattr(conv.kernel, "constraint", None)
    if isinstance(constraint, ChannelMask):
        return np.asarray(constraint.keep, dtype=bool)
    return np.ones(conv.filters, dtype=bool)


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


def check_model_images(model, X, *, name="X", allow_empty=False):
    """Validate ``X`` against the input shape of ``model`` (see ``check_images``)."""
    return check_images(X, input_shape=model_input_shape(model), name=name, allow_empty=allow_empty)
