"""Re-fitting a classifier head in closed form on clean data: a shrinkage linear discriminant.

A fresh head fitted on the features of clean images only learns what the clean labels
ask for: on the benchmark BadNets whose backdoor sits in the head, it leaves none of it
(``benchmarks/results/repair.md``). Re-initialising the head and training it by gradient
descent (FST) does the same but needs many clean images per class and many epochs; the
linear discriminant with Ledoit-Wolf shrinkage is the classic estimator for few samples
in many dimensions, and is solved in one step.

The discriminant: class means ``mu_k`` of the features, the covariance of each class
shrunk towards a multiple of the identity by its Ledoit-Wolf coefficient and averaged
over the classes with their priors (``Sigma``), and the scores ``x' Sigma^-1 mu_k - mu_k' Sigma^-1 mu_k / 2 + log(prior_k)``:
the logits of the posterior under Gaussian classes with a shared covariance, which is
what a head ending in a softmax returns. With fewer images ``n`` than features ``d``
the solve runs in the ``n``-dimensional sample space (Woodbury's identity), so a
4,096-feature head on a few hundred images takes well under a second.

References: Ledoit and Wolf, "A well-conditioned estimator for large-dimensional
covariance matrices", J. Multivariate Analysis 2004; the head re-initialisation idea is
FST's (Min et al., NeurIPS 2023, https://arxiv.org/abs/2310.01875).
"""

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

from ._fine_tuning import classifier_head  # noqa: E402
from ._forward import forward_batches  # noqa: E402
from ._graph import layer_output_in_graph, tensor_consumers  # noqa: E402

__all__ = ["head_features", "linear_discriminant", "refit_head", "refittable_head"]

# Score of a class with no clean image: below every class that has one, so never predicted.
UNSEEN_CLASS_MARGIN = 1e4


def refittable_head(model):
    """The head :func:`refit_head` can re-fit, or raise ``ValueError`` saying why not.

    A ``Dense`` layer with a linear or softmax activation (the model's probabilities
    are then the discriminant's posterior), or a 1x1 ``Conv2D`` with a linear
    activation whose output only goes through a ``GlobalAveragePooling2D`` (a
    network-in-network head: averaging commutes with a linear 1x1 convolution, so it is
    a linear head on the averaged features). The head needs a bias for the
    discriminant's intercepts.
    """
    head = classifier_head(model)
    activation = getattr(head, "activation", None)
    linear = activation in (None, keras.activations.linear)
    if isinstance(head, keras.layers.Dense):
        if not (linear or activation is keras.activations.softmax):
            raise ValueError(
                f"The classifier head {head.name!r} uses the activation "
                f"{getattr(activation, '__name__', activation)}; re-fitting it needs a linear or softmax head."
            )
    elif not (isinstance(head, keras.layers.Conv2D) and tuple(head.kernel_size) == (1, 1) and linear
              and _only_global_average_pooling_reads(model, head)):
        raise ValueError(
            f"The classifier head {head.name!r} ({type(head).__name__}) is neither a Dense layer nor a linear "
            "1x1 convolution followed by global average pooling, so it cannot be re-fitted as a linear head."
        )
    if getattr(head, "bias", None) is None:
        raise ValueError(f"The classifier head {head.name!r} has no bias to hold the discriminant's intercepts.")
    return head


def _only_global_average_pooling_reads(model, layer):
    users = tensor_consumers(model).get(id(layer_output_in_graph(model, layer)), [])
    return bool(users) and all(isinstance(node.operation, keras.layers.GlobalAveragePooling2D) for node in users)


def head_features(model, X, *, batch_size=256):
    """Inputs of the classifier head on ``X``, flattened (spatially averaged for a 1x1 convolution)."""
    head = refittable_head(model)
    values = forward_batches(keras.Model(model.inputs, head.input), X, batch_size=batch_size).astype(np.float64)
    if isinstance(head, keras.layers.Conv2D):
        values = values.mean(axis=(1, 2))
    return values.reshape(len(values), -1)


def linear_discriminant(features, y, n_classes):
    """Coefficients ``(d, n_classes)`` and intercepts ``(n_classes,)`` of the shrinkage discriminant.

    Classes absent from ``y`` get a zero coefficient and an intercept
    ``UNSEEN_CLASS_MARGIN`` below the lowest score any seen class can reach on the fit
    features, so they are never predicted on data like it.
    """
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(y)
    n, d = features.shape
    seen, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    priors = counts / n
    means = np.stack([features[index == k].mean(axis=0) for k in range(seen.size)])
    centred = features - means[index]
    # Each class's covariance S_k is shrunk towards mu_k I (mu_k its mean variance) by its
    # Ledoit-Wolf coefficient, and the shrunk covariances are averaged with the priors:
    # Sigma = a I + Z' diag(w) Z, one weight per image. The scalar target keeps a variance
    # floor of the order of the average one on features that clean images leave nearly
    # dormant (where a patch trigger fires), so the discriminant cannot weigh them much.
    a, weights = 0.0, np.empty(n)
    for k in range(seen.size):
        rows = centred[index == k]
        delta = float(ledoit_wolf_shrinkage(rows, assume_centered=True)) if counts[k] > 1 else 1.0
        a += priors[k] * delta * float(np.sum(rows * rows)) / (counts[k] * d)
        weights[index == k] = priors[k] * (1.0 - delta) / counts[k]
    a = max(a, 1e-12 * float(np.mean(centred * centred)), 1e-300)
    solved = _solve_shrunk(centred, np.full(d, a), weights, means.T)  # Sigma^-1 mu_k, (d, n_seen)
    coef = np.zeros((d, n_classes))
    intercept = np.empty(n_classes)
    coef[:, seen] = solved
    intercept[seen] = -0.5 * np.sum(means.T * solved, axis=0) + np.log(priors)
    unseen = np.setdiff1d(np.arange(n_classes), seen)
    if unseen.size:
        lowest = float(np.min(features @ solved + intercept[seen]))
        intercept[unseen] = lowest - UNSEEN_CLASS_MARGIN
    return coef, intercept


def _solve_shrunk(Z, a, weights, right):
    """``(diag(a) + Z' diag(weights) Z)^-1 right``, in the sample space when ``Z`` has fewer rows than columns."""
    keep = weights > 0
    Z, weights = Z[keep], weights[keep]
    if len(Z) < Z.shape[1]:
        # Woodbury: (A + Z' W Z)^-1 = A^-1 - A^-1 Z' (W^-1 + Z A^-1 Z')^-1 Z A^-1
        scaled = Z / a
        inner = np.diag(1.0 / weights) + scaled @ Z.T
        right_scaled = right / a[:, None]
        return right_scaled - scaled.T @ np.linalg.solve(inner, Z @ right_scaled)
    return np.linalg.solve(np.diag(a) + (Z.T * weights) @ Z, right)


def refit_head(model, X, y, *, batch_size=256):
    """Replace the classifier head's weights by the shrinkage discriminant fitted on ``X, y``; in place.

    Parameters
    ----------
    model : keras.Model
        Changed in place (work on a copy). Every other weight is left as it is.
    X : ndarray of shape (n_samples, height, width, channels)
        Clean images.
    y : ndarray of shape (n_samples,)
        Their labels.
    batch_size : int, default=256
        Images per forward pass of the feature extraction.

    Returns
    -------
    model : keras.Model
        The same object.
    """
    head = refittable_head(model)
    n_classes = int(head.kernel.shape[-1])
    coef, intercept = linear_discriminant(head_features(model, X, batch_size=batch_size), y, n_classes)
    head.kernel.assign(coef.reshape(tuple(head.kernel.shape)).astype(head.kernel.dtype))
    head.bias.assign(intercept.astype(head.bias.dtype))
    return model
