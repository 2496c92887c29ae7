"""skbackdoor._validation: the messages every estimator gives for bad images and labels."""

import warnings

import numpy as np
import pytest

from skbackdoor._validation import (
    check_classifier_outputs,
    check_images,
    check_labels,
    check_pixel_range,
    pixel_range,
)


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


def test_ragged_nested_lists_say_what_x_must_be():
    ragged = [np.zeros((8, 8, 1)).tolist(), np.zeros((7, 8, 1)).tolist()]
    with pytest.raises(ValueError, match=r"X must be an image array of shape \(n_samples, height, width, channels\).*ragged"):
        check_images(ragged)


def test_finite_values_beyond_float32_are_named_as_an_overflow():
    X = np.zeros((3, 4, 4, 1))
    X[2, 0, 0, 0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning on the way
        with pytest.raises(ValueError, match=r"too large for float32 \(up to 1e\+300.*in 1 image"):
            check_images(X)
    assert check_images(np.full((1, 2, 2, 1), 3e38)).dtype == np.float32


def test_nan_is_found_in_every_chunk_of_a_large_batch():
    X = np.zeros((2500, 2, 2, 1), dtype=np.float32)
    X[[3, 1500, 2499], 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity in 3 image"):
        check_images(X)
    # Integer images cannot hold NaN: kept as they are when asked to.
    X = np.zeros((5, 2, 2, 1), dtype=np.uint8)
    assert check_images(X, dtype=X.dtype).dtype == np.uint8


def test_a_batch_in_a_sliver_of_the_fitted_range_is_refused_or_warned():
    fitted = (0.0, 255.0)
    rescaled = np.random.default_rng(0).uniform(0, 1, (8, 4, 4, 1))
    with pytest.raises(ValueError, match=r"sliver \(0\.4%\) of the range \[0, 255\].*Scale X the same way.*multiply by"):
        check_pixel_range(rescaled, fitted)
    with pytest.warns(UserWarning, match="sliver"):
        check_pixel_range(rescaled[:1], fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pixel_range(np.zeros((20, 4, 4, 1)), fitted)  # blank images: nothing to tell
        check_pixel_range(np.linspace(0, 40, 16).reshape(1, 4, 4, 1).repeat(10, axis=0), fitted)


def test_labels_of_a_single_class_are_refused_and_missing_classes_warned():
    with pytest.raises(ValueError, match=r"a single class \(3\); at least 2 classes are needed"):
        check_labels([3, 3, 3], n_classes=10, min_classes=2)
    with pytest.warns(UserWarning, match=r"holds 3 of the model's 5 classes; no clean image of class\(es\) 1, 4"):
        np.testing.assert_array_equal(check_labels([0, 2, 3, 0], n_classes=5, min_classes=2, warn_missing=True), [0, 2, 3, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_labels([0, 1, 2], n_classes=3, min_classes=2, warn_missing=True)
        check_labels([1, 1], n_classes=3)  # targets of an attack: one class is fine by default
    with pytest.raises(ValueError, match="warn_missing=True needs n_classes"):
        check_labels([0, 1], warn_missing=True)


def test_models_without_one_class_output_are_described():
    from types import SimpleNamespace

    def output(name, shape):
        return SimpleNamespace(shape=shape, _keras_history=(SimpleNamespace(name=name), 0, 0))

    two = SimpleNamespace(outputs=[output("scores", (None, 10)), output("box", (None, 4))])
    with pytest.raises(ValueError, match=r"has 2 outputs \(of different sizes\): 'scores' of shape \(None, 10\), 'box' of shape \(None, 4\)"):
        check_classifier_outputs(two, estimator="STRIPDetector")
    with pytest.raises(ValueError, match=r"at least 2 classes; this model's output is 'value' of shape \(None, 1\), a single unit"):
        check_classifier_outputs(SimpleNamespace(outputs=[output("value", (None, 1))]), estimator="STRIPDetector")
    with pytest.raises(ValueError, match=r"shape \(batch, n_classes\)"):
        check_classifier_outputs(SimpleNamespace(outputs=[output("map", (None, 4, 4, 3))]), estimator="STRIPDetector")
    check_classifier_outputs(SimpleNamespace(outputs=[output("output", (None, 10))]), estimator="STRIPDetector")
