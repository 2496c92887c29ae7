"""The batched Neural Cleanse trigger search: one reversed trigger per candidate label.

Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019. For each label ``k`` the search minimises
``cross_entropy(f((1 - m) x + m p), k) + cost_k * |m|_1`` over a mask ``m`` (shared by
the channels) and a pattern ``p``, with the paper's cost schedule.

Layout
------
- :class:`_TriggerSearch`: built once per model, data and stage (full search,
  screening, residual search) with the stage's settings; ``run(labels, steps,
  desc=...)`` returns a :class:`TriggerSearchResult`. Labels are optimised in
  chunks: one network call per step runs the triggered minibatch of every label of
  a chunk, and a label's result does not depend on which labels share its chunk.
- :class:`_SearchState`: the TensorFlow variables and the compiled step of one
  chunk: the gradient step (its own Adam, as in the authors' code) and the
  per-label bookkeeping (attack success, cost schedule, best mask so far) on
  vectors, inside one ``tf.function``.
- :func:`attack_success`: the share of clean images that each reversed trigger
  sends to its label.

:class:`~skbackdoor.NeuralCleanse` builds every search through one factory method
and reads the results; the anomaly test and the unlearning live there.
"""

import dataclasses

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._base import progress_bar  # noqa: E402
from .models import iter_batches, model_input_shape, outputs_are_probabilities, predict_proba_batches  # noqa: E402

__all__ = ["TriggerSearchResult", "_TriggerSearch", "attack_success"]

# A label's trigger "works" on a minibatch when this share of it is sent to the label.
ATTACK_SUCCESS_THRESHOLD = 0.99
# Consecutive steps of success (failure) before the mask-size weight is raised (lowered).
COST_PATIENCE = 10
COST_MULTIPLIER_UP = 1.5
COST_MULTIPLIER_DOWN = 1.5**1.5
# Adam of the trigger search, as in the authors' code (lr is a parameter).
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.5, 0.9, 1e-8
# Upper bound on the pixels of the triggered images of one search step (memory); the
# labels are optimised in chunks of at most this size.
PIXELS_PER_STEP = 1 << 21
# Clean images on which the attack success of each reversed trigger is measured.
N_EVALUATION_IMAGES = 512


@dataclasses.dataclass(frozen=True)
class TriggerSearchResult:
    """The reversed triggers of a search, one row per label of ``labels``.

    ``masks`` ``(n, H, W)`` in [0, 1] and ``patterns`` ``(n, H, W, C)`` (float32): for
    each label the smallest mask that worked on a whole minibatch, or the last one if
    none did (``found`` False); ``norms``: the masks' L1 norms; ``cross_entropy``: each
    label's mean cross-entropy at the last step.
    """

    labels: np.ndarray
    masks: np.ndarray
    patterns: np.ndarray
    norms: np.ndarray
    found: np.ndarray
    cross_entropy: np.ndarray

    @classmethod
    def concatenate(cls, parts):
        return cls(**{
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(cls)
        })


def attack_success(model, X, y, result, *, seed):
    """Share of (up to N_EVALUATION_IMAGES) images of other labels sent to each label.

    ``result`` is a :class:`TriggerSearchResult`; NaN for a label with no image of
    another label.
    """
    rng = np.random.default_rng([seed, 3])
    rows = rng.permutation(len(X))[:N_EVALUATION_IMAGES]
    images, truth = X[rows], y[rows]
    success = np.empty(len(result.labels))
    for k, label in enumerate(result.labels):
        others = images[truth != label]
        if len(others) == 0:
            success[k] = np.nan
            continue
        mask = result.masks[k][..., np.newaxis]
        triggered = (1 - mask) * others + mask * result.patterns[k]
        predicted = predict_proba_batches(model, triggered).argmax(axis=1)
        success[k] = float(np.mean(predicted == label))
    return success


def _arctanh_unit(values):
    """Inverse of ``(tanh(z) + 1) / 2`` for values in [0, 1], kept finite."""
    return np.arctanh(np.clip(2.0 * values - 1.0, -1 + 1e-6, 1 - 1e-6))


class _TriggerSearch:
    """Optimise one (mask, pattern) per label, all labels of a chunk in each network call.

    The mask is ``(tanh(a) + 1) / 2`` and the pattern ``low + (high - low) * (tanh(b) + 1) / 2``,
    so both stay in range without clipping. Each step draws the next minibatch of
    clean images (the same for every label), stamps every label's trigger on it, runs
    the frozen model once on all triggered images and takes one Adam step on every
    label's objective ``mean cross-entropy + cost_k * |m_k|_1``. The objectives are
    independent, so summing them gives each label its own gradient, and a label's
    result does not depend on which other labels share its chunk. Initial masks and
    patterns are drawn from a generator seeded by ``(seed, label)``.

    ``patience`` is the number of consecutive steps the cost schedule waits before it
    moves; ``pixels_per_step`` bounds the pixels of the triggered images of one step
    (the size of a chunk of labels).
    """

    def __init__(
        self,
        model,
        X,
        *,
        pixel_range,
        batch_size,
        learning_rate,
        cost,
        seed,
        verbose,
        patience=COST_PATIENCE,
        pixels_per_step=PIXELS_PER_STEP,
    ):
        self.model = model
        self.patience = patience
        self.X = X
        self.image_shape = tuple(model_input_shape(model))
        self.low, self.high = (float(v) for v in pixel_range)
        if self.high <= self.low:
            self.high = self.low + 1.0
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.cost = cost
        self.seed = seed
        self.verbose = verbose
        self.from_logits = not outputs_are_probabilities(model)
        height, width, channels = self.image_shape
        pixels = batch_size * height * width * channels
        self.chunk_size = max(1, pixels_per_step // pixels)
        self._compiled = {}

    def _minibatches(self, steps):
        """Row indices of the clean images of each step: consecutive shuffles of X."""
        rng = np.random.default_rng([self.seed, 0])
        n_rows = steps * self.batch_size
        epochs = -(-n_rows // len(self.X))
        order = np.concatenate([rng.permutation(len(self.X)) for _ in range(epochs)])
        return order[:n_rows].reshape(steps, self.batch_size)

    def _initial_logits(self, labels):
        height, width, channels = self.image_shape
        mask = np.empty((len(labels), height, width, 1), dtype=np.float32)
        pattern = np.empty((len(labels), height, width, channels), dtype=np.float32)
        for k, label in enumerate(labels):
            rng = np.random.default_rng([self.seed, 4, int(label)])
            mask[k] = _arctanh_unit(rng.uniform(0, 1, size=mask.shape[1:]))
            pattern[k] = _arctanh_unit(rng.uniform(0, 1, size=pattern.shape[1:]))
        return mask, pattern

    def run(self, labels, steps, *, desc):
        """Search the triggers of ``labels`` for ``steps`` steps: a :class:`TriggerSearchResult`."""
        labels = np.asarray(labels, dtype=np.int64)
        chunk_size = min(self.chunk_size, len(labels))
        state = self._state(chunk_size)
        batches = self._minibatches(steps)
        parts = []
        total = len(labels) * steps * self.batch_size
        with progress_bar(total, verbose=self.verbose, desc=desc) as update:
            for chunk in iter_batches(len(labels), chunk_size):
                chunk_labels = labels[chunk]
                n_real = len(chunk_labels)
                # Pad the last chunk with copies so the compiled step keeps one shape.
                padded = np.resize(chunk_labels, chunk_size)
                mask, pattern = self._initial_logits(padded)
                state.reset(padded, mask, pattern, self.cost)
                for rows in batches:
                    state.step(self.X[rows])
                    if update is not None:
                        update(n_real * self.batch_size)
                parts.append(state.result(chunk_labels))
        return TriggerSearchResult.concatenate(parts)

    def _state(self, chunk_size):
        if chunk_size not in self._compiled:
            self._compiled[chunk_size] = _SearchState(
                self.model,
                n_labels=chunk_size,
                batch_size=self.batch_size,
                image_shape=self.image_shape,
                pixel_range=(self.low, self.high),
                learning_rate=self.learning_rate,
                from_logits=self.from_logits,
                patience=self.patience,
            )
        return self._compiled[chunk_size]


class _SearchState:
    """The TensorFlow variables and the compiled step of one chunk of labels."""

    def __init__(self, model, *, n_labels, batch_size, image_shape, pixel_range, learning_rate, from_logits, patience):
        import tensorflow as tf

        self.patience = patience
        self.tf = tf
        height, width, channels = image_shape
        self.n_labels, self.batch_size = n_labels, batch_size
        self.low, self.high = pixel_range
        self.learning_rate = learning_rate

        def variable(shape, dtype=tf.float32):
            return tf.Variable(tf.zeros(shape, dtype), trainable=False)

        mask_shape, pattern_shape = (n_labels, height, width, 1), (n_labels, height, width, channels)
        self.mask_logits, self.pattern_logits = variable(mask_shape), variable(pattern_shape)
        self.moments = [variable(shape) for shape in (mask_shape, mask_shape, pattern_shape, pattern_shape)]
        self.iteration = variable(())
        self.targets = variable((n_labels,), tf.int64)
        self.cost = variable((n_labels,))
        self.initial_cost = variable((n_labels,))
        self.cost_wait = variable((n_labels,), tf.int32)
        self.above = variable((n_labels,), tf.int32)
        self.below = variable((n_labels,), tf.int32)
        self.best_norm = variable((n_labels,))
        self.best_mask = variable(mask_shape)
        self.best_pattern = variable(pattern_shape)
        self.last_cross_entropy = variable((n_labels,))

        def trigger():
            mask = (tf.tanh(self.mask_logits) + 1.0) / 2.0
            pattern = self.low + (self.high - self.low) * (tf.tanh(self.pattern_logits) + 1.0) / 2.0
            return mask, pattern

        self._trigger = trigger
        flat_targets_shape = (n_labels * batch_size,)

        def step(clean):
            tape = tf.GradientTape(watch_accessed_variables=False)
            with tape:
                tape.watch([self.mask_logits, self.pattern_logits])
                mask, pattern = trigger()
                triggered = (1.0 - mask[:, None]) * clean[None] + (mask * pattern)[:, None]
                triggered = tf.reshape(triggered, (n_labels * batch_size, height, width, channels))
                outputs = model(triggered, training=False)
                targets = tf.reshape(tf.repeat(self.targets[:, None], batch_size, axis=1), flat_targets_shape)
                cross_entropy = keras.ops.sparse_categorical_crossentropy(
                    targets, outputs, from_logits=from_logits
                )
                cross_entropy = tf.reduce_mean(tf.reshape(cross_entropy, (n_labels, batch_size)), axis=1)
                norms = tf.reduce_sum(mask, axis=[1, 2, 3])
                loss = tf.reduce_sum(cross_entropy + self.cost * norms)
            gradients = tape.gradient(loss, [self.mask_logits, self.pattern_logits])
            hits = tf.cast(tf.equal(tf.argmax(outputs, axis=1), targets), tf.float32)
            success = tf.reduce_mean(tf.reshape(hits, (n_labels, batch_size)), axis=1)
            self._track(success >= ATTACK_SUCCESS_THRESHOLD, norms, mask, pattern, cross_entropy)
            self._adam(gradients)

        self.step_fn = tf.function(
            step,
            input_signature=[tf.TensorSpec((batch_size, height, width, channels), tf.float32)],
        )

    def _track(self, works, norms, mask, pattern, cross_entropy):
        """Keep the smallest working trigger and adapt each label's cost (the paper's schedule)."""
        tf = self.tf
        improved = works & (norms < self.best_norm)
        self.best_norm.assign(tf.where(improved, norms, self.best_norm))
        self.best_mask.assign(tf.where(improved[:, None, None, None], mask, self.best_mask))
        self.best_pattern.assign(tf.where(improved[:, None, None, None], pattern, self.best_pattern))
        self.last_cross_entropy.assign(cross_entropy)

        one, zero = tf.ones_like(self.above), tf.zeros_like(self.above)
        # The cost stays 0 until the trigger has worked COST_PATIENCE steps in a row.
        off = tf.equal(self.cost, 0.0)
        wait = tf.where(off & works, self.cost_wait + one, zero)
        switch_on = off & (wait >= self.patience)
        self.cost_wait.assign(tf.where(switch_on, zero, wait))
        cost = tf.where(switch_on, self.initial_cost, self.cost)
        above = tf.where(works & ~switch_on, self.above + one, zero)
        below = tf.where(works | switch_on, zero, self.below + one)
        raise_ = above >= self.patience
        lower = ~raise_ & (below >= self.patience)
        cost = tf.where(raise_, cost * COST_MULTIPLIER_UP, tf.where(lower, cost / COST_MULTIPLIER_DOWN, cost))
        self.cost.assign(cost)
        self.above.assign(tf.where(raise_, zero, above))
        self.below.assign(tf.where(lower, zero, below))

    def _adam(self, gradients):
        tf = self.tf
        self.iteration.assign_add(1.0)
        t = self.iteration
        correction = tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
        for variable, gradient, first, second in zip(
            (self.mask_logits, self.pattern_logits),
            gradients,
            self.moments[0::2],
            self.moments[1::2],
        ):
            first.assign(ADAM_BETA_1 * first + (1.0 - ADAM_BETA_1) * gradient)
            second.assign(ADAM_BETA_2 * second + (1.0 - ADAM_BETA_2) * tf.square(gradient))
            variable.assign_sub(self.learning_rate * correction * first / (tf.sqrt(second) + ADAM_EPSILON))

    def reset(self, labels, mask_logits, pattern_logits, cost):
        tf = self.tf
        self.mask_logits.assign(mask_logits)
        self.pattern_logits.assign(pattern_logits)
        for moment in self.moments:
            moment.assign(tf.zeros_like(moment))
        self.iteration.assign(0.0)
        self.targets.assign(np.asarray(labels, dtype=np.int64))
        self.cost.assign(tf.zeros_like(self.cost))
        self.initial_cost.assign(tf.fill(self.initial_cost.shape, float(cost)))
        for counter in (self.cost_wait, self.above, self.below):
            counter.assign(tf.zeros_like(counter))
        self.best_norm.assign(tf.fill(self.best_norm.shape, np.float32(np.inf)))
        self.best_mask.assign(tf.zeros_like(self.best_mask))
        self.best_pattern.assign(tf.zeros_like(self.best_pattern))

    def step(self, clean):
        self.step_fn(np.asarray(clean, dtype=np.float32))

    def result(self, labels):
        """The result of the first ``len(labels)`` labels of the chunk (the rest is padding)."""
        n_real = len(labels)
        mask, pattern = self._trigger()
        found = np.isfinite(self.best_norm.numpy())
        keep = found[:, None, None, None]
        masks = np.where(keep, self.best_mask.numpy(), mask.numpy())[..., 0]
        patterns = np.where(keep, self.best_pattern.numpy(), pattern.numpy())
        return TriggerSearchResult(
            labels=np.asarray(labels, dtype=np.int64),
            masks=masks.astype(np.float32)[:n_real],
            patterns=patterns.astype(np.float32)[:n_real],
            norms=masks.reshape(len(masks), -1).sum(axis=1).astype(np.float64)[:n_real],
            found=found[:n_real],
            cross_entropy=self.last_cross_entropy.numpy().astype(np.float64)[:n_real],
        )

