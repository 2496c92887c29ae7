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
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

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
    search, targets = _reversed_triggers(badnet, X_clean, y_clean, n_targets=n_targets, steps=steps,
                                         random_state=random_state)
    return _stamped(search, targets, X_clean, y_clean)


def _stamped(search, targets, X_clean, y_clean):
    """Each target's reversed trigger stamped on the clean images of the other labels."""
    X_clean = np.asarray(X_clean, dtype=np.float32)
    y_clean = np.asarray(y_clean)
    images, labels = [], []
    for target in targets:
        others = X_clean[y_clean != target]
        images.append(search.apply_trigger(others, int(target)))
        labels.append(np.full(len(others), target, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _reversed_triggers(badnet, X_clean, y_clean, *, n_targets, steps, random_state):
    """The fitted trigger search on ``badnet`` and its ``n_targets`` most suspicious labels."""
    from ._neural_cleanse import NeuralCleanse

    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    search = NeuralCleanse(
        model=badnet, steps=steps, projection_rounds=0, epochs=0, unlearn_if_clean=False, random_state=seed
    ).fit(X_clean, y_clean)
    return search, _suspected_targets(search)[:n_targets]


def _suspected_targets(search):
    """Scanned labels, most suspicious first: flagged ones, then by increasing mask norm."""
    scanned = search.scanned_labels_
    flagged = list(search.flagged_labels_)
    rest = [label for label in scanned[np.argsort(search.mask_norms_[scanned], kind="stable")] if label not in flagged]
    return np.array(flagged + rest, dtype=np.int64)


@validate_params(
    {
        **_COMMON_CONSTRAINTS,
        "attack": [StrOptions({"adaptive", "fixed"})],
        "mask_budget": [Interval(numbers.Real, 0, 1, closed="both")],
        "poisoned_label": [Interval(numbers.Integral, None, None, closed="neither"), None],
    },
    prefer_skip_nested_validation=True,
)
@_documented
def surrogate_backdoor_scoring(
    badnet,
    X_clean,
    y_clean,
    *,
    n_targets=1,
    steps=500,
    attack="adaptive",
    mask_budget=0.25,
    poisoned_label=None,
    random_state=None,
):
    """Scorers ``{"cca": ..., "asr": ...}`` for ``GridSearchCV`` from clean data alone.

    The defender's version of :func:`backdoor_scoring`: same keys, same sign
    conventions (``"asr"`` returns minus the rate, greater is better), so
    ``refit=best_cca_under_asr(...)`` works unchanged. ``"cca"`` is the accuracy on
    each clean fold; ``"asr"`` is the attack success rate of surrogate poisoned
    inputs: clean images stamped with the triggers that the trigger search of
    :class:`~skbackdoor.NeuralCleanse` reverse-engineers on ``badnet`` for its most
    suspicious labels. The search runs once, here, before any fold.

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
    attack : {"adaptive", "fixed"}, default="adaptive"
        How the reversed triggers meet each candidate. ``"adaptive"``: on every
        fitted candidate and fold, each reversed trigger is re-optimised against the
        candidate's own Keras model (its ``model_``, or a GoodNetClassifier's
        ``repaired_``, else its ``badnet_``), starting from the trigger found on
        ``badnet``, its mask's L1 norm capped (``mask_budget``); ``"asr"`` is the
        share of the fold's images of other labels, stamped with the re-optimised
        trigger, that the candidate's ``predict`` sends to the target. A
        GoodNetClassifier that may answer with its reference's label (``answer_``
        ``"confident"`` or ``"reference"``) is attacked through its reference too,
        in a second attack, and the trigger that fooled the GoodNet more counts.
        ``"fixed"``: the reversed triggers are stamped unchanged on the clean images
        given here (:func:`surrogate_poisoned_inputs`) and every candidate is scored
        on those.
    mask_budget : float in [0, 1], default=0.25
        ``attack="adaptive"``: how far the re-optimised mask's L1 norm may grow, on a
        log scale, from the reversed trigger's norm (0) towards the median norm of
        the smallest triggers of ``badnet``'s labels (1: a size at which a trigger
        towards any label works). With a reversed mask of 8 pixels and a median of
        160, 0.25 allows 17 pixels.
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

    Why ``"adaptive"`` is the default: a partly repaired model can resist that
    minimal trigger and still answer the attacker's full one, so the fixed trigger
    scores such a candidate too low. The adaptive attack looks for a trigger towards
    the target within the budget on the candidate itself: a backdoor left in place is
    found again (near the reversed one, where the search starts), while a model
    without one needs a larger mask (on a clean label, typically several times the
    anomalous one's), which the budget keeps out. It costs one short optimisation
    (300 Adam steps of 128 images) per target, candidate, fold and attacked model:
    1-7 s each on the nets of the benchmarks. It needs an estimator holding a Keras
    model that reads the same pixels as ``badnet``; Pipelines that transform the images first
    need ``attack="fixed"``. Measured in ``benchmarks/results/goodnet_calibration.md``
    (a GoodNet's grid over FinePruner settings, 13 BadNets and a digits net): the
    pick's true ASR was at most 2 % and within a point of the true ASR's pick on 4 of
    the 6 tuning nets against 3 for ``"fixed"`` (on the CIFAR-10
    network-in-network net 0.0 % against 18.9 %), on 4 of the 7 report nets against 3
    (on the GTSRB patch net 1.6 %, the true ASR's pick, against 83.0 %) and on the
    digits net for both.

    When it misleads:

    - A GoodNet answers with :math:`B`'s label where it trusts :math:`B` more than
      :math:`B'`, so attacking :math:`B'` alone misses triggers that go through
      :math:`B`. On the GTSRB patch net, an FST candidate whose :math:`B'` resisted the
      attacker's trigger (0 %) while its GoodNet let 99.7 % through with :math:`B`'s
      label was rated about 10 % that way on one fold: the starting trigger fooled the
      GoodNet on 97.6 % of the images and drifted off it as the attack bent it to
      :math:`B'`. The second attack, through the reference, rated it 100 %, and over
      the grid the surrogate's ranks agreed with the true ASR's (Spearman 0.95 against
      0.17 for :math:`B'` alone).
    - A repair that unlearns the reversed trigger itself (:class:`~skbackdoor.NeuralCleanse`)
      is judged on the very trigger it was trained against: with ``"fixed"`` the
      surrogate ASR is then optimistic (``"adaptive"`` searches again, but from the
      same start).
    - A candidate that has lost most of its clean accuracy (say it predicts a few
      labels for everything) is easy to send anywhere: ``"adaptive"`` then reports a
      high ASR for a model that the attacker's trigger no longer fools. Such
      candidates lose on ``"cca"`` anyway.
    - Small images: on 8x8 digits a trigger within the budget is a tenth of the
      image, and the attack sends some digits to the target even through a repaired
      model (17 % surrogate against 0 % true ASR in the gallery's tuning example): the
      5 % bound of ``best_cca_under_asr`` is then out of reach and the rule falls back
      on the lowest surrogate ASR.
    - Blended, whole-image or sample-specific triggers need large masks; the search
      may not single out their target, and the surrogate inputs then measure a
      natural "easy" label instead of the backdoor.
    - Several targets (multi-target, all-to-all): raise ``n_targets``.

    %(digits_badnet)s
    %(scoring_example)s
    ['asr', 'cca']
    """
    search, targets = _reversed_triggers(
        badnet, X_clean, y_clean, n_targets=n_targets, steps=steps, random_state=random_state
    )
    return _scoring_from_search(
        search, targets, X_clean, y_clean, attack=attack, mask_budget=mask_budget, poisoned_label=poisoned_label
    )


def _scoring_from_search(search, targets, X_clean, y_clean, *, attack, mask_budget, poisoned_label):
    """The scorers of :func:`surrogate_backdoor_scoring` from a fitted trigger search."""
    from .metrics import backdoor_scoring, make_cca_scorer

    if attack == "fixed":
        X_surrogate, y_target = _stamped(search, targets, X_clean, y_clean)
        return backdoor_scoring(X_surrogate, y_target, poisoned_label=poisoned_label)
    rows = [int(np.flatnonzero(search.scanned_labels_ == target)[0]) for target in targets]
    adaptive = _AdaptiveASRScorer(
        targets=targets,
        masks=search.masks_[rows],
        patterns=search.patterns_[rows],
        budgets=_budgets(search, targets, mask_budget),
        pixel_range=search.pixel_range_,
        seed=int(search.random_state),
    )
    return {"cca": make_cca_scorer(poisoned_label=poisoned_label), "asr": adaptive}


def _budgets(search, targets, mask_budget):
    """Each target's cap on the mask norm: ``mask_budget`` of the way, on a log scale,
    from its reversed trigger's norm to the median norm of the reference labels."""
    norms = search.mask_norms_[targets]
    median = float(np.nanmedian(search.mask_norms_[search.reference_labels_]))
    return norms * np.maximum(median / norms, 1.0) ** mask_budget


class _AdaptiveASRScorer:
    """Minus the attack success on each candidate of triggers re-optimised against it.

    ``scorer(estimator, X, y)``: for each target, the reversed trigger is re-optimised
    on the estimator's Keras models (:func:`_attacked_models`) with the fold's images of
    other labels, its mask's L1 norm capped at the target's budget; the rate is the
    share of those images, stamped with it (with the model's trigger that fooled the
    estimator most), that ``estimator.predict`` sends to the target, pooled over the
    targets. Holds numpy arrays only, so it pickles.
    """

    def __init__(self, *, targets, masks, patterns, budgets, pixel_range, seed):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.masks = np.asarray(masks, dtype=np.float32)
        self.patterns = np.asarray(patterns, dtype=np.float32)
        self.budgets = np.asarray(budgets, dtype=np.float64)
        self.pixel_range = tuple(float(v) for v in pixel_range)
        self.seed = int(seed)

    def __call__(self, estimator, X, y=None, **kwargs):
        hits, total = self.hits_per_model(estimator, X, y)
        # 0.0 - rate rather than -rate: a perfect defense scores 0.0, not -0.0.
        return 0.0 - (float(hits.max(axis=1).sum()) / total if total else 0.0)

    def hits_per_model(self, estimator, X, y):
        """Images each attacked model's trigger sent to each target, and the images stamped.

        Returns an int array of shape (n_targets, n_attacked_models) (see
        :func:`_attacked_models`) and the number of images stamped per model.
        """
        from ._budgeted_trigger import budgeted_trigger
        from ._trigger_search import stamp
        from ._validation import check_images
        from .models import model_input_shape

        if y is None:
            raise ValueError(
                "The adaptive surrogate ASR needs the labels of the fold (the trigger is stamped on the images "
                "of other labels than the target): call scorer(estimator, X, y)."
            )
        models = _attacked_models(estimator)
        X = check_images(X, input_shape=model_input_shape(models[0]))
        y = np.asarray(y)
        hits = np.zeros((len(self.targets), len(models)), dtype=np.int64)
        total = 0
        for row, (target, mask, pattern, budget) in enumerate(
            zip(self.targets, self.masks, self.patterns, self.budgets)
        ):
            others = X[y != target]
            if len(others) == 0:
                continue
            # One attack per model whose label the estimator may answer with; the
            # estimator's own predictions say which trigger fooled it most. Each attack
            # keeps its re-optimised trigger alone, not the better of it and the reversed
            # one: on the CIFAR-10 network-in-network BadNet of the benchmarks the
            # reversed trigger fooled a repaired GoodNet on 33 % of a fold whose true ASR
            # was 0 %, and keeping the better of the two turned a right pick into a wrong one.
            for column, model in enumerate(models):
                found_mask, found_pattern = budgeted_trigger(
                    model, others, int(target), mask, pattern, budget=budget, pixel_range=self.pixel_range,
                    seed=self.seed,
                )
                predicted = np.asarray(estimator.predict(stamp(others, found_mask, found_pattern)))
                hits[row, column] = int(np.sum(predicted == target))
            total += len(others)
        return hits, total

    def __repr__(self):
        budgets = ", ".join(f"{budget:.3g}" for budget in self.budgets)
        return f"surrogate_backdoor_scoring(attack='adaptive', targets={self.targets.tolist()}, budgets=[{budgets}])"


def _attacked_models(estimator):
    """The Keras models an adaptive attack optimises against, found inside ``estimator``.

    One model, except for a GoodNet that may answer with its reference's label
    (``answer_`` "reference" or "confident"): its repaired model and its reference.
    A trigger that its repaired model resists can still pass through the reference's
    answer when the disagreement threshold lets it (a B' far less sure than B raises
    the threshold).
    """
    import keras

    if isinstance(estimator, keras.Model):
        return [estimator]
    repaired = getattr(estimator, "repaired_", None)
    if repaired is not None and getattr(estimator, "answer_", "repaired") != "repaired":
        return _attacked_models(repaired) + _attacked_models(estimator.reference_)
    # A GoodNet's repaired_ (None without one), then a repair's or a detector's model_,
    # then a GoodNet's badnet_ (a GoodNet with a detector only).
    for attribute in ("repaired_", "model_", "badnet_"):
        part = getattr(estimator, attribute, None)
        if part is not None:
            return _attacked_models(part)
    raise TypeError(
        f"attack='adaptive' re-optimises the trigger against the Keras model inside each candidate (its "
        f"model_, or a GoodNetClassifier's repaired_ or badnet_); a fitted {type(estimator).__name__} has none. "
        "Pass attack='fixed' to score every candidate on the fixed surrogate inputs."
    )


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
