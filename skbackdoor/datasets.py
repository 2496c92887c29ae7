"""Loaders for the image data the defenses work on.

Nothing here downloads anything: every loader reads files that are already on disk and
says clearly what is missing and where to get it.

- :func:`load_csaw_h5` reads the CSAW-HackML-2020 ``.h5`` data files (YouTube Aligned
  Faces, 55x47 RGB); :func:`save_csaw_h5` writes images in the same format (e.g. for the
  ``skbackdoor`` command line).
- :func:`load_fashion_mnist` reads Fashion-MNIST from the gzip IDX files that the Debian
  package ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist``.
- :func:`load_images` reads PNG/JPEG files into one image array.
"""

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from ._validation import check_images, check_labels

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_csaw_h5",
    "load_fashion_mnist",
    "load_images",
    "save_csaw_h5",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

FASHION_MNIST_ENV = "SKBACKDOOR_FASHION_MNIST"

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Names of the ten Fashion-MNIST classes, indexed by label."""

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_FASHION_MNIST_FILE_NAMES = tuple(
    f"{name}.gz" for pair in _FASHION_MNIST_FILES.values() for name in pair
)

# IDX type codes (third byte of the magic number) and the big-endian dtype they denote.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_COLOR_CHANNELS = (1, 3)


# --------------------------------------------------------------------------- CSAW


def load_csaw_h5(path, *, data_key="data", label_key="label", layout="auto"):
    """Load a CSAW-HackML-2020 data file (clean or poisoned faces).

    The challenge's ``.h5`` files hold a dataset ``data`` of shape
    ``(n_samples, 3, 55, 47)`` (channels first, raw pixel values 0-255, often stored as
    floats) and a dataset ``label`` of shape ``(n_samples,)``. The images are returned
    channels last, the layout every estimator of this package takes.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file.
    data_key, label_key : str, default="data", "label"
        Names of the image and label datasets inside the file.
    layout : {"auto", "channels_first", "channels_last"}, default="auto"
        Layout of the stored images. ``"auto"`` takes the axis of size 1 or 3 (axis 1
        for ``(n, C, H, W)``, axis 3 for ``(n, H, W, C)``) as the channel axis and asks
        for an explicit layout when both or neither qualify.

    Returns
    -------
    X : ndarray of float32, shape (n_samples, height, width, channels)
        The images, raw pixel values as stored (0-255 for the challenge files).
    y : ndarray of int64, shape (n_samples,)
        The labels (identities ``0..1282`` for the challenge files).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable HDF5 file, lacks one of the datasets (the message
        lists the keys it has), or holds arrays of the wrong rank, dtype or length.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import h5py, numpy as np
    >>> from skbackdoor.datasets import load_csaw_h5
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "valid.h5"
    >>> with h5py.File(path, "w") as f:
    ...     f["data"] = np.zeros((4, 3, 55, 47))
    ...     f["label"] = np.array([0.0, 1.0, 2.0, 1282.0])
    >>> X, y = load_csaw_h5(path)
    >>> X.shape, X.dtype, y.dtype
    ((4, 55, 47, 3), dtype('float32'), dtype('int64'))
    """
    if layout not in ("auto", "channels_first", "channels_last"):
        raise ValueError(
            f"layout must be 'auto', 'channels_first' or 'channels_last', got {layout!r}."
        )
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CSAW data file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the path of an .h5 data file.")
    try:
        h5file = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(
            f"{path} could not be read as an HDF5 file (not an .h5 file, or corrupt): {exc}"
        ) from exc
    with h5file:
        found = sorted(h5file.keys())
        missing = [key for key in (data_key, label_key) if key not in h5file]
        if missing:
            raise ValueError(
                f"{path} has no dataset named {', '.join(map(repr, missing))}; the keys it "
                f"holds are {found}. Pass data_key= / label_key= to read other names."
            )
        data = _read_numeric_dataset(h5file[data_key], path, data_key, dtype=np.float32)
        labels = _read_numeric_dataset(h5file[label_key], path, label_key)

    if data.ndim != 4:
        raise ValueError(
            f"'{data_key}' in {path} has shape {data.shape}; expected a 4-D image array "
            "(n_samples, 3, 55, 47) or (n_samples, 55, 47, 3)."
        )
    if _channels_first(data.shape, layout, f"'{data_key}' in {path}"):
        data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
    X = check_images(data, name=f"'{data_key}' in {path}")
    y = check_labels(labels, n_samples=len(X), name=f"'{label_key}' in {path}")
    return X, y


def save_csaw_h5(path, X, y):
    """Write images and labels as a CSAW-HackML-2020 data file, which :func:`load_csaw_h5` reads.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file to write (replaced if it exists).
    X : array-like of shape (n_samples, height, width, channels)
        Images, channels last (stored channels first, as float64, like the challenge's files).
    y : array-like of shape (n_samples,)
        Integer labels.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from skbackdoor.datasets import load_csaw_h5, save_csaw_h5
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "faces.h5"
    >>> save_csaw_h5(path, np.zeros((2, 55, 47, 3), np.uint8), [0, 7])
    >>> X, y = load_csaw_h5(path)
    >>> X.shape, y.tolist()
    ((2, 55, 47, 3), [0, 7])
    """
    X = check_images(X)
    y = check_labels(y, n_samples=len(X))
    with h5py.File(path, "w") as h5file:
        h5file["data"] = np.transpose(X, (0, 3, 1, 2)).astype(np.float64)
        h5file["label"] = y.astype(np.float64)


def _read_numeric_dataset(node, path, key, dtype=None):
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"'{key}' in {path} is an HDF5 group, not a dataset.")
    if not (np.issubdtype(node.dtype, np.number) or np.issubdtype(node.dtype, np.bool_)):
        raise ValueError(f"'{key}' in {path} holds {node.dtype} values, not numbers.")
    try:
        # Converting while reading avoids holding a float64 copy of a large file.
        return node.astype(dtype)[()] if dtype is not None else node[()]
    except OSError as exc:
        raise ValueError(f"'{key}' in {path} could not be read (corrupt file?): {exc}") from exc


def _channels_first(shape, layout, name):
    if layout != "auto":
        return layout == "channels_first"
    first = shape[1] in _COLOR_CHANNELS
    last = shape[3] in _COLOR_CHANNELS
    if first != last:
        return first
    reason = "both axis 1 and axis 3" if first else "neither axis 1 nor axis 3"
    raise ValueError(
        f"{name} has shape {shape}: {reason} could be the channel axis (size 1 or 3). "
        "Pass layout='channels_first' or layout='channels_last'."
    )


# --------------------------------------------------------------------- Fashion-MNIST


def load_fashion_mnist(path=None, *, kind="train"):
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) from local IDX files.

    70,000 grayscale 28x28 images of clothing in ten classes (see
    :data:`FASHION_MNIST_CLASSES`): 60,000 for training and 10,000 for testing. The
    files are read from disk and never downloaded; on Debian and Ubuntu they come with
    the package ``dataset-fashion-mnist`` (``sudo apt-get install
    dataset-fashion-mnist``), which installs them under
    ``/usr/share/datasets/fashion-mnist``.

    Parameters
    ----------
    path : str or path-like, default=None
        Folder holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
        ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (uncompressed
        files without ``.gz`` are read too). When ``None``, the environment variable
        ``SKBACKDOOR_FASHION_MNIST`` names the folder if it is set, otherwise
        ``/usr/share/datasets/fashion-mnist``.
    kind : {"train", "test", "all"}, default="train"
        Which split to load; ``"all"`` is the training split followed by the test split.

    Returns
    -------
    X : ndarray of uint8, shape (n_samples, 28, 28, 1)
        The images, raw pixel values 0-255, channels last.
    y : ndarray of int64, shape (n_samples,)
        The class labels ``0..9``.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing; the message names the folder
        tried and the Debian package that provides it.
    ValueError
        If a file is corrupt: not gzip, truncated, a wrong IDX magic number, or
        image and label counts that differ.

    Examples
    --------
    >>> from skbackdoor.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(kind="test")  # doctest: +SKIP
    >>> X.shape, X.dtype, y[:5]  # doctest: +SKIP
    ((10000, 28, 28, 1), dtype('uint8'), array([9, 2, 1, 1, 6]))
    """
    if kind not in ("train", "test", "all"):
        raise ValueError(f"kind must be 'train', 'test' or 'all', got {kind!r}.")
    folder, source = _fashion_mnist_folder(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {folder} ({source}) {what}. Install the Debian "
            "package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist), "
            f"which puts the files in {FASHION_MNIST_DIR}, or point path= or the "
            f"{FASHION_MNIST_ENV} environment variable to a folder holding "
            f"{', '.join(_FASHION_MNIST_FILE_NAMES)}. Nothing is downloaded."
        )
    splits = ("train", "test") if kind == "all" else (kind,)
    parts = [_load_idx_split(folder, *_FASHION_MNIST_FILES[split]) for split in splits]
    if len(parts) == 1:
        return parts[0]
    return (
        np.concatenate([X for X, _ in parts]),
        np.concatenate([y for _, y in parts]),
    )


def _fashion_mnist_folder(path):
    if path is not None:
        return Path(path), "the path argument"
    from_env = os.environ.get(FASHION_MNIST_ENV)
    if from_env:
        return Path(from_env), f"from the {FASHION_MNIST_ENV} environment variable"
    return FASHION_MNIST_DIR, "the default location"


def _load_idx_split(folder, images_name, labels_name):
    images_path = _find_idx_file(folder, images_name)
    labels_path = _find_idx_file(folder, labels_name)
    images = _read_idx(images_path)
    labels = _read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}; expected "
            "unsigned bytes of shape (n_samples, height, width) (IDX magic number 2051)."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}; expected "
            "unsigned bytes of shape (n_samples,) (IDX magic number 2049)."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels."
        )
    return images[..., np.newaxis], labels.astype(np.int64)


def _find_idx_file(folder, name):
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{folder / (name + '.gz')} not found (nor an uncompressed {name}); the folder "
        "is incomplete. Reinstall the Debian package dataset-fashion-mnist "
        "(sudo apt-get install --reinstall dataset-fashion-mnist) or restore the file."
    )


def _read_idx(path):
    """Parse one IDX file (optionally gzip-compressed) into a native-endian array."""
    compressed = path.suffix == ".gz"
    try:
        if compressed:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        what = "gzip file" if compressed else "file"
        raise ValueError(f"{path} could not be read (corrupt or truncated {what}): {exc}") from exc

    # Magic number: two zero bytes, a type code, the number of dimensions.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex() or 'empty'} "
            "(expected 0x0000TTDD: type code TT, number of dimensions DD)."
        )
    dtype = _IDX_DTYPES[raw[2]]
    n_dims = raw[3]
    header_size = 4 + 4 * n_dims
    if len(raw) < header_size:
        raise ValueError(f"{path} is truncated inside its IDX header.")
    shape = struct.unpack(f">{n_dims}I", raw[4:header_size])
    expected_size = dtype.itemsize * math.prod(shape)
    found_size = len(raw) - header_size
    if found_size != expected_size:
        problem = "truncated" if found_size < expected_size else "longer than its header says"
        raise ValueError(
            f"{path} is {problem}: its header announces shape {shape} "
            f"({expected_size} bytes of data) but {found_size} bytes follow."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------------ image files

_MODE_CHANNELS = {"RGB": 3, "L": 1}


def load_images(paths, *, mode="RGB", expected_shape=None):
    """Read image files (PNG, JPEG, or anything Pillow opens) into one array.

    Images are never resized: every image must have the same size, which the model's
    input fixes. Pixel values are returned raw (0-255); scaling is the model's business
    (see :func:`skbackdoor.models.load_badnet`). 16-bit grayscale PNGs are scaled to
    8 bits (``round(value / 257)``, so 65535 becomes 255), as Pillow already does for
    16-bit colour PNGs; 32-bit integer and floating-point images are refused.

    Parameters
    ----------
    paths : str, path-like, or sequence of them
        The files, in the order of the returned images. A single path gives a batch of
        one image.
    mode : {"RGB", "L"}, default="RGB"
        ``"RGB"`` gives 3 channels (an alpha channel is dropped, grayscale images are
        repeated); ``"L"`` gives 1 grayscale channel.
    expected_shape : tuple of int, default=None
        ``(height, width)`` or ``(height, width, channels)`` every image must have, e.g.
        the model's input shape; ``None`` entries match anything. When ``None``, the
        images must all have the size of the first one.

    Returns
    -------
    X : ndarray of uint8, shape (n_images, height, width, channels)

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a file is not an image Pillow can read, is a 32-bit integer or floating-point
        image, or has a size different from ``expected_shape`` or from the first image;
        the message names the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skbackdoor.datasets import load_images
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(2):
    ...     Image.fromarray(np.full((55, 47, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    >>> X = load_images(sorted(folder.glob("*.png")), expected_shape=(55, 47, 3))
    >>> X.shape, X.dtype, int(X[1].max())
    ((2, 55, 47, 3), dtype('uint8'), 40)
    """
    if mode not in _MODE_CHANNELS:
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}.")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths is empty: at least one image file is required.")
    reference_size = _check_expected_shape(expected_shape, _MODE_CHANNELS[mode], mode)
    reference_name = "expected_shape"

    images = []
    for path in paths:
        image = _read_image(path, mode)
        size = image.shape[:2]
        if reference_size is None:
            reference_size, reference_name = size, f"the first image ({path})"
        elif any(want is not None and got != want for got, want in zip(size, reference_size)):
            raise ValueError(
                f"{path} is {size[0]}x{size[1]} (height x width) but {reference_name} is "
                f"{_format_size(reference_size)}; images are not resized, resize them first."
            )
        images.append(image)
    return np.stack(images)


def _check_expected_shape(expected_shape, n_channels, mode):
    if expected_shape is None:
        return None
    expected_shape = tuple(expected_shape)
    if len(expected_shape) not in (2, 3):
        raise ValueError(
            f"expected_shape must be (height, width) or (height, width, channels), got "
            f"{expected_shape}."
        )
    if len(expected_shape) == 3 and expected_shape[2] not in (None, n_channels):
        raise ValueError(
            f"expected_shape {expected_shape} asks for {expected_shape[2]} channel(s) but "
            f"mode={mode!r} gives {n_channels}; use mode='RGB' for 3 channels or mode='L' "
            "for 1."
        )
    return expected_shape[:2]


def _format_size(size):
    return "x".join("any" if s is None else str(s) for s in size) + " (height x width)"


def _read_image(path, mode):
    if not path.exists():
        raise FileNotFoundError(f"Image file not found: {path}")
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; pass the image files, e.g. sorted(Path(folder).glob('*.png'))."
        )
    try:
        with Image.open(path) as image:
            image = _to_8_bit(image, path)
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image file Pillow can read.") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise ValueError(f"{path} could not be decoded as an image: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    return pixels


# 65535 / 255: maps the 16-bit range onto the 8-bit one exactly (0 -> 0, 65535 -> 255).
_16_TO_8_BIT = 257


def _to_8_bit(image, path):
    """Bring a 16-bit grayscale image to 8 bits; refuse 32-bit integer and float images.

    Pillow reads 16-bit RGB(A) PNGs as 8-bit images, but 16-bit grayscale ones as mode
    ``"I;16"`` (or ``"I"``), which ``convert("L")`` would clip to 255 instead of scaling.
    """
    is_16_bit = image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")
    if is_16_bit:
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.round(values / _16_TO_8_BIT).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise ValueError(
            f"{path} is a {kind} image (Pillow mode {image.mode!r}); its values have no fixed "
            "range to map onto 0-255. Save it as an 8-bit (or 16-bit PNG) image."
        )
    return image
