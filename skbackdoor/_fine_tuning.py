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

import keras  # noqa: E402

from .models import ChannelMask, outputs_are_probabilities  # noqa: E402

__all__ = ["FineTuning", "Recipe", "classification_loss", "fine_tune", "plain_recipe"]


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
    """

    optimizer: Callable[[int], "keras.optimizers.Optimizer"]
    epochs: int
    batch_size: int
    name: str = "custom"
    prepare: Optional[Callable[["keras.Model"], None]] = None
    callbacks: Optional[Callable[[], list]] = None

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
    return session.run(X, y, validation=validation)


def _apply_channel_masks(model):
    for weight in model.weights:
        constraint = getattr(weight, "constraint", None)
        if isinstance(constraint, ChannelMask):
            weight.assign(constraint(weight))
