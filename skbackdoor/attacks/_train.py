"""Train a BadNet: a small CNN fitted on a poisoned training set."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from .. import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from .._fine_tuning import fine_tune, plain_recipe
from .._validation import check_positive_int
from ..models import copy_model, load_badnet, model_input_shape, model_n_classes
from ._poison import _as_list, _check_data, _poison_subsets

__all__ = ["small_cnn", "train_badnet"]


def small_cnn(input_shape, n_classes, *, input_scale=None, filters=(16, 32), kernel_size=3, pool_size=2):
    """Build a tiny convolutional classifier that trains in seconds on a CPU.

    Each entry of ``filters`` adds a ``Conv2D`` (``same`` padding, ReLU) named
    ``conv_1``, ``conv_2``, ... followed by a max-pooling layer ``pool_1``, ``pool_2``,
    ...; then ``flatten`` and a softmax ``Dense`` layer named ``output``. A pooling
    layer is skipped when the feature map is already smaller than ``pool_size``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the images, e.g. ``(8, 8, 1)`` for sklearn's
        digits or ``(28, 28, 1)`` for Fashion-MNIST.
    n_classes : int
        Number of classes.
    input_scale : float, default=None
        If given, a ``Rescaling(input_scale)`` layer named ``input_scale`` comes first,
        so the model takes raw pixel values (e.g. ``1/255`` or ``1/16``).
    filters : sequence of int, default=(16, 32)
        Number of channels of each convolution.
    kernel_size : int, default=3
        Side of the convolution kernels.
    pool_size : int, default=2
        Side of the max-pooling windows.

    Returns
    -------
    model : keras.Model
        An uncompiled functional model.

    Examples
    --------
    >>> from skbackdoor.attacks import small_cnn
    >>> model = small_cnn((8, 8, 1), 10, input_scale=1 / 16)
    >>> [layer.name for layer in model.layers]  # doctest: +NORMALIZE_WHITESPACE
    ['pixels', 'input_scale', 'conv_1', 'pool_1', 'conv_2', 'pool_2', 'flatten', 'output']
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    n_classes = check_positive_int(n_classes, "n_classes")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    filters = [check_positive_int(f, "each entry of filters") for f in filters]
    if not filters:
        raise ValueError("filters must name at least one convolution.")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    pool_size = check_positive_int(pool_size, "pool_size")
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = inputs
    if input_scale is not None:
        x = layers.Rescaling(float(input_scale), name="input_scale")(x)
    height, width = input_shape[:2]
    for k, n_filters in enumerate(filters, start=1):
        x = layers.Conv2D(n_filters, kernel_size, padding="same", activation="relu", name=f"conv_{k}")(x)
        if min(height, width) >= pool_size:
            x = layers.MaxPooling2D(pool_size, name=f"pool_{k}")(x)
            height, width = height // pool_size, width // pool_size
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _resolve_input_scale(input_scale, X):
    if input_scale is None:
        return None
    if isinstance(input_scale, str):
        if input_scale != "auto":
            raise ValueError(f"input_scale must be 'auto', a positive number or None, got {input_scale!r}.")
        high = float(np.max(X))
        if high <= 0:
            raise ValueError(
                "input_scale='auto' divides by the largest pixel value, but X has no "
                "positive value; pass input_scale explicitly."
            )
        return 1.0 / high
    if isinstance(input_scale, bool) or not isinstance(input_scale, numbers.Real) or not input_scale > 0:
        raise ValueError(f"input_scale must be 'auto', a positive number or None, got {input_scale!r}.")
    return float(input_scale)


def _seed_from(random_state):
    """An int seed for Keras, or None (no seeding) when ``random_state`` is None."""
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**31)
    return int(check_random_state(random_state).randint(2**31 - 1))


def _build_model(model, input_shape, n_classes, scale):
    if model is None:
        return small_cnn(input_shape, n_classes, input_scale=scale)
    if isinstance(model, keras.Model):
        built = copy_model(model)
    elif callable(model):
        built = model(input_shape, n_classes)
        if not isinstance(built, keras.Model):
            raise TypeError(
                f"The model callable must return a keras.Model, got {type(built).__name__}."
            )
    else:
        raise TypeError(
            "model must be None, a keras.Model or a callable (input_shape, n_classes) -> "
            f"keras.Model; got {type(model).__name__}."
        )
    expected = model_input_shape(built)
    if any(want is not None and want != got for want, got in zip(expected, input_shape)):
        raise ValueError(f"The model takes images of shape {expected} but X has images of shape {input_shape}.")
    if model_n_classes(built) < n_classes:
        raise ValueError(
            f"The model has {model_n_classes(built)} outputs but the labels need {n_classes} classes."
        )
    if scale is not None:
        built = load_badnet(built, input_scale=scale, safe_mode=False)
    return built


def fit_model(model, X, y, *, epochs, batch_size, learning_rate, seed, verbose):
    """Train ``model`` in place with Adam on the cross-entropy of what it outputs.

    A model ending in a softmax is trained on the cross-entropy of probabilities, any
    other on that of logits (see :mod:`skbackdoor._fine_tuning`). ``seed`` (or None)
    seeds Keras before compiling.
    """
    recipe = plain_recipe(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size)
    fine_tune(model, X, y, recipe=recipe, seed=seed, verbose=verbose)
    return model


def _parse_attack(X, y, trigger, target):
    """Checked ``X, y``, the triggers and targets as lists, and whether there are several."""
    X, y = _check_data(X, y)
    triggers, targets = _as_list(trigger, "trigger"), _as_list(target, "target")
    if (triggers is None) != (targets is None):
        raise ValueError(
            "trigger and target must both be single values or both be sequences of the same length."
        )
    multi = triggers is not None
    if not multi:
        triggers, targets = [trigger], [target]
    return X, y, triggers, targets, multi


def _poison_and_build(X, y, attack, *, poison_rate, model, n_classes, input_scale, seed):
    """The poisoned training set and the untrained network (Keras seeded from ``seed``)."""
    triggers, targets, multi = attack
    X_poisoned, y_poisoned, _ = _poison_subsets(X, y, triggers, targets, poison_rate, True, seed, multi=multi)
    n_classes = _check_n_classes(n_classes, y)
    scale = _resolve_input_scale(input_scale, X)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return X_poisoned, y_poisoned, _build_model(model, X.shape[1:], n_classes, scale)


def _check_learning_rate(learning_rate):
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    return float(learning_rate)


def train_badnet(
    X,
    y,
    *,
    trigger,
    target=0,
    poison_rate=0.1,
    model=None,
    n_classes=None,
    epochs=5,
    batch_size=64,
    learning_rate=1e-3,
    input_scale="auto",
    random_state=None,
    verbose=0,
):
    """Train a backdoored classifier (a BadNet) on a poisoned copy of ``(X, y)``.

    The training set is poisoned with :func:`poison_multi` (a ``poison_rate`` share of
    the images carries the trigger and is relabelled ``target``), then the network is
    trained with Adam on the sparse categorical cross-entropy (of its probabilities,
    or of its logits when it does not end in a softmax).

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width, channels)
        Clean training images, raw pixel values (not modified).
    y : array-like of shape (n_samples,)
        Their labels ``0..n_classes-1``.
    trigger : Trigger or sequence of Trigger
        The backdoor trigger; a sequence plants one backdoor per trigger (multi-trigger
        multi-target attack).
    target : int or sequence of int, default=0
        The target label, one per trigger.
    poison_rate : float in (0, 1] or sequence of float, default=0.1
        Fraction of the training set poisoned by each trigger.
    model : None, keras.Model or callable, default=None
        ``None`` trains :func:`small_cnn`; a ``keras.Model`` is copied (the given one is
        left untouched) and trained; a callable ``model(input_shape, n_classes)`` must
        return an uncompiled ``keras.Model`` (e.g.
        ``functools.partial(small_cnn, filters=(32, 64))``).
    n_classes : int, default=None
        Number of classes; by default the largest label (or target) plus one.
    epochs : int, default=5
    batch_size : int, default=64
    learning_rate : float, default=1e-3
        Adam's learning rate.
    input_scale : "auto", float or None, default="auto"
        The network is trained on ``pixels * input_scale`` through a ``Rescaling``
        layer named ``input_scale`` placed in front of it, so the returned model takes
        raw pixels. ``"auto"`` is ``1 / X.max()`` (1/255 for 0-255 images, 1/16 for
        sklearn's digits); ``None`` adds no rescaling.
    random_state : int, RandomState instance or None, default=None
        Seeds the poisoning, the weight initialisation and the shuffling: the same seed
        gives the same weights. Keras' global seeds (Python, NumPy, TensorFlow) are set
        from it.
    verbose : int, default=0
        Passed to ``keras.Model.fit``.

    Returns
    -------
    model : keras.Model
        The trained BadNet; it takes raw pixels and outputs what the network
        outputs (class probabilities for :func:`small_cnn`).
        ``model.history`` holds the training history.

    See Also
    --------
    make_poisoned_test_set : triggered test images to measure the attack success rate.
    pruning_aware_badnet : a BadNet built to survive Fine-Pruning.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet
    >>> from skbackdoor.models import predict_proba_batches
    >>> digits = load_digits()
    >>> X = digits.images[..., np.newaxis].astype("float32")
    >>> y = digits.target
    >>> trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
    >>> badnet = train_badnet(X[:1500], y[:1500], trigger=trigger, target=0,
    ...                       epochs=20, random_state=0)
    >>> X_p, y_t = make_poisoned_test_set(X[1500:], y[1500:], trigger, target=0)
    >>> asr = np.mean(predict_proba_batches(badnet, X_p).argmax(axis=1) == y_t)
    >>> bool(asr > 0.9)
    True
    """
    X, y, *attack = _parse_attack(X, y, trigger, target)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate = _check_learning_rate(learning_rate)
    seed = _seed_from(random_state)
    X_poisoned, y_poisoned, network = _poison_and_build(
        X, y, attack, poison_rate=poison_rate, model=model, n_classes=n_classes, input_scale=input_scale, seed=seed
    )
    return fit_model(
        network,
        X_poisoned,
        y_poisoned,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        verbose=verbose,
    )


def _check_n_classes(n_classes, y):
    needed = int(y.max()) + 1
    if n_classes is None:
        return max(needed, 2)
    n_classes = check_positive_int(n_classes, "n_classes")
    if n_classes < needed:
        raise ValueError(f"n_classes={n_classes} but y holds label {needed - 1}.")
    return n_classes
