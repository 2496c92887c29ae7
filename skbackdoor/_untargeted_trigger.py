"""The smallest trigger that moves clean images off their own label, whichever label they go to.

Neural Cleanse (Wang et al., IEEE S&P 2019,
https://people.cs.uchicago.edu/~ravenben/publications/pdf/backdoor-sp19.pdf) reverses,
for every label ``k``, the smallest mask and pattern that send clean images to ``k``.
A backdoor with no single target (all-to-all, label ``i`` to ``i + 1``) has no small
trigger towards any one label: its trigger sends the images of each class to a
different label, so no label stands out and the per-label triggers miss it. Dropping
the target from the objective finds it: :func:`untargeted_trigger` minimises
``-log(1 - f_y((1 - m) x + m p)) + cost * |m|_1`` over the mask ``m`` and pattern
``p``, ``y`` being each image's own label, with Neural Cleanse's cost schedule. On the
all-to-all BadNets of the repair benchmark the first mask found puts 22-42 % of its mass
on the attacker's patch (2 % of the image). On single-target BadNets it mostly finds an
adversarial patch instead: a single-target trigger cannot move the target class's own
images, and the objective has no hint of the target, which is what the per-label
search has. :class:`~skbackdoor.NeuralCleanse` (``unlearn_labels="untargeted"``)
unlearns it, found again before every round.
"""

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from ._forward import outputs_are_probabilities
from ._trigger_search import (
    ADAM_BETA_1,
    ADAM_BETA_2,
    ADAM_EPSILON,
    COST_MULTIPLIER_DOWN,
    COST_MULTIPLIER_UP,
    COST_PATIENCE,
    trigger_from_logits,
)

__all__ = ["untargeted_trigger"]

# The trigger "works" on a minibatch when this share of it leaves its own label. Below
# the per-label search's 0.99; chosen on mnist-all-to-all (tuning half) against 0.6,
# where the masks were a part of the patch only and unlearning them left 3.3 % ASR
# against 2.1 % (scratch runs).
UNTARGETED_SUCCESS = 0.9
# Starting mask logit: the mask starts near (tanh(-2) + 1) / 2 = 0.018 everywhere.
INITIAL_MASK_LOGIT = -2.0


def untargeted_trigger(model, X, y, *, pixel_range, steps, batch_size, learning_rate, cost, seed):
    """Reverse-engineer the smallest mask and pattern that move ``X`` off its labels ``y``.

    Parameters
    ----------
    model : keras.Model
        The model searched (frozen; its weights are read, never changed).
    X : ndarray of shape (n, H, W, C)
        Clean images.
    y : ndarray of shape (n,)
        Their labels.
    pixel_range : tuple of float
        ``(low, high)`` of the pattern.
    steps : int
        Adam steps.
    batch_size : int
        Images per step.
    learning_rate : float
        Adam learning rate on the tanh logits of the mask and pattern.
    cost : float
        Weight of the mask's L1 norm once the trigger works (then scheduled as in
        Neural Cleanse).
    seed : int
        Draws the initial trigger and the minibatches.

    Returns
    -------
    mask : ndarray of shape (H, W), float32
        The smallest mask that worked on a whole minibatch (the last one if none did).
    pattern : ndarray of shape (H, W, C), float32
    norm : float
        L1 norm of ``mask``.
    """
    import tensorflow as tf

    low, high = (float(v) for v in pixel_range)
    if high <= low:
        high = low + 1.0
    rng = np.random.default_rng([seed, 11])
    height, width, channels = X.shape[1:]
    X = tf.constant(np.asarray(X, dtype=np.float32))
    y = tf.constant(np.asarray(y, dtype=np.int32))
    mask_logits = tf.Variable(
        (INITIAL_MASK_LOGIT + rng.normal(0.0, 0.1, (height, width, 1))).astype(np.float32)
    )
    pattern_logits = tf.Variable(rng.normal(0.0, 0.1, (height, width, channels)).astype(np.float32))
    weight = tf.Variable(0.0, dtype=tf.float32, trainable=False)
    optimizer = keras.optimizers.Adam(
        learning_rate, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON
    )
    probabilities = outputs_are_probabilities(model)
    batch_size = min(int(batch_size), int(X.shape[0]))

    def trigger():
        return trigger_from_logits(mask_logits, pattern_logits, low, high)

    @tf.function(reduce_retracing=True)
    def step(rows):
        images, labels = tf.gather(X, rows), tf.gather(y, rows)
        with tf.GradientTape() as tape:
            m, p = trigger()
            outputs = model((1.0 - m) * images + m * p, training=False)
            if not probabilities:
                outputs = tf.nn.softmax(outputs)
            own = tf.gather(outputs, labels, batch_dims=1)
            norm = tf.reduce_sum(m)
            loss = tf.reduce_mean(-tf.math.log(tf.maximum(1.0 - own, 1e-7))) + weight * norm
        variables = [mask_logits, pattern_logits]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        moved = tf.reduce_mean(tf.cast(tf.argmax(outputs, axis=1, output_type=tf.int32) != labels, tf.float32))
        return moved, norm, m[..., 0], p

    best_norm, best = np.inf, None
    successes = failures = 0
    for _ in range(int(steps)):
        rows = tf.constant(rng.choice(int(X.shape[0]), size=batch_size, replace=False).astype(np.int32))
        moved, norm, m, p = step(rows)
        if float(moved) >= UNTARGETED_SUCCESS:
            if float(norm) < best_norm:
                best_norm, best = float(norm), (m.numpy(), p.numpy())
            if float(weight.numpy()) == 0.0:
                weight.assign(float(cost))
            successes, failures = successes + 1, 0
            if successes >= COST_PATIENCE:
                weight.assign(weight * COST_MULTIPLIER_UP)
                successes = 0
        else:
            failures, successes = failures + 1, 0
            if failures >= COST_PATIENCE and float(weight.numpy()) > 0.0:
                weight.assign(weight / COST_MULTIPLIER_DOWN)
                failures = 0
    if best is None:
        m, p = trigger()
        best = (m.numpy()[..., 0], p.numpy())
        best_norm = float(best[0].sum())
    return best[0].astype(np.float32), best[1].astype(np.float32), float(best_norm)
