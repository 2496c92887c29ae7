"""Fine-Pruning: prune the dormant channels of a convolution, then fine-tune.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018, https://arxiv.org/abs/1805.12185.

A backdoor often lives in channels that clean inputs leave dormant. Pruning the
channels of a late convolution in increasing order of their mean activation on clean
data removes them; fine-tuning on the same clean data then repairs the accuracy lost
and erases what is left of the backdoor (including the "pruning-aware" attack that
hides it in the active channels).

This module is the estimator: ranking, stopping rule, validation split. The pruning
sweep that measures the accuracy for every number of channels pruned lives in
:mod:`skbackdoor._pruning_sweep`, the fine-tuning in :mod:`skbackdoor._fine_tuning`,
and the ``fit`` template (seeding, loading, validation) in :mod:`skbackdoor._base`.
"""

import numbers
import warnings

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import BaseRepair, document_loading_parameters, progress_bar
from ._fine_tuning import RECIPES, fine_tune, plain_recipe, repair_recipe
from ._head_refit import refit_head, refittable_head
from ._pruning_sweep import _naive_pruning_curve, _PruningSweep  # noqa: F401  (tests and benchmarks import them here)
from ._validation import check_labels
from .models import copy_model, default_prune_layer, predict_proba_batches, prune_channels, resolve_conv_layer

__all__ = ["FinePruner"]

# Recipes that re-shape the network enough to cost clean accuracy when the clean set is
# small (FST re-learns the head): ``fit`` checks them on held-out images first.
CHECKED_RECIPES = ("fst", "sam", "lda")
# The recipe taken when a checked recipe costs too much: it keeps the head and distils.
FALLBACK_RECIPE = "sgd"
# Not a gradient recipe: the head re-fitted in closed form (skbackdoor._head_refit).
HEAD_REFIT = "lda"
# Share of the fit data held out for that check when ``validation_fraction`` is None.
CHECK_FRACTION = 0.2


@document_loading_parameters()
class FinePruner(BaseRepair):
    """Repair a backdoored Keras classifier by Fine-Pruning (Liu et al., RAID 2018).

    ``fit`` ranks the output channels of one convolution on clean data, prunes them in
    increasing order, and fine-tunes the pruned network on the clean data with the
    recipe ``fine_tuning``: by default FST's (a re-initialised head pushed away from the
    original, SGD with momentum and a cosine schedule, distilling the BadNet's clean
    predictions), the paper's Adam recipe with ``fine_tuning="plain"``.
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
    %(loading_parameters)s
    layer : str, default=None
        Name of the ``Conv2D`` layer to prune. ``None`` takes the last convolution
        that is not the classifier itself
        (:func:`~skbackdoor.models.default_prune_layer`: on a network-in-network net
        ending in a 1x1 class-score convolution, the one before it). The paper prunes the last convolutional layer; the CSAW-HackML reports prune
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
    fine_tuning : {"fst", "sgd", "sam", "plain", "lda"}, default="fst"
        The fine-tuning recipe (:func:`skbackdoor._fine_tuning.repair_recipe`), or
        ``"lda"``: no gradient steps, the classifier head is re-fitted in closed form
        as a linear discriminant on the pruned network's features of the clean images
        (each class's covariance shrunk towards a multiple of the identity by
        Ledoit-Wolf; :mod:`skbackdoor._head_refit`), every other weight kept. It needs a
        head with a bias: a ``Dense`` layer with a linear or softmax activation, or a
        linear 1x1 convolution followed by global average pooling; ``learning_rate``,
        ``epochs`` and the other recipe parameters do not apply. See Notes.
        ``"plain"``: Adam at a fixed learning rate; **the paper's recipe** is
        ``fine_tuning="plain", learning_rate=1e-3, epochs=10`` (the defaults before
        the recipes came). ``"sgd"``: BackdoorBench's
        fine-tuning, SGD with momentum 0.9, a cosine decay of the learning rate to
        zero and ``weight_decay``. ``"fst"``: the same, with the classifier head (the
        last ``Dense`` or convolution) re-initialised, the penalty ``alignment *
        cos(W, W_original)`` and the head rescaled to its original norm after each
        step (feature shift tuning, Min et al., NeurIPS 2023). ``"sam"``: ``"sgd"``
        with adaptive sharpness-aware steps of radius ``sam_rho`` and label
        smoothing 0.1 (FT-SAM, Zhu et al., ICCV 2023), about twice the cost.
    learning_rate : float, default=0.01
        Initial learning rate (decayed to zero by a cosine for the SGD recipes; fixed
        for ``"plain"``, where the paper used 1e-3).
    epochs : int, default=20
        Fine-tuning epochs (the paper: 10). ``0`` gives pruning alone.
    batch_size : int, default=64
        Fine-tuning mini-batch size.
    weight_decay : float, default=5e-4
        Decoupled weight decay of the SGD recipes (not ``"plain"``).
    augmentation : {None, "shift", "shift+flip"}, default=None
        Augmentation of the SGD recipes: random translations by up to an eighth of
        the image (zero-padded crops), and random horizontal flips (only for data
        whose classes survive a mirror: not digits or signs). Off by default: on the
        tuning BadNets shifting cost clean accuracy (networks not trained with it).
    alignment : float, default=1.0
        Weight of FST's alignment penalty (``"fst"`` only).
    sam_rho : float, default=2.0
        Radius of the sharpness-aware steps (``"sam"`` only).
    distillation : float, default=1.0
        Weight of a distillation term for the SGD recipes: cross-entropy towards the
        BadNet's own predictions on the same clean images (which keeps its clean
        behaviour; no triggered image is ever seen). ``0`` turns it off.
    max_fine_tuning_drop : float in [0, 1] or None, default=0.1
        A guard on the recipes that re-shape the network (``"fst"`` and ``"sam"``):
        before the final fine-tuning, ``fit`` fine-tunes a copy of the pruned network
        on the fit data less a held-out share (the ``validation_fraction`` split, else
        a stratified 20 %) and compares its accuracy on the held-out images with the
        BadNet's. When it is lower by more than this (in accuracy units: ``0.1`` is 10
        points), the recipe is deemed to have broken the network and ``fit`` warns and
        fine-tunes with ``"sgd"`` instead (head kept, which keeps clean accuracy but may
        leave the backdoor). The check uses clean data only; it roughly doubles the
        fine-tuning time. ``None`` turns it off. See ``fine_tuning_`` and
        ``fine_tuning_check_``, and Notes.
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
    fine_tuning_ : str
        The recipe the final fine-tuning used: ``fine_tuning``, or ``"sgd"`` when the
        guard ``max_fine_tuning_drop`` rejected it.
    fine_tuning_check_ : dict or None
        The guard's measurement (None when it did not run): ``"recipe"`` checked,
        ``"n_held_out"`` images, ``"badnet_accuracy"`` and ``"accuracy"`` (of the
        copy fine-tuned with the recipe) on them, ``"drop"`` (the difference) and
        ``"passed"``.
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

    Which repair when: FST (the default recipe) brought the ASR to at most 5.4 % on 12
    of the 13 benchmark BadNets, but re-learning the head needs clean images of every
    class: with about 10 per class (425 images of 43 GTSRB signs) it cost 13 to 47
    points of clean accuracy, where with 50 to 100 per class (MNIST, Fashion-MNIST) it
    cost at most 5.5 (``benchmarks/results/repair.md``). The guard
    ``max_fine_tuning_drop`` catches the first case from the clean data alone and keeps
    the network usable; the backdoor then usually stays, and
    :class:`~skbackdoor.NeuralCleanse`, whose unlearning targets the reverse-engineered
    trigger, is the repair to use (on the four GTSRB nets: ASR at most 0.8 % for 2.2 to
    6.8 points of clean accuracy). ``fine_tuning="lda"`` with ``prune_fraction=0``
    re-fits the head without training and met the goal (ASR <= 2 % within 2 points) on
    the four MNIST nets of that matrix in about a second each; it cannot remove a
    backdoor that the features carry, and its guard falls back on the GTSRB nets.

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
        **BaseRepair._parameter_constraints,
        "fine_tuning": [StrOptions(set(RECIPES) | {HEAD_REFIT})],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "augmentation": [StrOptions({"shift", "shift+flip"}), None],
        "alignment": [Interval(numbers.Real, 0, None, closed="left")],
        "sam_rho": [Interval(numbers.Real, 0, None, closed="left")],
        "distillation": [Interval(numbers.Real, 0, None, closed="left")],
        "layer": [str, None],
        "ranking": [StrOptions({"activation", "l1"})],
        "prune_fraction": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "max_accuracy_drop": [Interval(numbers.Real, 0, 1, closed="both")],
        "max_fine_tuning_drop": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
    }

    def __init__(
        self,
        *,
        model=None,
        architecture=None,
        input_scale=None,
        input_offset=None,
        safe_mode=True,
        layer=None,
        ranking="activation",
        prune_fraction=None,
        max_accuracy_drop=0.04,
        fine_tuning="fst",
        learning_rate=0.01,
        epochs=20,
        batch_size=64,
        weight_decay=5e-4,
        augmentation=None,
        alignment=1.0,
        sam_rho=2.0,
        distillation=1.0,
        max_fine_tuning_drop=0.1,
        validation_fraction=None,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.architecture = architecture
        self.input_scale = input_scale
        self.input_offset = input_offset
        self.safe_mode = safe_mode
        self.layer = layer
        self.ranking = ranking
        self.prune_fraction = prune_fraction
        self.max_accuracy_drop = max_accuracy_drop
        self.fine_tuning = fine_tuning
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.augmentation = augmentation
        self.alignment = alignment
        self.sam_rho = sam_rho
        self.distillation = distillation
        self.max_fine_tuning_drop = max_fine_tuning_drop
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    def _repair(self, badnet, X, y, *, rng, seed):
        """Rank the channels of ``layer``, prune them by the stopping rule, fine-tune."""
        conv = resolve_conv_layer(badnet, default_prune_layer(badnet) if self.layer is None else self.layer)
        tune_rows, holdout_rows = self._split(y, rng)
        model = copy_model(badnet)
        self.layer_ = conv.name
        self.n_channels_ = int(conv.filters)
        accuracy = self._rank_and_sweep(model, X, y, holdout_rows)
        n_pruned = self._n_to_prune(accuracy)
        self.pruned_channels_ = self.pruning_order_[:n_pruned].copy()
        prune_channels(model, self.layer_, self.pruned_channels_)
        if self.verbose:
            print(
                f"FinePruner: pruned {n_pruned}/{self.n_channels_} channels of {self.layer_!r} "
                f"(validation accuracy {accuracy[0]:.4f} -> {accuracy[n_pruned]:.4f} before "
                "fine-tuning)"
            )
        validation = None if holdout_rows is None else (X[holdout_rows], y[holdout_rows])
        self.fine_tuning_, self.fine_tuning_check_ = self.fine_tuning, None
        if self.fine_tuning == HEAD_REFIT:
            refittable_head(model)  # a clear error before any work if the head cannot be re-fitted
        trains = self.epochs > 0 or self.fine_tuning == HEAD_REFIT
        if self.max_fine_tuning_drop is not None and self.fine_tuning in CHECKED_RECIPES and trains:
            checked = self._check_fine_tuning(badnet, model, X, y, tune_rows, holdout_rows, rng=rng, seed=seed)
            if checked is not None:  # the check's model is the final one (same data, same recipe)
                return checked
        self.history_ = self._tune(model, X[tune_rows], y[tune_rows], badnet, seed, self.fine_tuning_, validation)
        return model

    def _tune(self, model, X, y, badnet, seed, kind, validation):
        """Apply the recipe ``kind`` to ``model`` in place; return the history (empty for ``"lda"``)."""
        if kind == HEAD_REFIT:
            refit_head(model, X, y)
            return {}
        recipe = self._fine_tuning_recipe(badnet, seed, kind=kind)
        return fine_tune(model, X, y, recipe=recipe, validation=validation, verbose=self.verbose)

    def _check_fine_tuning(self, badnet, model, X, y, tune_rows, holdout_rows, *, rng, seed):
        """Fine-tune a copy with the recipe and measure it on held-out images (the guard).

        Sets ``fine_tuning_`` (the fallback when the copy lost too much) and
        ``fine_tuning_check_``. With the user's ``validation_fraction`` split the copy
        was trained exactly as the final model would be: it is returned (with
        ``history_`` set) when it passes. Otherwise returns None.
        """
        if holdout_rows is None:
            trial_rows, check_rows = _held_out_split(y, CHECK_FRACTION, rng)
        else:
            trial_rows, check_rows = tune_rows, holdout_rows
        trial = copy_model(model)
        validation = (X[check_rows], y[check_rows])
        history = self._tune(
            trial,
            X[trial_rows],
            y[trial_rows],
            badnet,
            seed,
            self.fine_tuning,
            validation if holdout_rows is not None else None,
        )
        before = _accuracy(badnet, *validation)
        after = _accuracy(trial, *validation)
        passed = bool(before - after <= self.max_fine_tuning_drop + 1e-9)
        self.fine_tuning_check_ = {
            "recipe": self.fine_tuning,
            "n_held_out": int(len(check_rows)),
            "badnet_accuracy": before,
            "accuracy": after,
            "drop": before - after,
            "passed": passed,
        }
        if not passed:
            self.fine_tuning_ = FALLBACK_RECIPE
            n_classes = np.unique(y).size
            warnings.warn(
                f"FinePruner: the {self.fine_tuning!r} fine-tuning cost {100 * (before - after):.1f} points "
                f"of clean accuracy on {len(check_rows)} held-out images ({100 * before:.1f} % -> "
                f"{100 * after:.1f} %; max_fine_tuning_drop={self.max_fine_tuning_drop}), so the "
                f"{FALLBACK_RECIPE!r} recipe was used instead: it keeps the head, which usually keeps clean "
                f"accuracy, and may leave the backdoor. With {len(y)} clean images for {n_classes} classes, "
                f"NeuralCleanse is the better repair; more clean images per class help {self.fine_tuning!r}.",
                UserWarning,
                stacklevel=5,  # the user's fit (through _fit_context and BaseRepair.fit)
            )
            return None
        if holdout_rows is not None:
            self.history_ = history
            return trial
        return None

    def _fine_tuning_recipe(self, badnet=None, seed=None, kind=None):
        """The recipe named by ``kind`` (default ``fine_tuning``); ``badnet`` is the distillation's teacher."""
        learning_rate, epochs = self.learning_rate, self.epochs
        kind = self.fine_tuning if kind is None else kind
        if kind == "plain":
            return plain_recipe(learning_rate=learning_rate, epochs=epochs, batch_size=self.batch_size)
        return repair_recipe(
            kind,
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            augmentation=self.augmentation,
            alignment=self.alignment,
            sam_rho=self.sam_rho,
            distillation=self.distillation,
            teacher=badnet if self.distillation else None,
            seed=seed,
        )

    def _rank_and_sweep(self, model, X, y, holdout_rows):
        """Set the channel ranking and the pruning curve (on ``holdout_rows``); return its accuracies."""
        sweep = _PruningSweep(model, self.layer_)
        with progress_bar(len(X), verbose=self.verbose, desc=f"activations of {self.layer_}") as update:
            cache, _ = sweep.cache(X, progress=update)
        self.channel_activations_ = cache.channel_means
        if self.ranking == "activation":
            scores = self.channel_activations_
        else:
            scores = _kernel_l1_norms(model.get_layer(self.layer_))
        self.pruning_order_ = np.argsort(scores, kind="stable")
        accuracy = sweep.accuracy_curve(cache, y, self.pruning_order_, rows=holdout_rows, verbose=self.verbose)
        n_steps = np.arange(self.n_channels_ + 1)
        self.pruning_curve_ = {
            "n_pruned": n_steps,
            "fraction": n_steps / self.n_channels_,
            "accuracy": accuracy,
        }
        return accuracy

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
        return _held_out_split(y, self.validation_fraction, rng)  # stratified: checked above

    def _n_to_prune(self, accuracy):
        """Number of channels to prune; at least one channel always stays."""
        if self.prune_fraction is not None:
            n_pruned = int(np.floor(self.prune_fraction * self.n_channels_ + 1e-9))
        else:
            # Accuracies are counts / n: the slack only absorbs the rounding of the threshold.
            below = np.flatnonzero(accuracy < accuracy[0] - self.max_accuracy_drop - 1e-9)
            n_pruned = int(below[0]) - 1 if below.size else self.n_channels_
        return min(n_pruned, self.n_channels_ - 1)

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
        cache, _ = sweep.cache(X)
        accuracy = sweep.accuracy_curve(cache, y, self.pruning_order_)
        return {
            "n_pruned": self.pruning_curve_["n_pruned"].copy(),
            "fraction": self.pruning_curve_["fraction"].copy(),
            "accuracy": accuracy,
        }


def _held_out_split(y, fraction, rng):
    """``(kept, held_out)`` rows: stratified by class where every class has two samples."""
    from sklearn.model_selection import train_test_split

    n_held_out = max(1, int(np.ceil(fraction * len(y))))
    classes, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and classes.size <= min(n_held_out, len(y) - n_held_out) else None
    kept, held_out = train_test_split(
        np.arange(len(y)), test_size=n_held_out, stratify=stratify, random_state=rng.randint(np.iinfo(np.int32).max)
    )
    return np.sort(kept), np.sort(held_out)


def _accuracy(model, X, y):
    return float(np.mean(np.argmax(predict_proba_batches(model, X), axis=1) == y))


def _kernel_l1_norms(conv):
    kernel = np.asarray(conv.kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).astype(np.float64)
