"""
=========================================
Detect poisoned inputs at run time: STRIP
=========================================

STRIP (Gao et al., ACSAC 2019) blends each incoming image with a few clean images and
looks at the entropy of the model's predictions: a clean image loses its class in the
blend (high entropy), an image carrying the trigger keeps pulling the model to the
attacker's target (low entropy). :class:`~skbackdoor.STRIPDetector` is a scikit-learn
outlier detector: ``fit`` on clean images sets the threshold for a chosen false
rejection rate (FRR), ``predict`` returns ``+1`` (clean) or ``-1`` (poisoned).

The BadNet here is a tiny CNN trained on scikit-learn's digits with a 2x2 white patch in
the bottom-right corner that sends any digit to class 0.
"""

# %%
# Train a BadNet
# --------------
# :func:`~skbackdoor.attacks.train_badnet` poisons 10 % of the training images with the
# trigger (relabelled to the target 0) and trains a small CNN on raw pixel values
# 0..16. A defender would instead load the untrusted model with
# :func:`~skbackdoor.models.load_badnet`.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skbackdoor import STRIPDetector
from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet
from skbackdoor.metrics import (
    attack_success_rate,
    clean_accuracy_score,
    false_acceptance_rate,
    false_rejection_rate,
)
from skbackdoor.models import predict_proba_batches
from skbackdoor.plotting import plot_entropy_histogram

digits = load_digits()
X = digits.images[..., np.newaxis].astype("float32")  # (n, 8, 8, 1), pixels 0..16
y = digits.target
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)

trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
badnet = train_badnet(X_train, y_train, trigger=trigger, target=0, epochs=12, batch_size=32, random_state=0)
X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target=0)

clean_accuracy = clean_accuracy_score(y_test, predict_proba_batches(badnet, X_test).argmax(axis=1))
attack_success = attack_success_rate(y_target, predict_proba_batches(badnet, X_poisoned).argmax(axis=1))
print(f"BadNet: clean accuracy {clean_accuracy:.3f}, attack success rate {attack_success:.3f}")

# %%
# Fit the detector on clean images
# --------------------------------
# The clean validation set is the pool of overlays and sets the threshold ``offset_``:
# the 5 % empirical quantile of the clean entropies, taken at rank ``frr * (n + 1)`` so
# that about 5 % of new clean inputs fall below it (``threshold="gaussian"`` is the
# paper's normal fit, which misses on skewed entropies). With ``sequential=True`` (the
# default) ``predict`` stops blending an input once its decision is settled.
detector = STRIPDetector(model=badnet, n_overlays=20, frr=0.05, random_state=0)
detector.fit(X_valid)
print(f"threshold (offset_) = {detector.offset_:.3f} bits")

# %%
# Flag the test inputs
# --------------------
# ``predict`` returns -1 for inputs judged poisoned. FRR is the share of clean inputs
# flagged; FAR is the share of poisoned inputs let through.
frr = false_rejection_rate(detector.predict(X_test))
far = false_acceptance_rate(detector.predict(X_poisoned))
print(f"FRR on clean test images: {frr:.3f}   FAR on triggered images: {far:.3f}")

# %%
# Entropy histograms
# ------------------
# The figure of the STRIP paper: triggered inputs pile up near zero entropy, left of
# the threshold. Every input's mean over all 20 blends (``sequential=False``).
full = clone(detector).set_params(sequential=False).fit(X_valid)
fig, ax = plt.subplots(figsize=(6, 3.5))
plot_entropy_histogram(
    full.score_samples(X_test),
    full.score_samples(X_poisoned),
    threshold=detector.offset_,
    title="STRIP on a digits BadNet (2x2 patch, target 0)",
    ax=ax,
)
fig.tight_layout()
plt.show()
