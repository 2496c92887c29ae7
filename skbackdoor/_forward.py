"""Compiled, batched forward passes: how skbackdoor runs a network over many images.

A ``model.predict`` call per image costs ~46 ms; one ``tf.function`` traced once per
model (and per cut layer) runs thousands of images per second. The compiled functions
are cached per ``(model, layer)`` and keyed weakly on the model, so every estimator
that runs the same model reuses one trace, and a model that is garbage collected takes
its compiled functions with it.
"""

import weakref

import numpy as np
from sklearn.utils import gen_batches

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._graph import IDENTITY_AT_INFERENCE, producer, split_at  # noqa: E402

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "compiled_forward",
    "forward_batches",
    "iter_batches",
    "layer_activations",
    "outputs_are_probabilities",
    "predict_proba_batches",
]

DEFAULT_BATCH_SIZE = 256

# model -> {(layer name or None, layer ids): compiled function}
_COMPILED = weakref.WeakKeyDictionary()


def iter_batches(n_samples, batch_size):
    """Yield ``slice`` objects covering ``range(n_samples)`` in chunks of ``batch_size``.

    :func:`sklearn.utils.gen_batches` under the name the package has always used, also
    for ``n_samples=0`` (no batch), which ``gen_batches`` refuses.
    """
    if n_samples == 0:
        return iter(())
    return gen_batches(n_samples, batch_size)


def compiled_forward(model, layer=None):
    """The compiled inference function of ``model`` (or of its head up to ``layer``).

    Traced once for any batch size (the batch axis of the input signature is
    ``None``) and cached per model and layer, so repeated calls never retrace.
    """
    if layer is not None and not isinstance(layer, str):
        layer = layer.name
    # A Sequential can still gain or lose layers; its layers are part of the key.
    key = (layer, tuple(id(each) for each in model.layers))
    per_model = _COMPILED.setdefault(model, {})
    fn = per_model.get(key)
    if fn is None:
        if layer is None:
            fn = _trace_once(weakref.ref(model), model.inputs[0].shape)
        else:
            head, _ = split_at(model, layer, tail=False)
            fn = _trace_once(lambda: head, head.inputs[0].shape)
        per_model[key] = fn
    return fn


def _trace_once(get_model, input_shape):
    import tensorflow as tf

    spec = tf.TensorSpec((None,) + tuple(input_shape[1:]), tf.float32)

    # The model is reached through ``get_model`` (a weak reference for a user's
    # model) so that the cache, keyed weakly on the model, does not keep it alive.
    @tf.function(input_signature=[spec], autograph=False)
    def fn(batch):
        return get_model()(batch, training=False)

    # One trace per model is the design, not the accident TensorFlow's "frequent
    # retracing" warning is about: many models (copies, heads) share this code.
    if hasattr(fn, "_omit_frequent_tracing_warning"):
        fn._omit_frequent_tracing_warning = True
    return fn


def forward_batches(model, X, *, batch_size=DEFAULT_BATCH_SIZE, progress=None, layer=None):
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
    layer : str, optional
        Return the outputs of this layer instead of the model's (see
        :func:`layer_activations`).

    Returns
    -------
    outputs : ndarray of shape (n_samples, ...)
    """
    X = np.asarray(X, dtype=np.float32)
    fn = compiled_forward(model, layer)
    chunks = []
    for batch in iter_batches(len(X), batch_size):
        chunks.append(np.asarray(fn(X[batch])))
        if progress is not None:
            progress(batch.stop - batch.start)
    if not chunks:
        return _empty(model, layer)
    return np.concatenate(chunks)


def _empty(model, layer):
    if layer is None:
        shape = model.outputs[0].shape
    else:
        head, _ = split_at(model, layer, tail=False)
        shape = head.outputs[0].shape
    return np.zeros((0,) + tuple(int(s) for s in shape[1:]), dtype=np.float32)


# Layers that pass their input's values through at inference, looked through when
# finding the activation that produced a model's output.
_PASS_THROUGH = (*IDENTITY_AT_INFERENCE, keras.layers.Flatten, keras.layers.Reshape)
_PROBABILITY_VERDICTS = weakref.WeakKeyDictionary()


def outputs_are_probabilities(model):
    """Whether the model outputs class probabilities (else logits, passed through a softmax).

    Decided by the activation that produced the output, wherever it sits: inside a
    nested model, or before layers that pass values through unchanged at inference
    (dropout, noise, flatten, reshape, a linear ``Activation``). A softmax (a layer's
    ``activation`` or a ``Softmax`` layer) means probabilities; a ``Dense`` or
    convolution without activation means logits. Anything else (a custom or ``Lambda``
    layer, ``sigmoid`` ...) is measured once on a probe batch of 8 images (pixels in
    0-1 and in 0-255): probabilities if every output is non-negative and every row
    sums to 1 (within 1e-3).
    """
    key = tuple(id(layer) for layer in model.layers)
    cached = _PROBABILITY_VERDICTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    verdict = _output_activation_verdict(model)
    if verdict is None:
        verdict = _probe_says_probabilities(model)
    _PROBABILITY_VERDICTS[model] = (key, verdict)
    return verdict


def _output_activation_verdict(model):
    """True (softmax), False (linear scores) or None (cannot tell from the graph)."""
    tensor = model.outputs[0]
    while True:
        layer, node, tensor_index = producer(tensor)
        if isinstance(layer, keras.Model):
            tensor = layer.outputs[tensor_index]  # the nested model's own graph
            continue
        if isinstance(layer, keras.layers.Softmax):
            return True
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        if activation == "softmax":
            return True
        passes = isinstance(layer, _PASS_THROUGH) or (
            isinstance(layer, keras.layers.Activation) and activation == "linear"
        )
        if passes:
            (tensor,) = node.input_tensors
            continue
        has_kernel = any(weight.name.endswith("kernel") for weight in layer.weights)
        if has_kernel and activation == "linear":
            return False
        return None


def _probe_says_probabilities(model):
    shape = tuple(32 if size is None else size for size in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    probe = np.concatenate([rng.uniform(0, 1, (4,) + shape), rng.uniform(0, 255, (4,) + shape)])
    outputs = forward_batches(model, probe)
    if outputs.ndim != 2:
        return False
    return bool(np.all(outputs >= -1e-6) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))


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
    return forward_batches(model, X, batch_size=batch_size, layer=layer)
