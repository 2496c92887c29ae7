"""The one place that checks image arrays, labels and pixel ranges.

Every estimator, metric and loader validates through these functions so that a bad
input gets the same clear message wherever it enters.
"""

import numbers

import numpy as np

__all__ = [
    "check_images",
    "check_labels",
    "check_pixel_range",
    "pixel_range",
]


def check_images(X, *, input_shape=None, name="X", allow_empty=False, dtype=np.float32):
    """Validate an image batch and return it as a float array of shape (n, H, W, C).

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width, channels)
        The images. A single image of shape (height, width, channels) is refused with a
        message that says how to pass it, rather than silently reshaped.
    input_shape : tuple of int, optional
        The (height, width, channels) the model expects; ``None`` entries match anything.
    name : str, default="X"
        Name used in error messages.
    allow_empty : bool, default=False
        Whether zero images is acceptable.
    dtype : numpy dtype, default=np.float32
        Dtype of the returned array.

    Returns
    -------
    X : ndarray of shape (n_samples, height, width, channels)

    Raises
    ------
    TypeError
        If ``X`` is not numeric.
    ValueError
        If ``X`` has the wrong rank or shape, is empty, or holds NaN or infinity.
    """
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(
            f"Sparse input is not supported: {name} must be a dense image array of shape "
            "(n_samples, height, width, channels)."
        )
    if hasattr(X, "numpy") and not isinstance(X, np.ndarray):
        X = X.numpy()
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if np.iscomplexobj(X):
        raise ValueError(f"Complex data not supported: {name} must hold real pixel values.")
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must hold numbers, got an array of dtype object.") from None
    if not (
        np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must hold numbers, got an array of dtype {X.dtype}.")
    if X.ndim == 3 and input_shape is not None and tuple(X.shape) == _concrete(input_shape, X.shape):
        raise ValueError(
            f"{name} looks like a single image of shape {X.shape}; pass a batch of shape "
            f"(n_samples, height, width, channels), e.g. {name}[np.newaxis]."
        )
    if X.ndim != 4:
        hint = ""
        if X.ndim == 3:
            hint = (
                " A single image must be passed as a batch of one, e.g. X[np.newaxis]; a "
                "grayscale batch (n, H, W) needs a channel axis, e.g. X[..., np.newaxis]."
            )
        elif X.ndim == 2:
            hint = " Flattened images must be reshaped to (n, height, width, channels)."
        raise ValueError(
            f"{name} must be an image array of shape (n_samples, height, width, channels); "
            f"got an array with {X.ndim} dimension(s) and shape {X.shape}.{hint}"
        )
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: at least one image is required.")
    if input_shape is not None:
        expected = tuple(input_shape)
        if len(expected) != 3:
            raise ValueError(f"input_shape must have 3 entries, got {expected}.")
        for got, want, axis in zip(X.shape[1:], expected, ("height", "width", "channels")):
            if want is not None and got != want:
                raise ValueError(
                    f"{name} has images of shape {X.shape[1:]} but the model expects "
                    f"{expected} (height, width, channels); the {axis} differ."
                )
    X = X.astype(dtype, copy=False)
    if X.size and not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).reshape(len(X), -1).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or infinity in {bad} image(s).")
    return X


def _concrete(input_shape, shape):
    return tuple(s if want is None else want for s, want in zip(shape, input_shape))


def check_labels(y, *, n_samples=None, n_classes=None, name="y"):
    """Validate integer class labels ``0..n_classes-1``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels. Floats holding whole numbers are accepted.
    n_samples : int, optional
        Required length (the number of images they label).
    n_classes : int, optional
        Number of classes of the model; labels must be below it.
    name : str, default="y"
        Name used in error messages.

    Returns
    -------
    y : ndarray of int64, shape (n_samples,)
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of integer labels; got shape {y.shape}. "
            "One-hot labels must be converted with np.argmax(y, axis=1)."
        )
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(f"{name} has {len(y)} labels but there are {n_samples} images.")
    if y.dtype == object or not (
        np.issubdtype(y.dtype, np.integer)
        or np.issubdtype(y.dtype, np.floating)
        or np.issubdtype(y.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise ValueError(f"{name} must hold whole-number class labels; got non-integer values.")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} holds negative labels (min {y.min()}); labels are 0..N-1.")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise ValueError(
            f"{name} holds label {y.max()} but the model has {n_classes} classes "
            f"(labels 0..{n_classes - 1})."
        )
    return y


def pixel_range(X):
    """Return ``(min, max)`` of an image batch as Python floats."""
    X = np.asarray(X)
    return float(X.min()), float(X.max())


def check_pixel_range(X, fitted_range, *, name="X", tolerance=0.1):
    """Refuse images whose values fall well outside the range seen in ``fit``.

    A model trained on pixels in [0, 1] gives meaningless answers on raw 0-255 pixels
    (and the reverse): this catches the first case, the common one, loudly.

    Parameters
    ----------
    X : ndarray
        Validated images.
    fitted_range : tuple of float
        ``(min, max)`` recorded at fit time.
    tolerance : float, default=0.1
        Slack allowed on either side, as a fraction of the fitted span.
    """
    low, high = fitted_range
    span = max(high - low, np.finfo(np.float32).eps)
    x_low, x_high = pixel_range(X)
    if x_low < low - tolerance * span or x_high > high + tolerance * span:
        raise ValueError(
            f"{name} has pixel values in [{x_low:g}, {x_high:g}] but the estimator was "
            f"fitted on values in [{low:g}, {high:g}]; scale {name} the same way as the "
            "fit data (for example raw 0-255 pixels versus pixels / 255)."
        )
    return X


def check_positive_int(value, name):
    """Raise a ValueError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
