"""Tests for skbackdoor.datasets: CSAW .h5 files, Fashion-MNIST IDX files, image files."""

import gzip
import struct

import h5py
import numpy as np
import pytest
from PIL import Image

from skbackdoor import datasets
from skbackdoor.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_csaw_h5,
    load_fashion_mnist,
    load_images,
)

# ----------------------------------------------------------------------------- CSAW


def _write_h5(path, **datasets_):
    with h5py.File(path, "w") as f:
        for key, value in datasets_.items():
            f[key] = value
    return path


@pytest.fixture
def csaw_nchw(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(5, 3, 55, 47)).astype(np.float64)
    labels = np.array([0.0, 1.0, 2.0, 1282.0, 7.0])
    return _write_h5(tmp_path / "valid.h5", data=data, label=labels), data, labels


def test_load_csaw_h5_transposes_channels_first(csaw_nchw):
    path, data, labels = csaw_nchw
    X, y = load_csaw_h5(path)
    assert X.shape == (5, 55, 47, 3) and X.dtype == np.float32
    assert X.flags.c_contiguous
    np.testing.assert_array_equal(X, data.transpose(0, 2, 3, 1))
    assert X[1, 10, 20, 2] == data[1, 2, 10, 20]
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 1, 2, 1282, 7])


def test_load_csaw_h5_accepts_channels_last(tmp_path):
    data = np.arange(2 * 55 * 47 * 3, dtype=np.float32).reshape(2, 55, 47, 3) % 256
    path = _write_h5(tmp_path / "nhwc.h5", data=data, label=np.array([3, 4]))
    X, y = load_csaw_h5(str(path))
    np.testing.assert_array_equal(X, data)
    np.testing.assert_array_equal(y, [3, 4])


def test_load_csaw_h5_other_keys_and_explicit_layout(tmp_path):
    # (n, 3, 4, 3) could be either layout: auto refuses, an explicit layout decides.
    data = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    path = _write_h5(tmp_path / "odd.h5", images=data, targets=np.array([[1], [0]]))
    with pytest.raises(ValueError, match="both axis 1 and axis 3.*layout="):
        load_csaw_h5(path, data_key="images", label_key="targets")
    X, y = load_csaw_h5(path, data_key="images", label_key="targets", layout="channels_first")
    np.testing.assert_array_equal(X, data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y, [1, 0])
    X, _ = load_csaw_h5(path, data_key="images", label_key="targets", layout="channels_last")
    np.testing.assert_array_equal(X, data)


def test_load_csaw_h5_missing_file(tmp_path):
    path = tmp_path / "nope" / "valid.h5"
    with pytest.raises(FileNotFoundError, match="valid.h5"):
        load_csaw_h5(path)


def test_load_csaw_h5_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match=r"notes\.h5 could not be read as an HDF5 file"):
        load_csaw_h5(path)
    with pytest.raises(ValueError, match="is a directory"):
        load_csaw_h5(tmp_path)


def test_load_csaw_h5_truncated_file(csaw_nchw, tmp_path):
    path, _, _ = csaw_nchw
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.h5"):
        load_csaw_h5(truncated)


def test_load_csaw_h5_missing_key_lists_keys(tmp_path):
    path = _write_h5(tmp_path / "x.h5", x=np.zeros((1, 3, 5, 5)), y=np.zeros(1))
    with pytest.raises(ValueError, match=r"no dataset named 'data', 'label'.*\['x', 'y'\]"):
        load_csaw_h5(path)


@pytest.mark.parametrize(
    "data, labels, message",
    [
        (np.zeros((2, 3, 55)), np.zeros(2), "expected a 4-D image array"),
        (np.zeros((2, 5, 55, 47)), np.zeros(2), "neither axis 1 nor axis 3"),
        (np.zeros((0, 3, 55, 47)), np.zeros(0), "is empty"),
        (np.zeros((2, 3, 55, 47)), np.zeros(3), "has 3 labels but there are 2 images"),
        (np.zeros((2, 3, 55, 47)), np.array([0.5, 1.0]), "whole-number"),
        (np.full((1, 3, 55, 47), np.nan), np.zeros(1), "NaN"),
        (np.array([b"a", b"b"]), np.zeros(2), "not numbers"),
    ],
)
def test_load_csaw_h5_bad_contents(tmp_path, data, labels, message):
    path = _write_h5(tmp_path / "bad.h5", data=data, label=labels)
    with pytest.raises(ValueError, match=message):
        load_csaw_h5(path)


def test_load_csaw_h5_group_instead_of_dataset(tmp_path):
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
        f["label"] = np.zeros(1)
    with pytest.raises(ValueError, match="is an HDF5 group"):
        load_csaw_h5(path)


def test_load_csaw_h5_bad_layout(csaw_nchw):
    with pytest.raises(ValueError, match="layout must be"):
        load_csaw_h5(csaw_nchw[0], layout="NCHW")


# -------------------------------------------------------------------- Fashion-MNIST

_IDX_TYPE_CODES = {np.uint8: 0x08, np.int16: 0x0B, np.float32: 0x0D}


def _idx_bytes(array):
    array = np.asarray(array)
    code = _IDX_TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path, array, compress=True):
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)


def _write_fashion(folder, n_train=6, n_test=4, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = images, labels
    return arrays


@pytest.fixture
def no_fashion_env(monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_load_fashion_mnist_real_files(no_fashion_env):
    X_test, y_test = load_fashion_mnist(kind="test")
    assert X_test.shape == (10_000, 28, 28, 1) and X_test.dtype == np.uint8
    assert y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    np.testing.assert_array_equal(y_test[:5], [9, 2, 1, 1, 6])
    assert X_test.max() == 255 and X_test.min() == 0
    X_all, y_all = load_fashion_mnist(kind="all")
    assert X_all.shape == (70_000, 28, 28, 1)
    np.testing.assert_array_equal(X_all[60_000:], X_test)
    np.testing.assert_array_equal(y_all[60_000:], y_test)
    np.testing.assert_array_equal(np.bincount(y_all[:60_000]), [6000] * 10)
    assert len(FASHION_MNIST_CLASSES) == 10


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_parses_idx_files(tmp_path, compress):
    arrays = _write_fashion(tmp_path, compress=compress)
    X, y = load_fashion_mnist(tmp_path)
    assert X.shape == (6, 28, 28, 1) and X.dtype == np.uint8 and y.dtype == np.int64
    assert X.flags.writeable
    np.testing.assert_array_equal(X[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(y, arrays["train"][1])
    X, y = load_fashion_mnist(str(tmp_path), kind="test")
    np.testing.assert_array_equal(X[..., 0], arrays["t10k"][0])
    np.testing.assert_array_equal(y, arrays["t10k"][1])
    X, y = load_fashion_mnist(tmp_path, kind="all")
    assert X.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(y, np.concatenate([arrays["train"][1], arrays["t10k"][1]]))


def test_load_fashion_mnist_environment_variable(tmp_path, monkeypatch):
    from_env = _write_fashion(tmp_path / "env", seed=1)
    from_arg = _write_fashion(tmp_path / "arg", seed=2)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "env"))
    _, y = load_fashion_mnist(kind="test")
    np.testing.assert_array_equal(y, from_env["t10k"][1])
    _, y = load_fashion_mnist(tmp_path / "arg", kind="test")  # the argument wins
    np.testing.assert_array_equal(y, from_arg["t10k"][1])


def test_read_idx_other_types_and_big_endian(tmp_path):
    values = np.array([[1, -2, 300], [4, 5, -32768]], dtype=np.int16)
    _write_idx(tmp_path / "a.gz", values)
    parsed = datasets._read_idx(tmp_path / "a.gz")
    assert parsed.dtype == np.int16 and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, values)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    _write_idx(tmp_path / "b", floats, compress=False)
    np.testing.assert_array_equal(datasets._read_idx(tmp_path / "b"), floats)


def test_load_fashion_mnist_missing_folder(tmp_path, no_fashion_env, monkeypatch):
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as excinfo:
        load_fashion_mnist(missing)
    message = str(excinfo.value)
    assert str(missing) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert datasets.FASHION_MNIST_ENV in message

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", missing)
    with pytest.raises(FileNotFoundError, match="the default location.*dataset-fashion-mnist"):
        load_fashion_mnist()
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere.*environment variable"):
        load_fashion_mnist()


def test_load_fashion_mnist_incomplete_folder(tmp_path):
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    load_fashion_mnist(tmp_path, kind="train")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path, kind="test")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_fashion_mnist(tmp_path / "train-images-idx3-ubyte.gz")


def _corrupt_bad_magic(path):
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[0:4] = b"\x12\x34\x08\x03"
    path.write_bytes(gzip.compress(bytes(data)))


def _corrupt_truncate(path):
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-10]))


def _corrupt_trailing(path):
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00"))


def _corrupt_not_gzip(path):
    path.write_bytes(b"definitely not gzip data")


def _corrupt_cut_gzip(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt_labels_as_images(path):
    _write_idx(path, np.zeros(6, dtype=np.uint8))


def _corrupt_float_images(path):
    _write_idx(path, np.zeros((6, 28, 28), dtype=np.float32))


def _corrupt_count(path):
    _write_idx(path, np.zeros((5, 28, 28), dtype=np.uint8))


def _corrupt_empty(path):
    path.write_bytes(gzip.compress(b""))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_corrupt_bad_magic, "not an IDX file: bad magic number 0x12340803"),
        (_corrupt_empty, "not an IDX file"),
        (_corrupt_truncate, "is truncated"),
        (_corrupt_trailing, "longer than its header says"),
        (_corrupt_not_gzip, "corrupt or truncated gzip"),
        (_corrupt_cut_gzip, "corrupt or truncated gzip"),
        (_corrupt_labels_as_images, r"shape \(6,\); expected unsigned bytes of shape \(n_sa"),
        (_corrupt_float_images, "holds float32 data"),
        (_corrupt_count, "holds 5 images but"),
    ],
)
def test_load_fashion_mnist_corrupt_images_file(tmp_path, corrupt, message):
    _write_fashion(tmp_path)
    corrupt(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match=message) as excinfo:
        load_fashion_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(excinfo.value)


def test_load_fashion_mnist_bad_labels_file(tmp_path):
    _write_fashion(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((6, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz holds uint8 data of shape"):
        load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be"):
        load_fashion_mnist(tmp_path, kind="validation")


# ----------------------------------------------------------------------- image files


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def rgb_images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(3, 55, 47, 3), dtype=np.uint8)
    paths = [_save(tmp_path / f"face_{i}.png", a) for i, a in enumerate(arrays)]
    return paths, arrays


def test_load_images_png_exact_and_ordered(rgb_images):
    paths, arrays = rgb_images
    X = load_images(paths)
    assert X.shape == (3, 55, 47, 3) and X.dtype == np.uint8
    np.testing.assert_array_equal(X, arrays)
    np.testing.assert_array_equal(load_images(paths[::-1]), arrays[::-1])
    np.testing.assert_array_equal(load_images(paths, expected_shape=(55, 47, 3)), arrays)
    np.testing.assert_array_equal(load_images(paths, expected_shape=[None, 47]), arrays)


def test_load_images_single_path_and_strings(rgb_images):
    paths, arrays = rgb_images
    X = load_images(str(paths[1]))
    assert X.shape == (1, 55, 47, 3)
    np.testing.assert_array_equal(X[0], arrays[1])
    np.testing.assert_array_equal(load_images([str(p) for p in paths]), arrays)


def test_load_images_grayscale_and_alpha(tmp_path):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    path = _save(tmp_path / "gray.png", gray)
    X = load_images([path], mode="L", expected_shape=(28, 28, 1))
    assert X.shape == (1, 28, 28, 1)
    np.testing.assert_array_equal(X[0, ..., 0], gray)
    rgb = load_images([path])  # grayscale repeated over 3 channels
    np.testing.assert_array_equal(rgb[0], np.repeat(gray[..., None], 3, axis=2))

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    X = load_images([_save(tmp_path / "rgba.png", rgba)])
    assert X.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(X[0, ..., 0], 200)


def test_load_images_jpeg(tmp_path):
    array = np.full((55, 47, 3), 120, dtype=np.uint8)
    path = tmp_path / "face.jpg"
    Image.fromarray(array).save(path, quality=95)
    X = load_images([path], expected_shape=(55, 47))
    assert X.shape == (1, 55, 47, 3)
    assert np.abs(X.astype(int) - 120).max() <= 2


def test_load_images_size_mismatch_names_file(rgb_images, tmp_path):
    paths, _ = rgb_images
    odd = _save(tmp_path / "odd.png", np.zeros((28, 28, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"odd\.png is 28x28 .* first image .*face_0\.png.* 55x47"):
        load_images([*paths, odd])
    with pytest.raises(ValueError, match=r"face_0\.png is 55x47 .* expected_shape is 28x28"):
        load_images(paths, expected_shape=(28, 28))
    with pytest.raises(ValueError, match=r"odd\.png is 28x28 .* expected_shape is anyx47"):
        load_images([paths[0], odd], expected_shape=(None, 47))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expected_shape": (55, 47, 1)}, "asks for 1 channel.*mode='L'"),
        ({"expected_shape": (55,)}, "expected_shape must be"),
        ({"mode": "CMYK"}, "mode must be"),
    ],
)
def test_load_images_bad_parameters(rgb_images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_images(rgb_images[0], **kwargs)


def test_load_images_bad_files(rgb_images, tmp_path):
    paths, _ = rgb_images
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_images([paths[0], tmp_path / "missing.png"])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png is not an image file"):
        load_images([text])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(paths[0].read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.png could not be decoded"):
        load_images([truncated])
    with pytest.raises(ValueError, match="is a directory"):
        load_images([tmp_path])
    with pytest.raises(ValueError, match="paths is empty"):
        load_images([])


def _write_png_16_bit_rgb(path, pixels):
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    import zlib

    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_load_images_scales_16_bit_png_to_8_bit(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(6, 5), dtype=np.uint16)
    values[0, :2] = (0, 65535)
    gray = tmp_path / "gray16.png"
    Image.fromarray(values).save(gray)
    expected = np.round(values / 257).astype(np.uint8)
    X = load_images(gray, mode="L")
    assert X.dtype == np.uint8 and X.shape == (1, 6, 5, 1)
    np.testing.assert_array_equal(X[0, ..., 0], expected)  # not clipped to 255
    assert (X == 255).mean() < 0.05
    np.testing.assert_array_equal(load_images(gray, mode="RGB")[0], np.repeat(expected[..., None], 3, axis=-1))

    colour = rng.integers(0, 65536, size=(6, 5, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    _write_png_16_bit_rgb(path, colour)
    X = load_images(path)
    assert np.abs(X[0].astype(int) - colour / 257).max() <= 1  # Pillow keeps the high byte


def test_load_images_refuses_32_bit_and_float_images(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    with pytest.raises(ValueError, match=r"float\.tiff is a floating-point image"):
        load_images(path)


def test_save_csaw_h5_round_trip(tmp_path):
    from skbackdoor.datasets import save_csaw_h5

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(3, 55, 47, 3)).astype(np.uint8)
    save_csaw_h5(tmp_path / "faces.h5", X, [5, 0, 1282])
    with h5py.File(tmp_path / "faces.h5") as handle:
        assert handle["data"].shape == (3, 3, 55, 47)  # the challenge's channels-first layout
    X_read, y_read = load_csaw_h5(tmp_path / "faces.h5")
    np.testing.assert_array_equal(X_read, X)
    assert y_read.tolist() == [5, 0, 1282]
    with pytest.raises(ValueError, match="3 images"):
        save_csaw_h5(tmp_path / "bad.h5", X, [0, 1])
