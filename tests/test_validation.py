"""skbackdoor._validation: the messages every estimator gives for bad images and labels."""

import numpy as np
import pytest

from skbackdoor._validation import check_images, check_labels, check_pixel_range, pixel_range


def test_check_images_returns_float32_batches():
    X = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    checked = check_images(X, input_shape=(8, 8, 1))
    assert checked.dtype == np.float32 and checked.shape == (3, 8, 8, 1)
    assert X.dtype == np.uint8  # the input is not touched


def test_a_single_image_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"single image.*X\[np.newaxis\]"):
        check_images(np.zeros((8, 8, 1)), input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="batch of one"):
        check_images(np.zeros((8, 8, 1)))


@pytest.mark.parametrize(
    "shape, message",
    [((10, 64), "Flattened images"), ((2, 8, 8, 3), "the channels differ"), ((2, 9, 8, 1), "the height differ")],
)
def test_wrong_rank_or_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        check_images(np.zeros(shape), input_shape=(8, 8, 1))


def test_nan_inf_empty_and_non_numeric():
    X = np.zeros((4, 8, 8, 1))
    X[1, 0, 0, 0] = np.nan
    X[3, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity in 2 image"):
        check_images(X)
    with pytest.raises(ValueError, match="empty"):
        check_images(np.zeros((0, 8, 8, 1)))
    assert check_images(np.zeros((0, 8, 8, 1)), allow_empty=True).shape == (0, 8, 8, 1)
    with pytest.raises(TypeError, match="must hold numbers"):
        check_images(np.full((1, 2, 2, 1), "a"))


def test_check_labels():
    np.testing.assert_array_equal(check_labels([0, 2.0, 1], n_classes=3), [0, 2, 1])
    np.testing.assert_array_equal(check_labels(np.array([[1], [0]])), [1, 0])
    with pytest.raises(ValueError, match="label 5 but the model has 3 classes"):
        check_labels([0, 5], n_classes=3)
    with pytest.raises(ValueError, match="negative"):
        check_labels([-1, 0])
    with pytest.raises(ValueError, match="whole-number"):
        check_labels([0.5, 1])
    with pytest.raises(ValueError, match="np.argmax"):
        check_labels(np.eye(3))
    with pytest.raises(ValueError, match="2 labels but there are 3 images"):
        check_labels([0, 1], n_samples=3)
    with pytest.raises(ValueError, match="integer class labels"):
        check_labels(["a", "b"])


def test_pixel_range_mismatch_is_caught():
    fitted = pixel_range(np.array([0.0, 1.0]))
    check_pixel_range(np.full((1, 2, 2, 1), 1.05), fitted)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 255\].*fitted on values in \[0, 1\]"):
        check_pixel_range(np.array([0.0, 255.0]).reshape(1, 2, 1, 1), fitted)


def test_sparse_and_complex_inputs_are_refused():
    from scipy import sparse

    with pytest.raises(TypeError, match="Sparse input is not supported"):
        check_images(sparse.csr_matrix(np.eye(3)))
    with pytest.raises(ValueError, match="Complex data not supported"):
        check_images(np.zeros((1, 2, 2, 1), dtype=complex))


def test_object_arrays_of_numbers_are_accepted_and_of_strings_refused():
    assert check_images(np.zeros((1, 2, 2, 1), dtype=object)).dtype == np.float32
    with pytest.raises(TypeError, match="must hold numbers, got an array of dtype object"):
        check_images(np.full((1, 2, 2, 1), "x", dtype=object))
