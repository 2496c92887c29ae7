"""Projecting reversed triggers' feature shifts out of a classifier head's input, in closed form.

A patch trigger moves the features that reach the classifier head along a few
directions which clean images hardly use, and the head maps that move to the target.
Given reversed triggers (Neural Cleanse's), the mean shift ``delta`` they cause in
the head's input on clean images estimates that move. The head is made blind to it
by the linear map ``f -> f - D G (f - m)`` on its input, folded into its weights:
``D`` holds the shifts as columns, ``m`` is the clean features' mean, and
``G = (A' D)^-1 A'`` with ``A = Sigma^-1 D`` (``Sigma`` the clean features'
covariance, shrunk by its Ledoit-Wolf coefficient). It sends ``f + delta`` to the
same point as ``f``, leaves ``m`` where it is, and, being an oblique projection along
``D`` in the metric of ``Sigma``, moves clean features least where they vary least
along the shifts (an orthogonal projection, ``A = D``, cost the GTSRB multi-target
BadNet 2.2 points of clean accuracy after one round where the oblique one cost none,
though it left less of the backdoor, 4.9 % attack success against 36.9 %, which later
rounds of the oblique one bring down; scratch runs on the tuning half of
``benchmarks/results/repair.md``). Every other weight is left as it is, so
the clean accuracy the head learned from the attacker's full training set is kept,
which a head re-fitted on a few hundred clean images (FST, the linear discriminant)
does not keep.

This is our mitigation, not the paper's; Neural Cleanse's own are unlearning and
pruning of the neurons the reversed trigger activates (Wang et al., IEEE S&P 2019,
https://people.cs.uchicago.edu/~ravenben/publications/pdf/backdoor-sp19.pdf).
"""

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._fine_tuning import classifier_head  # noqa: E402
from ._forward import forward_batches  # noqa: E402
from ._head_refit import _solve_shrunk  # noqa: E402

__all__ = ["HeadProjection", "projectable_head"]


def projectable_head(model):
    """The head a :class:`HeadProjection` can fold into, or raise ``ValueError`` saying why not.

    A ``Dense`` layer or a 1x1 ``Conv2D``, with a bias and any activation: the map on
    its input is applied before the kernel (at every position for the convolution),
    so it folds into the kernel and the bias exactly.
    """
    head = classifier_head(model)
    dense = isinstance(head, keras.layers.Dense)
    if not (dense or (isinstance(head, keras.layers.Conv2D) and tuple(head.kernel_size) == (1, 1))):
        raise ValueError(
            f"The classifier head {head.name!r} ({type(head).__name__}) is neither a Dense layer nor a 1x1 "
            "convolution, so the reversed triggers cannot be projected out of its input; set "
            "projection_rounds=0 to unlearn by fine-tuning only."
        )
    if getattr(head, "bias", None) is None:
        raise ValueError(
            f"The classifier head {head.name!r} has no bias to hold the projection's offset; set "
            "projection_rounds=0 to unlearn by fine-tuning only."
        )
    return head


class HeadProjection:
    """Fold the projection of feature shifts out of a model's head input into the head; in place.

    Parameters
    ----------
    model : keras.Model
        Its head's weights are replaced by :meth:`fold` (work on a copy). The head's
        weights when the object is made are the ones every fold starts from.
    X : ndarray of shape (n_samples, height, width, channels)
        Clean images: their features give the mean and covariance.
    batch_size : int, default=256
        Images per forward pass.
    """

    def __init__(self, model, X, *, batch_size=256):
        self.head = projectable_head(model)
        try:
            self._extractor = keras.Model(model.inputs, self.head.input)
        except Exception as error:  # Keras raises several types for a head it cannot reach
            raise ValueError(
                f"The input of the classifier head {self.head.name!r} cannot be read from the model's graph "
                f"({error}); set projection_rounds=0 to unlearn by fine-tuning only."
            ) from error
        self._batch_size = batch_size
        self._kernel = self.head.kernel.numpy().astype(np.float64)
        self._bias = self.head.bias.numpy().astype(np.float64)
        self._clean = self.features(X)
        self.mean = self._clean.mean(axis=0)
        centred = self._clean - self.mean
        n, d = centred.shape
        # Sigma = (1 - s) Z'Z / n + s mu I: held as its identity part and per-image weights.
        shrinkage = float(ledoit_wolf_shrinkage(centred, assume_centered=True)) if n > 1 else 1.0
        variance = float(np.sum(centred * centred)) / (n * d)
        self._centred = centred
        self._identity = np.full(d, max(shrinkage * variance, 1e-12 * variance, 1e-300))
        self._weights = np.full(n, (1.0 - shrinkage) / n)
        self.shifts = np.empty((0, d))

    def features(self, X):
        """The head's input on ``X``, averaged over every axis but the first and the last."""
        values = forward_batches(self._extractor, X, batch_size=self._batch_size).astype(np.float64)
        return values.reshape(len(values), -1, values.shape[-1]).mean(axis=1)

    def add(self, X_triggered):
        """Add the mean shift that triggered copies of the clean images cause (same order as ``X``)."""
        shift = (self.features(X_triggered) - self._clean).mean(axis=0)
        self.shifts = np.vstack([self.shifts, shift])
        return self

    def fold(self):
        """Write the head that ignores every added shift: ``W - G' D' W`` and ``b + m' G' D' W``."""
        kernel = self._kernel.reshape(-1, self._kernel.shape[-1])
        if len(self.shifts):
            D = self.shifts.T
            A = _solve_shrunk(self._centred, self._identity, self._weights, D)
            # Least squares: shifts found in later rounds can be nearly parallel to earlier ones.
            G = np.linalg.lstsq(A.T @ D, A.T, rcond=None)[0]
            through = G.T @ (D.T @ kernel)
            kernel, bias = kernel - through, self._bias + self.mean @ through
        else:
            bias = self._bias
        self.head.kernel.assign(kernel.reshape(self._kernel.shape).astype(self.head.kernel.dtype))
        self.head.bias.assign(bias.astype(self.head.bias.dtype))
        return self
