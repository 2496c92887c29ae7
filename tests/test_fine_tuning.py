"""The fine-tuning engine: recipes, the loss of what the model outputs, pruned channels kept dead."""

import dataclasses

import keras
import numpy as np
import pytest

from skbackdoor._fine_tuning import FineTuning, Recipe, classification_loss, fine_tune, plain_recipe
from skbackdoor.models import copy_model, predict_proba_batches, prune_channels


def _net(activation, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Rescaling(1 / 16),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation=activation),
    ])


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:600], y[:600], X[600:1000], y[600:1000]


def _accuracy(model, X, y):
    return float(np.mean(predict_proba_batches(model, X).argmax(axis=1) == y))


def test_the_loss_follows_what_the_model_outputs():
    assert classification_loss(_net("softmax")).from_logits is False
    assert classification_loss(_net(None)).from_logits is True


def test_logits_and_softmax_twins_learn_alike(data):
    X, y, X_test, y_test = data
    recipe = plain_recipe(learning_rate=3e-3, epochs=6, batch_size=32)
    accuracy = {}
    for activation in ("softmax", None):
        model = _net(activation)
        history = fine_tune(model, X, y, recipe=recipe, seed=0)
        assert len(history["loss"]) == 6 and history["loss"][-1] < history["loss"][0]
        accuracy[activation] = _accuracy(model, X_test, y_test)
    assert accuracy["softmax"] > 0.85
    assert abs(accuracy[None] - accuracy["softmax"]) < 0.03, accuracy


def test_plain_recipe_is_adam_at_the_learning_rate(data):
    X, y, _, _ = data
    model = _net("softmax")
    recipe = plain_recipe(learning_rate=2e-3, epochs=1, batch_size=50)
    assert (recipe.name, recipe.epochs, recipe.batch_size) == ("plain", 1, 50)
    fine_tune(model, X, y, recipe=recipe)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(float(model.optimizer.learning_rate), 2e-3)
    assert int(model.optimizer.iterations) == recipe.n_steps(len(X)) == 12


def test_zero_epochs_leaves_the_model_untouched(data):
    X, y, _, _ = data
    model = _net("softmax")
    before = [w.copy() for w in model.get_weights()]
    assert fine_tune(model, X, y, recipe=plain_recipe(learning_rate=1e-3, epochs=0, batch_size=32)) == {}
    assert not model.compiled
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_seed_makes_training_deterministic(data):
    X, y, _, _ = data
    recipe = plain_recipe(learning_rate=1e-3, epochs=2, batch_size=32)
    base = _net("softmax")
    first, second, third = copy_model(base), copy_model(base), copy_model(base)
    for model, seed in ((first, 3), (second, 3), (third, 4)):
        fine_tune(model, X, y, recipe=recipe, seed=seed)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), third.get_weights()))


def test_the_recipe_hooks_are_called(data):
    X, y, X_val, y_val = data
    seen = {"prepared": 0, "n_steps": None, "batches": 0}

    class CountBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["batches"] += 1

    def optimizer(n_steps):
        seen["n_steps"] = n_steps
        return keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.CosineDecay(1e-2, n_steps))

    def prepare(model):
        seen["prepared"] += 1

    recipe = Recipe(optimizer=optimizer, epochs=2, batch_size=100, name="cosine", prepare=prepare,
                    callbacks=lambda: [CountBatches()])
    history = fine_tune(_net("softmax"), X, y, recipe=recipe, validation=(X_val, y_val))
    assert seen == {"prepared": 1, "n_steps": 12, "batches": 12}
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert dataclasses.replace(recipe, epochs=3).n_steps(len(X)) == 18


def test_a_session_keeps_its_optimiser_across_runs(data):
    X, y, _, _ = data
    model = _net("softmax")
    session = FineTuning(model, plain_recipe(learning_rate=1e-3, epochs=1, batch_size=60), n_samples=len(X))
    optimizer = model.optimizer
    for _ in range(3):
        history = session.run(X, y, shuffle=False)
    assert model.optimizer is optimizer and int(optimizer.iterations) == 30
    assert len(history["loss"]) == 3 and history is session.history


def test_pruned_channels_stay_zero_even_when_a_recipe_revives_them(data):
    X, y, _, _ = data
    model = prune_channels(_net("softmax"), "conv", [0, 2])

    class Revive(keras.callbacks.Callback):
        """Writes into the pruned channels after training, as a careless recipe could."""

        def on_train_end(self, logs=None):
            kernel = self.model.get_layer("conv").kernel
            kernel.assign(np.asarray(kernel) + 1.0)

    recipe = Recipe(optimizer=lambda n: keras.optimizers.Adam(1e-2), epochs=2, batch_size=32,
                    callbacks=lambda: [Revive()])
    fine_tune(model, X, y, recipe=recipe)
    conv = model.get_layer("conv")
    assert np.all(np.asarray(conv.kernel)[..., [0, 2]] == 0) and np.all(np.asarray(conv.bias)[[0, 2]] == 0)
    assert np.all(np.asarray(conv.kernel)[..., [1, 3, 4, 5]] != 0)
    revived = prune_channels(_net("softmax"), "conv", [0, 2])
    fine_tune(revived, X, y, recipe=recipe, keep_masks=False)
    assert np.all(np.asarray(revived.get_layer("conv").kernel)[..., [0, 2]] == 1.0)  # the guard was what held
