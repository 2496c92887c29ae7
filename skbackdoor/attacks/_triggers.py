"""Backdoor triggers: a patch stamped on the image, a blended pattern, an image under a mask.

Every trigger is the same operation with a different mask ``m`` and pattern ``p``
(both of the image's full size)::

    x' = (1 - m) * x + m * p

- :class:`PatchTrigger`: ``m`` is 1 on a small rectangle, 0 elsewhere (BadNets,
  Gu et al., 2017, https://arxiv.org/abs/1708.06733);
- :class:`BlendTrigger`: ``m`` is ``alpha`` everywhere (the blended-injection attack of
  Chen et al., 2017, https://arxiv.org/abs/1712.05526);
- :class:`MaskTrigger`: any ``m`` in [0, 1], e.g. sunglasses on a face (the CSAW-HackML
  "sunglasses" BadNet).

:meth:`Trigger.mask_and_pattern` exposes ``(m, p)`` and :meth:`Trigger.footprint` the
pixels a trigger touches, so that trigger reverse-engineering defenses can be checked
against the truth.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from .._docstrings import fill_doc
from .._validation import check_images

__all__ = ["BlendTrigger", "MaskTrigger", "PatchTrigger", "Trigger"]

LOCATIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
DEFAULT_CLIP_RANGE = (0.0, 255.0)

# What the triggers' docstrings share: the parameters of the methods taking an image
# shape, the parameter every trigger takes, and the end of the docstrings of the
# alternative constructors (classmethods) of a trigger class.
_FRAGMENTS = {
    "image_shape_parameters": """\
Parameters
----------
image_shape : tuple of int
    ``(height, width)`` or ``(height, width, channels)`` of the images.
""",
    "clip_range": """\
clip_range : tuple of float or None, default=(0, 255)
    Valid pixel range; triggered values are clipped to it. ``None`` disables it.
""",
    "patch_size": """\
size : int, default=4
    Side of the square in pixels.
""",
}
_CONSTRUCTOR_END = """\
**kwargs
    {keywords}: see :class:`{trigger}`.

Returns
-------
trigger : {trigger}

Examples
--------
>>> from skbackdoor.attacks import {trigger}
"""


def _documented(constructor_keywords=None):
    """Fill the docstrings of a trigger class; its constructors pass ``constructor_keywords``
    on to the class."""

    def document(cls):
        end = _CONSTRUCTOR_END.format(trigger=cls.__name__, keywords=constructor_keywords)
        return fill_doc(**_FRAGMENTS, constructor_end=end)(cls)

    return document


# --------------------------------------------------------------------------- checks


def _check_clip_range(clip_range):
    if clip_range is None:
        return None
    try:
        low, high = (float(value) for value in clip_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"clip_range must be None or a pair (low, high) of numbers, got {clip_range!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise ValueError(f"clip_range must satisfy low < high (finite), got {clip_range!r}.")
    return (low, high)


def _check_image_like(array, name):
    """Return ``array`` as a float64 array of shape (H, W, C) (a (H, W) array gets C=1)."""
    try:
        array = np.asarray(array)
    except Exception as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must hold numbers, got an array of dtype {array.dtype}.")
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3:
        raise ValueError(
            f"{name} must have shape (height, width) or (height, width, channels); got "
            f"shape {array.shape}."
        )
    if 0 in array.shape:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return array


def _check_image_shape(image_shape):
    """Return ``image_shape`` as (H, W, C); (H, W) means one channel."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"image_shape must be (height, width) or (height, width, channels), got "
            f"{image_shape!r}."
        ) from None
    if len(shape) == 2:
        shape += (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (height, width) or (height, width, channels) of positive "
            f"sizes, got {image_shape!r}."
        )
    return shape


def _broadcast_channels(array, n_channels, name):
    """Broadcast an (H, W, 1) array to (H, W, n_channels); refuse mismatched channels."""
    if array.shape[-1] == n_channels:
        return array
    if array.shape[-1] == 1:
        return np.broadcast_to(array, array.shape[:2] + (n_channels,))
    raise ValueError(
        f"{name} has {array.shape[-1]} channels but the images have {n_channels}; give it "
        f"1 channel (used for every channel) or {n_channels}."
    )


def _check_same_spatial_shape(array, image_shape, name):
    if array.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(
            f"{name} has height x width {array.shape[0]}x{array.shape[1]} but the images are "
            f"{image_shape[0]}x{image_shape[1]}; a full-image {name} must match the images."
        )


# --------------------------------------------------------------------------- base


@_documented()
class Trigger:
    """Base class of the triggers: ``x' = (1 - m) * x + m * p``, clipped.

    Subclasses implement :meth:`mask_and_pattern`. :meth:`apply` works on any numeric
    dtype and returns a new array of the input's dtype and shape (integer images are
    rounded), leaving the input untouched.
    """

    clip_range = DEFAULT_CLIP_RANGE

    def mask_and_pattern(self, image_shape):
        """Full-size mask ``m`` (values in [0, 1]) and pattern ``p`` for an image shape.

        %(image_shape_parameters)s

        Returns
        -------
        mask : ndarray of float64, shape (height, width, channels)
        pattern : ndarray of float64, shape (height, width, channels)
        """
        raise NotImplementedError

    def footprint(self, image_shape):
        """Boolean ``(height, width)`` map of the pixels the trigger changes (``m > 0``).

        %(image_shape_parameters)s

        Returns
        -------
        footprint : ndarray of bool, shape (height, width)
        """
        mask, _ = self.mask_and_pattern(image_shape)
        return (mask > 0).any(axis=-1)

    def apply(self, X):
        """Return a triggered copy of the image batch ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            The images, any numeric dtype. ``X`` is not modified.

        Returns
        -------
        X_triggered : ndarray of shape (n_samples, height, width, channels)
            Same dtype and shape as ``X``; values clipped to ``clip_range`` (and to the
            limits of an integer dtype).
        """
        X = _check_batch(X)
        mask, pattern = self.mask_and_pattern(X.shape[1:])
        rows, cols = np.nonzero((mask > 0).any(axis=-1))
        out = X.copy()
        if rows.size == 0:
            return out
        # Only the bounding box of the footprint changes; skipping the rest keeps
        # patch triggers cheap on large datasets.
        box = (slice(None), slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        # float32 is exact for 8/16-bit pixels; wider inputs keep float64 precision, so
        # untouched pixels inside the box come back bit for bit.
        work = np.float32 if X.dtype.itemsize <= 2 or X.dtype == np.float32 else np.float64
        m = mask[box[1:]].astype(work)
        p = pattern[box[1:]].astype(work)
        region = X[box].astype(work) * (1 - m) + m * p
        out[box] = _to_dtype(region, X.dtype, self.clip_range)
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()})"

    def _describe(self):
        return ""


def _check_batch(X):
    array = np.asarray(X) if not hasattr(X, "numpy") else np.asarray(X.numpy())
    dtype = array.dtype if array.dtype != object else np.float32
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        dtype = np.float32
    return check_images(array, name="X", allow_empty=True, dtype=dtype)


def _to_dtype(values, dtype, clip_range):
    low, high = (-np.inf, np.inf) if clip_range is None else clip_range
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(low, info.min), min(high, info.max)
        values = np.rint(values)
    elif np.issubdtype(dtype, np.bool_):
        values = np.rint(values)
        low, high = max(low, 0), min(high, 1)
    return np.clip(values, low, high).astype(dtype)


# --------------------------------------------------------------------------- patch


@_documented(constructor_keywords="``location``, ``margin``, ``clip_range``")
class PatchTrigger(Trigger):
    """A small pattern stamped over the image at a fixed place (BadNets).

    Parameters
    ----------
    pattern : array-like of shape (h, w) or (h, w, channels)
        Pixel values of the patch, in the images' units (e.g. 0-255). A 2-D pattern (or
        one channel) is used for every channel of the images.
    location : {"bottom-right", "bottom-left", "top-right", "top-left", "center"} or \
tuple of int, default="bottom-right"
        Where the patch goes: a named place, or the ``(row, col)`` of its top-left pixel.
    margin : int, default=0
        Distance in pixels between the patch and the image border, for named locations.
    %(clip_range)s

    See Also
    --------
    PatchTrigger.square : a uniform square patch.
    PatchTrigger.checkerboard : a two-value checkerboard patch.

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.attacks import PatchTrigger
    >>> trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
    >>> X = np.zeros((1, 4, 4, 1))
    >>> trigger.apply(X)[0, ..., 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  0.,  0.,  0.],
           [ 0.,  0., 16., 16.],
           [ 0.,  0., 16., 16.]])
    >>> trigger.footprint((4, 4)).sum()
    np.int64(4)
    """

    def __init__(self, pattern, *, location="bottom-right", margin=0, clip_range=DEFAULT_CLIP_RANGE):
        self.pattern = _check_image_like(pattern, "pattern")
        self.location = _check_location(location)
        if isinstance(margin, bool) or not isinstance(margin, numbers.Integral) or margin < 0:
            raise ValueError(f"margin must be a non-negative integer, got {margin!r}.")
        self.margin = int(margin)
        self.clip_range = _check_clip_range(clip_range)

    @classmethod
    def square(cls, size=4, value=255, *, channels=1, **kwargs):
        """A ``size`` x ``size`` patch of one value (a white square by default).

        Parameters
        ----------
        %(patch_size)s
        value : float or sequence of float, default=255
            Pixel value, or one value per channel.
        channels : int, default=1
            Channels of the pattern (1 is used for every channel of the images); ignored
            when ``value`` gives one value per channel.
        %(constructor_end)s
        >>> PatchTrigger.square(size=3, value=(255, 0, 0), location=(0, 0)).pattern.shape
        (3, 3, 3)
        """
        size = _check_size(size)
        value = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if value.ndim != 1:
            raise ValueError(f"value must be a number or one number per channel, got shape {value.shape}.")
        if value.size == 1:
            value = np.repeat(value, _check_size(channels, "channels"))
        pattern = np.broadcast_to(value, (size, size, value.size))
        return cls(pattern, **kwargs)

    @classmethod
    def checkerboard(cls, size=4, *, low=0, high=255, **kwargs):
        """A ``size`` x ``size`` checkerboard alternating ``high`` and ``low``.

        The top-left pixel is ``high``.

        Parameters
        ----------
        %(patch_size)s
        low, high : float, default=0, 255
            The two pixel values.
        %(constructor_end)s
        >>> PatchTrigger.checkerboard(size=2, low=0, high=1).pattern[..., 0]
        array([[1., 0.],
               [0., 1.]])
        """
        size = _check_size(size)
        rows, cols = np.indices((size, size))
        pattern = np.where((rows + cols) % 2 == 0, float(high), float(low))
        return cls(pattern, **kwargs)

    def position(self, image_shape):
        """``(row, col)`` of the patch's top-left pixel in an image of ``image_shape``.

        Raises
        ------
        ValueError
            If the patch does not fit inside the image at its location.
        """
        height, width, _ = _check_image_shape(image_shape)
        h, w = self.pattern.shape[:2]
        margin = self.margin
        if isinstance(self.location, tuple):
            row, col = self.location
        else:
            vertical, _, horizontal = self.location.partition("-")
            if self.location == "center":
                row, col = (height - h) // 2, (width - w) // 2
            else:
                row = margin if vertical == "top" else height - h - margin
                col = margin if horizontal == "left" else width - w - margin
        if row < 0 or col < 0 or row + h > height or col + w > width:
            where = (
                f"at (row, col) = {self.location}"
                if isinstance(self.location, tuple)
                else f"at {self.location!r} with margin {margin}"
            )
            raise ValueError(
                f"The {h}x{w} patch {where} does not fit in a {height}x{width} image "
                f"(it would cover rows {row}..{row + h - 1}, columns {col}..{col + w - 1})."
            )
        return row, col

    def mask_and_pattern(self, image_shape):
        height, width, channels = _check_image_shape(image_shape)
        row, col = self.position(image_shape)
        h, w = self.pattern.shape[:2]
        stamp = _broadcast_channels(self.pattern, channels, "pattern")
        mask = np.zeros((height, width, channels))
        pattern = np.zeros((height, width, channels))
        mask[row : row + h, col : col + w] = 1.0
        pattern[row : row + h, col : col + w] = stamp
        return mask, pattern

    def _describe(self):
        return f"pattern shape={self.pattern.shape}, location={self.location!r}, margin={self.margin}"


def _check_size(size, name="size"):
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}.")
    return int(size)


def _check_location(location):
    if isinstance(location, str):
        if location not in LOCATIONS:
            raise ValueError(
                f"Unknown location {location!r}; use one of {list(LOCATIONS)} or a (row, col) pair."
            )
        return location
    try:
        row, col = location
    except (TypeError, ValueError):
        raise ValueError(
            f"location must be one of {list(LOCATIONS)} or a (row, col) pair of non-negative "
            f"integers, got {location!r}."
        ) from None
    for value in (row, col):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(
                f"location (row, col) must hold non-negative integers, got {location!r}."
            )
    return (int(row), int(col))


# --------------------------------------------------------------------------- blend


@_documented(constructor_keywords="``clip_range``")
class BlendTrigger(Trigger):
    """A full-size pattern blended into the image: ``x' = (1 - alpha) x + alpha p``.

    Parameters
    ----------
    pattern : array-like of shape (height, width) or (height, width, channels)
        A full-size image in the images' units (random noise, a cartoon, ...).
    alpha : float in [0, 1], default=0.1
        Weight of the pattern.
    %(clip_range)s

    See Also
    --------
    BlendTrigger.random_noise : a uniform random-noise pattern.

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.attacks import BlendTrigger
    >>> trigger = BlendTrigger(np.full((2, 2), 100.0), alpha=0.25)
    >>> trigger.apply(np.zeros((1, 2, 2, 1)))[0, ..., 0]
    array([[25., 25.],
           [25., 25.]])
    """

    def __init__(self, pattern, *, alpha=0.1, clip_range=DEFAULT_CLIP_RANGE):
        self.pattern = _check_image_like(pattern, "pattern")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
        self.alpha = float(alpha)
        self.clip_range = _check_clip_range(clip_range)

    @classmethod
    def random_noise(cls, shape, *, alpha=0.1, low=0, high=255, random_state=None, **kwargs):
        """A pattern of uniform random noise in ``[low, high)``.

        Parameters
        ----------
        shape : tuple of int
            ``(height, width)`` or ``(height, width, channels)`` of the images.
        alpha : float in [0, 1], default=0.1
            Weight of the pattern.
        low, high : float, default=0, 255
            Range of the noise.
        random_state : int, RandomState instance or None, default=None
            Seed of the noise.
        %(constructor_end)s
        >>> trigger = BlendTrigger.random_noise((8, 8), alpha=0.2, high=16, random_state=0)
        >>> trigger.pattern.shape
        (8, 8, 1)
        """
        shape = _check_image_shape(shape)
        if not low < high:
            raise ValueError(f"low must be below high, got low={low!r}, high={high!r}.")
        rng = check_random_state(random_state)
        return cls(rng.uniform(low, high, size=shape), alpha=alpha, **kwargs)

    def mask_and_pattern(self, image_shape):
        height, width, channels = _check_image_shape(image_shape)
        _check_same_spatial_shape(self.pattern, (height, width), "pattern")
        pattern = np.array(_broadcast_channels(self.pattern, channels, "pattern"))
        return np.full((height, width, channels), self.alpha), pattern

    def _describe(self):
        return f"pattern shape={self.pattern.shape}, alpha={self.alpha}"


# --------------------------------------------------------------------------- mask


@_documented()
class MaskTrigger(Trigger):
    """An image pasted through a mask: ``x' = (1 - mask) x + mask * image``.

    Models a physical trigger such as sunglasses on a face: ``mask`` is 1 where the
    object is opaque, 0 where the original image shows, in between for soft edges.

    Parameters
    ----------
    image : array-like of shape (height, width) or (height, width, channels)
        The trigger's pixels, full image size, in the images' units.
    mask : array-like of shape (height, width), (height, width, 1) or \
(height, width, channels)
        Opacity in [0, 1].
    %(clip_range)s

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.attacks import MaskTrigger
    >>> mask = np.zeros((4, 4))
    >>> mask[1, :] = 1.0                      # a bar across the eyes
    >>> trigger = MaskTrigger(np.full((4, 4), 255.0), mask)
    >>> trigger.apply(np.zeros((1, 4, 4, 1), dtype=np.uint8))[0, ..., 0]
    array([[  0,   0,   0,   0],
           [255, 255, 255, 255],
           [  0,   0,   0,   0],
           [  0,   0,   0,   0]], dtype=uint8)
    """

    def __init__(self, image, mask, *, clip_range=DEFAULT_CLIP_RANGE):
        self.image = _check_image_like(image, "image")
        self.mask = _check_image_like(mask, "mask")
        if self.mask.shape[:2] != self.image.shape[:2]:
            raise ValueError(
                f"mask has height x width {self.mask.shape[0]}x{self.mask.shape[1]} but image "
                f"is {self.image.shape[0]}x{self.image.shape[1]}; they must match."
            )
        if self.mask.shape[-1] not in (1, self.image.shape[-1]):
            raise ValueError(
                f"mask has {self.mask.shape[-1]} channels but image has {self.image.shape[-1]}; "
                "give the mask 1 channel or as many as the image."
            )
        if self.mask.min() < 0 or self.mask.max() > 1:
            raise ValueError(
                f"mask values must lie in [0, 1]; got values in [{self.mask.min():g}, "
                f"{self.mask.max():g}]. Divide a 0-255 mask by 255."
            )
        self.clip_range = _check_clip_range(clip_range)

    def mask_and_pattern(self, image_shape):
        height, width, channels = _check_image_shape(image_shape)
        _check_same_spatial_shape(self.image, (height, width), "image")
        mask = np.array(_broadcast_channels(self.mask, channels, "mask"))
        pattern = np.array(_broadcast_channels(self.image, channels, "image"))
        return mask, pattern

    def _describe(self):
        return f"image shape={self.image.shape}, mask coverage={float((self.mask > 0).mean()):.3f}"
