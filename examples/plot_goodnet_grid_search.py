"""
=====================================================
Tune a GoodNet with GridSearchCV and save it (joblib)
=====================================================

A :class:`~skbackdoor.GoodNetClassifier` combines the BadNet B with a repaired network
B' (here a :class:`~skbackdoor.FinePruner`): it answers the label of B' where B and B'
agree, and the extra label ``N`` ("poisoned") where they disagree. How much to prune
and how fast to fine-tune trade clean accuracy (CCA) against attack success (ASR).

Cross-validation folds hold clean images only, so the ASR scorer of
:func:`~skbackdoor.metrics.backdoor_scoring` keeps its own triggered images, and
:func:`~skbackdoor.metrics.best_cca_under_asr` refits the candidate with the best CCA
among those whose ASR stays under a bound. The result is an ordinary fitted estimator
that ``joblib`` saves and reloads.
"""

# %%
# A BadNet and the defender's data
# --------------------------------
# A tiny CNN trained on scikit-learn's digits, backdoored with a 2x2 corner patch that
# sends any digit to 0. The defender holds 400 clean labelled digits; the attacker's
# trigger is known here only to measure the ASR.
import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from skbackdoor import FinePruner, GoodNetClassifier
from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet
from skbackdoor.metrics import (
    attack_success_rate,
    backdoor_scoring,
    best_cca_under_asr,
    clean_accuracy_score,
    false_rejection_rate,
)
from skbackdoor.models import predict_proba_batches
from skbackdoor.plotting import plot_cca_asr_heatmaps

digits = load_digits()
X = digits.images[..., np.newaxis].astype("float32")
y = digits.target
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)

trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
badnet = train_badnet(X_train, y_train, trigger=trigger, target=0, epochs=12, batch_size=32, random_state=0)
X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target=0)

# The scorer's own triggered images: made from the validation set, not the test set.
X_poisoned_valid, y_target_valid = make_poisoned_test_set(X_valid, y_valid, trigger, target=0)

badnet_labels = predict_proba_batches(badnet, X_test).argmax(axis=1)
print(f"BadNet B: CCA {clean_accuracy_score(y_test, badnet_labels):.3f}, "
      f"ASR {attack_success_rate(y_target, predict_proba_batches(badnet, X_poisoned).argmax(axis=1)):.3f}")

# %%
# Search the pruned fraction and the learning rate
# ------------------------------------------------
# Parameters of the repaired model are reached as ``repaired__<name>``. ``mean_test_asr``
# holds minus the ASR (scikit-learn maximises scores).
# The scorers measure CCA and ASR, so FinePruner's own clean-accuracy check is off.
goodnet = GoodNetClassifier(
    badnet=badnet, repaired=FinePruner(epochs=4, batch_size=32, max_fine_tuning_drop=None, random_state=0)
)
param_grid = {
    "repaired__prune_fraction": [0.0, 0.25, 0.5, 0.75],
    "repaired__learning_rate": [1e-3, 1e-2],
}
search = GridSearchCV(
    goodnet,
    param_grid,
    scoring=backdoor_scoring(X_poisoned_valid, y_target_valid),
    refit=best_cca_under_asr(max_asr=0.1),
    cv=2,
)
search.fit(X_valid, y_valid)
print("best:", search.best_params_)

# %%
# CCA and ASR of every candidate
# ------------------------------
# Each cell is the mean over the 2 folds. At the small learning rate the backdoor
# survives whatever share of channels is pruned; at the larger one fine-tuning removes
# most of it, and pruning dormant channels first helps, until pruning starts to cost
# clean accuracy. The refit rule picks the best CCA among candidates with ASR <= 10 %.
axes = plot_cca_asr_heatmaps(search.cv_results_, rows="learning_rate", columns="prune_fraction")
_ = axes[0].figure.suptitle("GoodNet G(B, B'): mean over 2 clean folds")
axes[0].figure.tight_layout()

# %%
# The chosen GoodNet on held-out data
# -----------------------------------
# Labels are ``0 .. 9`` or ``10`` (= ``poisoned_label_``). A triggered digit answered
# ``10`` is caught; one answered ``0`` is a successful attack.
best = search.best_estimator_
clean_labels = best.predict(X_test)
poisoned_labels = best.predict(X_poisoned)
print(f"GoodNet G: CCA {clean_accuracy_score(y_test, clean_labels):.3f}, "
      f"ASR {attack_success_rate(y_target, poisoned_labels):.3f}, "
      f"clean inputs flagged {false_rejection_rate(clean_labels, poisoned_label=best.poisoned_label_):.3f}, "
      f"triggered inputs flagged {np.mean(poisoned_labels == best.poisoned_label_):.3f}")

# %%
# Save and reload
# ---------------
# The fitted GoodNet, its Keras models included, round-trips through ``joblib``. Load
# only files you made yourself: a joblib file can run code when loaded.
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "goodnet.joblib"
    joblib.dump(best, path)
    reloaded = joblib.load(path)
    print("same predictions after reload:", np.array_equal(reloaded.predict(X_test), clean_labels))
plt.show()
