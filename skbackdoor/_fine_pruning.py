"""Fine-Pruning: prune the dormant channels of a convolution, then fine-tune.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018, https://arxiv.org/abs/1805.12185.

A backdoor often lives in channels that clean inputs leave dormant. Pruning the
channels of a late convolution in increasing order of their mean activation on clean
data removes them; fine-tuning on the same clean data then repairs the accuracy lost
and erases what is left of the backdoor (including the "pruning-aware" attack that
hides it in the active channels).

The pruning sweep (validation accuracy for every number of channels pruned) runs the
network up to the pruned layer once. Layers that act on each channel separately and
keep a dead channel dead (pooling, ReLU, dropout, flatten, ...) are folded into that
cached part; the layers that read the cached tensor next are linear, so pruning one
more channel subtracts that channel's contribution from their pre-activations instead
of recomputing them. Only the layers after those run once per pruning step.
"""

import numbers

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils._param_validation import Interval, StrOptions  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from ._base import BadNetEstimatorMixin, RepairedModelPredictMixin, progress_bar  # noqa: E402
from ._validation import check_labels  # noqa: E402
from .models import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    copy_model,
    forward_batches,
    iter_batches,
    model_n_classes,
    outputs_are_probabilities,
    predict_proba_batches,
    prune_channels,
    resolve_conv_layer,
    split_at,
)

__all__ = ["FinePruner"]


class FinePruner(RepairedModelPredictMixin, BadNetEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Repair a backdoored Keras classifier by Fine-Pruning (Liu et al., RAID 2018).

    ``fit`` ranks the output channels of one convolution on clean data, prunes them in
    increasing order, and fine-tunes the pruned network on the clean data with Adam.
    Pruned channels are held at exactly zero during fine-tuning by a weight constraint
    (:class:`skbackdoor.models.ChannelMask`), not left to chance. The repaired network
    is ``model_``; ``predict``, ``predict_proba`` and ``score`` use it. The user's model
    is never modified.

    Parameters
    ----------
    model : keras.Model, str or path-like, or fitted scikeras KerasClassifier
        The (possibly backdoored) classifier, taking images ``(n, H, W, C)`` and
        returning class probabilities or logits. See
        :func:`skbackdoor.models.load_badnet` for the accepted forms.
    layer : str, default=None
        Name of the ``Conv2D`` layer to prune. ``None`` takes the last convolution.
        The paper prunes the last convolutional layer; the CSAW-HackML reports prune
        ``conv_3`` of the DeepID net, whose channels feed both ``fc_1`` and ``conv_4``.
    ranking : {"activation", "l1"}, default="activation"
        Order of pruning. ``"activation"`` (the paper): increasing mean activation of
        each channel over the images and positions of the clean data. ``"l1"``:
        increasing L1 norm of each channel's kernel (weight-magnitude pruning, used by
        one CSAW report). Ties keep the channel order.
    prune_fraction : float in [0, 1), default=None
        Share of the layer's channels to prune: ``floor(prune_fraction * n_channels)``
        channels. ``None`` applies the paper's stopping rule with
        ``max_accuracy_drop``. ``0`` gives fine-tuning alone.
    max_accuracy_drop : float in [0, 1], default=0.04
        Used when ``prune_fraction`` is None: channels are pruned one by one while the
        validation accuracy of the pruned (not yet fine-tuned) network stays at or
        above the unpruned accuracy minus this drop; pruning stops before the first
        channel that takes it below (and always leaves one channel). In accuracy units: ``0.04`` is 4 points, the
        paper's and the CSAW reports' middle setting (they saved models at 2%, 4%
        and 10%).
    learning_rate : float, default=1e-3
        Adam learning rate of the fine-tuning.
    epochs : int, default=10
        Fine-tuning epochs. ``0`` gives pruning alone.
    batch_size : int, default=64
        Fine-tuning mini-batch size.
    validation_fraction : float in (0, 1), default=None
        Share of the fit data held out, stratified by class, to measure the pruning
        curve and the stopping rule, and reported as ``val_accuracy`` in
        ``history_``; the rest is used for fine-tuning. ``None`` (the default, as in
        the paper and the CSAW reports) uses all the fit data for both: the clean data
        a defender owns is scarce, the pruning curve is measured before any
        fine-tuning, and the activation ranking uses no labels, so sharing the data
        costs little bias and keeps every image for fine-tuning. The channel ranking
        always uses all the fit data.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split and Keras' random generators (weight shuffling
        and dropout during fine-tuning). With an int, ``fit`` is deterministic: same
        pruned channels and same fine-tuned weights. Note that ``fit`` then calls
        ``keras.utils.set_random_seed``, which seeds Python's, NumPy's and
        TensorFlow's global generators.
    verbose : int, default=0
        ``0``: silent. ``>= 1``: progress bars for the sweep and a summary line;
        passed to Keras ``fit`` as its ``verbose`` (``1`` a bar, ``2`` a line per
        epoch).

    Attributes
    ----------
    model_ : keras.Model
        The fine-pruned network B'. Its pruned channels have zero weights and biases
        and keep a :class:`~skbackdoor.models.ChannelMask` constraint, so further
        training leaves them at zero.
    layer_ : str
        Name of the pruned layer.
    n_channels_ : int
        Number of output channels of ``layer_``.
    channel_activations_ : ndarray of shape (n_channels_,)
        Mean activation of each channel of ``layer_`` over all the fit images and
        positions, before pruning.
    pruning_order_ : ndarray of shape (n_channels_,)
        All channels in the order they are pruned.
    pruned_channels_ : ndarray of int
        The pruned channels, in pruning order: ``pruning_order_[:n_pruned]``.
    pruning_curve_ : dict of ndarray
        Validation accuracy of the pruned network before fine-tuning, for every number
        of channels pruned from 0 to ``n_channels_`` (the whole layer, so the curve can
        be plotted and the stopping rule checked): ``"n_pruned"`` (int),
        ``"fraction"`` (``n_pruned / n_channels_``) and ``"accuracy"``.
    history_ : dict of list
        Keras ``History.history`` of the fine-tuning (``loss``, ``accuracy`` and, with
        ``validation_fraction``, ``val_loss`` and ``val_accuracy`` per epoch); empty
        when ``epochs=0``.
    classes_ : ndarray of shape (n_classes_,)
        ``0 .. n_classes_ - 1``, the model's classes.
    n_classes_ : int
        Number of outputs of the model.
    pixel_range_ : tuple of float
        ``(min, max)`` pixel values of the fit data; ``predict`` refuses images far
        outside it (e.g. raw 0-255 pixels given to a model fitted on pixels / 255).

    See Also
    --------
    skbackdoor.GoodNetClassifier : Combine the BadNet and the repaired network into a
        classifier that flags disagreements as poisoned.
    skbackdoor.plotting.plot_pruning_curve : Clean accuracy and ASR against the
        fraction pruned.

    Notes
    -----
    The sweep folds every layer between ``layer`` and the next linear layers into the
    cached part when it acts channel by channel and maps zero to zero: pooling,
    element-wise activations with ``f(0) = 0``, dropout and noise layers, padding,
    cropping, up-sampling and ``Flatten`` (channels last). When the layers that read
    the cached tensor are all ``Dense`` or ``Conv2D``, each pruning step updates their
    pre-activations by one channel's contribution (accumulated in float64) and runs
    only the layers after them; otherwise (e.g. a ``BatchNormalization`` after the
    convolution) it runs everything after the cached tensor on the masked tensor. In
    both cases the masked quantity is the convolution's output, exactly what
    :func:`~skbackdoor.models.prune_channels` zeroes.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skbackdoor import FinePruner
    >>> digits = load_digits()
    >>> X, y = digits.images[..., np.newaxis].astype("float32"), digits.target
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Rescaling(1 / 16),
    ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = model.fit(X[:1000], y[:1000], epochs=3, verbose=0)
    >>> pruner = FinePruner(model=model, prune_fraction=0.5, epochs=2, random_state=0)
    >>> pruner.fit(X[1000:1400], y[1000:1400]).pruned_channels_.shape
    (4,)
    >>> pruner.predict(X[1400:1405]).shape
    (5,)
    """

    _parameter_constraints = {
        "model": "no_validation",
        "layer": [str, None],
        "ranking": [StrOptions({"activation", "l1"})],
        "prune_fraction": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "max_accuracy_drop": [Interval(numbers.Real, 0, 1, closed="both")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        model=None,
        layer=None,
        ranking="activation",
        prune_fraction=None,
        max_accuracy_drop=0.04,
        learning_rate=1e-3,
        epochs=10,
        batch_size=64,
        validation_fraction=None,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.layer = layer
        self.ranking = ranking
        self.prune_fraction = prune_fraction
        self.max_accuracy_drop = max_accuracy_drop
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Prune the ranked channels of ``layer`` and fine-tune on clean data.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Clean images (the defender's validation set), scaled as the model expects.
        y : array-like of shape (n_samples,)
            Their true classes, integers in ``0 .. n_classes - 1``.

        Returns
        -------
        self : FinePruner
            The fitted estimator.
        """
        rng = check_random_state(self.random_state)
        keras_seed = None if self.random_state is None else int(rng.randint(np.iinfo(np.int32).max))
        if keras_seed is not None:
            # Before copying: dropout layers draw their seeds when they are built.
            keras.utils.set_random_seed(keras_seed)
        badnet = self._load_badnet()
        n_classes = _check_classifier_outputs(badnet)
        conv = resolve_conv_layer(badnet, self.layer)
        X = self._validate_images(X, badnet, reset=True)
        y = check_labels(y, n_samples=len(X), n_classes=n_classes)
        tune_rows, holdout_rows = self._split(y, rng)
        sweep_rows = np.arange(len(y)) if holdout_rows is None else holdout_rows

        model = copy_model(badnet)
        self.layer_ = conv.name
        self.n_channels_ = int(conv.filters)
        self.n_classes_ = n_classes
        self.classes_ = np.arange(n_classes)

        sweep = _PruningSweep(model, self.layer_)
        with progress_bar(len(X), verbose=self.verbose, desc=f"activations of {self.layer_}") as update:
            cached, channel_sums = sweep.cache(X, progress=update)
        positions = len(X) * sweep.positions_per_image
        self.channel_activations_ = (channel_sums / positions).astype(np.float64)
        if self.ranking == "activation":
            scores = self.channel_activations_
        else:
            scores = _kernel_l1_norms(model.get_layer(self.layer_))
        self.pruning_order_ = np.argsort(scores, kind="stable")
        accuracy = sweep.accuracy_curve(
            [part[sweep_rows] for part in cached], y[sweep_rows], self.pruning_order_, verbose=self.verbose
        )
        del cached
        n_steps = np.arange(self.n_channels_ + 1)
        self.pruning_curve_ = {
            "n_pruned": n_steps,
            "fraction": n_steps / self.n_channels_,
            "accuracy": accuracy,
        }
        n_pruned = self._n_to_prune(accuracy)
        self.pruned_channels_ = self.pruning_order_[:n_pruned].copy()
        prune_channels(model, self.layer_, self.pruned_channels_)
        if self.verbose:
            print(
                f"FinePruner: pruned {n_pruned}/{self.n_channels_} channels of {self.layer_!r} "
                f"(validation accuracy {accuracy[0]:.4f} -> {accuracy[n_pruned]:.4f} before "
                "fine-tuning)"
            )
        self.history_ = self._fine_tune(model, X, y, tune_rows, holdout_rows)
        self.model_ = model
        return self

    def _split(self, y, rng):
        """Rows used for fine-tuning and, with ``validation_fraction``, the held-out rows."""
        if self.validation_fraction is None:
            return np.arange(len(y)), None
        classes, counts = np.unique(y, return_counts=True)
        n_holdout = int(np.ceil(self.validation_fraction * len(y)))
        n_tune = len(y) - n_holdout
        too_few = classes[counts < 2]
        if too_few.size or n_holdout < classes.size or n_tune < classes.size:
            detail = (
                f"classes {too_few[:10].tolist()}{' ...' if too_few.size > 10 else ''} have a "
                "single sample"
                if too_few.size
                else f"{n_holdout} held-out and {n_tune} fine-tuning samples cannot each "
                f"hold all {classes.size} classes"
            )
            raise ValueError(
                f"validation_fraction={self.validation_fraction} needs a stratified split in "
                f"which every class has a sample on both sides, but {detail}. Give more "
                "samples per class, change validation_fraction, or use "
                "validation_fraction=None to measure the pruning curve on the fit data."
            )
        from sklearn.model_selection import train_test_split

        tune_rows, holdout_rows = train_test_split(
            np.arange(len(y)),
            test_size=n_holdout,
            stratify=y,
            random_state=rng.randint(np.iinfo(np.int32).max),
        )
        return np.sort(tune_rows), np.sort(holdout_rows)

    def _n_to_prune(self, accuracy):
        """Number of channels to prune; at least one channel always stays."""
        if self.prune_fraction is not None:
            n_pruned = int(np.floor(self.prune_fraction * self.n_channels_ + 1e-9))
        else:
            # Accuracies are counts / n: the slack only absorbs the rounding of the threshold.
            below = np.flatnonzero(accuracy < accuracy[0] - self.max_accuracy_drop - 1e-9)
            n_pruned = int(below[0]) - 1 if below.size else self.n_channels_
        return min(n_pruned, self.n_channels_ - 1)

    def _fine_tune(self, model, X, y, tune_rows, holdout_rows):
        if self.epochs == 0:
            return {}
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=not outputs_are_probabilities(model)
            ),
            metrics=["accuracy"],
        )
        validation = None if holdout_rows is None else (X[holdout_rows], y[holdout_rows])
        history = model.fit(
            X[tune_rows],
            y[tune_rows],
            epochs=self.epochs,
            batch_size=self.batch_size,
            shuffle=True,
            validation_data=validation,
            verbose=int(self.verbose),
        )
        return {key: [float(value) for value in values] for key, values in history.history.items()}

    def pruning_sweep(self, X, y):
        """Accuracy of the BadNet pruned in ``pruning_order_``, before fine-tuning.

        With poisoned images and the attacker's targets as ``y`` this is the attack
        success rate against the fraction pruned (the paper's Figure 3); with clean
        images and true labels, the clean accuracy.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Images scaled like the fit data.
        y : int or array-like of shape (n_samples,)
            Labels to compare the predictions with (one label for all images, or one
            per image).

        Returns
        -------
        curve : dict of ndarray
            ``"n_pruned"``, ``"fraction"`` and ``"accuracy"``, as ``pruning_curve_``.
        """
        check_is_fitted(self)
        badnet = self._load_badnet()
        X = self._validate_images(X, badnet, reset=False)
        y = np.full(len(X), y, dtype=np.int64) if np.ndim(y) == 0 else y
        y = check_labels(y, n_samples=len(X), n_classes=self.n_classes_)
        sweep = _PruningSweep(copy_model(badnet), self.layer_)
        cached, _ = sweep.cache(X)
        accuracy = sweep.accuracy_curve(cached, y, self.pruning_order_)
        return {
            "n_pruned": self.pruning_curve_["n_pruned"].copy(),
            "fraction": self.pruning_curve_["fraction"].copy(),
            "accuracy": accuracy,
        }


def _check_classifier_outputs(model):
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            "FinePruner needs a classifier with one output of shape (batch, n_classes); "
            f"the model's outputs have shapes {[tuple(o.shape) for o in model.outputs]}."
        )
    n_classes = model_n_classes(model)
    if n_classes < 2:
        raise ValueError(
            f"The model has {n_classes} output; FinePruner needs one output per class "
            "(at least 2), as probabilities or logits."
        )
    return n_classes


def _kernel_l1_norms(conv):
    kernel = np.asarray(conv.kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).astype(np.float64)


# ----------------------------------------------------------------------------- sweep


_DEAD_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_SPATIAL = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
)
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _keeps_channels_apart(layer, tensor, n_channels):
    """Whether ``layer(x * mask) == layer(x) * mask`` for any channel mask.

    True for layers that treat each channel on its own and map a zero channel to zero,
    when ``tensor`` still has the channels on its last axis (of length a multiple of
    ``n_channels``, channel ``i % n_channels`` at index ``i``).
    """
    rank, last = len(tensor.shape), tensor.shape[-1]
    if isinstance(layer, _DEAD_AT_INFERENCE):
        return True
    if isinstance(layer, keras.layers.Flatten):
        return rank == 2 or (_channels_last(layer) and last == n_channels)
    if isinstance(layer, _SPATIAL):
        return rank == 4 and last == n_channels and _channels_last(layer)
    if isinstance(layer, _ELEMENTWISE):
        if isinstance(layer, keras.layers.Activation) and getattr(
            layer.activation, "__name__", ""
        ) in ("softmax", "log_softmax"):
            return False
        probe = np.zeros((1,) + tuple(1 if s is None else s for s in tensor.shape[1:]), "float32")
        return bool(np.all(np.asarray(layer(probe)) == 0))
    return False


def _consumers(model):
    """Map ``id(tensor)`` to the graph nodes of ``model`` that read it."""
    consumers, seen = {}, set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        for source in node.input_tensors:
            users = consumers.setdefault(id(source), [])
            if all(user is not node for user in users):
                users.append(node)
            stack.append(source)
    return consumers


class _Frontier:
    """A linear layer reading a cached tensor, whose pre-activation is updated per channel.

    ``source`` is the index of the cached tensor it reads; channel ``c`` of that tensor
    sits at the indices ``i`` of its last axis with ``i % n_channels == c``.
    """

    def __init__(self, layer, source, source_shape, n_channels):
        self.layer = layer
        self.source = source
        self.n_channels = n_channels
        self.is_conv = isinstance(layer, keras.layers.Conv2D)
        self.output_shape = tuple(int(s) for s in layer.compute_output_shape((None,) + source_shape)[1:])
        kernel = np.asarray(layer.kernel, dtype=np.float32)
        if self.is_conv:
            self.kernel = kernel
        else:
            self.repeats = source_shape[-1] // n_channels
            # Rows i of the kernel belong to channel i % n_channels: (C, repeats, units).
            self.kernel = kernel
            self.channel_kernels = np.ascontiguousarray(
                kernel.reshape(self.repeats, n_channels, -1).transpose(1, 0, 2)
            )

    def channel_blocks(self, cached):
        """Dense readers: the cached rows as ``(C, rows * positions, repeats)`` blocks."""
        blocks = cached.reshape(-1, self.repeats, self.n_channels)
        return np.ascontiguousarray(blocks.transpose(2, 0, 1))

    def contribution(self, source, blocks, channel):
        """Pre-activation part (no bias) of one channel, in float64."""
        import tensorflow as tf

        if self.is_conv:
            layer = self.layer
            out = tf.nn.conv2d(
                tf.gather(source, [channel], axis=-1),
                tf.gather(self.kernel, [channel], axis=2),
                (1,) + tuple(layer.strides) + (1,),
                layer.padding.upper(),
                dilations=tuple(layer.dilation_rate),
            )
        else:
            out = tf.matmul(tf.gather(blocks, channel), tf.gather(self.channel_kernels, channel))
            out = tf.reshape(out, (-1,) + self.output_shape)
        return tf.cast(out, tf.float64)


def _is_linear_reader(layer, tensor, n_channels):
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        return False
    if type(layer) is keras.layers.Dense:
        return tensor.shape[-1] % n_channels == 0
    if type(layer) is keras.layers.Conv2D:
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        return (
            len(tensor.shape) == 4
            and tensor.shape[-1] == n_channels
            and layer.groups == 1
            and _channels_last(layer)
            and layer.padding in ("valid", "same")
            and (strides == (1, 1) or dilation == (1, 1))
        )
    return False


def _find_linear_readers(tensor, consumers, output_ids, n_channels, found):
    """Follow channel-wise layers from ``tensor`` to the linear layers that read them.

    Appends ``(input tensor, node)`` pairs to ``found``; returns False when some path
    reaches anything else (the model's output, a merge, a non-linear layer).
    """
    readers = consumers.get(id(tensor), [])
    if id(tensor) in output_ids or not readers:
        return False
    for node in readers:
        if len(node.input_tensors) != 1:
            return False
        if _is_linear_reader(node.operation, tensor, n_channels):
            found.append((tensor, node))
        elif not (
            _keeps_channels_apart(node.operation, tensor, n_channels)
            and _find_linear_readers(node.outputs[0], consumers, output_ids, n_channels, found)
        ):
            return False
    return True


class _PruningSweep:
    """Accuracy of ``model`` with 0, 1, ..., all channels of ``layer`` pruned.

    ``cache`` runs the network up to the cached tensors once; ``accuracy_curve`` then
    prunes channel after channel (see the module docstring), several pruning steps per
    compiled call. Building it does not change ``model``.
    """

    def __init__(self, model, layer, *, incremental=True):
        conv = resolve_conv_layer(model, layer)
        self.n_channels = int(conv.filters)
        self.n_classes = int(model.outputs[0].shape[-1])
        head, _ = split_at(model, conv.name)
        conv_output = head.outputs[0]
        self.positions_per_image = int(np.prod(conv_output.shape[1:-1]))
        consumers = _consumers(model)
        output_ids = {id(t) for t in model.outputs}

        self.frontier, rest = None, None
        self._identity_rest = False
        found = []
        if incremental and _find_linear_readers(
            conv_output, consumers, output_ids, self.n_channels, found
        ):
            sources = list({id(t): t for t, _ in found}.values())
            source_index = {id(t): i for i, t in enumerate(sources)}
            frontier_outputs = [node.outputs[0] for _, node in found]
            if len(found) == 1 and id(frontier_outputs[0]) in output_ids:
                # The linear layer is the classifier's last layer: nothing comes after it.
                rest, self._identity_rest = frontier_outputs[0], True
            else:
                try:
                    rest = keras.Model(frontier_outputs, model.outputs)
                except Exception:  # another path leads into the rest of the graph
                    rest = None
            if rest is not None:
                self.frontier = [
                    _Frontier(node.operation, source_index[id(t)], tuple(t.shape[1:]), self.n_channels)
                    for t, node in found
                ]
        if rest is None:
            # Run everything after the longest chain of channel-wise layers at each step.
            cached = conv_output
            while id(cached) not in output_ids:
                readers = consumers.get(id(cached), [])
                if len(readers) != 1 or not _keeps_channels_apart(
                    readers[0].operation, cached, self.n_channels
                ):
                    break
                cached = readers[0].outputs[0]
            sources = [cached]
            rest = keras.Model(cached, model.outputs)
        self.source_shapes = [tuple(t.shape[1:]) for t in sources]
        self._rest = rest
        self.rest_input_shapes = (
            [tuple(rest.shape[1:])] if self._identity_rest else [tuple(t.shape[1:]) for t in rest.inputs]
        )
        self._head = keras.Model(model.inputs, [conv_output] + sources)
        self._functions = {}

    # ---- running

    def cache(self, X, *, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """Run the network up to the cached tensors once.

        Returns the list of cached arrays (rows in the order of ``X``) and the sum of
        each channel of the convolution's output over all images and positions.
        """
        run = self._compiled("head", self._head_function)
        sums = np.zeros(self.n_channels, dtype=np.float64)
        chunks = []
        for rows in iter_batches(len(X), batch_size):
            batch_sums, cached = run(np.asarray(X[rows], dtype=np.float32))
            sums += np.asarray(batch_sums, dtype=np.float64)
            chunks.append([np.asarray(part) for part in cached])
            if progress is not None:
                progress(rows.stop - rows.start)
        return [np.concatenate(parts) for parts in zip(*chunks)], sums

    def accuracy_curve(self, cached, y, order, *, verbose=0, floats_per_call=1 << 22):
        """Accuracy against ``y`` with ``order[:k]`` pruned, for ``k = 0 .. n_channels``.

        One compiled call runs all the pruning steps for a block of rows; blocks hold
        about ``floats_per_call`` values at the rest's inputs and outputs.
        """
        import tensorflow as tf

        y = np.asarray(y, dtype=np.int64)
        n, n_steps = len(y), self.n_channels + 1
        if n == 0:
            raise ValueError("The pruning sweep needs at least one image.")
        order = np.asarray(order, dtype=np.int32)
        width = self.n_classes + sum(int(np.prod(shape)) for shape in self.rest_input_shapes)
        rows_per_block = int(min(n, max(1, floats_per_call // width)))
        if self.frontier is None:
            sweep = self._compiled("masked", self._masked_sweep_function)
        else:
            sweep = self._compiled("incremental", self._incremental_sweep_function)
        # The steps run from every channel pruned back to none, putting one channel
        # back at a time (the last entry is never put back): the pre-activations are
        # then sums over the kept channels, as in the pruned network, and exactly zero
        # when all are pruned.
        channels = tf.constant(np.concatenate([order[::-1], order[:1]]))
        correct = np.zeros(n_steps, dtype=np.int64)
        with progress_bar(n, verbose=verbose, desc=f"pruning sweep ({n_steps} steps)") as update:
            for rows in iter_batches(n, rows_per_block):
                sources = [tf.constant(part[rows]) for part in cached]
                extra = []
                if self.frontier is not None:
                    extra = [
                        [
                            tf.zeros((0, 0, 0), tf.float32)
                            if part.is_conv
                            else tf.constant(part.channel_blocks(cached[part.source][rows]))
                            for part in self.frontier
                        ]
                    ]
                correct += np.asarray(sweep(sources, *extra, channels, tf.constant(y[rows])))
                if update is not None:
                    update(rows.stop - rows.start)
        return correct[::-1] / n

    def _compiled(self, name, build):
        """Build each compiled function once per sweep, so repeated calls skip tracing."""
        if name not in self._functions:
            self._functions[name] = build()
        return self._functions[name]

    def _head_function(self):
        import tensorflow as tf

        head = self._head
        spec = tf.TensorSpec((None,) + tuple(head.inputs[0].shape[1:]), tf.float32)

        @_quiet_tf_function(input_signature=[spec])
        def run(batch):
            conv_output, *cached = head(batch, training=False)
            return tf.reduce_sum(conv_output, axis=[0, 1, 2]), cached

        return run

    def _source_specs(self):
        import tensorflow as tf

        return [tf.TensorSpec((None,) + shape, tf.float32) for shape in self.source_shapes]

    def _active_channels(self, sources):
        """``(rows, C)``: whether a channel is non-zero anywhere in a row's cached tensors.

        Putting back a channel that is zero in a row leaves that row's inputs to the
        rest of the network unchanged, so its prediction is not recomputed.
        """
        import tensorflow as tf

        active = None
        for source in sources:
            blocks = tf.reshape(source, [tf.shape(source)[0], -1, self.n_channels])
            nonzero = tf.reduce_any(blocks != 0, axis=1)
            active = nonzero if active is None else active | nonzero
        return active

    def _sweep_loop(self, sources, channels, labels, initial_state, step_inputs, next_state):
        """Correct predictions per step, re-running the rest only on the rows that change.

        ``step_inputs(state, rows)`` gives the rest's inputs for those rows at a step;
        ``next_state(state, channel)`` puts a channel back.
        """
        import tensorflow as tf

        n_steps = tf.shape(channels)[0]
        n_rows = tf.shape(labels)[0]
        active = self._active_channels(sources)

        def body(step, counts, predicted, *state):
            changed = tf.cond(
                step == 0,
                lambda: tf.ones([n_rows], tf.bool),
                lambda: tf.gather(active, channels[tf.maximum(step - 1, 0)], axis=1),
            )
            rows = tf.where(changed)
            inputs = step_inputs(state, rows[:, 0])
            if self._identity_rest:
                (outputs,) = inputs
            else:
                outputs = self._rest(inputs if len(inputs) > 1 else inputs[0], training=False)
            predicted = tf.tensor_scatter_nd_update(predicted, rows, tf.argmax(outputs, axis=-1))
            counts = counts.write(step, tf.reduce_sum(tf.cast(predicted == labels, tf.int64)))
            return (step + 1, counts, predicted, *next_state(state, channels[step]))

        _, counts, *_ = tf.while_loop(
            lambda step, *_: step < n_steps,
            body,
            (
                0,
                tf.TensorArray(tf.int64, size=n_steps),
                tf.zeros([n_rows], tf.int64),
                *initial_state,
            ),
        )
        return counts.stack()

    def _masked_sweep_function(self):
        import tensorflow as tf

        (shape,) = self.source_shapes
        repeats = shape[-1] // self.n_channels

        @_quiet_tf_function(
            input_signature=[
                self._source_specs(),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None,), tf.int64),
            ]
        )
        def sweep(sources, channels, labels):
            (source,) = sources

            def step_inputs(state, rows):
                (keep,) = state
                return [tf.gather(source, rows) * tf.tile(keep, [repeats])]

            def next_state(state, channel):
                (keep,) = state
                return [tf.tensor_scatter_nd_update(keep, [[channel]], [1.0])]

            start = [tf.zeros((self.n_channels,), tf.float32)]
            return self._sweep_loop(sources, channels, labels, start, step_inputs, next_state)

        return sweep

    def _incremental_sweep_function(self):
        import tensorflow as tf

        frontier = self.frontier
        block_specs = [
            tf.TensorSpec((0, 0, 0) if part.is_conv else (self.n_channels, None, part.repeats), tf.float32)
            for part in frontier
        ]

        @_quiet_tf_function(
            input_signature=[
                self._source_specs(),
                block_specs,
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None,), tf.int64),
            ]
        )
        def sweep(sources, blocks, channels, labels):
            n_rows = tf.shape(labels)[0]

            def step_inputs(state, rows):
                return [
                    _activate(part.layer, tf.cast(tf.gather(pre_activation, rows), tf.float32))
                    for part, pre_activation in zip(frontier, state)
                ]

            def next_state(state, channel):
                return [
                    pre_activation + part.contribution(sources[part.source], block, channel)
                    for part, block, pre_activation in zip(frontier, blocks, state)
                ]

            start = [
                tf.zeros(tf.concat([[n_rows], part.output_shape], 0), tf.float64) for part in frontier
            ]
            return self._sweep_loop(sources, channels, labels, start, step_inputs, next_state)

        return sweep


def _quiet_tf_function(input_signature):
    """``tf.function`` without autograph, and without TensorFlow's retracing warning.

    Every fit builds its own sweep for its own copy of the model, so tracing the same
    Python code again is expected, not the mistake the warning is about. Plain
    ``tf.while_loop`` without autograph keeps that tracing cheap.
    """
    import tensorflow as tf

    def decorate(function):
        compiled = tf.function(function, input_signature=input_signature, autograph=False)
        if hasattr(compiled, "_omit_frequent_tracing_warning"):
            compiled._omit_frequent_tracing_warning = True
        return compiled

    return decorate


def _activate(layer, pre_activation):
    if layer.use_bias:
        pre_activation = pre_activation + layer.bias
    return layer.activation(pre_activation)


def _naive_pruning_curve(model, layer, X, y, order, *, batch_size=DEFAULT_BATCH_SIZE):
    """Reference sweep: prune one more channel of a copy and re-run the whole network.

    What :class:`_PruningSweep` replaces; kept for tests and the benchmark.
    """
    pruned = copy_model(model)
    y = np.asarray(y)
    accuracy = [np.mean(np.argmax(forward_batches(pruned, X, batch_size=batch_size), axis=1) == y)]
    for channel in order:
        prune_channels(pruned, layer, [channel])
        accuracy.append(np.mean(np.argmax(forward_batches(pruned, X, batch_size=batch_size), axis=1) == y))
    return np.asarray(accuracy)
