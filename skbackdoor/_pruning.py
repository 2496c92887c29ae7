"""Pruning convolution channels: zero them and keep them at zero through training.

:func:`prune_channels` zeroes a ``Conv2D`` layer's output channels and attaches a
:class:`ChannelMask` constraint to its kernel and bias; Keras applies variable
constraints after every optimiser step, so a later ``fit`` leaves the channels dead.
"""

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._graph import resolve_conv_layer  # noqa: E402

__all__ = ["ChannelMask", "prune_channels", "pruned_channel_mask"]


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
