"""Mechanics every skbackdoor estimator shares: the BadNet parameter, cloning, pickling."""

import contextlib

import keras
from sklearn.base import clone

from ._validation import check_images, check_pixel_range, pixel_range
import numpy as np
from sklearn.utils.validation import check_is_fitted

from .models import load_badnet, model_from_bytes, model_input_shape, model_to_bytes, predict_proba_batches

__all__ = ["BadNetEstimatorMixin", "RepairedModelPredictMixin", "progress_bar"]

_SERIALISED_MODEL = "__skbackdoor_keras_model__"


def _is_model_reference(value):
    return isinstance(value, keras.Model) or (
        type(value).__module__.startswith("scikeras") and hasattr(value, "model_")
    )


class BadNetEstimatorMixin:
    """Mixin for estimators that hold a (possibly backdoored) Keras model.

    - ``clone`` passes Keras models by reference, like ``sklearn.frozen.FrozenEstimator``:
      the estimators never modify the model they are given, so copying its weights for
      every GridSearchCV candidate would only cost time and memory.
    - Pickling stores every Keras model, parameter or fitted attribute, as the bytes of a
      ``.keras`` archive (pruning masks included), on top of ``BaseEstimator``'s state.
    - ``_validate_images`` checks images against the model and the pixel range of ``fit``.

    Subclasses name their model parameter in ``_model_param`` (default ``"model"``).
    """

    _model_param = "model"

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        for name, value in params.items():
            params[name] = value if _is_model_reference(value) else clone(value, safe=False)
        new = type(self)(**params)
        if hasattr(self, "_metadata_request"):
            new._metadata_request = clone(self._metadata_request)
        return new

    def __getstate__(self):
        state = super().__getstate__()
        return {
            key: {_SERIALISED_MODEL: model_to_bytes(value)} if isinstance(value, keras.Model) else value
            for key, value in state.items()
        }

    def __setstate__(self, state):
        state = {
            key: model_from_bytes(value[_SERIALISED_MODEL], safe_mode=False)
            if isinstance(value, dict) and _SERIALISED_MODEL in value
            else value
            for key, value in state.items()
        }
        super().__setstate__(state)

    def _load_badnet(self):
        """The model parameter as a ``keras.Model`` (paths and scikeras accepted)."""
        source = getattr(self, self._model_param)
        if source is None:
            raise ValueError(f"{type(self).__name__} needs a model: {self._model_param}=None.")
        return load_badnet(source)

    def _validate_images(self, X, model, *, reset, name="X"):
        """Check ``X`` against ``model``; record (``reset``) or enforce the pixel range."""
        X = check_images(X, input_shape=model_input_shape(model), name=name)
        if reset:
            self.pixel_range_ = pixel_range(X)
        else:
            check_pixel_range(X, self.pixel_range_, name=name)
        return X


class RepairedModelPredictMixin:
    """``predict_proba``/``predict`` of a repair estimator, from its Keras ``model_``."""

    def predict_proba(self, X):
        """Class probabilities of the repaired network.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Images scaled like the fit data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes_)
        """
        check_is_fitted(self)
        X = self._validate_images(X, self.model_, reset=False)
        return predict_proba_batches(self.model_, X)

    def predict(self, X):
        """Classes predicted by the repaired network.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Images scaled like the fit data.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


@contextlib.contextmanager
def progress_bar(total, *, verbose, desc):
    """A tqdm bar when ``verbose`` (yielding its ``update``), else a no-op callable."""
    if not verbose:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="img") as bar:
        yield bar.update
