"""Metrics and scikit-learn scorers for backdoor defenses.

A defense is judged on two sets of inputs at once:

- clean inputs, on which it must keep the model's accuracy (clean classification
  accuracy, CCA) and must not raise alarms (false rejection rate, FRR);
- poisoned inputs (carrying the trigger), on which the attacker's target label must no
  longer come out (attack success rate, ASR) and which a detector must flag (false
  acceptance rate, FAR).

Two output conventions are supported. Outlier detectors such as
:class:`~skbackdoor.STRIPDetector` predict ``+1`` for clean and ``-1`` for poisoned
(scikit-learn's outlier convention, the default ``poisoned_label=-1``). A repaired
classifier such as :class:`~skbackdoor.GoodNetClassifier` answers a class label, or the
extra label ``N`` (the number of classes of the BadNet) for inputs it judges poisoned:
pass ``poisoned_label=N`` to the rate functions.

Cross-validation folds only hold clean data, so the scorers that need poisoned inputs
(:func:`make_asr_scorer`, :func:`make_far_scorer`) store them. Following scikit-learn's
"greater is better" convention, the rate scorers return the negated rate, as
``neg_log_loss`` does: ``GridSearchCV`` maximises ``-ASR``, i.e. minimises ASR.

The refit rules that read those columns (:func:`best_cca_under_asr`,
:func:`best_far_under_frr`) live in ``_refit_rules`` and are re-exported here.
"""

import numbers

import numpy as np
from sklearn.metrics import make_scorer
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils._param_validation import Interval, validate_params

from ._refit_rules import _BestUnderBound, best_cca_under_asr, best_far_under_frr  # noqa: F401  (old pickles)
from ._surrogate import surrogate_backdoor_scoring, surrogate_detection_scoring, surrogate_poisoned_inputs
from ._docstrings import SCORER_FRAGMENTS, fill_doc
from ._validation import check_images

__all__ = [
    "attack_success_rate",
    "backdoor_scoring",
    "best_cca_under_asr",
    "best_far_under_frr",
    "clean_accuracy_score",
    "detection_scoring",
    "false_acceptance_rate",
    "false_rejection_rate",
    "make_asr_scorer",
    "make_cca_scorer",
    "make_far_scorer",
    "make_frr_scorer",
    "surrogate_backdoor_scoring",
    "surrogate_detection_scoring",
    "surrogate_poisoned_inputs",
]


# ------------------------------------------------------------------------ validation


class _IntegerLabel(Interval):
    """Any integer but a boolean, described in error messages as ``description``."""

    def __init__(self, description="an integer label"):
        super().__init__(numbers.Integral, None, None, closed="neither")
        self.description = description

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)

    def __str__(self):
        return self.description


_POISONED_LABEL = [_IntegerLabel("an integer label (-1 for outlier detectors, N for a GoodNet with N classes)"), str]
# A target may be any scalar label (floats too, as scikit-learn allows) or one per input.
_LABEL_OR_LABELS = [_IntegerLabel(), Interval(numbers.Real, None, None, closed="neither"), str, "array-like"]


def _check_1d(y, name):
    try:
        y = column_or_1d(y, input_name=name)
    except ValueError as exc:
        raise ValueError(
            f"{name} must be a 1-D array of labels; got shape {np.shape(y)}. Pass predicted "
            "labels (estimator.predict), not probabilities: convert those with "
            "np.argmax(proba, axis=1)."
        ) from exc
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one prediction is required.")
    return y


def _check_same_length(first, second, first_name, second_name):
    try:
        check_consistent_length(first, second)
    except ValueError as exc:
        raise ValueError(
            f"{first_name} and {second_name} must have the same length; got "
            f"{len(first)} and {len(second)}."
        ) from exc


def _check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return None
    sample_weight = _check_1d(sample_weight, "sample_weight").astype(np.float64)
    if len(sample_weight) != n_samples:
        raise ValueError(
            f"sample_weight has {len(sample_weight)} entries but there are {n_samples} "
            "predictions."
        )
    if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
        raise ValueError("sample_weight must hold finite, non-negative numbers.")
    if sample_weight.sum() == 0:
        raise ValueError("sample_weight sums to zero; at least one weight must be positive.")
    return sample_weight


def _share(mask, sample_weight):
    return float(np.average(mask, weights=sample_weight))


def _holds_text(y):
    y = np.asarray(y)
    return y.dtype.kind in "US" or (y.dtype.kind == "O" and any(isinstance(v, str) for v in y.ravel()))


def _check_same_label_kind(labels, y_pred, labels_name, pred_name="y_pred"):
    """Text labels never equal numeric ones: ``"0" != 0`` would make every rate 0."""
    if _holds_text(labels) == _holds_text(y_pred):
        return
    text_name, number_name = (labels_name, pred_name) if _holds_text(labels) else (pred_name, labels_name)
    raise ValueError(
        f"{text_name} holds text labels but {number_name} holds numbers, so no label can "
        "ever match and the rate would be meaningless. Pass labels of the model's own kind "
        "on both sides (e.g. 0 rather than '0')."
    )


def _check_detection_labels(y_pred, poisoned_label, name):
    """Predictions must follow the convention that ``poisoned_label`` names.

    ``-1``: a detector's ``+1`` (clean) / ``-1`` (poisoned). An integer ``N >= 0``: a
    GoodNet's classes ``0 .. N-1`` and ``N`` (poisoned). Anything else matches the
    poisoned label by chance only, and the rate would silently be 0 or 1.
    """
    _check_same_label_kind([poisoned_label], y_pred, "poisoned_label", name)
    if isinstance(poisoned_label, str) or _holds_text(y_pred):
        return
    values = np.unique(y_pred)
    if poisoned_label == -1:
        unexpected = values[(values != 1) & (values != -1)]
        if len(unexpected):
            raise ValueError(
                f"{name} holds {_some(unexpected)}, neither +1 (clean) nor -1 (poisoned): "
                "with poisoned_label=-1 (the default, scikit-learn's outlier convention) "
                "the predictions must be +1/-1, as an outlier detector such as "
                "STRIPDetector gives. For a GoodNetClassifier's labels pass "
                "poisoned_label=N, its number of classes."
            )
    elif poisoned_label >= 0:
        unexpected = values[(values < 0) | (values > poisoned_label) | (values != np.round(values))]
        if len(unexpected):
            raise ValueError(
                f"{name} holds {_some(unexpected)}, outside the labels 0 .. {poisoned_label} "
                f"that poisoned_label={poisoned_label} stands for (a GoodNet's classes "
                f"0 .. {poisoned_label - 1}, and {poisoned_label} for poisoned). For an outlier "
                "detector's +1/-1 pass poisoned_label=-1; otherwise pass the GoodNet's "
                "poisoned_label_."
            )


def _detection_share(y_pred, name, poisoned_label, sample_weight, *, flagged):
    """Weighted share of ``y_pred`` that is (``flagged=True``) or is not ``poisoned_label``."""
    y_pred = _check_1d(y_pred, name)
    _check_detection_labels(y_pred, poisoned_label, name)
    sample_weight = _check_sample_weight(sample_weight, len(y_pred))
    return _share((y_pred == poisoned_label) == flagged, sample_weight)


def _some(values, limit=5):
    shown = ", ".join(repr(v.item()) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"the label{'s' if len(values) > 1 else ''} {shown}{more}"


# --------------------------------------------------------------------------- metrics

# Docstring fragments: the weights and the rate of the metrics; the examples of the
# scorer factories score a constant sklearn.dummy classifier.
_documented = fill_doc(
    **SCORER_FRAGMENTS,
    sample_weight="""\
sample_weight : array-like of shape (n_samples,), default=None
    Sample weights.
""",
    returns_rate="""\
Returns
-------
rate : float
    In [0, 1]; lower is better.
""",
    examples_with_dummy="""\
Examples
--------
>>> import numpy as np
>>> from sklearn.dummy import DummyClassifier
""",
)



@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "poisoned_label": _POISONED_LABEL + [None],
        "sample_weight": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
@_documented
def clean_accuracy_score(y_true, y_pred, *, poisoned_label=None, sample_weight=None):
    """Clean classification accuracy (CCA): accuracy on clean inputs.

    A prediction of the poisoned label (a GoodNet's extra class ``N``) on a clean input
    counts as wrong: it is a false alarm, and never equals a true class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True classes of clean inputs.
    y_pred : array-like of shape (n_samples,)
        Predicted labels, possibly including the poisoned label.
    poisoned_label : int, default=None
        The label that means "poisoned" (``N`` for a GoodNet). Only used to check that
        ``y_true`` does not contain it, which would mean poisoned inputs were passed as
        clean ones.
    %(sample_weight)s

    Returns
    -------
    score : float
        Share of inputs whose prediction equals the true class, in [0, 1].

    Examples
    --------
    >>> from skbackdoor.metrics import clean_accuracy_score
    >>> clean_accuracy_score([0, 1, 2, 2], [0, 1, 2, 3], poisoned_label=3)
    0.75
    """
    y_true = _check_1d(y_true, "y_true")
    y_pred = _check_1d(y_pred, "y_pred")
    _check_same_length(y_true, y_pred, "y_true", "y_pred")
    _check_same_label_kind(y_true, y_pred, "y_true")
    sample_weight = _check_sample_weight(sample_weight, len(y_pred))
    if poisoned_label is not None:
        n_poisoned = int(np.sum(y_true == poisoned_label))
        if n_poisoned:
            raise ValueError(
                f"y_true holds the poisoned label {poisoned_label!r} for {n_poisoned} "
                "input(s); clean_accuracy_score expects the true classes of clean inputs."
            )
    return _share(y_true == y_pred, sample_weight)


@validate_params(
    {"y_target": _LABEL_OR_LABELS, "y_pred": ["array-like"], "sample_weight": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
@_documented
def attack_success_rate(y_target, y_pred, *, sample_weight=None):
    """Attack success rate (ASR): share of poisoned inputs classified as the target.

    Lower is better for a defense. A prediction of the poisoned label (a GoodNet's
    extra class ``N``) is not a success: the attack was caught. Compute it on poisoned
    inputs whose true class differs from their target, otherwise an input correctly
    classified as its own class counts as a success.

    Parameters
    ----------
    y_target : int or array-like of shape (n_samples,)
        The attacker's target label: one label for all inputs, or one per input (a
        multi-trigger multi-target attack).
    y_pred : array-like of shape (n_samples,)
        Labels predicted for the poisoned inputs.
    %(sample_weight)s

    Returns
    -------
    rate : float
        In [0, 1].

    Examples
    --------
    >>> from skbackdoor.metrics import attack_success_rate
    >>> attack_success_rate(0, [0, 0, 5, 10])
    0.5
    >>> attack_success_rate([0, 7, 7], [0, 7, 3])
    0.6666666666666666
    """
    y_pred = _check_1d(y_pred, "y_pred")
    if np.ndim(y_target) == 0:
        y_target = np.full(len(y_pred), y_target)
    else:
        y_target = _check_1d(y_target, "y_target")
        _check_same_length(y_target, y_pred, "y_target", "y_pred")
    _check_same_label_kind(y_target, y_pred, "y_target")
    sample_weight = _check_sample_weight(sample_weight, len(y_pred))
    return _share(y_pred == y_target, sample_weight)


@validate_params(
    {"y_pred_clean": ["array-like"], "poisoned_label": _POISONED_LABEL, "sample_weight": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
@_documented
def false_rejection_rate(y_pred_clean, *, poisoned_label=-1, sample_weight=None):
    """False rejection rate (FRR): share of clean inputs flagged as poisoned.

    Parameters
    ----------
    y_pred_clean : array-like of shape (n_samples,)
        Predictions for clean inputs: a detector's ``+1`` (clean) / ``-1`` (poisoned),
        or a GoodNet's labels.
    poisoned_label : int, default=-1
        The label that means "poisoned": ``-1`` for outlier detectors such as
        :class:`~skbackdoor.STRIPDetector`, ``N`` (the number of classes) for a
        :class:`~skbackdoor.GoodNetClassifier`.
    %(sample_weight)s

    %(returns_rate)s

    Examples
    --------
    >>> from skbackdoor.metrics import false_rejection_rate
    >>> false_rejection_rate([1, 1, 1, -1])
    0.25
    >>> false_rejection_rate([4, 2, 10, 10], poisoned_label=10)
    0.5
    """
    return _detection_share(y_pred_clean, "y_pred_clean", poisoned_label, sample_weight, flagged=True)


@validate_params(
    {"y_pred_poisoned": ["array-like"], "poisoned_label": _POISONED_LABEL, "sample_weight": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
@_documented
def false_acceptance_rate(y_pred_poisoned, *, poisoned_label=-1, sample_weight=None):
    """False acceptance rate (FAR): share of poisoned inputs not flagged as poisoned.

    For a GoodNet an unflagged poisoned input may still get its true class; use
    :func:`attack_success_rate` to count only those that reach the attacker's target.

    Parameters
    ----------
    y_pred_poisoned : array-like of shape (n_samples,)
        Predictions for poisoned inputs: a detector's ``+1`` / ``-1``, or a GoodNet's
        labels.
    poisoned_label : int, default=-1
        The label that means "poisoned": ``-1`` for outlier detectors, ``N`` for a
        GoodNet with ``N`` classes.
    %(sample_weight)s

    %(returns_rate)s

    Examples
    --------
    >>> from skbackdoor.metrics import false_acceptance_rate
    >>> false_acceptance_rate([-1, -1, -1, 1])
    0.25
    >>> false_acceptance_rate([10, 0, 10, 10], poisoned_label=10)
    0.25
    """
    return _detection_share(y_pred_poisoned, "y_pred_poisoned", poisoned_label, sample_weight, flagged=False)


# --------------------------------------------------------------------------- scorers



def _check_poisoned_images(X_poisoned):
    X = np.asarray(X_poisoned)
    # Keep the caller's dtype: uint8 pixels stay uint8 (4x smaller to ship to workers).
    return check_images(X, name="X_poisoned", dtype=X.dtype)


def _describe_images(X):
    return f"<{X.dtype} images of shape {X.shape}>"


def _asr_of(y_pred, *, y_target):
    return attack_success_rate(y_target, y_pred)


class _RateScorer:
    """Scorer returning minus a rate (greater is better) of ``estimator.predict``.

    With ``X_poisoned`` the rate is taken on those stored inputs and the fold is
    ignored (cross-validation folds hold clean data only); without, on the fold ``X``.
    ``rate(y_pred, **params)`` is a module-level function, so the scorer pickles (to
    joblib and Dask workers) with the images it holds.
    """

    def __init__(self, factory, rate, X_poisoned=None, **params):
        self.factory = factory
        self.rate = rate
        self.X_poisoned = X_poisoned
        self.params = params

    def __call__(self, estimator, X=None, y=None, **kwargs):
        y_pred = estimator.predict(X if self.X_poisoned is None else self.X_poisoned)
        # 0.0 - rate rather than -rate: a perfect defense scores 0.0, not -0.0.
        return 0.0 - self.rate(y_pred, **self.params)

    def __repr__(self):
        shown = [] if self.X_poisoned is None else [_describe_images(self.X_poisoned)]
        for key, value in self.params.items():
            if np.ndim(value):
                shown.append(f"{key}=<array>")
            else:
                shown.append(f"{key}={value.item() if isinstance(value, np.generic) else value!r}")
        return f"{self.factory}({', '.join(shown)})"


@validate_params({"poisoned_label": _POISONED_LABEL + [None]}, prefer_skip_nested_validation=True)
@_documented
def make_cca_scorer(*, poisoned_label=None):
    """Scorer for clean classification accuracy on the cross-validation fold.

    Equal to scikit-learn's ``"accuracy"`` scorer, since a prediction of the poisoned
    label never equals a true class; ``poisoned_label`` adds the check that the fold
    holds no input labelled poisoned.

    Parameters
    ----------
    poisoned_label : int, default=None
        The label that means "poisoned" (``N`` for a GoodNet), see
        :func:`clean_accuracy_score`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)`` returning the CCA of ``estimator.predict(X)``;
        greater is better.

    %(examples_with_dummy)s
    >>> from skbackdoor.metrics import make_cca_scorer
    >>> X, y = np.zeros((4, 8, 8, 1)), np.array([0, 0, 0, 1])
    >>> clf = DummyClassifier(strategy="most_frequent").fit(X.reshape(4, -1), y)
    >>> make_cca_scorer()(clf, X.reshape(4, -1), y)
    0.75
    """
    return make_scorer(clean_accuracy_score, poisoned_label=poisoned_label)


@validate_params(
    {"X_poisoned": ["array-like"], "y_target": _LABEL_OR_LABELS}, prefer_skip_nested_validation=True
)
@_documented
def make_asr_scorer(X_poisoned, y_target):
    """Scorer for the attack success rate on poisoned inputs it holds.

    Cross-validation folds only contain clean data, so the scorer keeps the poisoned
    inputs and ignores the fold: ``scorer(estimator, X, y)`` returns
    ``-attack_success_rate(y_target, estimator.predict(X_poisoned))``. Lower ASR is
    better; the scorer returns **minus** the ASR so that ``GridSearchCV`` maximises it
    (like ``neg_log_loss``), and ``cv_results_["mean_test_asr"]`` holds ``-ASR``.

    The scorer is a picklable object (it works with ``n_jobs > 1`` and the Dask
    backend); the poisoned images are shipped with it to every worker.

    Parameters
    ----------
    X_poisoned : array-like of shape (n_poisoned, height, width, channels)
        Inputs carrying the trigger, scaled like the data the estimator is fitted on.
    y_target : int or array-like of shape (n_poisoned,)
        The attacker's target label, one for all inputs or one per input.

    Returns
    -------
    scorer : callable
        Greater is better.

    %(examples_with_dummy)s
    >>> from skbackdoor.metrics import make_asr_scorer
    >>> X_poisoned = np.ones((5, 8, 8, 1))
    >>> clf = DummyClassifier(strategy="constant", constant=0).fit(np.zeros((2, 1)), [0, 1])
    >>> make_asr_scorer(X_poisoned, y_target=0)(clf, None, None)
    -1.0
    """
    X_poisoned = _check_poisoned_images(X_poisoned)
    if np.ndim(y_target) != 0:
        y_target = _check_1d(y_target, "y_target")
        _check_same_length(y_target, X_poisoned, "y_target", "X_poisoned")
    return _RateScorer("make_asr_scorer", _asr_of, X_poisoned, y_target=y_target)


@validate_params({"poisoned_label": _POISONED_LABEL}, prefer_skip_nested_validation=True)
@_documented
def make_frr_scorer(*, poisoned_label=-1):
    """Scorer for the false rejection rate on the (clean) cross-validation fold.

    ``scorer(estimator, X, y)`` returns ``-false_rejection_rate(estimator.predict(X))``
    and ignores ``y``, so it suits detectors fitted on unlabelled clean data as well as
    GoodNets (``poisoned_label=N``). Returns minus the rate: greater is better.

    Parameters
    ----------
    %(detector_poisoned_label)s

    Returns
    -------
    scorer : callable

    %(examples_with_dummy)s
    >>> from skbackdoor.metrics import make_frr_scorer
    >>> detector = DummyClassifier(strategy="constant", constant=1).fit([[0], [0]], [1, -1])
    >>> make_frr_scorer()(detector, np.zeros((3, 1)), None)
    0.0
    """
    return _RateScorer("make_frr_scorer", false_rejection_rate, poisoned_label=poisoned_label)


@validate_params(
    {"X_poisoned": ["array-like"], "poisoned_label": _POISONED_LABEL}, prefer_skip_nested_validation=True
)
@_documented
def make_far_scorer(X_poisoned, *, poisoned_label=-1):
    """Scorer for the false acceptance rate on poisoned inputs it holds.

    ``scorer(estimator, X, y)`` ignores the fold and returns
    ``-false_acceptance_rate(estimator.predict(X_poisoned))``: minus the share of
    poisoned inputs not flagged, so greater is better. Meant for detectors (ASR is not
    defined for a detector's ``+1`` / ``-1`` output) and for GoodNets
    (``poisoned_label=N``).

    Parameters
    ----------
    %(X_poisoned)s
    %(detector_poisoned_label)s

    Returns
    -------
    scorer : callable

    %(examples_with_dummy)s
    >>> from skbackdoor.metrics import make_far_scorer
    >>> detector = DummyClassifier(strategy="constant", constant=-1).fit([[0], [0]], [1, -1])
    >>> make_far_scorer(np.ones((4, 8, 8, 1)))(detector, None, None)
    0.0
    """
    return _RateScorer(
        "make_far_scorer", false_acceptance_rate, _check_poisoned_images(X_poisoned),
        poisoned_label=poisoned_label,
    )


@validate_params(
    {"X_poisoned": ["array-like"], "y_target": _LABEL_OR_LABELS, "poisoned_label": _POISONED_LABEL + [None]},
    prefer_skip_nested_validation=True,
)
@_documented
def backdoor_scoring(X_poisoned, y_target, *, poisoned_label=None):
    """Scorers ``{"cca": ..., "asr": ...}`` for ``GridSearchCV(scoring=...)``.

    ``"cca"`` is the clean accuracy on each fold (greater is better); ``"asr"`` is minus
    the attack success rate on ``X_poisoned`` (see :func:`make_asr_scorer`). Pair it
    with ``refit=best_cca_under_asr(...)``.

    Parameters
    ----------
    %(X_poisoned)s
    y_target : int or array-like of shape (n_poisoned,)
        The attacker's target label(s).
    poisoned_label : int, default=None
        Passed to :func:`make_cca_scorer`.

    %(returns_scoring)s

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.metrics import backdoor_scoring
    >>> sorted(backdoor_scoring(np.ones((5, 8, 8, 1)), y_target=0))
    ['asr', 'cca']
    """
    return {
        "cca": make_cca_scorer(poisoned_label=poisoned_label),
        "asr": make_asr_scorer(X_poisoned, y_target),
    }


@validate_params(
    {"X_poisoned": ["array-like"], "poisoned_label": _POISONED_LABEL}, prefer_skip_nested_validation=True
)
@_documented
def detection_scoring(X_poisoned, *, poisoned_label=-1):
    """Scorers ``{"frr": ..., "far": ...}`` for tuning a detector with GridSearchCV.

    Both return minus the rate (greater is better): ``"frr"`` on each clean fold,
    ``"far"`` on ``X_poisoned``. Pair it with ``refit=best_far_under_frr(...)``.

    Parameters
    ----------
    %(X_poisoned)s
    %(detector_poisoned_label)s

    %(returns_scoring)s

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.metrics import detection_scoring
    >>> sorted(detection_scoring(np.ones((5, 8, 8, 1))))
    ['far', 'frr']
    """
    return {
        "frr": make_frr_scorer(poisoned_label=poisoned_label),
        "far": make_far_scorer(X_poisoned, poisoned_label=poisoned_label),
    }
