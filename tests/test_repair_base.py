"""The repair template (BaseRepair): one fit for every repair estimator."""

import warnings

import keras
import numpy as np
import pytest
from sklearn.base import clone

from skbackdoor import FinePruner, NeuralCleanse
from skbackdoor._base import BaseRepair
from skbackdoor.models import copy_model


class _FineTuneOnly(BaseRepair):
    """The smallest repair: fine-tune a copy with the estimator's recipe."""

    _parameter_constraints = {**BaseRepair._parameter_constraints}

    def __init__(self, *, model=None, learning_rate=1e-3, epochs=1, batch_size=32, random_state=None, verbose=0):
        self.model = model
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    def _repair(self, badnet, X, y, *, rng, seed):
        from skbackdoor._fine_tuning import fine_tune

        self.seed_ = seed
        model = copy_model(badnet)
        self.history_ = fine_tune(model, X, y, recipe=self._fine_tuning_recipe())
        return model


def test_the_estimators_extend_the_base_constraints():
    for estimator in (FinePruner, NeuralCleanse, _FineTuneOnly):
        assert BaseRepair._parameter_constraints.items() <= estimator._parameter_constraints.items()


def test_one_fit_seeds_validates_and_repairs(patch_badnet):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    first = _FineTuneOnly(model=patch_badnet.model, random_state=0).fit(X, y)
    second = clone(first).fit(X, y)
    np.testing.assert_array_equal(first.classes_, np.arange(10))
    assert first.n_classes_ == 10 and first.pixel_range_ == (0.0, 16.0)
    assert first.seed_ == second.seed_ and len(first.history_["loss"]) == 1
    for a, b in zip(first.model_.get_weights(), second.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.predict(X[:7]).shape == (7,) and first.predict_proba(X[:7]).shape == (7, 10)
    assert first.model_ is not patch_badnet.model


def test_bad_input_is_refused_before_the_repair(patch_badnet, digits):
    X, y = patch_badnet.X_val, patch_badnet.y_val
    with pytest.raises(ValueError, match="epochs"):
        _FineTuneOnly(model=patch_badnet.model, epochs=-1).fit(X, y)
    with pytest.raises(ValueError, match="needs a model"):
        _FineTuneOnly().fit(X, y)
    with pytest.raises(ValueError, match="label 10"):
        _FineTuneOnly(model=patch_badnet.model).fit(X, np.where(y == 1, 10, y))
    inputs = keras.Input((8, 8, 1))
    single = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="_FineTuneOnly needs class scores over at least 2 classes"):
        _FineTuneOnly(model=single).fit(X, np.zeros(len(X), dtype=int))


def test_a_label_warning_points_at_the_users_call(patch_badnet):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NeuralCleanse(model=patch_badnet.model, labels=[0, 1], steps=2, projection_rounds=0, epochs=0, random_state=0).fit(
            patch_badnet.X_val[:40], patch_badnet.y_val[:40]
        )
    (warning,) = [w for w in caught if "anomaly index" in str(w.message)]
    assert warning.filename == __file__
