"""GoodNetClassifier: the CSAW-HackML repaired classifier G with an extra "poisoned" label.

The CSAW-HackML-2020 challenge (https://github.com/csaw-hackml/CSAW-HackML-2020) asks
for a classifier G that answers the true class of a clean input and the extra label N
(the N+1-th class) for a poisoned one. The reports built it from a BadNet B and a
repaired B' (Fine-Pruning, Liu et al., RAID 2018, https://arxiv.org/abs/1805.12185):
G(x) = B'(x) where B and B' agree, N where they disagree; the improved G(B0, B')
compares B' with a lightly pruned B0 instead of B; a run-time detector such as STRIP
(Gao et al., ACSAC 2019, https://arxiv.org/abs/1902.06531) can send flagged inputs to N.

Answering N on every disagreement rejects every clean input on which a lightly changed
B' happens to differ from B (several percent of them); here the disagreement is a score
and its threshold is set on clean images held out from fitting B', at a
false-rejection budget, as STRIP sets its own.
"""

import numbers
import warnings

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone, is_classifier, is_outlier_detector
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import LOADING_CONSTRAINTS, BadNetEstimatorMixin, document_loading_parameters
from ._validation import check_labels
from .models import DEFAULT_BATCH_SIZE, load_badnet, model_input_shape, model_n_classes, predict_proba_batches

__all__ = ["GoodNetClassifier"]

# Calibration scores closer than this are one value: float32 softmax noise makes no rank.
_SCORE_TIE = 1e-6
# With answer="repaired" G answers with B' wherever it does not flag: a B' this much less
# accurate than the BadNet on clean images makes G lose that accuracy too (FinePruner's
# fine-tuning check uses the same budget).
MAX_REPAIRED_DROP = 0.1
ANSWERS = ("auto", "confident", "reference", "repaired")


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _check_detector(detector):
    """Refuse a detector that is not an outlier detector (``fit(X)``, ``predict`` -> +1/-1)."""
    if detector is None or is_outlier_detector(detector):
        return
    kind = "a classifier: pass it as repaired= instead" if is_classifier(detector) else "not an outlier detector"
    raise TypeError(
        f"detector= must be an outlier detector, fitted on clean images alone (fit(X)) and "
        f"predicting +1 for clean and -1 for poisoned inputs, e.g. a STRIPDetector; got "
        f"{type(detector).__name__}, {kind}."
    )


def _needs_fitting(part):
    """An estimator that GoodNetClassifier.fit will fit (not a model, not fitted)."""
    if part is None or isinstance(part, (keras.Model, str)) or hasattr(part, "__fspath__"):
        return False
    return hasattr(part, "fit") and not _is_fitted(part)


@document_loading_parameters(
    model="badnet",
    images_parameters="""\
Parameters
----------
X : array-like of shape (n_samples, height, width, channels)
""",
)
class GoodNetClassifier(BadNetEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Classifier with N+1 labels: the true class for clean inputs, N for poisoned ones.

    Combines a BadNet B with a repaired model B', an optional reference model that B'
    is compared with, and an optional run-time detector. ``predict`` answers
    ``poisoned_label_`` (= N, the number of classes of B) when the detector flags an
    input or when the reference and the repaired model disagree on it, and otherwise
    the label of the repaired model where it is as accurate as the reference on the
    clean calibration images, else the label of whichever of the two is surer of its own
    (``answer``).

    How strongly they disagree is scored (see :meth:`disagreement_score`): the
    probability the reference gives its own label minus the probability the repaired
    model gives that label. A backdoor that B' no longer obeys shows as a large drop
    (B is sure of the attacker's target, B' is not), a clean input as a drop near 0.
    ``fit`` sets ``threshold_`` on clean calibration images so that a share of at
    most ``frr`` of new clean inputs scores above it, and ``predict`` sends the inputs
    scoring above it to N.
    ``frr=None`` is the plain rule of the CSAW reports: N wherever the two labels
    differ.

    Parameters
    ----------
    badnet : keras.Model or str or path-like
        The untrusted model B: anything :func:`skbackdoor.models.load_badnet` accepts,
        loaded with ``architecture``, ``input_scale``, ``input_offset`` and
        ``safe_mode`` below (``repaired`` and ``reference`` Keras models are taken as
        they are: they must read the same raw pixels as the loaded B). It is never
        modified.
    %(loading_parameters)s
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
        Its flags are added to those of the disagreement rule; its own budget (the
        STRIPDetector's ``frr``) is separate from ``frr`` here, so the share of clean
        inputs sent to N is at most the sum of the two.
    frr : float in [0, 1) or None, default=0.01
        False-rejection budget of the disagreement rule: the share of new clean
        inputs whose disagreement score may exceed ``threshold_``, which is set on
        clean calibration images (see ``calibration_fraction``). Only used with a
        ``repaired`` model, which then needs ``predict_proba`` (or is a Keras model).
        ``None``: the plain rule, N wherever the labels of the reference and of the
        repaired model differ (G(B, B'), or G(B0, B') with a ``reference``). See Notes.
    calibration_fraction : float in (0, 1) or None, default=0.2
        Share of the images given to ``fit`` held out for setting ``threshold_`` when
        ``fit`` fits the repaired model (or the reference) itself; they are then fitted
        on the rest. A repaired model fitted on the calibration images agrees with B on
        them more than on new inputs, which would set the threshold too low (on a
        43-class GTSRB net, ``frr=0.05`` set on the fit images rejected 18 % of new
        clean inputs). ``None``, or parts given already fitted: the threshold is set on
        all the images given to ``fit`` (pass images the parts were not fitted on).
    answer : {"auto", "repaired", "reference", "confident"}, default="auto"
        Whose label G gives an input it does not send to N. ``"repaired"``: the
        repaired model's (B'), as in the CSAW reports. ``"reference"``: the reference's
        (B itself, or B0), so that B' only judges. ``"confident"``: per input, the
        label of whichever of the two gives its own label the higher probability (the
        reference on a tie).
        ``"auto"``: ``"repaired"`` when B' answers at least as many of the calibration
        images correctly as the reference (``repaired_check_``), else
        ``"confident"``; the choice is ``answer_``. They differ only with the
        calibrated rule, on inputs whose labels differ but whose score stays below
        ``threshold_`` (the plain rule sends every such input to N). A B' fine-tuned on
        a few clean images is often less accurate than B: answering with the reference
        then keeps B's clean accuracy, less what is sent to N, but gives a triggered
        input that scores below the threshold B's answer, the attacker's target;
        ``"confident"`` keeps most of that accuracy and lets fewer of those through.
        See Notes.
    batch_size : int, default=256
        Images per forward pass of the Keras models held directly.
    random_state : int, RandomState instance or None, default=None
        Draws the calibration images.

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
    threshold_ : float or None
        Disagreement score above which an input is sent to N; None with the plain rule
        (``frr=None``) or without a repaired model.
    n_calibration_ : int
        Number of clean images ``threshold_`` was set on (0 without a threshold).
    answer_ : {"repaired", "reference", "confident"}
        Whose label G gives the inputs it does not send to N (``answer``, with
        ``"auto"`` resolved; ``"reference"`` without a repaired model: the BadNet).
    repaired_check_ : dict or None
        The repaired model's clean accuracy against the BadNet's on the calibration
        images (the images held out when G fitted B' itself, else the fit images):
        ``n_images``, ``held_out``, ``badnet_accuracy``, ``reference_accuracy`` (the
        reference's: ``badnet_accuracy`` without one), ``accuracy``, ``drop`` and
        ``passed`` (``drop`` at most 0.1). ``fit`` warns when it did not pass: with
        ``answer_="repaired"`` G cannot be more accurate than B'; otherwise a B' this
        far from B disagrees with it on many clean images, which raises the threshold.
        None without a repaired model.
    pixel_range_ : tuple of float
        Minimum and maximum pixel value seen in ``fit``.

    See Also
    --------
    FinePruner : repairs a BadNet by pruning dormant channels and fine-tuning.
    STRIPDetector : flags inputs whose prediction survives superimposition.
    skbackdoor.metrics.surrogate_backdoor_scoring : tune a GoodNet from clean data only.

    Notes
    -----
    The settings of the CSAW-HackML reports: ``frr=None`` gives G(B, B'), and
    ``frr=None, reference=FinePruner(prune_fraction=0.1, epochs=0)`` gives G(B0, B').
    The calibrated rule works with any reference, repaired model and detector.

    The drop score catches more than a change of label: a partly repaired B' that
    still answers the attacker's target on a poisoned input is often much less sure
    of it than B, while on a clean input both are about as sure of the true class.
    The threshold is a split-conformal quantile of the ``n`` calibration scores: the
    ``k``-th largest, ``k = floor(frr * (n + 1))``, so that a new clean input drawn
    like the calibration images scores above it with probability
    ``k / (n + 1) <= frr`` (``k - 1`` of the calibration images lie above it). With
    fewer than ``1 / frr - 1`` calibration images ``k`` would be 0; the largest score
    is used instead and the rate is about ``1 / (n + 1)``. The achieved share on
    ``m`` new images varies by about ``sqrt(frr * (1 - frr) / min(n, m))`` (1 point
    for ``frr=0.01`` and 100 images, 0.3 point for 1,000). Rejected clean inputs are
    often ones B misclassifies anyway, so the clean accuracy usually drops by less
    than ``frr``.

    ``answer`` matters on the inputs whose labels differ but whose score stays under
    the threshold: B' is often wrong on the clean ones where it lost accuracy, B on the
    triggered ones. ``"auto"`` was chosen on the tuning half of the repair benchmark
    matrix (``benchmarks/results/goodnet_calibration.md``). With a NeuralCleanse B' and
    no detector, G met the goal there (clean accuracy within 1 point of B's, ASR at
    most 1 %) on 7 of 14 nets with ``"auto"``, 8 with ``"confident"``, 5 with
    ``"reference"`` and 3 with ``"repaired"`` (on the tuning half ``"auto"`` and
    ``"confident"`` tie); answering with B let 2.7 % of the triggered inputs through on
    a GTSRB net where ``"repaired"`` let 0.2 % and ``"auto"`` 0.3 %, and ``"auto"`` let
    24.0 % through on a Fashion-MNIST all-to-all net against 16.4 % for ``"repaired"``.

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
    >>> goodnet.n_calibration_  # B' was fitted on the other 240 images
    60
    >>> plain = GoodNetClassifier(badnet=badnet, repaired=goodnet.repaired_, frr=None)  # G(B, B')
    >>> plain.fit(X[1200:1500], y[1200:1500]).threshold_ is None
    True
    """

    _model_param = "badnet"

    # The parts are checked in fit, with messages that say what each one may be.
    _parameter_constraints = {
        "badnet": "no_validation",
        **LOADING_CONSTRAINTS,
        "repaired": "no_validation",
        "reference": "no_validation",
        "detector": "no_validation",
        "frr": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "calibration_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "answer": [StrOptions(set(ANSWERS))],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        badnet=None,
        architecture=None,
        input_scale=None,
        input_offset=None,
        safe_mode=True,
        repaired=None,
        reference=None,
        detector=None,
        frr=0.01,
        calibration_fraction=0.2,
        answer="auto",
        batch_size=DEFAULT_BATCH_SIZE,
        random_state=None,
    ):
        self.badnet = badnet
        self.architecture = architecture
        self.input_scale = input_scale
        self.input_offset = input_offset
        self.safe_mode = safe_mode
        self.repaired = repaired
        self.reference = reference
        self.detector = detector
        self.frr = frr
        self.calibration_fraction = calibration_fraction
        self.answer = answer
        self.batch_size = batch_size
        self.random_state = random_state

    # The parts' own fit validates their parameters: nested validation is kept.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit whatever is not fitted yet (on clones) on the clean data ``X, y``; set ``threshold_``.

        With ``frr`` and a repaired model (or reference) to fit, a share
        ``calibration_fraction`` of ``X`` is held out from their fit and sets the
        threshold; otherwise all of ``X`` sets it. The detector is fitted on all of ``X``.

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
        y = check_labels(y, n_samples=len(X), n_classes=n_classes, min_classes=2, warn_missing=True)
        _check_detector(self.detector)

        X_fit, y_fit, X_calibration, y_calibration = self._calibration_split(X, y)
        self.repaired_ = self._fit_part(self.repaired, X_fit, y_fit)
        self.reference_ = self.badnet_ if self.reference is None else self._fit_part(self.reference, X_fit, y_fit)
        self.detector_ = self._fit_part(self.detector, X, None)
        self.poisoned_label_ = n_classes
        self.n_classes_ = n_classes + 1
        self.classes_ = np.arange(n_classes + 1)
        self.threshold_ = None
        # "auto" is resolved below, from the clean accuracy on the calibration images.
        self.answer_ = "reference" if self.repaired_ is None else self.answer
        if self.repaired_ is not None and self.frr is not None:
            for name, part in (("repaired", self.repaired_), ("reference", self.reference_)):
                if not isinstance(part, keras.Model) and not hasattr(part, "predict_proba"):
                    raise TypeError(
                        f"The calibrated disagreement rule compares probabilities, and the {name} "
                        f"model ({type(part).__name__}) has no predict_proba; pass frr=None for the "
                        "plain rule (N where the labels differ)."
                    )
            self.threshold_ = _budget_threshold(self._disagreement(X_calibration)[1], self.frr)
        self.n_calibration_ = len(X_calibration) if self.threshold_ is not None else 0
        self.repaired_check_ = None
        if self.repaired_ is not None:
            check = self._check_repaired_accuracy(X_calibration, y_calibration, held_out=X_calibration is not X)
            if self.answer == "auto":
                self.answer_ = "confident" if check["reference_accuracy"] > check["accuracy"] else "repaired"
            if not check["passed"]:
                self._warn_inaccurate_repair(check)
            self.repaired_check_ = check
        return self

    def _calibration_split(self, X, y):
        """``X_fit, y_fit`` for the parts G fits, ``X_calibration`` for the threshold."""
        to_fit = [part for part in (self.repaired, self.reference) if _needs_fitting(part)]
        if self.repaired is None or self.frr is None or self.calibration_fraction is None or not to_fit:
            return X, y, X, y
        n_calibration = int(round(self.calibration_fraction * len(X)))
        if n_calibration < 1 or n_calibration >= len(X):
            raise ValueError(
                f"calibration_fraction={self.calibration_fraction} of {len(X)} images leaves "
                f"{n_calibration} for the calibration and {len(X) - n_calibration} for fitting; "
                "both need at least one. Give more images or change calibration_fraction."
            )
        order = check_random_state(self.random_state).permutation(len(X))
        calibration, rest = np.sort(order[:n_calibration]), np.sort(order[n_calibration:])
        return X[rest], y[rest], X[calibration], y[calibration]

    def _check_repaired_accuracy(self, X, y, *, held_out):
        """The ``repaired_check_`` of B' on clean images."""
        accuracy = float(np.mean(self._labels_of(self.repaired_, X) == y))
        badnet_accuracy = float(np.mean(self._labels_of(self.badnet_, X) == y))
        reference_accuracy = (
            badnet_accuracy if self.reference_ is self.badnet_
            else float(np.mean(self._labels_of(self.reference_, X) == y))
        )
        check = {
            "n_images": len(X), "held_out": bool(held_out), "badnet_accuracy": badnet_accuracy,
            "reference_accuracy": reference_accuracy, "accuracy": accuracy, "drop": badnet_accuracy - accuracy,
            "passed": bool(badnet_accuracy - accuracy <= MAX_REPAIRED_DROP),
        }
        return check

    def _warn_inaccurate_repair(self, check):
        where = "held out for the calibration" if check["held_out"] else "given to fit"
        if self.answer_ == "repaired":
            consequence = "the GoodNet answers with it wherever it does not flag, so it loses that accuracy too"
        else:
            consequence = (
                f"the GoodNet answers with {'the reference' if self.answer_ == 'reference' else 'the surer of the two'}, "
                "but a repaired model this far from the BadNet disagrees with it on many clean images, which "
                "raises the threshold and lets more poisoned inputs through"
            )
        warnings.warn(
            f"GoodNetClassifier: the repaired model answers {check['accuracy']:.1%} of the {check['n_images']} "
            f"clean images {where} correctly, against {check['badnet_accuracy']:.1%} for the BadNet; "
            f"{consequence}. Give more clean images (of every class), or a repair that keeps clean accuracy.",
            UserWarning,
            stacklevel=4,  # the user's call of fit, through _fit_context
        )

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
            shape, expected = model_input_shape(model), model_input_shape(self.badnet_)
            if tuple(shape) != tuple(expected):
                raise ValueError(
                    f"A model given to GoodNetClassifier takes images of shape {tuple(shape)}, but "
                    f"the BadNet takes {tuple(expected)}: every part must read the same images."
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

    def _check_inputs(self, X):
        check_is_fitted(self)
        return self._validate_images(X, self.badnet_, reset=False)

    def _disagreement(self, X):
        """The answer's probabilities (see ``answer_``) and the drop score of each input."""
        repaired = self._proba_of(self.repaired_, X)
        reference = self._proba_of(self.reference_, X)
        rows = np.arange(len(X))
        labels = reference.argmax(axis=1)
        if self.answer_ == "confident":
            answer = np.where((reference.max(axis=1) >= repaired.max(axis=1))[:, None], reference, repaired)
        else:
            answer = reference if self.answer_ == "reference" else repaired
        return answer, reference[rows, labels] - repaired[rows, labels]

    def _judge(self, X, *, proba):
        """The answering model's labels (or probabilities) and the poisoned mask."""
        poisoned = np.zeros(len(X), dtype=bool)
        if self.repaired_ is None:
            source = self.badnet_
        else:
            # The plain rule answers only where the labels agree: "confident" is then the repaired model's.
            source = self.reference_ if self.answer_ == "reference" else self.repaired_
        if self.threshold_ is not None:
            answer, scores = self._disagreement(X)
            poisoned |= scores > self.threshold_
        else:
            answer = self._proba_of(source, X) if proba else self._labels_of(source, X)
            if self.repaired_ is not None:
                # The plain rule: N wherever the labels differ (so either model's label is the answer).
                labels = answer.argmax(axis=1) if proba else answer
                other = self.repaired_ if source is self.reference_ else self.reference_
                poisoned |= self._labels_of(other, X) != labels
        if self.detector_ is not None:
            poisoned |= np.asarray(self.detector_.predict(X)) == -1
        if not proba and answer.ndim == 2:
            answer = answer.argmax(axis=1)
        return answer, poisoned

    def disagreement_score(self, X):
        """How strongly the reference and the repaired model disagree on each input.

        The probability the reference (B, or B0) gives its own label minus the
        probability the repaired model B' gives that label, in [-1, 1]. Inputs scoring
        above ``threshold_`` are sent to N.

        %(images_parameters)s

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if self.repaired_ is None:
            raise ValueError("This GoodNetClassifier has no repaired model: there is no disagreement to score.")
        X = self._validate_images(X, self.badnet_, reset=False)
        return self._disagreement(X)[1]

    def predict(self, X):
        """Label each image: its class in ``0 .. N-1``, or ``N`` when judged poisoned.

        %(images_parameters)s

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        X = self._check_inputs(X)
        labels, poisoned = self._judge(X, proba=False)
        return np.where(poisoned, self.poisoned_label_, labels)

    def predict_proba(self, X):
        """Probabilities over the N+1 classes.

        A row judged poisoned puts all its mass on ``N``; any other row is the
        answering model's probabilities (see ``answer``; the BadNet's without a repaired
        model) with 0 for ``N``. The argmax of each row is therefore ``predict``.

        %(images_parameters)s

        Returns
        -------
        proba : ndarray of shape (n_samples, N + 1)
        """
        X = self._check_inputs(X)
        base, poisoned = self._judge(X, proba=True)
        proba = np.zeros((len(X), self.n_classes_), dtype=base.dtype)
        proba[:, :-1] = base
        proba[poisoned] = 0.0
        proba[poisoned, -1] = 1.0
        return proba


def _budget_threshold(scores, frr):
    """The ``k``-th largest calibration score, ``k = max(1, floor(frr * (n + 1)))``.

    A new score exchangeable with the ``n`` calibration scores exceeds the ``k``-th
    largest with probability ``k / (n + 1)`` (split conformal), at most ``frr``.
    """
    k = max(1, int(np.floor(frr * (len(scores) + 1) + 1e-9)))
    k = min(k, len(scores))
    threshold = np.sort(scores)[len(scores) - k]
    # A score within float noise of the threshold is the threshold (never above it).
    return float(threshold + _SCORE_TIE)
