"""GoodNetClassifier: the CSAW-HackML repaired classifier G with an extra "poisoned" label.

The CSAW-HackML-2020 challenge (https://github.com/csaw-hackml/CSAW-HackML-2020) asks
for a classifier G that answers the true class of a clean input and the extra label N
(the N+1-th class) for a poisoned one. The reports built it from a BadNet B and a
repaired B' (Fine-Pruning, Liu et al., RAID 2018, https://arxiv.org/abs/1805.12185):
G(x) = B'(x) where B and B' agree, N where they disagree; the improved G(B0, B')
compares B' with a lightly pruned B0 instead of B; a run-time detector such as STRIP
(Gao et al., ACSAC 2019, https://arxiv.org/abs/1902.06531) can send flagged inputs to N.
"""

import numbers

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._base import BadNetEstimatorMixin
from ._validation import check_labels
from .models import DEFAULT_BATCH_SIZE, load_badnet, model_n_classes, predict_proba_batches

__all__ = ["GoodNetClassifier"]


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


class GoodNetClassifier(BadNetEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Classifier with N+1 labels: the true class for clean inputs, N for poisoned ones.

    Combines a BadNet B with a repaired model B', an optional reference model that B'
    is compared with, and an optional run-time detector. ``predict`` answers
    ``poisoned_label_`` (= N, the number of classes of B) when the detector flags an
    input or when the reference and the repaired model disagree on it, and the repaired
    model's label otherwise.

    Parameters
    ----------
    badnet : keras.Model or str or path-like
        The untrusted model B (anything :func:`skbackdoor.models.load_badnet` accepts
        without extra arguments; call ``load_badnet`` yourself for weights-only files).
        It is never modified.
    repaired : estimator or keras.Model, default=None
        The repaired model B': a :class:`~skbackdoor.FinePruner` (or any classifier
        with ``fit``/``predict``), fitted or not, or a Keras model. An unfitted
        estimator is cloned and fitted on the data given to ``fit``; if its ``model``
        parameter is None it is given ``badnet``.
    reference : estimator or keras.Model, default=None
        What B' is compared with. ``None`` compares with B itself: G(B, B'). A
        :class:`~skbackdoor.FinePruner` with a small ``prune_fraction`` and
        ``epochs=0`` gives the improved G(B0, B') of the CSAW reports. Only used when
        ``repaired`` is given.
    detector : estimator, default=None
        A run-time detector with the outlier convention (``predict`` returns -1 for
        poisoned inputs), e.g. a :class:`~skbackdoor.STRIPDetector`, fitted or not
        (an unfitted one is cloned and fitted on the clean ``X`` given to ``fit``).
    batch_size : int, default=256
        Images per forward pass of the Keras models held directly.

    Attributes
    ----------
    badnet_ : keras.Model
        The loaded BadNet.
    repaired_ : estimator or keras.Model or None
        The fitted repaired model (the given one if it was already fitted).
    reference_ : estimator or keras.Model
        The fitted reference (``badnet_`` when ``reference`` is None).
    detector_ : estimator or None
        The fitted detector.
    n_classes_ : int
        N + 1: the classes of the BadNet plus the poisoned label.
    classes_ : ndarray of shape (N + 1,)
        ``0 .. N``; the last one is the poisoned label.
    poisoned_label_ : int
        N, the label answered for inputs judged poisoned.
    pixel_range_ : tuple of float
        Minimum and maximum pixel value seen in ``fit``.

    See Also
    --------
    FinePruner : repairs a BadNet by pruning dormant channels and fine-tuning.
    STRIPDetector : flags inputs whose prediction survives superimposition.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skbackdoor import FinePruner, GoodNetClassifier
    >>> from skbackdoor.attacks import PatchTrigger, train_badnet
    >>> digits = load_digits()
    >>> X = digits.images[..., np.newaxis].astype("float32"); y = digits.target
    >>> trigger = PatchTrigger.square(size=2, value=16)
    >>> badnet = train_badnet(X[:1200], y[:1200], trigger=trigger, target=0, epochs=3, random_state=0)
    >>> goodnet = GoodNetClassifier(badnet=badnet, repaired=FinePruner(epochs=2, random_state=0))
    >>> goodnet.fit(X[1200:1500], y[1200:1500]).poisoned_label_
    10
    >>> labels = goodnet.predict(X[1500:])
    >>> int(labels.max()) <= 10
    True
    """

    _model_param = "badnet"

    # The parts are checked in fit, with messages that say what each one may be.
    _parameter_constraints = {
        "badnet": "no_validation",
        "repaired": "no_validation",
        "reference": "no_validation",
        "detector": "no_validation",
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, *, badnet=None, repaired=None, reference=None, detector=None, batch_size=DEFAULT_BATCH_SIZE):
        self.badnet = badnet
        self.repaired = repaired
        self.reference = reference
        self.detector = detector
        self.batch_size = batch_size

    # The parts' own fit validates their parameters: nested validation is kept.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit whatever is not fitted yet (on clones) on the clean data ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Clean validation images, raw pixels as the BadNet takes them.
        y : array-like of shape (n_samples,)
            Their true labels, ``0 .. N-1``.

        Returns
        -------
        self : GoodNetClassifier
        """
        if self.repaired is None and self.detector is None:
            raise ValueError(
                "GoodNetClassifier needs at least one of repaired= (e.g. a FinePruner) "
                "or detector= (e.g. a STRIPDetector)."
            )
        if self.reference is not None and self.repaired is None:
            raise ValueError("reference= is compared with repaired=; give a repaired model too.")
        self.badnet_ = self._load_badnet()
        X = self._validate_images(X, self.badnet_, reset=True)
        n_classes = model_n_classes(self.badnet_)
        y = check_labels(y, n_samples=len(X), n_classes=n_classes)

        self.repaired_ = self._fit_part(self.repaired, X, y)
        self.reference_ = self.badnet_ if self.reference is None else self._fit_part(self.reference, X, y)
        self.detector_ = self._fit_part(self.detector, X, None)
        self.poisoned_label_ = n_classes
        self.n_classes_ = n_classes + 1
        self.classes_ = np.arange(n_classes + 1)
        return self

    def _fit_part(self, part, X, y):
        if part is None:
            return None
        if isinstance(part, (keras.Model, str)) or hasattr(part, "__fspath__"):
            model = load_badnet(part)
            if model_n_classes(model) != model_n_classes(self.badnet_):
                raise ValueError(
                    f"A model given to GoodNetClassifier has {model_n_classes(model)} classes "
                    f"but the BadNet has {model_n_classes(self.badnet_)}."
                )
            return model
        if not hasattr(part, "fit") or not hasattr(part, "predict"):
            raise TypeError(
                f"Expected an estimator with fit/predict or a keras.Model, got {type(part).__name__}."
            )
        if _is_fitted(part):
            return part
        part = clone(part)
        params = part.get_params(deep=False)
        if "model" in params and params["model"] is None:
            part.set_params(model=self.badnet_)
        return part.fit(X) if y is None else part.fit(X, y)

    def _labels_of(self, part, X):
        if isinstance(part, keras.Model):
            return predict_proba_batches(part, X, batch_size=self.batch_size).argmax(axis=1)
        return np.asarray(part.predict(X))

    def _proba_of(self, part, X):
        if isinstance(part, keras.Model):
            return predict_proba_batches(part, X, batch_size=self.batch_size)
        return np.asarray(part.predict_proba(X))

    def _poisoned_mask(self, X, repaired_labels):
        poisoned = np.zeros(len(X), dtype=bool)
        if self.repaired_ is not None:
            poisoned |= self._labels_of(self.reference_, X) != repaired_labels
        if self.detector_ is not None:
            poisoned |= np.asarray(self.detector_.predict(X)) == -1
        return poisoned

    def predict(self, X):
        """Label each image: its class in ``0 .. N-1``, or ``N`` when judged poisoned.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = self._validate_images(X, self.badnet_, reset=False)
        source = self.badnet_ if self.repaired_ is None else self.repaired_
        labels = self._labels_of(source, X)
        return np.where(self._poisoned_mask(X, labels), self.poisoned_label_, labels)

    def predict_proba(self, X):
        """Probabilities over the N+1 classes.

        A row judged poisoned puts all its mass on ``N``; any other row is the repaired
        model's (or, without one, the BadNet's) probabilities with 0 for ``N``. The
        argmax of each row is therefore ``predict``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)

        Returns
        -------
        proba : ndarray of shape (n_samples, N + 1)
        """
        check_is_fitted(self)
        X = self._validate_images(X, self.badnet_, reset=False)
        source = self.badnet_ if self.repaired_ is None else self.repaired_
        base = self._proba_of(source, X)
        poisoned = self._poisoned_mask(X, base.argmax(axis=1))
        proba = np.zeros((len(X), self.n_classes_), dtype=base.dtype)
        proba[:, :-1] = base
        proba[poisoned] = 0.0
        proba[poisoned, -1] = 1.0
        return proba
