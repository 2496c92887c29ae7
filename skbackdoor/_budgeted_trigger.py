"""An adaptive attacker: a reversed trigger re-optimised against a given model, its mask size capped.

A reversed trigger (mask ``m``, pattern ``p``) found on the BadNet is often only the
smallest part of the attacker's trigger. A repair can stop answering that part and
still answer the whole trigger, so stamping the reversed trigger unchanged on inputs of
the repaired model measures too little (see :func:`skbackdoor.metrics.surrogate_backdoor_scoring`).
:func:`budgeted_trigger` starts from the reversed trigger and, on the model under test,
minimises ``cross_entropy(f((1 - m) x + m p), target)`` with the mask's L1 norm kept
under a budget: a backdoor the repair left in place is found again, while a model with
no backdoor towards the label has no trigger that small (the labels of a clean net need
masks several times larger, which is what Neural Cleanse's anomaly test relies on).
"""

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from ._forward import outputs_are_probabilities
from ._trigger_search import _arctanh_unit, trigger_from_logits

__all__ = ["budgeted_trigger"]

# Adam steps, minibatch and learning rate of the attack (on the tanh logits of the mask
# and pattern, as in the trigger search).
ATTACK_STEPS = 300
ATTACK_BATCH_SIZE = 128
ATTACK_LEARNING_RATE = 0.1
# Weight of the overshoot of the mask's L1 norm past the budget, per unit of budget:
# an overshoot of 10 % of the budget costs as much as a cross-entropy of 1.
OVERSHOOT_WEIGHT = 10.0


def budgeted_trigger(model, X, target, mask, pattern, *, budget, pixel_range, seed):
    """Re-optimise the trigger ``(mask, pattern)`` towards ``target`` on ``model``.

    Parameters
    ----------
    model : keras.Model
        The model attacked (frozen; its weights are read, never changed).
    X : ndarray of shape (n, H, W, C)
        Clean images of labels other than ``target``: the minibatches of the attack.
    target : int
        The label the trigger should send them to.
    mask : ndarray of shape (H, W), values in [0, 1]
        The starting mask (the reversed trigger's).
    pattern : ndarray of shape (H, W, C)
        The starting pattern, within ``pixel_range``.
    budget : float
        Largest L1 norm of the returned mask; a mask that ends above it is scaled down.
    pixel_range : tuple of float
        ``(low, high)`` of the pattern.
    seed : int
        Draws the minibatches.

    Returns
    -------
    mask : ndarray of shape (H, W), float32
    pattern : ndarray of shape (H, W, C), float32
    """
    import tensorflow as tf

    low, high = (float(v) for v in pixel_range)
    if high <= low:
        high = low + 1.0
    X = tf.constant(np.asarray(X, dtype=np.float32))
    mask_logits = tf.Variable(_arctanh_unit(np.asarray(mask, dtype=np.float32))[..., np.newaxis])
    pattern_logits = tf.Variable(_arctanh_unit((np.asarray(pattern, dtype=np.float32) - low) / (high - low)))
    optimizer = keras.optimizers.Adam(ATTACK_LEARNING_RATE)
    from_logits = not outputs_are_probabilities(model)
    batch_size = min(ATTACK_BATCH_SIZE, int(X.shape[0]))
    targets = tf.fill([batch_size], int(target))
    budget = float(budget)

    def trigger():
        return trigger_from_logits(mask_logits, pattern_logits, low, high)

    @tf.function(reduce_retracing=True)
    def step(rows):
        images = tf.gather(X, rows)
        with tf.GradientTape() as tape:
            m, p = trigger()
            outputs = model((1.0 - m) * images + m * p, training=False)
            cross_entropy = tf.reduce_mean(
                keras.ops.sparse_categorical_crossentropy(targets, outputs, from_logits=from_logits)
            )
            overshoot = tf.nn.relu(tf.reduce_sum(m) - budget)
            loss = cross_entropy + (OVERSHOOT_WEIGHT / budget) * overshoot
        variables = [mask_logits, pattern_logits]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng([seed, 5, int(target)])
    for _ in range(ATTACK_STEPS):
        step(tf.constant(rng.choice(int(X.shape[0]), size=batch_size, replace=False).astype(np.int32)))
    m, p = (value.numpy() for value in trigger())
    m = m[..., 0]
    norm = float(m.sum())
    if norm > budget:
        m = m * (budget / norm)
    return m.astype(np.float32), p.astype(np.float32)
