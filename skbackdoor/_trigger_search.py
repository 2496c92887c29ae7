"""The batched Neural Cleanse trigger search: one reversed trigger per candidate label.

Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019. For each label ``k`` the search minimises
``cross_entropy(f((1 - m) x + m p), k) + cost_k * |m|_1`` over a mask ``m`` (shared by
the channels) and a pattern ``p``, with the paper's cost schedule.

Layout
------
- :class:`_TriggerSearch`: built once per model, data and stage (full search,
  screening, residual search) with the stage's settings; ``run(labels, steps,
  desc=...)`` returns a :class:`TriggerSearchResult`. Labels wait in a queue for
  one of a fixed number of slots: one network call per step runs the triggered
  minibatch of every slot, a label that is done (``steps`` reached, or converged)
  hands its slot to the next one, and a label's result does not depend on which
  labels share the step or on when it got its slot.
- :class:`_SearchState`: the TensorFlow variables and the compiled step of the
  slots: the gradient step (its own Adam per slot, as in the authors' code) and the
  per-label bookkeeping (attack success, cost schedule, best mask so far,
  convergence) on vectors, inside one ``tf.function``.
- :func:`attack_success`: the share of clean images that each reversed trigger
  sends to its label.

:class:`~skbackdoor.NeuralCleanse` builds every search through one factory method
and reads the results; the anomaly test and the unlearning live there.
"""

import dataclasses

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from ._base import progress_bar
from .models import model_input_shape, outputs_are_probabilities, predict_proba_batches

__all__ = ["TriggerSearchResult", "_TriggerSearch", "attack_success", "stamp"]

# A label's trigger "works" on a minibatch when this share of it is sent to the label.
ATTACK_SUCCESS_THRESHOLD = 0.99
# Consecutive steps of success (failure) before the mask-size weight is raised (lowered).
COST_PATIENCE = 10
COST_MULTIPLIER_UP = 1.5
COST_MULTIPLIER_DOWN = 1.5**1.5
# Adam of the trigger search, as in the authors' code (lr is a parameter).
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.5, 0.9, 1e-8
# Upper bound on the pixels of the triggered images of one search step (memory): the
# number of labels optimised side by side.
PIXELS_PER_STEP = 1 << 21
# Steps between two looks at which slots are done (each look reads a vector back).
CHECK_EVERY = 10
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
    steps: np.ndarray

    @classmethod
    def concatenate(cls, parts):
        return cls(**{
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(cls)
        })


def stamp(X, mask, pattern):
    """``(1 - m) x + m p`` for every image of ``X``, as float32; ``mask`` is ``(H, W)``."""
    mask = np.asarray(mask, dtype=np.float32)[..., np.newaxis]
    return ((1.0 - mask) * np.asarray(X, dtype=np.float32) + mask * pattern).astype(np.float32)


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
        predicted = predict_proba_batches(model, stamp(others, result.masks[k], result.patterns[k])).argmax(axis=1)
        success[k] = float(np.mean(predicted == label))
    return success


def _arctanh_unit(values):
    """Inverse of ``(tanh(z) + 1) / 2`` for values in [0, 1], kept finite."""
    return np.arctanh(np.clip(2.0 * values - 1.0, -1 + 1e-6, 1 - 1e-6))


def trigger_from_logits(mask_logits, pattern_logits, low, high):
    """The mask ``(tanh(a) + 1) / 2`` and the pattern ``low + (high - low) * (tanh(b) + 1) / 2``."""
    import tensorflow as tf

    return (tf.tanh(mask_logits) + 1.0) / 2.0, low + (high - low) * (tf.tanh(pattern_logits) + 1.0) / 2.0


class _TriggerSearch:
    """Optimise one (mask, pattern) per label, the labels of a queue sharing each network call.

    The mask is ``(tanh(a) + 1) / 2`` and the pattern ``low + (high - low) * (tanh(b) + 1) / 2``,
    so both stay in range without clipping. The compiled step holds ``n_slots``
    labels; each step stamps every slot's trigger on that slot's minibatch of clean
    images, runs the frozen model once on all triggered images and takes one Adam
    step on every label's objective ``mean cross-entropy + cost_k * |m_k|_1``.

    Every slot carries its own step counter, Adam iteration and cost schedule, and a
    label's minibatch at its ``s``-th step is the ``s``-th of one shared sequence of
    shuffles of ``X``: a label's result depends on the label, ``seed`` and the data
    only, not on which labels share the step nor on when it entered its slot. A label
    leaves its slot after ``steps`` steps, or earlier when it has converged (below);
    the freed slot takes the next label of the queue, so no step is spent on padding
    or on labels that are done, except in the last wave.

    Convergence (``n_steps_no_change``): once the label's mask-size weight is on (its
    trigger works), the label stops when its smallest working mask has not shrunk by
    a relative ``tol`` for ``n_steps_no_change`` consecutive steps. ``None`` runs
    every label for ``steps`` steps.

    ``patience`` is the number of consecutive steps the cost schedule waits before it
    moves; ``pixels_per_step`` bounds the pixels of the triggered images of one step
    (the number of slots).
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
        n_steps_no_change=None,
        tol=0.01,
        pixels_per_step=PIXELS_PER_STEP,
    ):
        self.model = model
        self.patience = patience
        self.n_steps_no_change = n_steps_no_change
        self.tol = tol
        self.X = np.asarray(X, dtype=np.float32)
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
        self.max_slots = max(1, pixels_per_step // pixels)

    def _minibatches(self, steps):
        """Row indices of the clean images of each step: consecutive shuffles of X."""
        rng = np.random.default_rng([self.seed, 0])
        n_rows = steps * self.batch_size
        epochs = -(-n_rows // len(self.X))
        order = np.concatenate([rng.permutation(len(self.X)) for _ in range(epochs)])
        return order[:n_rows].reshape(steps, self.batch_size).astype(np.int32)

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
        """Search the triggers of ``labels`` for at most ``steps`` steps: a :class:`TriggerSearchResult`."""
        labels = np.asarray(labels, dtype=np.int64)
        n_labels = len(labels)
        # As many slots as keep the waves of labels equal: 43 labels with room for 21
        # run in 15 slots (3 waves of 15, 15, 13) rather than 21, 21 and a lone 1.
        n_slots = -(-n_labels // -(-n_labels // self.max_slots))
        state = _SearchState(self, n_slots=n_slots, batches=self._minibatches(steps), steps=steps)
        height, width, channels = self.image_shape
        masks = np.zeros((n_labels, height, width), dtype=np.float32)
        patterns = np.zeros((n_labels, height, width, channels), dtype=np.float32)
        norms, cross_entropy = np.zeros(n_labels), np.zeros(n_labels)
        found, steps_run = np.zeros(n_labels, dtype=bool), np.zeros(n_labels, dtype=np.int64)
        occupant = np.full(n_slots, -1)  # the row of `labels` each slot works on
        queue = iter(range(n_labels))

        def refill(slots):
            taken = [(slot, row) for slot, row in zip(slots, queue)]
            if not taken:
                return
            slots_taken, rows = (np.array(part) for part in zip(*taken))
            targets = np.zeros(n_slots, dtype=np.int64)
            targets[slots_taken] = labels[rows]
            mask, pattern = self._initial_logits(targets)
            chosen = np.zeros(n_slots, dtype=bool)
            chosen[slots_taken] = True
            state.reset(chosen, targets, mask, pattern, self.cost)
            occupant[slots_taken] = rows

        refill(range(n_slots))
        with progress_bar(n_labels, verbose=self.verbose, desc=desc) as update:
            while (occupant >= 0).any():
                for _ in range(CHECK_EVERY):
                    state.step_fn()
                finished = np.flatnonzero(state.done.numpy() & (occupant >= 0))
                if finished.size == 0:
                    continue
                result = state.result()
                rows = occupant[finished]
                masks[rows], patterns[rows] = result["masks"][finished], result["patterns"][finished]
                norms[rows], found[rows] = result["norms"][finished], result["found"][finished]
                cross_entropy[rows] = result["cross_entropy"][finished]
                steps_run[rows] = result["steps"][finished]
                occupant[finished] = -1
                if update is not None:
                    update(len(finished))
                refill(finished)
        return TriggerSearchResult(
            labels=labels, masks=masks, patterns=patterns, norms=norms, found=found,
            cross_entropy=cross_entropy, steps=steps_run,
        )


class _SearchState:
    """The TensorFlow variables and the compiled step of the slots of one search."""

    def __init__(self, search, *, n_slots, batches, steps):
        import tensorflow as tf

        self.tf = tf
        height, width, channels = search.image_shape
        batch_size = search.batch_size
        low, high = search.low, search.high
        learning_rate, patience = search.learning_rate, search.patience
        no_change = steps + 1 if search.n_steps_no_change is None else search.n_steps_no_change
        tol = search.tol
        model, from_logits = search.model, search.from_logits
        images = tf.constant(search.X)
        batches = tf.constant(batches)

        def variable(shape, dtype=tf.float32):
            return tf.Variable(tf.zeros(shape, dtype), trainable=False)

        mask_shape, pattern_shape = (n_slots, height, width, 1), (n_slots, height, width, channels)
        self.mask_logits, self.pattern_logits = variable(mask_shape), variable(pattern_shape)
        self.moments = [variable(shape) for shape in (mask_shape, mask_shape, pattern_shape, pattern_shape)]
        self.iteration = variable((n_slots,), tf.int32)
        self.targets = variable((n_slots,), tf.int64)
        self.cost = variable((n_slots,))
        self.initial_cost = variable((n_slots,))
        self.cost_wait = variable((n_slots,), tf.int32)
        self.above = variable((n_slots,), tf.int32)
        self.below = variable((n_slots,), tf.int32)
        self.best_norm = variable((n_slots,))
        self.best_mask = variable(mask_shape)
        self.best_pattern = variable(pattern_shape)
        self.anchor_norm = variable((n_slots,))
        self.no_change = variable((n_slots,), tf.int32)
        self.last_cross_entropy = variable((n_slots,))
        self.done = variable((n_slots,), tf.bool)

        def trigger():
            return trigger_from_logits(self.mask_logits, self.pattern_logits, low, high)

        self._trigger = trigger

        def step():
            active = ~self.done
            clean = tf.gather(images, tf.gather(batches, tf.minimum(self.iteration, steps - 1)))
            tape = tf.GradientTape(watch_accessed_variables=False)
            with tape:
                tape.watch([self.mask_logits, self.pattern_logits])
                mask, pattern = trigger()
                triggered = (1.0 - mask[:, None]) * clean + (mask * pattern)[:, None]
                triggered = tf.reshape(triggered, (n_slots * batch_size, height, width, channels))
                outputs = model(triggered, training=False)
                targets = tf.reshape(tf.repeat(self.targets[:, None], batch_size, axis=1), (-1,))
                cross_entropy = keras.ops.sparse_categorical_crossentropy(targets, outputs, from_logits=from_logits)
                cross_entropy = tf.reduce_mean(tf.reshape(cross_entropy, (n_slots, batch_size)), axis=1)
                norms = tf.reduce_sum(mask, axis=[1, 2, 3])
                loss = tf.reduce_sum(cross_entropy + self.cost * norms)
            gradients = tape.gradient(loss, [self.mask_logits, self.pattern_logits])
            hits = tf.cast(tf.equal(tf.argmax(outputs, axis=1), targets), tf.float32)
            success = tf.reduce_mean(tf.reshape(hits, (n_slots, batch_size)), axis=1)
            works = (success >= ATTACK_SUCCESS_THRESHOLD) & active
            self._track(works, active, norms, mask, pattern, cross_entropy, patience, tol)
            self._adam(gradients, active, learning_rate)
            self.iteration.assign_add(tf.cast(active, tf.int32))
            self.done.assign(self.done | (self.iteration >= steps) | (self.no_change >= no_change))

        self.step_fn = tf.function(step)

    def _track(self, works, active, norms, mask, pattern, cross_entropy, patience, tol):
        """Keep the smallest working trigger, adapt each label's cost (the paper's schedule), watch convergence."""
        tf = self.tf
        improved = works & (norms < self.best_norm)
        self.best_norm.assign(tf.where(improved, norms, self.best_norm))
        self.best_mask.assign(tf.where(improved[:, None, None, None], mask, self.best_mask))
        self.best_pattern.assign(tf.where(improved[:, None, None, None], pattern, self.best_pattern))
        self.last_cross_entropy.assign(tf.where(active, cross_entropy, self.last_cross_entropy))

        one, zero = tf.ones_like(self.above), tf.zeros_like(self.above)
        # The cost stays 0 until the trigger has worked `patience` steps in a row.
        off = tf.equal(self.cost, 0.0)
        wait = tf.where(off & works, self.cost_wait + one, zero)
        switch_on = off & (wait >= patience)
        self.cost_wait.assign(tf.where(switch_on, zero, wait))
        cost = tf.where(switch_on, self.initial_cost, self.cost)
        above = tf.where(works & ~switch_on, self.above + one, zero)
        below = tf.where(works | switch_on | ~active, zero, self.below + one)
        raise_ = above >= patience
        lower = ~raise_ & (below >= patience)
        cost = tf.where(raise_, cost * COST_MULTIPLIER_UP, tf.where(lower, cost / COST_MULTIPLIER_DOWN, cost))
        self.cost.assign(cost)
        self.above.assign(tf.where(raise_, zero, above))
        self.below.assign(tf.where(lower, zero, below))

        # Convergence: steps since the best mask last shrank by `tol`, counted once the
        # mask-size weight is on (the trigger works and is being shrunk).
        shrank = works & (norms < self.anchor_norm * (1.0 - tol))
        self.anchor_norm.assign(tf.where(shrank, norms, self.anchor_norm))
        counting = (cost > 0.0) & active & ~shrank
        self.no_change.assign(tf.where(counting, self.no_change + one, zero))

    def _adam(self, gradients, active, learning_rate):
        """One Adam step per slot (its own iteration count); finished slots stay as they are."""
        tf = self.tf
        t = tf.cast(self.iteration + 1, tf.float32)
        correction = (tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t))[:, None, None, None]
        moving = active[:, None, None, None]
        for variable, gradient, first, second in zip(
            (self.mask_logits, self.pattern_logits),
            gradients,
            self.moments[0::2],
            self.moments[1::2],
        ):
            new_first = ADAM_BETA_1 * first + (1.0 - ADAM_BETA_1) * gradient
            new_second = ADAM_BETA_2 * second + (1.0 - ADAM_BETA_2) * tf.square(gradient)
            update = learning_rate * correction * new_first / (tf.sqrt(new_second) + ADAM_EPSILON)
            first.assign(tf.where(moving, new_first, first))
            second.assign(tf.where(moving, new_second, second))
            variable.assign(tf.where(moving, variable - update, variable))

    def reset(self, chosen, targets, mask_logits, pattern_logits, cost):
        """Start fresh labels in the ``chosen`` slots; the other slots keep their state.

        Eager (it runs once per wave of labels, not per step).
        """
        tf = self.tf
        chosen = tf.constant(chosen)

        def put(variable, value):
            where = chosen if len(variable.shape) == 1 else chosen[:, None, None, None]
            value = tf.broadcast_to(tf.cast(value, variable.dtype), variable.shape)
            variable.assign(tf.where(where, value, variable))

        put(self.mask_logits, mask_logits)
        put(self.pattern_logits, pattern_logits)
        put(self.targets, targets)
        put(self.initial_cost, cost)
        for variable in (*self.moments, self.best_mask, self.best_pattern):
            put(variable, 0.0)
        for variable in (self.iteration, self.cost, self.cost_wait, self.above, self.below, self.no_change,
                         self.last_cross_entropy):
            put(variable, 0)
        put(self.best_norm, np.inf)
        put(self.anchor_norm, np.inf)
        put(self.done, False)

    def result(self):
        """Every slot's smallest working trigger (or its last one if none worked), as arrays."""
        mask, pattern = self._trigger()
        found = np.isfinite(self.best_norm.numpy())
        keep = found[:, None, None, None]
        masks = np.where(keep, self.best_mask.numpy(), mask.numpy())[..., 0].astype(np.float32)
        return {
            "masks": masks,
            "patterns": np.where(keep, self.best_pattern.numpy(), pattern.numpy()).astype(np.float32),
            "norms": masks.reshape(len(masks), -1).sum(axis=1).astype(np.float64),
            "found": found,
            "cross_entropy": self.last_cross_entropy.numpy().astype(np.float64),
            "steps": self.iteration.numpy().astype(np.int64),
        }
