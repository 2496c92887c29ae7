"""The one fine-tuning engine: every network skbackdoor trains goes through it.

:class:`~skbackdoor.FinePruner` (after pruning), :class:`~skbackdoor.NeuralCleanse`
(unlearning), :func:`~skbackdoor.attacks.train_badnet` and
:func:`~skbackdoor.attacks.pruning_aware_badnet` all train with :func:`fine_tune` or,
when the data changes from epoch to epoch, with a :class:`FineTuning` session.

Layout
------
- :class:`Recipe`: *how* a network is trained. An optimiser factory (given the total
  number of optimiser steps, so that a learning-rate schedule can span the whole run),
  epochs, batch size, and two hooks: ``prepare(model)`` before compiling (e.g. to
  re-initialise a head) and ``callbacks()`` for Keras callbacks (per-batch or
  per-epoch hooks). New recipes are new ``Recipe`` values; the estimators never
  compile a model themselves.
- :func:`plain_recipe`: Adam at a fixed learning rate, the recipe of every caller today.
- :class:`FineTuning`: compiles the model once and runs epochs on the data it is
  given, accumulating the history.
- :func:`fine_tune`: one session over one data set, the usual call.
- :func:`classification_loss`: the loss, chosen from what the model outputs.

A recipe that needs more than the optimiser can act through ``prepare``: re-initialise
or freeze layers, attach a regulariser (e.g. a penalty towards the original weights),
or give the model its own ``train_step`` (e.g. sharpness-aware minimisation).
Augmentation that changes every epoch can run one epoch per :meth:`FineTuning.run`
on freshly drawn data, as the unlearning of Neural Cleanse does.

The loss is the sparse categorical cross-entropy, its ``from_logits`` decided once,
here, from whether the model ends in a softmax
(:func:`~skbackdoor.models.outputs_are_probabilities`): a model that returns logits
is trained on the loss of logits, not on that of probabilities.

Pruned channels stay pruned: :func:`~skbackdoor.models.prune_channels` attaches a
:class:`~skbackdoor.models.ChannelMask` constraint that Keras applies after every
optimiser step, and with ``keep_masks=True`` (the default) the session applies every
such mask once more when it ends, so that a recipe whose training bypasses the
optimiser's constraints cannot revive a pruned channel.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from .models import ChannelMask, outputs_are_probabilities

__all__ = [
    "FineTuning",
    "RECIPES",
    "Recipe",
    "classification_loss",
    "classifier_head",
    "fine_tune",
    "plain_recipe",
    "repair_recipe",
]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a network is fine-tuned.

    Parameters
    ----------
    optimizer : callable
        ``optimizer(n_steps) -> keras.optimizers.Optimizer``, called once per session
        with the number of optimiser steps the recipe's epochs take on the session's
        data (schedules such as a cosine decay need it).
    epochs : int
        Epochs of a session (when ``FineTuning.run`` is not told otherwise).
    batch_size : int
        Images per optimiser step.
    name : str, default="custom"
        A name for messages and reports.
    prepare : callable, default=None
        ``prepare(model)``, called before compiling (e.g. re-initialise the head).
    callbacks : callable, default=None
        ``callbacks() -> list of keras.callbacks.Callback``, fresh ones per session,
        passed to every ``Model.fit`` of the session.
    finish : callable, default=None
        ``finish(model)``, called by :meth:`FineTuning.close` (and at the end of
        :func:`fine_tune`): undo what ``prepare`` attached only for training (a
        ``train_step``, a penalty, a constraint), so the repaired model is a plain one.
    """

    optimizer: Callable[[int], "keras.optimizers.Optimizer"]
    epochs: int
    batch_size: int
    name: str = "custom"
    prepare: Optional[Callable[["keras.Model"], None]] = None
    callbacks: Optional[Callable[[], list]] = None
    finish: Optional[Callable[["keras.Model"], None]] = None

    def n_steps(self, n_samples, epochs=None):
        """Optimiser steps of ``epochs`` (default: the recipe's) over ``n_samples`` images."""
        epochs = self.epochs if epochs is None else epochs
        return -(-int(n_samples) // int(self.batch_size)) * int(epochs)


def plain_recipe(*, learning_rate, epochs, batch_size):
    """Adam at a fixed ``learning_rate``: the fine-tuning of the paper defenses."""
    learning_rate = float(learning_rate)
    return Recipe(
        optimizer=lambda n_steps: keras.optimizers.Adam(learning_rate=learning_rate),
        epochs=int(epochs),
        batch_size=int(batch_size),
        name="plain",
    )


def classification_loss(model):
    """Sparse categorical cross-entropy on what ``model`` outputs (probabilities or logits)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_are_probabilities(model))


class FineTuning:
    """A model compiled once for ``recipe``, trained by successive :meth:`run` calls.

    The optimiser (and its state, e.g. Adam's moments) lives as long as the session:
    :class:`~skbackdoor.NeuralCleanse` runs one epoch per call, each on freshly
    triggered data. The model is trained in place; work on a copy.

    Parameters
    ----------
    model : keras.Model
        The network, changed in place.
    recipe : Recipe
        How to train it.
    n_samples : int
        Images per epoch, to size the optimiser's schedule.
    epochs : int, default=None
        Epochs the whole session will run (default ``recipe.epochs``), to size the schedule.
    seed : int, default=None
        Passed to ``keras.utils.set_random_seed`` before compiling; ``None`` leaves
        the generators as they are.
    verbose : int, default=0
        Keras ``fit`` verbosity.
    keep_masks : bool, default=True
        Apply every :class:`~skbackdoor.models.ChannelMask` constraint once more at the
        end of each run.
    """

    def __init__(self, model, recipe, *, n_samples, epochs=None, seed=None, verbose=0, keep_masks=True):
        self.model = model
        self.recipe = recipe
        self.verbose = int(verbose)
        self.keep_masks = keep_masks
        self.history = {}
        if seed is not None:
            keras.utils.set_random_seed(seed)
        if recipe.prepare is not None:
            recipe.prepare(model)
        self._callbacks = [] if recipe.callbacks is None else list(recipe.callbacks())
        model.compile(
            optimizer=recipe.optimizer(recipe.n_steps(n_samples, epochs)),
            loss=classification_loss(model),
            metrics=["accuracy"],
        )

    def run(self, X, y, *, epochs=None, shuffle=True, validation=None):
        """Train for ``epochs`` (default ``recipe.epochs``) on ``X, y``; return the history so far.

        ``validation`` is ``(X_val, y_val)`` or None, as Keras' ``validation_data``.
        """
        result = self.model.fit(
            np.asarray(X, dtype=np.float32),
            np.asarray(y),
            epochs=self.recipe.epochs if epochs is None else epochs,
            batch_size=self.recipe.batch_size,
            shuffle=shuffle,
            validation_data=validation,
            callbacks=self._callbacks,
            verbose=self.verbose,
        )
        for key, values in result.history.items():
            self.history.setdefault(key, []).extend(float(value) for value in values)
        if self.keep_masks:
            _apply_channel_masks(self.model)
        return self.history

    def close(self):
        """Run the recipe's ``finish`` hook (once): the model is left as a plain model."""
        if self.recipe.finish is not None and not getattr(self, "_closed", False):
            self.recipe.finish(self.model)
        self._closed = True


def fine_tune(model, X, y, *, recipe, validation=None, seed=None, verbose=0, keep_masks=True):
    """Train ``model`` in place on ``X, y`` with ``recipe``; return the Keras history.

    Parameters
    ----------
    model : keras.Model
        The network, changed in place (work on a copy).
    X : ndarray of shape (n_samples, height, width, channels)
    y : ndarray of shape (n_samples,)
    recipe : Recipe
    validation : tuple of ndarray, default=None
        ``(X_val, y_val)``, reported as ``val_loss`` and ``val_accuracy``.
    seed : int, default=None
        Seeds Keras' generators before compiling; ``None`` leaves them as they are.
    verbose : int, default=0
    keep_masks : bool, default=True
        See :class:`FineTuning`.

    Returns
    -------
    history : dict of list of float
        Per epoch, ``loss`` and ``accuracy`` (and the ``val_`` ones with ``validation``);
        empty when ``recipe.epochs`` is 0 (the model is then not even compiled).
    """
    if recipe.epochs == 0:
        return {}
    session = FineTuning(model, recipe, n_samples=len(X), seed=seed, verbose=verbose, keep_masks=keep_masks)
    try:
        return session.run(X, y, validation=validation)
    finally:
        session.close()


def _apply_channel_masks(model):
    for weight in model.weights:
        constraint = getattr(weight, "constraint", None)
        if isinstance(constraint, ChannelMask):
            weight.assign(constraint(weight))


# --------------------------------------------------------------------------- repair recipes
#
# The recipes below are what the repairs use to *remove* a backdoor with a few hundred
# clean images, where the paper's plain recipe (Adam, 10 epochs) leaves most of it:
# SGD with momentum and a cosine schedule (BackdoorBench's fine-tuning), optional
# light augmentation, and three ideas from the literature, each optional:
#
# - FST, feature shift tuning (Min et al., NeurIPS 2023, https://arxiv.org/abs/2310.01875):
#   re-initialise the classifier head, add ``alpha * <W, W_original>`` to the loss so
#   the new head points away from the old one, and rescale ``W`` to the old head's norm
#   after every step; the features must shift for the clean data to be fitted again.
# - FT-SAM (Zhu et al., ICCV 2023, https://arxiv.org/abs/2304.11823): adaptive
#   sharpness-aware steps (the gradient is taken at ``w + rho * w^2 g / ||w g||``) with
#   label smoothing, which shrinks the large-norm backdoor neurons plain fine-tuning
#   leaves in place.
# - Distillation from the network being repaired, on the clean (augmented) images only:
#   the clean behaviour is kept while nothing asks for the triggered one.

RECIPES = ("plain", "sgd", "fst", "sam")


def classifier_head(model):
    """The last layer with a kernel (``Dense`` or a convolution): the classifier head."""
    for layer in reversed(_weighted_layers(model)):
        if getattr(layer, "kernel", None) is not None:
            return layer
    raise ValueError("The model has no layer with a kernel (Dense or convolution) to use as its head.")


def _weighted_layers(model):
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_weighted_layers(layer))
        elif layer.weights:
            layers.append(layer)
    return layers


class HeadAlignmentPenalty(keras.regularizers.Regularizer):
    """``alpha * cos(W, W_original)``: FST's penalty, pushing the new head away from the old.

    FST adds ``alpha * sum(W * W_original)``; with ``W`` rescaled to the original norm
    after each step that is ``alpha * ||W_original||^2 * cos``. Dividing by the two norms
    makes ``alpha`` independent of the head's size: the raw form's ``alpha = 0.2`` cost
    27 points of clean accuracy on a Fashion-MNIST head (1,568 x 10) where the cosine
    form at ``alpha = 1`` cost 8 (benchmarks/results/repair.md).
    """

    def __init__(self, original, alpha):
        self.original = np.asarray(original, dtype=np.float32)
        self.alpha = float(alpha)
        self._norm = float(np.linalg.norm(self.original)) + 1e-12

    def __call__(self, weight):
        original = keras.ops.convert_to_tensor(self.original, weight.dtype)
        norm = keras.ops.sqrt(keras.ops.sum(weight * weight)) + 1e-12
        return self.alpha * keras.ops.sum(weight * original) / (norm * self._norm)

    def get_config(self):
        return {"original": self.original.tolist(), "alpha": self.alpha}


class _RescaleToNorm(keras.constraints.Constraint):
    """Rescale a weight to a fixed Frobenius norm after each step (then apply ``inner``)."""

    def __init__(self, norm, inner=None):
        self.norm = float(norm)
        self.inner = inner

    def __call__(self, weight):
        scaled = weight * (self.norm / (keras.ops.sqrt(keras.ops.sum(weight * weight)) + 1e-12))
        return scaled if self.inner is None else self.inner(scaled)


def _shift_images(images, max_shift, seed):
    """Translate each image by up to ``max_shift`` pixels (zero padding): a random crop."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    n = tf.shape(images)[0]
    offsets = keras.random.randint((2, n), 0, 2 * max_shift + 1, seed=seed, dtype="int32")
    rows = offsets[0][:, None] + tf.range(height)[None]
    cols = offsets[1][:, None] + tf.range(width)[None]
    padded = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(padded, cols, axis=2, batch_dims=1)


def _flip_images(images, seed):
    import tensorflow as tf

    flip = keras.random.uniform((tf.shape(images)[0], 1, 1, 1), seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, [2]), images)


def _repair_train_step(*, n_classes, probabilities, augmentation, label_smoothing, distillation,
                       teacher, sam_rho, seed):
    """A ``train_step`` for the repair recipes (TensorFlow backend)."""
    import tensorflow as tf

    generator = keras.random.SeedGenerator(seed)
    eps = 1e-7

    def log_probabilities(outputs):
        if probabilities:
            return tf.math.log(tf.clip_by_value(outputs, eps, 1.0))
        return tf.nn.log_softmax(outputs)

    def train_step(self, data):
        x, y = data[0], data[1]
        x = tf.cast(x, tf.float32)
        if augmentation is not None and augmentation.get("shift"):
            x = _shift_images(x, augmentation["shift"], generator)
        if augmentation is not None and augmentation.get("flip"):
            x = _flip_images(x, generator)
        targets = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), n_classes)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / n_classes
        if distillation:
            soft = teacher(x, training=False)
            soft = soft if probabilities else tf.nn.softmax(soft)
            soft = tf.stop_gradient(soft)
        weights = self.trainable_weights

        def loss_and_outputs():
            outputs = self(x, training=True)
            log_p = log_probabilities(outputs)
            loss = -tf.reduce_mean(tf.reduce_sum(targets * log_p, axis=-1))
            if distillation:
                loss += distillation * -tf.reduce_mean(tf.reduce_sum(soft * log_p, axis=-1))
            if self.losses:
                loss += tf.add_n(self.losses)
            return loss, outputs

        with tf.GradientTape() as tape:
            loss, outputs = loss_and_outputs()
        gradients = tape.gradient(loss, weights)
        if sam_rho:
            # Adaptive SAM: ascend to w + rho * w^2 g / ||w g||, take the gradient there.
            pairs = [(g, w) for g, w in zip(gradients, weights) if g is not None]
            scale = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g * w)) for g, w in pairs])) + 1e-12
            steps = []
            for gradient, weight in zip(gradients, weights):
                step = tf.zeros_like(weight) if gradient is None else sam_rho * tf.square(weight) * gradient / scale
                weight.assign_add(step)
                steps.append(step)
            with tf.GradientTape() as tape:
                loss, outputs = loss_and_outputs()
            gradients = tape.gradient(loss, weights)
            for step, weight in zip(steps, weights):
                weight.assign_sub(step)
        self.optimizer.apply_gradients(zip(gradients, weights))
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, outputs, sample_weight=None)

    return train_step


def repair_recipe(
    kind="fst",
    *,
    learning_rate=0.01,
    epochs=20,
    batch_size=64,
    momentum=0.9,
    weight_decay=5e-4,
    augmentation=None,
    alignment=1.0,
    sam_rho=2.0,
    label_smoothing=None,
    distillation=0.0,
    teacher=None,
    seed=None,
):
    """A fine-tuning recipe that removes backdoors: SGD + momentum + cosine, and more.

    Parameters
    ----------
    kind : {"sgd", "fst", "sam"}, default="fst"
        ``"sgd"``: BackdoorBench's fine-tuning (SGD, momentum, cosine decay to 0,
        decoupled weight decay). ``"fst"``: the same, with the classifier head
        re-initialised, the alignment penalty ``alignment * cos(W, W_original)`` and
        ``W`` rescaled to the original head's norm after each step (FST). ``"sam"``:
        the same as ``"sgd"`` with adaptive sharpness-aware steps of radius
        ``sam_rho`` and label smoothing (FT-SAM); about twice the cost per step.
    learning_rate : float, default=0.01
        Initial learning rate, decayed to zero by a cosine over all the steps.
    epochs : int, default=20
    batch_size : int, default=64
    momentum : float, default=0.9
    weight_decay : float, default=5e-4
        Decoupled weight decay of the SGD optimiser (``0`` for none).
    augmentation : {None, "shift", "shift+flip"}, default=None
        ``"shift"``: each image is translated by up to ``height // 8`` pixels
        (zero-padded random crop) at every step; ``"shift+flip"`` adds random
        horizontal flips (only where the data allows them: not for digits or signs).
    alignment : float, default=1.0
        Weight of the alignment penalty (``kind="fst"`` only), on the cosine between
        the new and the original head (see :class:`HeadAlignmentPenalty`).
    sam_rho : float, default=2.0
        Radius of the adaptive SAM steps (``kind="sam"`` only).
    label_smoothing : float, default=None
        ``None``: 0.1 for ``"sam"`` (as FT-SAM), else 0.
    distillation : float, default=0.0
        Weight of a distillation term: cross-entropy towards ``teacher``'s predicted
        probabilities on the same (clean, augmented) images.
    teacher : keras.Model, default=None
        The network distilled from (needed when ``distillation > 0``); not trained.
    seed : int, default=None
        Seeds the head re-initialisation and the augmentation.

    Returns
    -------
    recipe : Recipe
    """
    if kind not in ("sgd", "fst", "sam"):
        raise ValueError(f"kind must be 'sgd', 'fst' or 'sam', got {kind!r}.")
    if distillation and teacher is None:
        raise ValueError("distillation > 0 needs a teacher model.")
    learning_rate, momentum, weight_decay = float(learning_rate), float(momentum), float(weight_decay)
    if label_smoothing is None:
        label_smoothing = 0.1 if kind == "sam" else 0.0
    shift_flip = {None: None, "shift": (True, False), "shift+flip": (True, True)}
    if augmentation not in shift_flip:
        raise ValueError(f"augmentation must be None, 'shift' or 'shift+flip', got {augmentation!r}.")
    seed = 0 if seed is None else int(seed)
    saved = {}

    def optimizer(n_steps):
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(int(n_steps), 1))
        return keras.optimizers.SGD(
            learning_rate=schedule, momentum=momentum, weight_decay=weight_decay or None
        )

    def prepare(model):
        import types

        head = classifier_head(model)
        saved["head"] = head
        saved["constraint"] = getattr(head.kernel, "constraint", None)
        saved["regularizer"] = getattr(head.kernel, "regularizer", None)
        if kind == "fst":
            original = keras.ops.convert_to_numpy(head.kernel).copy()
            norm = float(np.linalg.norm(original))
            fresh = keras.initializers.GlorotUniform(seed=seed)(head.kernel.shape)
            mask = saved["constraint"]
            head.kernel.assign(fresh if mask is None else mask(fresh))
            if getattr(head, "bias", None) is not None:
                head.bias.assign(np.zeros(head.bias.shape, dtype="float32"))
            head.kernel.regularizer = HeadAlignmentPenalty(original, alignment) if alignment else None
            head.kernel.constraint = _RescaleToNorm(norm, inner=mask)
            head.kernel.assign(head.kernel.constraint(head.kernel))
        augment = None
        if augmentation is not None:
            shift, flip = shift_flip[augmentation]
            augment = {"shift": max(1, int(model.inputs[0].shape[1]) // 8) if shift else 0, "flip": flip}
        step = _repair_train_step(
            n_classes=int(model.outputs[0].shape[-1]),
            probabilities=outputs_are_probabilities(model),
            augmentation=augment,
            label_smoothing=float(label_smoothing),
            distillation=float(distillation),
            teacher=teacher,
            sam_rho=float(sam_rho) if kind == "sam" else 0.0,
            seed=seed,
        )
        model.train_step = types.MethodType(step, model)
        model.train_function = None

    def finish(model):
        head = saved.get("head")
        if head is not None:
            head.kernel.constraint = saved["constraint"]
            head.kernel.regularizer = saved["regularizer"]
        model.__dict__.pop("train_step", None)
        model.train_function = None

    return Recipe(
        optimizer=optimizer,
        epochs=int(epochs),
        batch_size=int(batch_size),
        name=kind,
        prepare=prepare,
        finish=finish,
    )
