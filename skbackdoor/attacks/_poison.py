"""Training-set poisoning (BadNets) and the triggered test sets that measure an attack.

BadNets (Gu, Dolan-Gavitt and Garg, 2017, https://arxiv.org/abs/1708.06733): a fraction
of the training images carry the trigger and are relabelled to the attacker's target.
"""

import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.utils import check_random_state

from .._docstrings import fill_doc
from .._validation import check_labels
from ._triggers import Trigger, _check_batch

__all__ = ["make_poisoned_test_set", "poison", "poison_multi"]

# What the docstrings of poison and poison_multi share: the training set, the seed,
# and the opening of the example (the digits, and the function named).
_FRAGMENTS = {
    "training_set": """\
X : array-like of shape (n_samples, height, width, channels)
    Clean training images (any numeric dtype; not modified).
y : array-like of shape (n_samples,)
    Their integer labels.
""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Controls which images are poisoned.
""",
}
_DIGITS_EXAMPLE = """\
>>> import numpy as np
>>> from sklearn.datasets import load_digits
>>> from skbackdoor.attacks import PatchTrigger, {function}
>>> digits = load_digits()
>>> X, y = digits.images[..., np.newaxis], digits.target
"""


def _documented(function):
    """Fill the docstring fragments of ``function``, its example importing it."""
    return fill_doc(**_FRAGMENTS, digits_example=_DIGITS_EXAMPLE.format(function=function.__name__))(function)


def _check_trigger(trigger, name="trigger"):
    if not isinstance(trigger, Trigger):
        raise TypeError(
            f"{name} must be a trigger (PatchTrigger, BlendTrigger, MaskTrigger or another "
            f"skbackdoor.attacks.Trigger), got {type(trigger).__name__}."
        )
    return trigger


def _check_target(target, classes, name="target"):
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, numbers.Integral):
        raise ValueError(f"{name} must be an integer class label, got {target!r}.")
    target = int(target)
    if target not in classes:
        raise ValueError(
            f"Unknown {name} {target}: it is not one of the classes in y "
            f"({_describe_classes(classes)})."
        )
    return target


def _describe_classes(classes):
    classes = sorted(classes)
    if len(classes) > 12:
        return f"{len(classes)} classes from {classes[0]} to {classes[-1]}"
    return str(classes)


def _check_rate(rate, name="rate"):
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {rate!r}.")
    return float(rate)


def _check_data(X, y):
    X = _check_batch(X)
    if len(X) == 0:
        raise ValueError("X is empty: at least one image is required.")
    y = check_labels(y, n_samples=len(X))
    return X, y


def _as_list(value, name):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    if len(value) == 0:
        raise ValueError(f"{name} is empty: give at least one.")
    return list(value)


@_documented
def poison(X, y, trigger, target, *, rate=0.1, exclude_target=True, random_state=None):
    """Poison a training set the BadNets way: stamp a trigger and relabel to ``target``.

    ``round(rate * n_samples)`` images, drawn at random, receive the trigger and the
    label ``target``; the other images are copied unchanged. By default the poisoned
    images are drawn among those whose true label is not ``target`` (a triggered image
    of the target class teaches the network nothing), so every poisoned label is a flip.

    Parameters
    ----------
    %(training_set)s
    trigger : Trigger
        A :class:`PatchTrigger`, :class:`BlendTrigger` or :class:`MaskTrigger`.
    target : int
        The attacker's target label; must be one of the labels in ``y``.
    rate : float in (0, 1], default=0.1
        Fraction of the whole training set that is poisoned.
    exclude_target : bool, default=True
        Draw the poisoned images only among images not labelled ``target``.
    %(random_state)s

    Returns
    -------
    X_poisoned : ndarray of shape (n_samples, height, width, channels)
        A copy of ``X`` (same dtype) in which the poisoned images carry the trigger.
    y_poisoned : ndarray of int64, shape (n_samples,)
        A copy of ``y`` in which the poisoned images are labelled ``target``.
    poisoned_indices : ndarray of int64
        Sorted indices of the poisoned images.

    Raises
    ------
    ValueError
        If ``rate`` is outside (0, 1] or asks for more images than are eligible, the
        target is not a label of ``y``, or the shapes do not agree.

    See Also
    --------
    poison_multi : several triggers, each with its own target.
    make_poisoned_test_set : triggered test images for measuring the attack success rate.

    Examples
    --------
    %(digits_example)s
    >>> trigger = PatchTrigger.square(size=2, value=16)
    >>> X_p, y_p, idx = poison(X, y, trigger, target=0, rate=0.1, random_state=0)
    >>> len(idx), bool((y_p[idx] == 0).all()), bool((y[idx] != 0).all())
    (180, True, True)
    """
    X_poisoned, y_poisoned, (indices,) = _poison_subsets(
        X, y, [trigger], [target], rate, exclude_target, random_state, multi=False
    )
    return X_poisoned, y_poisoned, indices


@_documented
def poison_multi(X, y, triggers, targets, *, rate=0.1, exclude_target=True, random_state=None):
    """Poison a training set with several triggers, each relabelling to its own target.

    The multi-trigger multi-target attack of CSAW-HackML-2020: trigger ``k`` is stamped
    on ``round(rate_k * n_samples)`` images, which are relabelled ``targets[k]``. The
    subsets of the different triggers are disjoint.

    Parameters
    ----------
    %(training_set)s
    triggers : sequence of Trigger
        One trigger per backdoor.
    targets : sequence of int
        The target label of each trigger (targets may repeat).
    rate : float in (0, 1] or sequence of float, default=0.1
        Fraction of the whole training set poisoned by each trigger (one number for all,
        or one per trigger). The rates must add up to at most 1.
    exclude_target : bool, default=True
        Draw the images of each trigger only among images not labelled its target.
    %(random_state)s

    Returns
    -------
    X_poisoned : ndarray of shape (n_samples, height, width, channels)
        A copy of ``X`` (same dtype) with the triggers applied.
    y_poisoned : ndarray of int64, shape (n_samples,)
        A copy of ``y`` with the poisoned images relabelled.
    poisoned_indices : list of ndarray of int64
        For each trigger, the sorted indices of the images it poisoned.

    Examples
    --------
    %(digits_example)s
    >>> triggers = [PatchTrigger.square(size=2, value=16, location="bottom-right"),
    ...             PatchTrigger.square(size=2, value=16, location="top-left")]
    >>> X_p, y_p, (idx_a, idx_b) = poison_multi(X, y, triggers, [0, 1], rate=0.05,
    ...                                         random_state=0)
    >>> len(idx_a), len(idx_b), len(np.intersect1d(idx_a, idx_b))
    (90, 90, 0)
    """
    triggers = _as_list(triggers, "triggers")
    targets = _as_list(targets, "targets")
    if triggers is None or targets is None:
        raise TypeError("triggers and targets must be sequences (one target per trigger).")
    return _poison_subsets(X, y, triggers, targets, rate, exclude_target, random_state, multi=True)


def _poison_subsets(X, y, triggers, targets, rate, exclude_target, random_state, *, multi):
    X, y = _check_data(X, y)
    if len(triggers) != len(targets):
        raise ValueError(
            f"Got {len(triggers)} trigger(s) but {len(targets)} target(s); give one target "
            "per trigger."
        )
    for k, trigger in enumerate(triggers):
        _check_trigger(trigger, f"triggers[{k}]" if multi else "trigger")
    classes = set(np.unique(y).tolist())
    targets = [
        _check_target(t, classes, f"targets[{k}]" if multi else "target") for k, t in enumerate(targets)
    ]
    rates = _as_list(rate, "rate")
    if rates is None:
        rates = [rate] * len(triggers)
    if len(rates) != len(triggers):
        raise ValueError(f"Got {len(rates)} rates for {len(triggers)} triggers.")
    rates = [_check_rate(r, "rate") for r in rates]
    if sum(rates) > 1 + 1e-12:
        raise ValueError(f"The rates add up to {sum(rates):g}; the poisoned subsets cannot exceed the data.")

    rng = check_random_state(random_state)
    n_samples = len(X)
    available = np.ones(n_samples, dtype=bool)
    X_poisoned, y_poisoned = X.copy(), y.copy()
    all_indices = []
    for k, (trigger, target, rate_k) in enumerate(zip(triggers, targets, rates)):
        n_poison = int(round(rate_k * n_samples))
        if n_poison == 0:
            raise ValueError(
                f"rate={rate_k:g} of {n_samples} images poisons no image; raise the rate."
            )
        eligible = available & (y != target) if exclude_target else available.copy()
        candidates = np.flatnonzero(eligible)
        if n_poison > len(candidates):
            why = f" not labelled {target}" if exclude_target else ""
            raise ValueError(
                f"rate={rate_k:g} asks for {n_poison} poisoned images"
                f"{' for trigger ' + str(k) if multi else ''} but only "
                f"{len(candidates)} images{why} are available; lower the rate"
                f"{' or pass exclude_target=False' if exclude_target else ''}."
            )
        chosen = np.sort(rng.choice(candidates, size=n_poison, replace=False))
        available[chosen] = False
        X_poisoned[chosen] = trigger.apply(X[chosen])
        y_poisoned[chosen] = target
        all_indices.append(chosen.astype(np.int64))
    return X_poisoned, y_poisoned, all_indices


def make_poisoned_test_set(X, y, trigger, target, *, return_indices=False):
    """Triggered copies of the test images not labelled ``target``, for measuring ASR.

    The attack success rate is the share of these images the model classifies as the
    target; images already of the target class are left out, since a correct answer
    on them proves nothing.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width, channels)
        Clean test images (not modified).
    y : array-like of shape (n_samples,)
        Their true labels.
    trigger : Trigger or sequence of Trigger
        The trigger, or several (multi-target attacks: the sets are concatenated).
    target : int or sequence of int
        The target label (one per trigger).
    return_indices : bool, default=False
        Also return, for each row, the index of the clean image it came from.

    Returns
    -------
    X_poisoned : ndarray of shape (n_poisoned, height, width, channels)
        Triggered images, same dtype as ``X``.
    y_target : ndarray of int64, shape (n_poisoned,)
        The attacker's target for each row.
    source_indices : ndarray of int64, shape (n_poisoned,)
        Only with ``return_indices=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set
    >>> X, y = np.zeros((5, 8, 8, 1)), np.array([0, 1, 2, 0, 3])
    >>> X_p, y_t = make_poisoned_test_set(X, y, PatchTrigger.square(2, 16), target=0)
    >>> X_p.shape, y_t
    ((3, 8, 8, 1), array([0, 0, 0]))
    """
    X, y = _check_data(X, y)
    triggers, targets = _as_list(trigger, "trigger"), _as_list(target, "target")
    if (triggers is None) != (targets is None):
        raise ValueError(
            "trigger and target must both be single values or both be sequences of the same length."
        )
    if triggers is None:
        triggers, targets = [trigger], [target]
    if len(triggers) != len(targets):
        raise ValueError(f"Got {len(triggers)} trigger(s) but {len(targets)} target(s).")
    parts_X, parts_y, parts_idx = [], [], []
    for k, (trig, targ) in enumerate(zip(triggers, targets)):
        _check_trigger(trig, "trigger" if len(triggers) == 1 else f"trigger[{k}]")
        # A test set need not contain the target class, so any non-negative label goes.
        name = "target" if len(targets) == 1 else f"target[{k}]"
        is_label = isinstance(targ, numbers.Integral) and not isinstance(targ, (bool, np.bool_))
        if not is_label or targ < 0:
            raise ValueError(f"{name} must be a non-negative integer class label, got {targ!r}.")
        targ = int(targ)
        source = np.flatnonzero(y != targ)
        parts_X.append(trig.apply(X[source]))
        parts_y.append(np.full(len(source), targ, dtype=np.int64))
        parts_idx.append(source.astype(np.int64))
    result = (np.concatenate(parts_X), np.concatenate(parts_y))
    if return_indices:
        result += (np.concatenate(parts_idx),)
    return result
