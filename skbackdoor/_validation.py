"""The one place that checks image arrays, labels and pixel ranges.

Every estimator, metric and loader validates through these functions so that a bad
input gets the same clear message wherever it enters.
"""

import numbers
import warnings

import numpy as np

__all__ = [
    "check_classifier_outputs",
    "check_images",
    "check_labels",
    "check_pixel_range",
    "pixel_range",
]

# Images per pass when a whole batch is only scanned (finiteness): bounds the temporaries.
_SCAN_CHUNK = 1024
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# A batch whose pixel span is below this share of the fit data's is probably rescaled.
_NARROW_SPAN = 0.1
# From this many images, a batch that narrow is refused rather than warned about.
_NARROW_REFUSE_AT = 8


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
    except ValueError as exc:
        if "inhomogeneous" not in str(exc) and "sequence" not in str(exc):
            raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
        raise ValueError(
            f"{name} must be an image array of shape (n_samples, height, width, channels); "
            "got nested sequences of different lengths (a ragged list). Resize or crop every "
            "image to the model's input size and stack them, e.g. np.stack(images)."
        ) from None
    except Exception as exc:
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
    if np.issubdtype(X.dtype, np.floating):
        _check_finite_float32(X, name)
    return X.astype(dtype, copy=False)


def _check_finite_float32(X, name):
    """Refuse NaN, infinity and finite values beyond float32, scanning in chunks.

    Runs on the caller's dtype, before any cast, so that a float64 ``1e300`` is reported
    as what it is (it would become infinity in float32) and no full-size temporary is
    made.
    """
    n_bad = n_too_large = 0
    largest = 0.0
    check_range = X.dtype.itemsize > 4
    for start in range(0, len(X), _SCAN_CHUNK):
        block = X[start : start + _SCAN_CHUNK].reshape(min(_SCAN_CHUNK, len(X) - start), -1)
        finite = np.isfinite(block)
        if not finite.all():
            n_bad += int((~finite).any(axis=1).sum())
        if check_range:
            magnitude = np.abs(np.where(finite, block, 0))
            over = magnitude > _FLOAT32_MAX
            if over.any():
                n_too_large += int(over.any(axis=1).sum())
                largest = max(largest, float(magnitude.max()))
    if n_bad:
        raise ValueError(f"{name} contains NaN or infinity in {n_bad} image(s).")
    if n_too_large:
        raise ValueError(
            f"{name} holds finite values too large for float32 (up to {largest:.3g}; float32 "
            f"stops at {_FLOAT32_MAX:.3g}) in {n_too_large} image(s): they would overflow to "
            "infinity when the images are converted for the network. Pass pixel values in the "
            "range the model was trained on."
        )


def _concrete(input_shape, shape):
    return tuple(s if want is None else want for s, want in zip(shape, input_shape))


def check_labels(y, *, n_samples=None, n_classes=None, name="y", min_classes=None, warn_missing=False):
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
    min_classes : int, optional
        Refuse labels holding fewer distinct classes (``2`` for a clean set that a repair
        trains on: with one class the repaired model drifts to it).
    warn_missing : bool, default=False
        Warn when some of the model's ``n_classes`` classes have no label in ``y`` (the
        repair sees no clean example of them). Needs ``n_classes``.

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
    present = np.unique(y) if (min_classes is not None or warn_missing) else None
    if min_classes is not None and len(present) < min_classes:
        held = "no class" if not len(present) else f"a single class ({present[0]})" if len(present) == 1 else f"only {len(present)} classes ({present.tolist()})"
        raise ValueError(
            f"{name} holds {held}; at least {min_classes} classes are needed. Training on "
            "one class teaches the model to answer it for everything: pass clean images of "
            "every class the model predicts."
        )
    if warn_missing:
        if n_classes is None:
            raise ValueError("warn_missing=True needs n_classes.")
        missing = np.setdiff1d(np.arange(n_classes), present)
        if len(missing):
            shown = ", ".join(str(c) for c in missing[:20]) + (", ..." if len(missing) > 20 else "")
            warnings.warn(
                f"{name} holds {len(present)} of the model's {n_classes} classes; no clean "
                f"image of class(es) {shown}. What is learned from this set cannot keep those "
                "classes right (a repair may stop predicting them): add clean images of every class.",
                UserWarning,
                stacklevel=2,
            )
    return y


def pixel_range(X):
    """Return ``(min, max)`` of an image batch as Python floats."""
    X = np.asarray(X)
    return float(X.min()), float(X.max())


def check_pixel_range(X, fitted_range, *, name="X", tolerance=0.1):
    """Refuse images whose values fall well outside, or in a sliver of, the fit range.

    A model trained on pixels in [0, 1] gives meaningless answers on raw 0-255 pixels,
    and the reverse. Values above the fitted range are refused. Values inside it but
    spanning less than a tenth of it (0-1 pixels after fitting on 0-255) are refused
    from 8 images on, and warned about (``UserWarning``) for smaller batches, where a
    few genuinely dark images are possible; constant images are let through.

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
    x_span = x_high - x_low
    if 0 < x_span < _NARROW_SPAN * span:
        message = (
            f"{name} has pixel values in [{x_low:g}, {x_high:g}], a sliver ({x_span / span:.1%}) "
            f"of the range [{low:g}, {high:g}] the estimator was fitted on: {name} is probably "
            "scaled differently from the fit data (for example pixels / 255 versus raw 0-255 "
            f"pixels). Scale {name} the same way as the fit data, e.g. multiply by "
            f"{span / max(x_span, np.finfo(np.float32).eps):.3g}."
        )
        if len(X) >= _NARROW_REFUSE_AT:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return X


def check_classifier_outputs(model, *, estimator):
    """Refuse models that do not end in one class-score vector of 2 classes or more.

    Parameters
    ----------
    model : keras.Model
        The model to run.
    estimator : str
        Name of the estimator, for the message.
    """
    outputs = list(getattr(model, "outputs", None) or [])
    shapes = [tuple(getattr(out, "shape", ())) for out in outputs]
    described = ", ".join(f"{_output_name(out)} of shape {shape}" for out, shape in zip(outputs, shapes))
    # e.g. "'scores' of shape (None, 10), 'box' of shape (None, 4)"
    if len(outputs) != 1:
        sizes = {shape[-1] if shape else None for shape in shapes}
        extra = " (of different sizes)" if len(sizes) > 1 else ""
        raise ValueError(
            f"{estimator} needs a classifier with a single output of class scores; this "
            f"model has {len(outputs)} outputs{extra}: {described}. Pass a model that keeps "
            "only the classification head, e.g. keras.Model(model.inputs, model.outputs[0])."
        )
    shape = shapes[0]
    if len(shape) != 2:
        raise ValueError(
            f"{estimator} needs a classifier whose output has shape (batch, n_classes); this "
            f"model's output is {described}."
        )
    if shape[-1] is None or shape[-1] < 2:
        raise ValueError(
            f"{estimator} needs class scores over at least 2 classes; this model's output is "
            f"{described}, a single unit (a regression or sigmoid model). Wrap a binary sigmoid "
            "classifier so that it outputs [1 - p, p]."
        )


def _output_name(output):
    """Name of the layer producing a Keras output tensor (tensor names are generic)."""
    history = getattr(output, "_keras_history", None)
    operation = history[0] if history else None
    name = getattr(operation, "name", None) or getattr(output, "name", None)
    return f"'{name}'" if name else "an output"


def check_positive_int(value, name):
    """Raise a ValueError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
