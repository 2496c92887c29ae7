"""The Fashion-MNIST BadNets the defense benchmarks share, trained once and cached.

Four attacks on the same small CNN: a 4x4 white patch, a blended noise pattern, two
triggers with two targets (multi-target), and the pruning-aware attack of Liu et al.
Trained models are cached as ``.keras`` files in ``benchmarks/.cache`` (keyed by the
settings, see ``_harness.cached_model``), so a second benchmark in the same run does not
train them again.
"""

import functools
from types import SimpleNamespace

import numpy as np

import _harness

CACHE = _harness.CACHE
SEED = 0
ATTACKS = ("patch", "blend", "multi-target", "pruning-aware")


def triggers():
    from skbackdoor.attacks import BlendTrigger, PatchTrigger

    return {
        "patch": ([PatchTrigger.square(size=4, value=255, location="bottom-right")], [0]),
        "blend": ([BlendTrigger.random_noise((28, 28, 1), alpha=0.15, random_state=SEED)], [0]),
        "multi-target": (
            [PatchTrigger.square(size=4, value=255, location="bottom-right"),
             PatchTrigger.checkerboard(size=4, location="top-left")],
            [0, 1],
        ),
        "pruning-aware": ([PatchTrigger.square(size=4, value=255, location="bottom-right")], [0]),
    }


@functools.lru_cache(maxsize=1)
def split(n_validation=5000):
    """Training set (60k), the defender's clean validation set and the held-out test set.

    The defender's validation images come from the Fashion-MNIST test split (never seen
    in training); the rest of the test split is the evaluation set.
    """
    from skbackdoor.datasets import load_fashion_mnist

    X_train, y_train = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    order = np.random.default_rng(SEED).permutation(len(X_test))
    val, held_out = order[:n_validation], order[n_validation:]
    return (X_train.astype(np.float32), y_train, X_test[val].astype(np.float32), y_test[val],
            X_test[held_out].astype(np.float32), y_test[held_out])


def training_set(quick):
    """The BadNets' training images: all 60,000, or the first 15,000 in quick mode."""
    X_train, y_train = split()[:2]
    return (X_train[:15000], y_train[:15000]) if quick else (X_train, y_train)


def epochs(quick):
    return 2 if quick else 6


def badnet(attack, *, quick=False, log=_harness.log):
    """Return a namespace with the BadNet of ``attack`` and its evaluation data."""
    from skbackdoor.attacks import make_poisoned_test_set, pruning_aware_badnet, train_badnet

    _, _, X_val, y_val, X_test, y_test = split()
    trigger_list, targets = triggers()[attack]

    def train():
        X_train, y_train = training_set(quick)
        n_epochs = epochs(quick)
        common = dict(poison_rate=0.1, batch_size=128, learning_rate=2e-3, random_state=SEED, n_classes=10)
        if attack == "pruning-aware":
            return pruning_aware_badnet(
                X_train, y_train, trigger=trigger_list[0], target=targets[0],
                clean_epochs=n_epochs, backdoor_epochs=max(1, n_epochs // 2), **common,
            )
        trigger = trigger_list if len(trigger_list) > 1 else trigger_list[0]
        target = targets if len(targets) > 1 else targets[0]
        return train_badnet(X_train, y_train, trigger=trigger, target=target, epochs=n_epochs, **common)

    model = _harness.cached_model(f"{attack}-{'quick' if quick else 'full'}-seed{SEED}", train, log=log)
    X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger_list, targets)
    return SimpleNamespace(
        name=attack, model=model, X_val=X_val, y_val=y_val, X_test=X_test, y_test=y_test,
        X_poisoned=X_poisoned, y_target=y_target,
    )
