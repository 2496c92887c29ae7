"""FinePruner: Fine-Pruning repair, the cached pruning sweep, sklearn integration."""

import joblib
import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from skbackdoor import FinePruner
from skbackdoor._fine_pruning import _naive_pruning_curve, _PruningSweep
from skbackdoor.metrics import attack_success_rate, backdoor_scoring, best_cca_under_asr
from skbackdoor.models import (
    ChannelMask,
    layer_activations,
    load_badnet,
    predict_proba_batches,
    pruned_channel_mask,
)


def _weights(model):
    return [np.array(w, copy=True) for w in model.get_weights()]


@pytest.fixture(scope="module")
def repaired(patch_badnet):
    """The patch BadNet fine-pruned once for the module, with the user's weights before."""
    before = _weights(patch_badnet.model)
    # The paper's recipe at a higher learning rate; the default recipe (FST) is pinned in
    # tests/test_repair_recipes.py.
    pruner = FinePruner(model=patch_badnet.model, fine_tuning="plain", learning_rate=1e-2, epochs=10,
                        random_state=0)
    pruner.fit(patch_badnet.X_val, patch_badnet.y_val)
    return pruner, before


def test_pruned_channels_stay_exactly_zero_after_fine_tuning(patch_badnet, repaired):
    pruner, _ = repaired
    pruned = pruner.pruned_channels_
    assert 0 < len(pruned) < pruner.n_channels_
    conv = pruner.model_.get_layer(pruner.layer_)
    kernel, bias = np.asarray(conv.kernel), np.asarray(conv.bias)
    assert np.all(kernel[..., pruned] == 0) and np.all(bias[pruned] == 0)
    kept = np.setdiff1d(np.arange(pruner.n_channels_), pruned)
    original = patch_badnet.model.get_layer(pruner.layer_)
    assert not np.array_equal(kernel[..., kept], np.asarray(original.kernel)[..., kept])  # it was trained
    activations = layer_activations(pruner.model_, patch_badnet.X_poisoned, pruner.layer_)
    assert np.all(activations[..., pruned] == 0)
    expected = np.ones(pruner.n_channels_, dtype=bool)
    expected[pruned] = False
    np.testing.assert_array_equal(pruned_channel_mask(pruner.model_, pruner.layer_), expected)
    assert len(pruner.history_["loss"]) == 10 and "accuracy" in pruner.history_


def test_the_users_model_is_bit_identical_after_fit(patch_badnet, repaired):
    _, before = repaired
    for old, new in zip(before, patch_badnet.model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not any(isinstance(getattr(w, "constraint", None), ChannelMask) for w in patch_badnet.model.weights)


def test_fine_pruning_removes_the_backdoor_and_keeps_clean_accuracy(patch_badnet, repaired):
    pruner, _ = repaired
    badnet_labels = predict_proba_batches(patch_badnet.model, patch_badnet.X_poisoned).argmax(axis=1)
    badnet_asr = attack_success_rate(patch_badnet.y_target, badnet_labels)
    badnet_cca = np.mean(
        predict_proba_batches(patch_badnet.model, patch_badnet.X_test).argmax(axis=1) == patch_badnet.y_test
    )
    asr = attack_success_rate(patch_badnet.y_target, pruner.predict(patch_badnet.X_poisoned))
    assert badnet_asr > 0.8
    assert asr < 0.3 and asr < badnet_asr / 3
    assert pruner.score(patch_badnet.X_test, patch_badnet.y_test) >= badnet_cca - pruner.max_accuracy_drop


def test_stop_rule_follows_the_curve(repaired):
    pruner, _ = repaired
    curve = pruner.pruning_curve_
    np.testing.assert_array_equal(curve["n_pruned"], np.arange(pruner.n_channels_ + 1))
    np.testing.assert_allclose(curve["fraction"], curve["n_pruned"] / pruner.n_channels_)
    n_pruned = len(pruner.pruned_channels_)
    threshold = curve["accuracy"][0] - pruner.max_accuracy_drop
    assert np.all(curve["accuracy"][: n_pruned + 1] >= threshold)
    assert curve["accuracy"][n_pruned + 1] < threshold
    np.testing.assert_array_equal(pruner.pruned_channels_, pruner.pruning_order_[:n_pruned])


def test_channels_are_pruned_in_increasing_mean_activation(patch_badnet, repaired):
    pruner, _ = repaired
    activations = layer_activations(patch_badnet.model, patch_badnet.X_val, pruner.layer_)
    np.testing.assert_allclose(pruner.channel_activations_, activations.mean(axis=(0, 1, 2)), rtol=1e-5)
    assert np.all(np.diff(pruner.channel_activations_[pruner.pruning_order_]) >= 0)
    assert pruner.layer_ == "conv_2"  # the last convolution by default


def test_joblib_round_trip_gives_identical_predictions(tmp_path, patch_badnet, repaired):
    pruner, _ = repaired
    path = tmp_path / "pruner.joblib"
    joblib.dump(pruner, path)
    loaded = joblib.load(path)
    X = np.concatenate([patch_badnet.X_test, patch_badnet.X_poisoned])
    np.testing.assert_array_equal(loaded.predict_proba(X), pruner.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), pruner.predict(X))
    np.testing.assert_array_equal(
        pruned_channel_mask(loaded.model_, loaded.layer_), pruned_channel_mask(pruner.model_, pruner.layer_)
    )
    assert loaded.model is not patch_badnet.model  # the parameter was serialised too


def test_same_random_state_gives_the_same_pruned_set_and_weights(patch_badnet):
    def fit():
        return FinePruner(
            model=patch_badnet.model, epochs=2, validation_fraction=0.25, random_state=7
        ).fit(patch_badnet.X_val, patch_badnet.y_val)

    first, second = fit(), fit()
    np.testing.assert_array_equal(first.pruned_channels_, second.pruned_channels_)
    np.testing.assert_array_equal(first.pruning_curve_["accuracy"], second.pruning_curve_["accuracy"])
    for a, b in zip(first.model_.get_weights(), second.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.history_ == second.history_
    assert "val_accuracy" in first.history_


def _naive_matches(model, layer, X, y, *, expect_incremental):
    sweep = _PruningSweep(model, layer)
    assert (sweep.frontier is not None) == expect_incremental
    cached, sums = sweep.cache(X)
    order = np.argsort(sums, kind="stable")
    np.testing.assert_array_equal(
        sweep.accuracy_curve(cached, y, order), _naive_pruning_curve(model, layer, X, y, order)
    )
    # Rows split into several blocks give the same curve.
    np.testing.assert_array_equal(
        sweep.accuracy_curve(cached, y, order, floats_per_call=2000), sweep.accuracy_curve(cached, y, order)
    )


def _architecture(kind):
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.Rescaling(1 / 16)(inputs)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="conv_a")(x)
    if kind == "batchnorm":  # not channel-wise and zero-preserving: masked fallback
        x = layers.BatchNormalization()(x)
        x = layers.Flatten()(x)
    elif kind == "global-pool":
        x = layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x))
    elif kind == "two-branch":  # like CSAW conv_3 -> pool_3 -> {fc_1, conv_4}
        pool = layers.MaxPooling2D()(x)
        fc = layers.Dense(16, name="fc")(layers.Flatten()(pool))
        conv = layers.Conv2D(8, 2, strides=2, activation="relu", name="conv_b")(pool)
        x = layers.Activation("relu")(layers.Add()([fc, layers.Dense(16)(layers.Flatten()(conv))]))
    else:  # hidden dense layer after flatten and dropout
        x = layers.Dense(24, activation="tanh")(layers.Dropout(0.3)(layers.Flatten()(layers.MaxPooling2D()(x))))
    outputs = layers.Dense(10)(x)  # logits
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind", ["dense", "global-pool", "two-branch", "batchnorm"])
def test_cached_sweep_matches_the_naive_sweep(digits, kind):
    keras.utils.set_random_seed(0)
    model = _architecture(kind)
    X, _ = digits
    X = X[:300]
    y = predict_proba_batches(model, X).argmax(axis=1)
    y[::4] = (y[::4] + 1) % 10
    _naive_matches(model, "conv_a", X, y, expect_incremental=kind != "batchnorm")


def test_sweep_of_the_patch_badnet_matches_the_naive_sweep(patch_badnet, repaired):
    pruner, _ = repaired
    naive = _naive_pruning_curve(
        patch_badnet.model, pruner.layer_, patch_badnet.X_val, patch_badnet.y_val, pruner.pruning_order_
    )
    np.testing.assert_array_equal(pruner.pruning_curve_["accuracy"], naive)
    asr_curve = pruner.pruning_sweep(patch_badnet.X_poisoned, patch_badnet.target)
    badnet_labels = predict_proba_batches(patch_badnet.model, patch_badnet.X_poisoned).argmax(axis=1)
    assert asr_curve["accuracy"][0] == attack_success_rate(patch_badnet.y_target, badnet_labels)
    assert len(asr_curve["accuracy"]) == pruner.n_channels_ + 1


def test_prune_fraction_epochs_zero_and_l1_ranking(patch_badnet):
    pruner = FinePruner(model=patch_badnet.model, prune_fraction=0.3, ranking="l1", epochs=0)
    pruner.fit(patch_badnet.X_val, patch_badnet.y_val)
    kernel = np.asarray(patch_badnet.model.get_layer("conv_2").kernel)
    norms = np.abs(kernel).sum(axis=(0, 1, 2))
    np.testing.assert_array_equal(pruner.pruning_order_, np.argsort(norms, kind="stable"))
    assert len(pruner.pruned_channels_) == int(0.3 * 32) and pruner.history_ == {}
    # pruning only: every weight but the pruned channels is the BadNet's
    for old, new in zip(patch_badnet.model.get_weights(), pruner.model_.get_weights()):
        if old.shape == kernel.shape:
            kept = np.setdiff1d(np.arange(32), pruner.pruned_channels_)
            np.testing.assert_array_equal(old[..., kept], new[..., kept])
        elif old.shape != (32,):
            np.testing.assert_array_equal(old, new)
    # pruning-only accuracy is the curve's value at that point
    accuracy = pruner.score(patch_badnet.X_val, patch_badnet.y_val)
    assert accuracy == pruner.pruning_curve_["accuracy"][len(pruner.pruned_channels_)]

    tuned_only = FinePruner(model=patch_badnet.model, prune_fraction=0.0, epochs=1, layer="conv_1")
    tuned_only.fit(patch_badnet.X_val, patch_badnet.y_val)
    assert tuned_only.pruned_channels_.size == 0 and tuned_only.layer_ == "conv_1"
    assert len(tuned_only.pruning_curve_["accuracy"]) == 17


def test_grid_search_over_prune_fraction_and_learning_rate(patch_badnet):
    search = GridSearchCV(
        FinePruner(model=patch_badnet.model, epochs=2, random_state=0),
        {"prune_fraction": [0.25, 0.5], "learning_rate": [1e-3, 1e-2]},
        scoring=backdoor_scoring(patch_badnet.X_poisoned, patch_badnet.y_target),
        refit=best_cca_under_asr(0.5),
        cv=2,
    )
    search.fit(patch_badnet.X_val, patch_badnet.y_val)
    results = search.cv_results_
    assert len(results["params"]) == 4 and not np.isnan(results["mean_test_cca"]).any()
    best = search.best_estimator_
    assert best.model is patch_badnet.model  # cloned by reference, never copied
    assert best.get_params()["prune_fraction"] == results["params"][search.best_index_]["prune_fraction"]
    qualifies = -results["mean_test_asr"] <= 0.5
    if qualifies.any():
        assert results["mean_test_cca"][search.best_index_] == results["mean_test_cca"][qualifies].max()
    assert search.predict(patch_badnet.X_test[:5]).shape == (5,)

    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from skbackdoor.plotting import plot_cca_asr_heatmaps

    cca_axes, asr_axes = plot_cca_asr_heatmaps(results)
    shown = cca_axes.get_images()[0].get_array()
    assert shown.shape == (2, 2)  # learning rates x prune fractions
    first = results["params"][0]
    row = [1e-3, 1e-2].index(first["learning_rate"])
    column = [0.25, 0.5].index(first["prune_fraction"])
    assert shown[row, column] == pytest.approx(100 * results["mean_test_cca"][0])
    assert asr_axes.get_images()[0].get_array()[row, column] == pytest.approx(-100 * results["mean_test_asr"][0])


def test_clone_keeps_the_model_by_reference_and_drops_fitted_state(patch_badnet, repaired):
    pruner, _ = repaired
    copy = clone(pruner)
    assert copy.model is patch_badnet.model
    assert copy.get_params() == pruner.get_params()
    assert not hasattr(copy, "model_")


def test_real_csaw_conv_3_feeding_two_branches(csaw_dir):
    model = load_badnet(csaw_dir / "sunglasses_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    before = _weights(model)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(96, 55, 47, 3)).astype(np.float32)
    y = predict_proba_batches(model, X).argmax(axis=1)
    y[::3] = rng.integers(0, 1283, size=len(y[::3]))
    pruner = FinePruner(model=model, layer="conv_3", prune_fraction=0.5, epochs=1, batch_size=32, random_state=0)
    pruner.fit(X, y)
    assert pruner.n_channels_ == 60 and pruner.n_classes_ == 1283
    assert pruner.channel_activations_.shape == (60,) and len(pruner.pruned_channels_) == 30
    conv_3 = pruner.model_.get_layer("conv_3")
    assert np.all(np.asarray(conv_3.kernel)[..., pruner.pruned_channels_] == 0)
    assert np.all(layer_activations(pruner.model_, X, "conv_3")[..., pruner.pruned_channels_] == 0)
    assert pruner.predict_proba(X[:4]).shape == (4, 1283)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    sweep = _PruningSweep(model, "conv_3")
    assert sorted(part.layer.name for part in sweep.frontier) == ["conv_4", "fc_1"]
    naive = _naive_pruning_curve(model, "conv_3", X, y, pruner.pruning_order_)
    np.testing.assert_array_equal(pruner.pruning_curve_["accuracy"], naive)


def test_verbose_reports_progress(patch_badnet, capsys):
    FinePruner(model=patch_badnet.model, prune_fraction=0.25, epochs=1, verbose=2).fit(
        patch_badnet.X_val[:100], patch_badnet.y_val[:100]
    )
    captured = capsys.readouterr()
    assert "pruned 8/32 channels of 'conv_2'" in captured.out
    assert "pruning sweep" in captured.err


@pytest.mark.parametrize(
    "params, match",
    [
        ({"layer": "no_such_layer"}, r"Unknown layer 'no_such_layer'.*\['conv_1', 'conv_2'\]"),
        ({"layer": "pool_1"}, r"'pool_1' is a MaxPooling2D, not a Conv2D.*\['conv_1', 'conv_2'\]"),
        ({"prune_fraction": 1.0}, "prune_fraction"),
        ({"prune_fraction": -0.1}, "prune_fraction"),
        ({"ranking": "random"}, "ranking"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"epochs": -1}, "epochs"),
    ],
)
def test_invalid_parameters(patch_badnet, params, match):
    with pytest.raises(ValueError, match=match):
        FinePruner(model=patch_badnet.model, **params).fit(patch_badnet.X_val, patch_badnet.y_val)


def test_bad_labels_and_data_are_refused(patch_badnet):
    pruner = FinePruner(model=patch_badnet.model, epochs=0)
    X, y = patch_badnet.X_val, patch_badnet.y_val
    with pytest.raises(ValueError, match="holds label 10 but the model has 10 classes"):
        pruner.fit(X, np.where(y == 3, 10, y))
    with pytest.raises(ValueError, match="negative labels"):
        pruner.fit(X, y - 1)
    with pytest.raises(ValueError, match="has 399 labels but there are 400 images"):
        pruner.fit(X, y[:-1])
    with pytest.raises(ValueError, match="single image"):
        pruner.fit(X[0], y[:1])
    rare = np.where(np.arange(len(y)) == 0, 9, np.where(y == 9, 8, y))  # class 9 has one sample
    with pytest.raises(ValueError, match=r"classes \[9\] have a single sample"):
        FinePruner(model=patch_badnet.model, validation_fraction=0.2).fit(X, rare)
    with pytest.raises(ValueError, match="cannot each hold all 10 classes"):
        FinePruner(model=patch_badnet.model, validation_fraction=0.01).fit(X, y)
    with pytest.raises(ValueError, match="needs a model"):
        FinePruner().fit(X, y)


def test_class_count_mismatch_is_refused(digits):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    single = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x)))
    X, y = digits
    with pytest.raises(ValueError, match="needs class scores over at least 2 classes"):
        FinePruner(model=single, epochs=0).fit(X[:50], np.zeros(50, dtype=int))
    three = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="the model has 3 classes"):
        FinePruner(model=three, epochs=0).fit(X[:50], y[:50])


def test_unfitted_use_and_pixel_range(patch_badnet, repaired):
    unfitted = FinePruner(model=patch_badnet.model)
    for method in (unfitted.predict, unfitted.predict_proba):
        with pytest.raises(NotFittedError):
            method(patch_badnet.X_test)
    with pytest.raises(NotFittedError):
        unfitted.pruning_sweep(patch_badnet.X_test, patch_badnet.y_test)
    pruner, _ = repaired
    with pytest.raises(ValueError, match="pixel values"):
        pruner.predict(patch_badnet.X_test * 16)


def test_pruning_curve_and_activation_map_figures(patch_badnet, repaired):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skbackdoor.plotting import plot_activation_maps, plot_pruning_curve

    pruner, _ = repaired
    ax = plot_pruning_curve(pruner, patch_badnet.X_poisoned, patch_badnet.target)
    clean, asr = ax.get_lines()[:2]
    np.testing.assert_allclose(clean.get_ydata(), 100 * pruner.pruning_curve_["accuracy"])
    assert asr.get_ydata()[0] > 80  # the BadNet's ASR before any pruning
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["clean accuracy", "attack success rate"]
    before, after = plot_activation_maps(pruner, patch_badnet.X_poisoned)
    assert len(after.patches) == len(pruner.pruned_channels_)
    with pytest.raises(ValueError, match="fitted FinePruner"):
        plot_pruning_curve(FinePruner(model=patch_badnet.model))
    plt.close("all")
