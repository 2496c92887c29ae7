"""Every estimator loads its BadNet itself: ``architecture``, ``input_scale``,
``input_offset`` and ``safe_mode`` are passed on to ``load_badnet``."""

import numpy as np
import pytest

import keras

from skbackdoor import FinePruner, GoodNetClassifier, NeuralCleanse, STRIPDetector
from skbackdoor.models import load_badnet, predict_proba_batches


@pytest.fixture(scope="module")
def weights_file(patch_badnet, tmp_path_factory):
    """The digits BadNet without its input scaling, as a weights-only file, and its builder."""
    trained = patch_badnet.model
    scaling = next(layer for layer in trained.layers if isinstance(layer, keras.layers.Rescaling))
    inner = keras.Sequential([keras.Input(trained.input_shape[1:])] + [
        layer for layer in trained.layers if layer is not scaling and not isinstance(layer, keras.layers.InputLayer)
    ])

    def build():
        model = keras.models.clone_model(inner)
        return model

    path = tmp_path_factory.mktemp("weights") / "digits.weights.h5"
    inner.save_weights(path)
    return path, build, float(scaling.scale)


@pytest.mark.parametrize("estimator", [
    STRIPDetector(random_state=0),
    FinePruner(epochs=0, prune_fraction=0.25, random_state=0),
    NeuralCleanse(projection_rounds=0, epochs=0, steps=5, random_state=0),
    GoodNetClassifier(detector=STRIPDetector(random_state=0)),
], ids=lambda e: type(e).__name__)
def test_loading_parameters_reach_load_badnet(estimator, weights_file, patch_badnet):
    path, build, scale = weights_file
    X, y = patch_badnet.X_val, patch_badnet.y_val
    name = "badnet" if isinstance(estimator, GoodNetClassifier) else "model"
    from_file = estimator.set_params(**{name: str(path)}, architecture=build, input_scale=scale).fit(X, y)
    model = load_badnet(str(path), architecture=build, input_scale=scale)
    np.testing.assert_allclose(
        predict_proba_batches(model, X[:50]), predict_proba_batches(patch_badnet.model, X[:50]), atol=1e-5
    )
    given = type(estimator)(**{**estimator.get_params(deep=False), name: model,
                               "architecture": None, "input_scale": None}).fit(X, y)
    np.testing.assert_array_equal(from_file.predict(X[:50]), given.predict(X[:50]))


def test_input_offset_and_bad_loading_parameters(weights_file, patch_badnet):
    path, build, scale = weights_file
    X = patch_badnet.X_val
    shifted = STRIPDetector(model=str(path), architecture=build, input_scale=scale, input_offset=-1.0,
                            random_state=0).fit(X + 1.0 - 1.0)
    reference = load_badnet(str(path), architecture=build, input_scale=scale, input_offset=-1.0)
    np.testing.assert_allclose(
        predict_proba_batches(shifted._load_badnet(), X[:20]), predict_proba_batches(reference, X[:20]), atol=1e-6
    )
    with pytest.raises(ValueError, match="architecture"):
        STRIPDetector(model=str(path), architecture="vgg").fit(X)
    with pytest.raises(ValueError, match="safe_mode"):
        STRIPDetector(model=str(path), architecture=build, safe_mode="yes").fit(X)
    with pytest.raises(ValueError, match="input_scale"):
        STRIPDetector(model=str(path), architecture=build, input_scale=0).fit(X)


def test_safe_mode_applies_to_files(tmp_path, patch_badnet):
    inputs = keras.Input((8, 8, 1))
    doubled = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(doubled)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    X = patch_badnet.X_val
    with pytest.raises(ValueError, match="Lambda"):
        STRIPDetector(model=str(path)).fit(X)
    STRIPDetector(model=str(path), safe_mode=False, random_state=0).fit(X)
    STRIPDetector(model=model, random_state=0).fit(X)        # the user's own object
