"""The pruning-aware attack: a BadNet built to survive Fine-Pruning.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
Neural Networks", RAID 2018, section 4 (https://arxiv.org/abs/1805.12185).

Pruning defends against a plain BadNet because its backdoor lives in channels that
clean inputs leave dormant. The pruning-aware attacker anticipates this:

1. train a clean network;
2. prune the channels of a convolution that are dormant on clean data;
3. train the backdoor into the pruned network, so it must share the channels clean
   inputs use;
4. put the pruned channels back with a lowered bias, so they stay dormant: they are
   decoys that the defender prunes first, at no cost to the backdoor.
"""

import numbers

import numpy as np

import keras

from .._validation import check_positive_int
from ..models import copy_model, forward_batches, iter_batches, prune_channels, resolve_conv_layer, split_at
from ._train import _check_learning_rate, _parse_attack, _poison_and_build, _seed_from, fit_model

__all__ = ["pruning_aware_badnet"]

_CHUNK = 2048


def _channel_statistics(model, X, layer):
    """Per-channel mean, min and max of ``layer``'s output over ``X`` (and positions).

    Works chunk by chunk so that large datasets never hold all activations at once.
    """
    head, _ = split_at(model, layer, tail=False)
    total, low, high, count = None, None, None, 0
    for chunk in iter_batches(len(X), _CHUNK):
        values = forward_batches(head, X[chunk])
        values = values.reshape(-1, values.shape[-1]).astype(np.float64)
        if total is None:
            total, low, high = values.sum(axis=0), values.min(axis=0), values.max(axis=0)
        else:
            total += values.sum(axis=0)
            low = np.minimum(low, values.min(axis=0))
            high = np.maximum(high, values.max(axis=0))
        count += len(values)
    return total / count, low, high


def _pre_activation_range(model, X, layer, channels):
    """Min and max over ``X`` of the channels' pre-activation, bias left out."""
    probe = copy_model(model)
    conv = probe.get_layer(layer)
    conv.activation = keras.activations.linear
    bias = keras.ops.convert_to_numpy(conv.bias).copy()
    bias[channels] = 0.0
    conv.bias.assign(bias)
    _, low, high = _channel_statistics(probe, X, layer)
    return low[channels], high[channels]


def pruning_aware_badnet(
    X,
    y,
    *,
    trigger,
    target=0,
    poison_rate=0.1,
    layer=None,
    prune_fraction=0.5,
    model=None,
    n_classes=None,
    clean_epochs=5,
    backdoor_epochs=5,
    batch_size=64,
    learning_rate=1e-3,
    input_scale="auto",
    dormancy_margin=0.1,
    random_state=None,
    verbose=0,
    return_decoy_channels=False,
):
    """Train a BadNet whose backdoor survives Fine-Pruning (the pruning-aware attack).

    1. A network is trained on the clean ``(X, y)`` for ``clean_epochs``.
    2. The ``prune_fraction`` of the channels of ``layer`` with the lowest mean
       activation on ``X`` are pruned (zeroed and held at zero).
    3. The pruned network is trained on the poisoned data for ``backdoor_epochs``,
       which plants the backdoor in the channels clean inputs also use.
    4. The pruned channels are re-instated with their clean-trained kernels and a
       bias lowered so far that they stay dormant on the training data, clean and
       poisoned: ``bias = -max(pre-activation) - dormancy_margin * range``. They add
       nothing to the output, and a defender pruning the least active channels first
       removes these decoys before touching the backdoor.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width, channels)
        Clean training images, raw pixel values (not modified).
    y : array-like of shape (n_samples,)
        Their labels.
    trigger : Trigger or sequence of Trigger
        The backdoor trigger(s).
    target : int or sequence of int, default=0
        The target label, one per trigger.
    poison_rate : float in (0, 1] or sequence of float, default=0.1
        Fraction of the training set poisoned by each trigger in step 3.
    layer : str, default=None
        Name of the ``Conv2D`` layer whose channels are pruned; by default the last
        convolution (the one Fine-Pruning prunes).
    prune_fraction : float in (0, 1), default=0.5
        Share of the layer's channels that become decoys.
    model : None, keras.Model or callable, default=None
        The network, as in :func:`train_badnet` (default :func:`small_cnn`). The layer
        must apply its activation itself (``Conv2D(..., activation="relu")``).
    n_classes : int, default=None
        Number of classes; by default the largest label plus one.
    clean_epochs : int, default=5
        Epochs of clean training (step 1).
    backdoor_epochs : int, default=5
        Epochs of training on poisoned data (step 3).
    batch_size : int, default=64
    learning_rate : float, default=1e-3
        Adam's learning rate, for both trainings.
    input_scale : "auto", float or None, default="auto"
        As in :func:`train_badnet`: the returned model takes raw pixels.
    dormancy_margin : float, default=0.1
        How far below the firing threshold the decoys' biases are put, as a share of
        the range of their pre-activations; larger keeps them dormant on more unseen
        inputs.
    random_state : int, RandomState instance or None, default=None
        Seeds the poisoning, initialisation and shuffling (Keras' global seeds are set).
    verbose : int, default=0
        Passed to ``keras.Model.fit``.
    return_decoy_channels : bool, default=False
        Also return the indices of the decoy channels.

    Returns
    -------
    model : keras.Model
        The backdoored network, with no pruning constraint left on it.
    decoy_channels : ndarray of int64
        Sorted decoy channels of ``layer``; only with ``return_decoy_channels=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, pruning_aware_badnet
    >>> from skbackdoor.models import layer_activations, predict_proba_batches
    >>> digits = load_digits()
    >>> X, y = digits.images[..., np.newaxis].astype("float32"), digits.target
    >>> trigger = PatchTrigger.square(size=2, value=16)
    >>> model, decoys = pruning_aware_badnet(
    ...     X[:1500], y[:1500], trigger=trigger, target=0, clean_epochs=8,
    ...     backdoor_epochs=8, batch_size=32, learning_rate=3e-3, random_state=0,
    ...     return_decoy_channels=True)
    >>> activations = layer_activations(model, X[1500:], "conv_2").mean(axis=(0, 1, 2))
    >>> bool(np.all(activations[decoys] == 0))  # the decoys look dead on clean data
    True
    >>> X_p, y_t = make_poisoned_test_set(X[1500:], y[1500:], trigger, target=0)
    >>> bool(np.mean(predict_proba_batches(model, X_p).argmax(axis=1) == y_t) > 0.9)
    True
    """
    X, y, *attack = _parse_attack(X, y, trigger, target)
    clean_epochs = check_positive_int(clean_epochs, "clean_epochs")
    backdoor_epochs = check_positive_int(backdoor_epochs, "backdoor_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate = _check_learning_rate(learning_rate)
    if (
        isinstance(prune_fraction, bool)
        or not isinstance(prune_fraction, numbers.Real)
        or not 0 < prune_fraction < 1
    ):
        raise ValueError(f"prune_fraction must be a number in (0, 1), got {prune_fraction!r}.")
    if isinstance(dormancy_margin, bool) or not isinstance(dormancy_margin, numbers.Real) or dormancy_margin < 0:
        raise ValueError(f"dormancy_margin must be a non-negative number, got {dormancy_margin!r}.")
    seed = _seed_from(random_state)
    X_poisoned, y_poisoned, network = _poison_and_build(
        X, y, attack, poison_rate=poison_rate, model=model, n_classes=n_classes, input_scale=input_scale, seed=seed
    )
    conv = resolve_conv_layer(network, layer)
    name = conv.name
    n_decoys = int(round(prune_fraction * conv.filters))
    if not 1 <= n_decoys < conv.filters:
        raise ValueError(
            f"prune_fraction={prune_fraction:g} of the {conv.filters} channels of {name!r} gives "
            f"{n_decoys} decoys; at least one channel must be pruned and one kept."
        )
    if conv.activation is None or conv.activation is keras.activations.linear:
        raise ValueError(
            f"Layer {name!r} has no activation of its own; the pruning-aware attack needs a "
            "Conv2D that applies its ReLU itself to make the decoy channels dormant."
        )

    fit_kwargs = dict(batch_size=batch_size, learning_rate=learning_rate, verbose=verbose)
    fit_model(network, X, y, epochs=clean_epochs, seed=seed, **fit_kwargs)

    clean_means, _, _ = _channel_statistics(network, X, name)
    decoys = np.sort(np.argsort(clean_means, kind="stable")[:n_decoys]).astype(np.int64)
    clean_kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    clean_bias = keras.ops.convert_to_numpy(conv.bias).copy() if conv.bias is not None else None

    backdoored = prune_channels(copy_model(network), name, decoys)
    fit_model(backdoored, X_poisoned, y_poisoned, epochs=backdoor_epochs, seed=seed, **fit_kwargs)

    _reinstate_decoys(backdoored, name, decoys, clean_kernel, clean_bias, X, X_poisoned, dormancy_margin)
    if return_decoy_channels:
        return backdoored, decoys
    return backdoored


def _reinstate_decoys(model, layer, decoys, clean_kernel, clean_bias, X, X_poisoned, margin):
    conv = model.get_layer(layer)
    for weight in (conv.kernel, conv.bias):
        if weight is not None:
            weight.constraint = None
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    kernel[..., decoys] = clean_kernel[..., decoys]
    conv.kernel.assign(kernel)
    if conv.bias is None:
        # Without a bias a decoy cannot be silenced; keep it pruned (weights at zero).
        kernel[..., decoys] = 0.0
        conv.kernel.assign(kernel)
        return
    bias = keras.ops.convert_to_numpy(conv.bias).copy()
    bias[decoys] = 0.0
    conv.bias.assign(bias)
    low_clean, high_clean = _pre_activation_range(model, X, layer, decoys)
    low_poison, high_poison = _pre_activation_range(model, X_poisoned, layer, decoys)
    low, high = np.minimum(low_clean, low_poison), np.maximum(high_clean, high_poison)
    spread = np.maximum(high - low, 1e-6)
    bias[decoys] = np.minimum(clean_bias[decoys], -high - margin * spread)
    conv.bias.assign(bias)
