"""The universal adversarial perturbation of clean data: a trigger-agnostic stand-in for a backdoor.

Zeng, Chen, Park, Mao, Jin and Jia, "Adversarial Unlearning of Backdoors via Implicit
Hypergradient" (I-BAU), ICLR 2022, https://arxiv.org/abs/2110.03735, after
Moosavi-Dezfooli et al., "Universal adversarial perturbations", CVPR 2017.

A backdoor is a perturbation that sends most inputs to one label. Whatever its shape
(a patch, a blended pattern, a colour filter), the perturbation of bounded size that
raises the loss of clean images the most tends to follow it, because the backdoor is
the cheapest way to change the network's decisions. I-BAU alternates finding that
perturbation and fine-tuning the network to classify perturbed clean images
correctly. Here the perturbation is found by projected gradient ascent on the mean
cross-entropy of clean minibatches, under an L2 bound; :class:`~skbackdoor.NeuralCleanse`
(``unlearning="universal"`` or ``"both"``) computes a fresh one before every
unlearning epoch and stamps it on part of the fit data, which keeps its labels.
"""

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from .models import outputs_are_probabilities  # noqa: E402

__all__ = ["universal_perturbation"]

# Projected gradient ascent: the step is this multiple of radius / steps, so that the
# ascent can cross the ball a few times.
STEP_SCALE = 2.5


class _UniversalPerturbation:
    """The compiled ascent step of one model and image shape (reused across epochs)."""

    def __init__(self, model, image_shape, *, pixel_range):
        import tensorflow as tf

        self.tf = tf
        low, high = (float(v) for v in pixel_range)
        from_logits = not outputs_are_probabilities(model)
        self.delta = tf.Variable(tf.zeros(image_shape, tf.float32), trainable=False)

        def step(images, labels, radius, step_size):
            with tf.GradientTape() as tape:
                tape.watch(self.delta)
                outputs = model(tf.clip_by_value(images + self.delta[None], low, high), training=False)
                loss = tf.reduce_mean(
                    keras.ops.sparse_categorical_crossentropy(labels, outputs, from_logits=from_logits)
                )
            gradient = tape.gradient(loss, self.delta)
            moved = self.delta + step_size * gradient / (tf.norm(gradient) + 1e-12)
            self.delta.assign(moved * tf.minimum(1.0, radius / (tf.norm(moved) + 1e-12)))

        self.step = tf.function(step)

    def run(self, X, y, *, radius, steps, batch_size, rng):
        tf = self.tf
        self.delta.assign(tf.zeros_like(self.delta))
        step_size = tf.constant(STEP_SCALE * radius / steps, tf.float32)
        radius = tf.constant(radius, tf.float32)
        batch_size = min(batch_size, len(X))
        for _ in range(steps):
            rows = rng.choice(len(X), size=batch_size, replace=False)
            self.step(tf.constant(X[rows]), tf.constant(y[rows].astype(np.int64)), radius, step_size)
        return self.delta.numpy()


def universal_perturbation(model, X, y, *, radius, steps, batch_size, pixel_range, rng):
    """The additive perturbation, L2 norm at most ``radius``, that most raises the clean loss.

    Parameters
    ----------
    model : keras.Model
        Classifier (probabilities or logits), not modified.
    X : ndarray of shape (n_samples, height, width, channels), float32
        Clean images.
    y : ndarray of shape (n_samples,)
        Their labels.
    radius : float
        L2 bound of the perturbation, in pixel units.
    steps : int
        Gradient-ascent steps, one minibatch each.
    batch_size : int
        Images per step.
    pixel_range : tuple of float
        ``(low, high)``: perturbed images are clipped to it.
    rng : numpy.random.Generator
        Draws the minibatches.

    Returns
    -------
    delta : ndarray of shape (height, width, channels), float32
    """
    search = _UniversalPerturbation(model, X.shape[1:], pixel_range=pixel_range)
    return search.run(X, y, radius=radius, steps=steps, batch_size=batch_size, rng=rng)
