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
