"""Mechanics every skbackdoor estimator shares, and the template of the repairs.

- :class:`BadNetEstimatorMixin`: the BadNet parameter, cloning by reference, pickling
  of Keras models, image checks against the fit's pixel range (every estimator).
- :class:`BaseRepair`: the template of the estimators that return a repaired network
  (:class:`~skbackdoor.FinePruner`, :class:`~skbackdoor.NeuralCleanse`). Its one
  ``fit`` seeds, loads the BadNet, checks that it is a classifier, validates ``X``
  and ``y`` and sets ``classes_``; the subclass's ``_repair`` does the rest and
  returns the repaired network, which ``predict`` and ``predict_proba`` use.
  Fine-tuning goes through :mod:`skbackdoor._fine_tuning` with the recipe of
  ``_fine_tuning_recipe``.
- :func:`progress_bar`: the optional tqdm bar of long loops.
"""

import contextlib
import numbers

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc
from ._fine_tuning import plain_recipe
from ._validation import check_classifier_outputs as _check_outputs
from ._validation import check_images, check_labels, check_pixel_range, pixel_range
from .models import (
    ARCHITECTURES,
    load_badnet,
    model_from_bytes,
    model_input_shape,
    model_n_classes,
    model_to_bytes,
    predict_proba_batches,
)

__all__ = [
    "LOADING_CONSTRAINTS",
    "BadNetEstimatorMixin",
    "BaseRepair",
    "check_classifier_outputs",
    "document_loading_parameters",
    "progress_bar",
]

_SERIALISED_MODEL = "__skbackdoor_keras_model__"

# The parameters every estimator passes to :func:`~skbackdoor.models.load_badnet` with its
# BadNet; ``load_badnet`` checks the scale and offset itself, with messages naming the fix.
LOADING_CONSTRAINTS = {
    "architecture": [StrOptions(set(ARCHITECTURES)), callable, None],
    "input_scale": "no_validation",
    "input_offset": "no_validation",
    "safe_mode": ["boolean"],
}


# Their documentation, written once like the constraints: every estimator's docstring
# says ``%(loading_parameters)s`` where it goes (see document_loading_parameters).
_LOADING_PARAMETERS_DOC = """\
architecture : {{"csaw-deepid"}} or callable, default=None
    With ``{model}`` a weights-only ``.h5`` file: the architecture its weights are
    loaded into (see :func:`skbackdoor.models.load_badnet`).
input_scale : float or sequence of float, default=None
    The net gets ``(x - input_offset) * input_scale``: e.g. ``1/255`` for a net
    trained on pixels in [0, 1], one value per channel for ``(x - mean) / std``.
input_offset : float or sequence of float, default=None
    Subtracted from the raw pixels before ``input_scale`` (e.g. the channel means).
safe_mode : bool, default=True
    Refuse a file whose loading could run code (a Lambda layer). Applies to files
    only: an in-memory model is the user's own object.
"""


def document_loading_parameters(model="model", **fragments):
    """Class decorator: put the documentation of the :data:`LOADING_CONSTRAINTS`
    parameters where the class docstring says ``%(loading_parameters)s``; ``model``
    names the parameter holding the BadNet; other ``fragments`` are filled in too
    (see :func:`skbackdoor._docstrings.fill_doc`)."""
    return fill_doc(loading_parameters=_LOADING_PARAMETERS_DOC.format(model=model), **fragments)


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
        options = {name: getattr(self, name) for name in LOADING_CONSTRAINTS if hasattr(self, name)}
        return load_badnet(source, **options)

    def _validate_images(self, X, model, *, reset, name="X"):
        """Check ``X`` against ``model``; record (``reset``) or enforce the pixel range."""
        X = check_images(X, input_shape=model_input_shape(model), name=name)
        if reset:
            self.pixel_range_ = pixel_range(X)
        else:
            check_pixel_range(X, self.pixel_range_, name=name)
        return X


def check_classifier_outputs(model, owner):
    """The number of classes of ``model``, after checking it has one output per class.

    ``owner`` names what needs the classifier in the message; the checks themselves are
    :func:`skbackdoor._validation.check_classifier_outputs`.
    """
    _check_outputs(model, estimator=owner)
    return model_n_classes(model)


class BaseRepair(BadNetEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Template of the estimators that repair a BadNet into a new network ``model_``.

    Subclasses extend ``_parameter_constraints`` with
    ``{**BaseRepair._parameter_constraints, ...}``, store their parameters in
    ``__init__`` and implement ``_repair``. Every subclass has the parameters
    ``model``, ``learning_rate``, ``epochs``, ``batch_size`` (of the fine-tuning),
    ``random_state`` and ``verbose``.

    ``fit`` draws ``seed`` from ``random_state`` (and, when ``random_state`` is not
    None, seeds Keras with it before anything is copied: dropout layers draw their
    seeds when they are built), loads the BadNet, checks it is a classifier,
    validates ``X`` and ``y``, sets ``n_classes_``, ``classes_`` and
    ``pixel_range_``, then calls ``_repair(badnet, X, y, rng=rng, seed=seed)``, which
    sets the subclass's fitted attributes and returns the repaired ``keras.Model``.
    The BadNet given by the user is never modified.
    """

    _parameter_constraints = {
        "model": "no_validation",
        **LOADING_CONSTRAINTS,
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Repair the model on clean data.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Clean images (the defender's validation set), scaled as the model expects.
        y : array-like of shape (n_samples,)
            Their true classes, integers in ``0 .. n_classes - 1``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        if self.random_state is not None:
            keras.utils.set_random_seed(seed)
        badnet = self._load_badnet()
        n_classes = check_classifier_outputs(badnet, type(self).__name__)
        X = self._validate_images(X, badnet, reset=True)
        y = check_labels(y, n_samples=len(X), n_classes=n_classes, min_classes=2, warn_missing=True)
        self.n_classes_ = n_classes
        self.classes_ = np.arange(n_classes)
        self.model_ = self._repair(badnet, X, y, rng=rng, seed=seed)
        return self

    def _repair(self, badnet, X, y, *, rng, seed):
        """Set the fitted attributes and return the repaired network (a new model).

        ``X`` and ``y`` are validated; ``rng`` is the ``RandomState`` of
        ``random_state`` (``seed`` already drawn from it), ``seed`` an int for the
        subclass's own generators.
        """
        raise NotImplementedError

    def _fine_tuning_recipe(self):
        """The :class:`~skbackdoor._fine_tuning.Recipe` of the repair's fine-tuning."""
        return plain_recipe(learning_rate=self.learning_rate, epochs=self.epochs, batch_size=self.batch_size)

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
        """Classes predicted by the repaired network: the argmax of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            As for :meth:`predict_proba`.

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
