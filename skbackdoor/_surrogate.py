"""Clean-data-only scorers: surrogate poisoned inputs from reverse-engineered triggers.

``backdoor_scoring`` and ``detection_scoring`` need inputs carrying the attacker's
trigger, which a defender never has. The scorers here replace them by surrogate
poisoned inputs made from the defender's clean data alone: Neural Cleanse (Wang et al.,
IEEE S&P 2019, https://people.cs.uchicago.edu/~ravenben/publications/pdf/backdoor-sp19.pdf)
reverse-engineers, for every label of the BadNet, the smallest trigger that sends clean
inputs to it; the triggers of the most anomalous (smallest) labels are stamped on clean
images of the other labels. The search runs once, when the scorers are made, outside
the cross-validation folds; the scorers only hold the resulting images.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._docstrings import SCORER_FRAGMENTS, fill_doc

__all__ = ["surrogate_backdoor_scoring", "surrogate_detection_scoring", "surrogate_poisoned_inputs"]

_COMMON_CONSTRAINTS = {
    "badnet": "no_validation",
    "X_clean": ["array-like"],
    "y_clean": ["array-like"],
    "n_targets": [Interval(numbers.Integral, 1, None, closed="left")],
    "steps": [Interval(numbers.Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
}


# Docstring fragments: the parameters of the trigger search that the scorers document
# alike, and the opening of every example (a digits BadNet, the function imported).
_FRAGMENTS = {
    **SCORER_FRAGMENTS,
    "targets_and_steps": """\
n_targets : int, default=1
    Suspected target labels whose reversed triggers make the surrogate inputs.
steps : int, default=500
    Optimisation steps of the trigger search per label.
""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds the trigger search.
""",
}
_DIGITS_BADNET = """\
Examples
--------
>>> import numpy as np
>>> from sklearn.datasets import load_digits
>>> from skbackdoor.attacks import PatchTrigger, train_badnet
>>> from skbackdoor.metrics import {function}
>>> digits = load_digits()
>>> X = digits.images[..., np.newaxis].astype("float32"); y = digits.target
>>> badnet = train_badnet(X[:1000], y[:1000], trigger=PatchTrigger.square(size=2, value=16),
...                       target=0, epochs=8, random_state=0)
"""
# The scorers' examples go on with the scoring made from that BadNet.
_SCORING_EXAMPLE = """\
>>> scoring = {function}(badnet, X[1000:1400], y[1000:1400], steps=200,
...{alignment}random_state=0)
>>> sorted(scoring)
"""


def _documented(function):
    """Fill the docstring fragments of ``function``, its example calling it."""
    name = function.__name__
    return fill_doc(
        **_FRAGMENTS,
        digits_badnet=_DIGITS_BADNET.format(function=name),
        scoring_example=_SCORING_EXAMPLE.format(function=name, alignment=" " * len(f" scoring = {name}(")),
    )(function)


@validate_params(_COMMON_CONSTRAINTS, prefer_skip_nested_validation=True)
@_documented
def surrogate_poisoned_inputs(badnet, X_clean, y_clean, *, n_targets=1, steps=500, random_state=None):
    """Surrogate poisoned inputs: clean images stamped with reverse-engineered triggers.

    Runs the trigger search of :class:`~skbackdoor.NeuralCleanse` (without its repair)
    on ``badnet`` with the clean data, ranks the labels by how anomalous their
    smallest trigger is (the flagged labels first, most anomalous first, then the
    others by increasing mask norm) and stamps the trigger of each of the first
    ``n_targets`` labels on every clean image of another label.

    Parameters
    ----------
    badnet : keras.Model, str or path-like
        The untrusted model (anything :class:`~skbackdoor.NeuralCleanse` accepts as
        ``model``). It is never modified.
    X_clean : array-like of shape (n_samples, height, width, channels)
        The defender's clean images, raw pixels as the BadNet takes them.
    y_clean : array-like of shape (n_samples,)
        Their true labels.
    n_targets : int, default=1
        Number of suspected target labels whose triggers are used.
    steps : int, default=500
        Optimisation steps of the trigger search per label (``NeuralCleanse.steps``).
    random_state : int, RandomState instance or None, default=None
        Seeds the trigger search. With an int the result is deterministic.

    Returns
    -------
    X_surrogate : ndarray of shape (n_surrogate, height, width, channels), float32
        The triggered clean images.
    y_target : ndarray of shape (n_surrogate,)
        The suspected target label of each.

    %(digits_badnet)s
    >>> X_surrogate, y_target = surrogate_poisoned_inputs(
    ...     badnet, X[1000:1400], y[1000:1400], steps=200, random_state=0)
    >>> X_surrogate.shape[1:], np.unique(y_target).size
    ((8, 8, 1), 1)
    """
    from ._neural_cleanse import NeuralCleanse

    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    search = NeuralCleanse(
        model=badnet, steps=steps, projection_rounds=0, epochs=0, unlearn_if_clean=False, random_state=seed
    ).fit(X_clean, y_clean)
    targets = _suspected_targets(search)[:n_targets]
    X_clean = np.asarray(X_clean, dtype=np.float32)
    y_clean = np.asarray(y_clean)
    images, labels = [], []
    for target in targets:
        others = X_clean[y_clean != target]
        images.append(search.apply_trigger(others, int(target)))
        labels.append(np.full(len(others), target, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _suspected_targets(search):
    """Scanned labels, most suspicious first: flagged ones, then by increasing mask norm."""
    scanned = search.scanned_labels_
    flagged = list(search.flagged_labels_)
    rest = [label for label in scanned[np.argsort(search.mask_norms_[scanned], kind="stable")] if label not in flagged]
    return np.array(flagged + rest, dtype=np.int64)


@validate_params(
    {**_COMMON_CONSTRAINTS, "poisoned_label": [Interval(numbers.Integral, None, None, closed="neither"), None]},
    prefer_skip_nested_validation=True,
)
@_documented
def surrogate_backdoor_scoring(
    badnet, X_clean, y_clean, *, n_targets=1, steps=500, poisoned_label=None, random_state=None
):
    """Scorers ``{"cca": ..., "asr": ...}`` for ``GridSearchCV`` from clean data alone.

    The defender's version of :func:`backdoor_scoring`: same keys, same sign
    conventions (``"asr"`` returns minus the rate, greater is better), so
    ``refit=best_cca_under_asr(...)`` works unchanged. ``"cca"`` is the accuracy on
    each clean fold; ``"asr"`` is the attack success rate on the surrogate poisoned
    inputs of :func:`surrogate_poisoned_inputs`, made once here, before any fold.

    Parameters
    ----------
    badnet : keras.Model, str or path-like
        The untrusted model whose backdoor the tuned defense removes.
    X_clean : array-like of shape (n_samples, height, width, channels)
        Clean images. Use the data the search is fitted on, or other clean data; no
        poisoned input is needed.
    y_clean : array-like of shape (n_samples,)
        Their true labels.
    %(targets_and_steps)s
    poisoned_label : int, default=None
        Passed to :func:`make_cca_scorer` (``N`` for a GoodNet).
    %(random_state)s

    %(returns_scoring)s

    Notes
    -----
    What it assumes: the backdoor is a trigger that a small mask and pattern can
    express (a patch, a sticker, a localised pattern), and its target is the label
    with the most anomalous smallest trigger (or among the ``n_targets`` first).
    The reversed trigger is the *smallest* change that sends clean inputs to the
    target, often a part of the attacker's.

    When it misleads:

    - A repair that unlearns the reversed trigger itself (:class:`~skbackdoor.NeuralCleanse`)
      is judged on the very trigger it was trained against: the surrogate ASR is
      then optimistic. It suits defenses that do not look at the reversed trigger
      (fine-pruning, detectors, GoodNets built on them).
    - A partly repaired model can resist the minimal trigger and still answer the
      attacker's full one; the surrogate ASR is then lower than the true ASR.
    - Blended, whole-image or sample-specific triggers need large masks; the search
      may not single out their target, and the surrogate inputs then measure a
      natural "easy" label instead of the backdoor.
    - Several targets (multi-target, all-to-all): raise ``n_targets``.

    %(digits_badnet)s
    %(scoring_example)s
    ['asr', 'cca']
    """
    from .metrics import backdoor_scoring

    X_surrogate, y_target = surrogate_poisoned_inputs(
        badnet, X_clean, y_clean, n_targets=n_targets, steps=steps, random_state=random_state
    )
    return backdoor_scoring(X_surrogate, y_target, poisoned_label=poisoned_label)


@validate_params(
    {**_COMMON_CONSTRAINTS, "poisoned_label": [Interval(numbers.Integral, None, None, closed="neither")]},
    prefer_skip_nested_validation=True,
)
@_documented
def surrogate_detection_scoring(
    badnet, X_clean, y_clean, *, n_targets=1, steps=500, poisoned_label=-1, random_state=None
):
    """Scorers ``{"frr": ..., "far": ...}`` for tuning a detector from clean data alone.

    The defender's version of :func:`detection_scoring`, for tuning e.g. a
    :class:`~skbackdoor.STRIPDetector`'s ``frr`` or ``n_overlays``: ``"frr"`` on each
    clean fold, ``"far"`` (minus the false acceptance rate) on the surrogate poisoned
    inputs of :func:`surrogate_poisoned_inputs`. Pair it with
    ``refit=best_far_under_frr(...)``. The assumptions and caveats of
    :func:`surrogate_backdoor_scoring` apply; in addition, the reversed trigger is not
    the attacker's, so a superimposition detector such as STRIP can flag it more or
    less often than the real one (on the digits patch BadNet of the tests, STRIP's
    surrogate FAR was within 2.3 points of its true FAR for 5 to 20 overlays and
    ``frr`` 0.01 to 0.05).

    Parameters
    ----------
    badnet : keras.Model, str or path-like
        The untrusted model the detector watches.
    X_clean : array-like of shape (n_samples, height, width, channels)
        Clean images.
    y_clean : array-like of shape (n_samples,)
        Their true labels (the trigger search needs them).
    %(targets_and_steps)s
    %(detector_poisoned_label)s
    %(random_state)s

    %(returns_scoring)s

    %(digits_badnet)s
    %(scoring_example)s
    ['far', 'frr']
    """
    from .metrics import detection_scoring

    X_surrogate, _ = surrogate_poisoned_inputs(
        badnet, X_clean, y_clean, n_targets=n_targets, steps=steps, random_state=random_state
    )
    return detection_scoring(X_surrogate, poisoned_label=poisoned_label)
