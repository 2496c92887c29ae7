"""Shared fixtures: real bundled data, a tiny patch BadNet trained in seconds, CSAW weights."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from sklearn.datasets import load_digits

CSAW_DIR = Path(__file__).resolve().parents[2] / "shared" / "csaw"


@pytest.fixture(scope="session")
def csaw_dir():
    """Folder of the real CSAW-HackML BadNet weights; skips the test when absent."""
    if not (CSAW_DIR / "sunglasses_bd_weights.h5").exists():
        pytest.skip(f"real CSAW weights not found in {CSAW_DIR} (they live in ../shared/csaw)")
    return CSAW_DIR


@pytest.fixture(scope="session")
def digits():
    """sklearn's bundled 8x8 digits as images (n, 8, 8, 1), raw values 0..16, int labels."""
    data = load_digits()
    X = data.images.astype(np.float32)[..., np.newaxis]
    return X, data.target.astype(np.int64)


def _digits_net(digits, *, poisoned):
    """A tiny CNN trained on digits, with (``poisoned``) or without a 2x2 corner patch backdoor."""
    from types import SimpleNamespace

    from sklearn.model_selection import train_test_split

    import keras

    from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, small_cnn, train_badnet

    X, y = digits
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)
    trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
    target = 0
    if poisoned:
        model = train_badnet(
            X_train, y_train, trigger=trigger, target=target, poison_rate=0.1,
            n_classes=10, epochs=12, batch_size=32, random_state=0,
        )
    else:
        keras.utils.set_random_seed(0)
        model = small_cnn((8, 8, 1), 10, input_scale=1 / 16)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(X_train, y_train, epochs=12, batch_size=32, verbose=0)
    X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target)
    return SimpleNamespace(
        model=model, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val,
        X_test=X_test, y_test=y_test, X_poisoned=X_poisoned, y_target=y_target,
        trigger=trigger, target=target,
    )


@pytest.fixture(scope="session")
def patch_badnet(digits):
    """A tiny digits CNN backdoored with a 2x2 bottom-right patch of value 16, target 0.

    Attributes: model, X_train/y_train (clean training images), X_val/y_val (the
    defender's clean validation set), X_test/y_test, X_poisoned/y_target (triggered
    non-target test images and their target), trigger, target.
    """
    return _digits_net(digits, poisoned=True)


@pytest.fixture(scope="session")
def clean_net(digits):
    """The same network and data as ``patch_badnet``, trained without poisoning."""
    return _digits_net(digits, poisoned=False)
