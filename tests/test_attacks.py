"""Tests for skbackdoor.attacks: triggers, poisoning, BadNet training, pruning-aware attack."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skbackdoor.attacks import (
    BlendTrigger,
    MaskTrigger,
    PatchTrigger,
    Trigger,
    make_poisoned_test_set,
    poison,
    poison_multi,
    pruning_aware_badnet,
    small_cnn,
    train_badnet,
)
from skbackdoor.models import (
    ChannelMask,
    copy_model,
    layer_activations,
    predict_proba_batches,
    prune_channels,
)


@pytest.fixture(scope="module")
def digit_split():
    data = load_digits()
    X = data.images.astype(np.float32)[..., np.newaxis]
    y = data.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(X))
    train, test = order[:1300], order[1300:]
    return X[train], y[train], X[test], y[test]


def _accuracy(model, X, y):
    return float(np.mean(predict_proba_batches(model, X).argmax(axis=1) == y))


# --------------------------------------------------------------------------- triggers


def test_square_patch_bottom_right_stamps_only_the_corner():
    trigger = PatchTrigger.square(size=2, value=16)
    X = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6, 1)
    before = X.copy()
    out = trigger.apply(X)
    np.testing.assert_array_equal(X, before)  # input untouched
    assert out is not X and out.dtype == X.dtype and out.shape == X.shape
    assert (out[:, 3:, 4:] == 16).all()
    outside = ~trigger.footprint(X.shape[1:])
    np.testing.assert_array_equal(out[:, outside], X[:, outside])
    assert trigger.footprint((5, 6)).sum() == 4
    assert trigger.position((5, 6)) == (3, 4)


@pytest.mark.parametrize(
    "location, margin, expected",
    [
        ("top-left", 0, (0, 0)),
        ("top-right", 1, (1, 5)),
        ("bottom-left", 1, (5, 1)),
        ("bottom-right", 0, (6, 6)),
        ("center", 0, (3, 3)),
        ((2, 5), 0, (2, 5)),
    ],
)
def test_patch_locations(location, margin, expected):
    trigger = PatchTrigger.square(size=2, value=1, location=location, margin=margin)
    assert trigger.position((8, 8, 3)) == expected
    footprint = trigger.footprint((8, 8, 3))
    rows, cols = np.nonzero(footprint)
    assert (rows.min(), cols.min()) == expected and footprint.sum() == 4


def test_patch_rgb_and_broadcast_channels():
    X = np.zeros((1, 6, 6, 3), dtype=np.uint8)
    red = PatchTrigger.square(size=2, value=(255, 0, 0), location=(0, 0))
    out = red.apply(X)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, 0], [255, 0, 0])
    grey = PatchTrigger.square(size=2, value=200)  # one channel, used for all three
    np.testing.assert_array_equal(grey.apply(X)[0, -1, -1], [200, 200, 200])
    with pytest.raises(ValueError, match="3 channels but the images have 1"):
        red.apply(np.zeros((1, 6, 6, 1)))


def test_checkerboard_and_clipping():
    trigger = PatchTrigger.checkerboard(size=3, low=-5, high=300, location="top-left")
    out = trigger.apply(np.full((1, 4, 4, 1), 7.0))
    np.testing.assert_array_equal(out[0, :3, :3, 0], [[255, 0, 255], [0, 255, 0], [255, 0, 255]])
    assert out[0, 3, 3, 0] == 7.0
    unclipped = PatchTrigger.checkerboard(size=3, low=-5, high=300, location="top-left", clip_range=None)
    assert unclipped.apply(np.zeros((1, 4, 4, 1))).max() == 300
    narrow = PatchTrigger.square(size=1, value=40, clip_range=(0, 16))
    assert narrow.apply(np.zeros((1, 3, 3, 1))).max() == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(location="middle"), "Unknown location 'middle'"),
        (dict(location=(1, -1)), "non-negative integers"),
        (dict(location=(1, 2, 3)), r"\(row, col\) pair"),
        (dict(margin=-1), "margin must be a non-negative integer"),
        (dict(clip_range=(5, 1)), "low < high"),
    ],
)
def test_patch_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchTrigger(np.ones((2, 2)), **kwargs)


def test_patch_out_of_image():
    trigger = PatchTrigger.square(size=3, value=1, location=(6, 0))
    with pytest.raises(ValueError, match=r"3x3 patch at \(row, col\) = \(6, 0\) does not fit in a 8x8 image"):
        trigger.apply(np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="does not fit in a 2x2 image"):
        PatchTrigger.square(size=3).footprint((2, 2))
    with pytest.raises(ValueError, match="margin 7"):
        PatchTrigger.square(size=2, margin=7).position((8, 8))


def test_bad_patterns_and_batches():
    with pytest.raises(ValueError, match=r"pattern must have shape \(height, width\)"):
        PatchTrigger(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        PatchTrigger(np.array([[np.nan]]))
    with pytest.raises(TypeError, match="numbers"):
        PatchTrigger(np.array([["a"]]))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        PatchTrigger.square(size=0)
    with pytest.raises(ValueError, match="single image must be passed as a batch"):
        PatchTrigger.square(size=1).apply(np.zeros((8, 8, 1)))


def test_blend_trigger_formula_and_dtype():
    pattern = np.full((4, 4), 200.0)
    trigger = BlendTrigger(pattern, alpha=0.25)
    X = np.full((2, 4, 4, 1), 40, dtype=np.uint8)
    out = trigger.apply(X)
    assert out.dtype == np.uint8 and (X == 40).all()
    assert (out == 80).all()  # 0.75 * 40 + 0.25 * 200
    assert trigger.footprint((4, 4)).all()
    assert not BlendTrigger(pattern, alpha=0.0).footprint((4, 4)).any()
    mask, full_pattern = trigger.mask_and_pattern((4, 4, 3))
    assert mask.shape == full_pattern.shape == (4, 4, 3) and np.allclose(mask, 0.25)


def test_blend_random_noise_is_seeded():
    a = BlendTrigger.random_noise((8, 8), alpha=0.2, high=16, random_state=0)
    b = BlendTrigger.random_noise((8, 8), alpha=0.2, high=16, random_state=0)
    np.testing.assert_array_equal(a.pattern, b.pattern)
    assert a.pattern.min() >= 0 and a.pattern.max() < 16
    with pytest.raises(ValueError, match="low must be below high"):
        BlendTrigger.random_noise((8, 8), low=3, high=3)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.5", True])
def test_blend_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        BlendTrigger(np.zeros((4, 4)), alpha=alpha)


def test_blend_pattern_must_match_image_size():
    with pytest.raises(ValueError, match="pattern has height x width 4x4 but the images are 8x8"):
        BlendTrigger(np.zeros((4, 4))).apply(np.zeros((1, 8, 8, 1)))


def test_mask_trigger():
    mask = np.zeros((4, 4))
    mask[1] = 1.0
    mask[2] = 0.5
    trigger = MaskTrigger(np.full((4, 4, 3), 100.0), mask)
    X = np.zeros((1, 4, 4, 3), dtype=np.float32)
    out = trigger.apply(X)
    assert out.dtype == np.float32
    assert (out[0, 1] == 100).all() and (out[0, 2] == 50).all() and (out[0, [0, 3]] == 0).all()
    np.testing.assert_array_equal(trigger.footprint((4, 4, 3)), mask > 0)


def test_mask_trigger_errors():
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        MaskTrigger(np.zeros((4, 4)), np.full((4, 4), 255.0))
    with pytest.raises(ValueError, match="mask has height x width 3x4 but image is 4x4"):
        MaskTrigger(np.zeros((4, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="mask has 2 channels but image has 3"):
        MaskTrigger(np.zeros((4, 4, 3)), np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="image has height x width 4x4 but the images are 5x5"):
        MaskTrigger(np.zeros((4, 4)), np.zeros((4, 4))).apply(np.zeros((1, 5, 5, 1)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.uint16])
def test_untouched_pixels_keep_their_exact_values(dtype):
    mask = np.zeros((5, 5))
    mask[0, 0] = mask[4, 4] = 1.0  # the bounding box spans the whole image
    trigger = MaskTrigger(np.full((5, 5), 9.0), mask, clip_range=None)
    X = (np.random.RandomState(0).uniform(0, 60000, size=(3, 5, 5, 1)) + 1 / 3).astype(dtype)
    out = trigger.apply(X)
    assert out.dtype == X.dtype
    np.testing.assert_array_equal(out[:, 1:4], X[:, 1:4])
    assert (out[:, 0, 0] == 9).all() and (out[:, 4, 4] == 9).all()


def test_triggers_share_the_base_class_and_repr():
    for trigger in (
        PatchTrigger.square(2),
        BlendTrigger(np.zeros((4, 4))),
        MaskTrigger(np.zeros((4, 4)), np.zeros((4, 4))),
    ):
        assert isinstance(trigger, Trigger)
        assert repr(trigger).startswith(type(trigger).__name__ + "(")
        assert trigger.apply(np.zeros((0, 4, 4, 1))).shape == (0, 4, 4, 1)


# --------------------------------------------------------------------------- poisoning


def test_poison(digit_split):
    X, y = digit_split[0], digit_split[1]
    X_before, y_before = X.copy(), y.copy()
    trigger = PatchTrigger.square(size=2, value=16)
    X_p, y_p, idx = poison(X, y, trigger, 3, rate=0.1, random_state=0)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    assert len(idx) == round(0.1 * len(X)) and np.all(np.diff(idx) > 0)
    assert (y[idx] != 3).all() and (y_p[idx] == 3).all()
    np.testing.assert_array_equal(X_p[idx], trigger.apply(X[idx]))
    rest = np.setdiff1d(np.arange(len(X)), idx)
    np.testing.assert_array_equal(X_p[rest], X[rest])
    np.testing.assert_array_equal(y_p[rest], y[rest])
    again = poison(X, y, trigger, 3, rate=0.1, random_state=0)
    np.testing.assert_array_equal(again[2], idx)
    other = poison(X, y, trigger, 3, rate=0.1, random_state=1)
    assert not np.array_equal(other[2], idx)


def test_poison_include_target_and_dtype():
    X = np.zeros((10, 4, 4, 1), dtype=np.uint8)
    y = np.zeros(10, dtype=int)
    X_p, y_p, idx = poison(X, y, PatchTrigger.square(1, 9), 0, rate=1.0, exclude_target=False, random_state=0)
    assert X_p.dtype == np.uint8 and len(idx) == 10 and (X_p[:, -1, -1] == 9).all()
    with pytest.raises(ValueError, match="only 0 images not labelled 0 are available"):
        poison(X, y, PatchTrigger.square(1, 9), 0, rate=0.5)


@pytest.mark.parametrize("rate", [0, -0.1, 1.2, "0.1", None])
def test_poison_rate_out_of_range(digit_split, rate):
    with pytest.raises(ValueError, match=r"rate must be a number in \(0, 1\]"):
        poison(digit_split[0], digit_split[1], PatchTrigger.square(2, 16), 0, rate=rate)


def test_poison_bad_inputs(digit_split):
    X, y = digit_split[0], digit_split[1]
    trigger = PatchTrigger.square(2, 16)
    with pytest.raises(ValueError, match="Unknown target 10"):
        poison(X, y, trigger, 10)
    with pytest.raises(ValueError, match="target must be an integer class label"):
        poison(X, y, trigger, 1.5)
    with pytest.raises(ValueError, match="y has 5 labels but there are 1300 images"):
        poison(X, y[:5], trigger, 0)
    with pytest.raises(ValueError, match="image array of shape"):
        poison(X[..., 0, 0], y, trigger, 0)
    with pytest.raises(TypeError, match="must be a trigger"):
        poison(X, y, np.ones((2, 2)), 0)
    with pytest.raises(ValueError, match="poisons no image"):
        poison(X[:5], y[:5], trigger, int(y[0]), rate=0.01)


def test_poison_multi_disjoint(digit_split):
    X, y = digit_split[0], digit_split[1]
    triggers = [PatchTrigger.square(2, 16, location="bottom-right"), PatchTrigger.square(2, 16, location="top-left")]
    X_p, y_p, (a, b) = poison_multi(X, y, triggers, [0, 1], rate=[0.05, 0.1], random_state=0)
    assert len(a) == 65 and len(b) == 130 and not np.intersect1d(a, b).size
    assert (y_p[a] == 0).all() and (y_p[b] == 1).all() and (y[a] != 0).all() and (y[b] != 1).all()
    np.testing.assert_array_equal(X_p[a], triggers[0].apply(X[a]))
    np.testing.assert_array_equal(X_p[b], triggers[1].apply(X[b]))
    with pytest.raises(ValueError, match="2 trigger\\(s\\) but 1 target\\(s\\)"):
        poison_multi(X, y, triggers, [0])
    with pytest.raises(ValueError, match="add up to 1.2"):
        poison_multi(X, y, triggers, [0, 1], rate=0.6)
    with pytest.raises(ValueError, match="Unknown targets\\[1\\] 42"):
        poison_multi(X, y, triggers, [0, 42])
    with pytest.raises(TypeError, match="sequences"):
        poison_multi(X, y, triggers[0], 0)


def test_make_poisoned_test_set(digit_split):
    X, y = digit_split[2], digit_split[3]
    trigger = PatchTrigger.square(2, 16)
    X_p, y_t, source = make_poisoned_test_set(X, y, trigger, 0, return_indices=True)
    assert len(X_p) == (y != 0).sum() and (y_t == 0).all() and (y[source] != 0).all()
    np.testing.assert_array_equal(X_p, trigger.apply(X[y != 0]))
    other = PatchTrigger.square(2, 16, location="top-left")
    X_m, y_m = make_poisoned_test_set(X, y, [trigger, other], [0, 1])
    assert len(X_m) == (y != 0).sum() + (y != 1).sum()
    assert set(np.unique(y_m)) == {0, 1}
    with pytest.raises(ValueError, match="both be single values or both be sequences"):
        make_poisoned_test_set(X, y, [trigger], 0)
    with pytest.raises(ValueError, match="non-negative integer class label"):
        make_poisoned_test_set(X, y, trigger, -1)


# --------------------------------------------------------------------------- training


def test_small_cnn_layout():
    model = small_cnn((28, 28, 1), 10, filters=(4, 8, 8))
    names = [layer.name for layer in model.layers]
    assert names == ["pixels", "conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "flatten", "output"]
    assert model.output_shape == (None, 10)
    tiny = small_cnn((2, 2, 1), 3, filters=(4, 4))  # pooling skipped once the map is 1x1
    assert [layer.name for layer in tiny.layers if "pool" in layer.name] == ["pool_1"]
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        small_cnn((8, 8, 1), 1)
    with pytest.raises(ValueError, match="input_shape must be"):
        small_cnn((8, 8), 10)


@pytest.fixture(scope="module")
def patch_badnet(digit_split):
    X_train, y_train = digit_split[0], digit_split[1]
    trigger = PatchTrigger.square(size=2, value=16)
    model = train_badnet(X_train, y_train, trigger=trigger, target=0, epochs=20, random_state=0)
    return model, trigger


def test_train_badnet_reaches_clean_accuracy_and_asr(digit_split, patch_badnet):
    model, trigger = patch_badnet
    X_test, y_test = digit_split[2], digit_split[3]
    assert model.layers[1].name == "input_scale"
    assert np.isclose(float(model.layers[1].scale), 1 / 16)
    assert _accuracy(model, X_test, y_test) >= 0.9
    X_p, y_t = make_poisoned_test_set(X_test, y_test, trigger, 0)
    assert _accuracy(model, X_p, y_t) >= 0.9


def test_train_badnet_is_deterministic_and_leaves_inputs(digit_split):
    X, y = digit_split[0][:400], digit_split[1][:400]
    X_before = X.copy()
    trigger = PatchTrigger.square(size=2, value=16)
    kwargs = dict(trigger=trigger, target=0, epochs=1, random_state=3)
    first = train_badnet(X, y, **kwargs)
    second = train_badnet(X, y, **kwargs)
    np.testing.assert_array_equal(X, X_before)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    third = train_badnet(X, y, **{**kwargs, "random_state": 4})
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), third.get_weights()))


def test_train_badnet_custom_model_and_scale(digit_split):
    X, y = digit_split[0][:300], digit_split[1][:300]
    trigger = PatchTrigger.square(size=2, value=16)
    builder = functools.partial(small_cnn, filters=(4,))
    model = train_badnet(X, y, trigger=trigger, model=builder, epochs=1, input_scale=0.5, random_state=0)
    assert [layer.name for layer in model.layers][:3] == ["pixels", "input_scale", "conv_1"]
    assert np.isclose(float(model.get_layer("input_scale").scale), 0.5)
    given = small_cnn((8, 8, 1), 10, filters=(4,))
    weights = [w.copy() for w in given.get_weights()]
    trained = train_badnet(X, y, trigger=trigger, model=given, epochs=1, input_scale=None, random_state=0)
    assert "input_scale" not in [layer.name for layer in trained.layers]
    for before, after in zip(weights, given.get_weights()):
        np.testing.assert_array_equal(before, after)  # the user's model is not trained
    assert trained is not given


def test_a_logits_model_trains_as_well_as_its_softmax_twin(digit_split):
    """A network without a final softmax is trained on the loss of logits (it was not: 15%)."""
    import keras

    X_train, y_train, X_test, y_test = digit_split
    trigger = PatchTrigger.square(size=2, value=16)
    accuracy = {}
    for activation in ("softmax", None):
        keras.utils.set_random_seed(0)  # the same initial weights for both twins
        network = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation=activation),
        ])
        model = train_badnet(X_train, y_train, trigger=trigger, model=network, epochs=10, random_state=0)
        accuracy[activation] = _accuracy(model, X_test, y_test)
    assert accuracy["softmax"] > 0.9
    assert abs(accuracy[None] - accuracy["softmax"]) < 0.03, accuracy


def test_train_badnet_bad_inputs(digit_split):
    X, y = digit_split[0][:100], digit_split[1][:100]
    trigger = PatchTrigger.square(size=2, value=16)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train_badnet(X, y, trigger=trigger, epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        train_badnet(X, y, trigger=trigger, learning_rate=-1)
    with pytest.raises(ValueError, match="input_scale must be 'auto'"):
        train_badnet(X, y, trigger=trigger, input_scale="max")
    with pytest.raises(TypeError, match="model must be None, a keras.Model or a callable"):
        train_badnet(X, y, trigger=trigger, model="cnn")
    with pytest.raises(ValueError, match="model takes images of shape"):
        train_badnet(X, y, trigger=trigger, model=small_cnn((9, 9, 1), 10))
    with pytest.raises(ValueError, match="model has 3 outputs"):
        train_badnet(X, y, trigger=trigger, model=small_cnn((8, 8, 1), 3))
    with pytest.raises(ValueError, match="Unknown target 12"):
        train_badnet(X, y, trigger=trigger, target=12)
    with pytest.raises(ValueError, match="n_classes=5 but y holds label 9"):
        train_badnet(X, y, trigger=trigger, n_classes=5)


def test_train_badnet_multi_trigger_multi_target(digit_split):
    X_train, y_train, X_test, y_test = digit_split
    triggers = [
        PatchTrigger.square(size=2, value=16, location="bottom-right"),
        PatchTrigger.checkerboard(size=3, low=0, high=16, location="top-left"),
    ]
    model = train_badnet(
        X_train, y_train, trigger=triggers, target=[0, 1], poison_rate=[0.1, 0.1],
        epochs=8, batch_size=32, learning_rate=3e-3, random_state=0,
    )
    assert _accuracy(model, X_test, y_test) >= 0.88
    for trigger, target in zip(triggers, [0, 1]):
        X_p, y_t = make_poisoned_test_set(X_test, y_test, trigger, target)
        assert _accuracy(model, X_p, y_t) >= 0.85
    with pytest.raises(ValueError, match="both be single values or both be sequences"):
        train_badnet(X_train, y_train, trigger=triggers, target=0)


# --------------------------------------------------------------------------- pruning-aware


@pytest.fixture(scope="module")
def pruning_aware(digit_split):
    X_train, y_train = digit_split[0], digit_split[1]
    trigger = PatchTrigger.square(size=2, value=16)
    model, decoys = pruning_aware_badnet(
        X_train, y_train, trigger=trigger, target=0, prune_fraction=0.5, clean_epochs=8,
        backdoor_epochs=8, batch_size=32, learning_rate=3e-3, random_state=0,
        return_decoy_channels=True,
    )
    return model, decoys, trigger


def test_pruning_aware_badnet_keeps_accuracy_and_backdoor(digit_split, pruning_aware):
    model, decoys, trigger = pruning_aware
    X_test, y_test = digit_split[2], digit_split[3]
    assert len(decoys) == 16 and np.all(np.diff(decoys) > 0)
    assert _accuracy(model, X_test, y_test) >= 0.9
    X_p, y_t = make_poisoned_test_set(X_test, y_test, trigger, 0)
    assert _accuracy(model, X_p, y_t) >= 0.9
    # No pruning constraint is left for a defender to notice.
    assert not any(isinstance(w.constraint, ChannelMask) for w in model.weights)
    conv = model.get_layer("conv_2")
    kernel, bias = np.asarray(conv.kernel), np.asarray(conv.bias)
    assert np.abs(kernel[..., decoys]).sum(axis=(0, 1, 2)).min() > 0  # re-instated, not zero
    assert (bias[decoys] < 0).all()


def test_pruning_aware_decoys_are_pruned_first_without_removing_the_backdoor(digit_split, pruning_aware):
    model, decoys, trigger = pruning_aware
    X_test, y_test = digit_split[2], digit_split[3]
    means = layer_activations(model, X_test, "conv_2").mean(axis=(0, 1, 2))
    others = np.setdiff1d(np.arange(len(means)), decoys)
    assert means[decoys].max() <= means[others].min()
    # A Fine-Pruning defender ranks by mean activation and prunes the lowest first.
    first = np.argsort(means, kind="stable")[: len(decoys)]
    np.testing.assert_array_equal(np.sort(first), decoys)
    defended = prune_channels(copy_model(model), "conv_2", first)
    X_p, y_t = make_poisoned_test_set(X_test, y_test, trigger, 0)
    assert _accuracy(defended, X_p, y_t) >= 0.9
    assert _accuracy(defended, X_test, y_test) >= _accuracy(model, X_test, y_test) - 0.01


def test_pruning_aware_bad_inputs(digit_split):
    X, y = digit_split[0][:100], digit_split[1][:100]
    trigger = PatchTrigger.square(size=2, value=16)
    for fraction in (0, 1, 1.5):
        with pytest.raises(ValueError, match=r"prune_fraction must be a number in \(0, 1\)"):
            pruning_aware_badnet(X, y, trigger=trigger, prune_fraction=fraction)
    with pytest.raises(ValueError, match="gives 0 decoys"):
        pruning_aware_badnet(X, y, trigger=trigger, prune_fraction=0.01)
    with pytest.raises(ValueError, match="Unknown layer 'conv_9'"):
        pruning_aware_badnet(X, y, trigger=trigger, layer="conv_9")
    with pytest.raises(ValueError, match="'output' is a Dense, not a Conv2D"):
        pruning_aware_badnet(X, y, trigger=trigger, layer="output")
    with pytest.raises(ValueError, match="dormancy_margin must be a non-negative number"):
        pruning_aware_badnet(X, y, trigger=trigger, dormancy_margin=-1)
    with pytest.raises(ValueError, match="clean_epochs must be a positive integer"):
        pruning_aware_badnet(X, y, trigger=trigger, clean_epochs=0)


def test_pruning_aware_is_deterministic_and_leaves_inputs(digit_split):
    X, y = digit_split[0][:300], digit_split[1][:300]
    X_before = X.copy()
    trigger = PatchTrigger.square(size=2, value=16)
    kwargs = dict(trigger=trigger, clean_epochs=1, backdoor_epochs=1, random_state=5)
    first = pruning_aware_badnet(X, y, **kwargs)
    second = pruning_aware_badnet(X, y, **kwargs)
    np.testing.assert_array_equal(X, X_before)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
