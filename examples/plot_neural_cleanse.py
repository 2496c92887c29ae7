"""
================================================================
Find the target and reverse-engineer the trigger: Neural Cleanse
================================================================

Neural Cleanse (Wang et al., IEEE S&P 2019) asks, for every label ``k``: what is the
smallest patch (a mask ``m`` and a pattern ``p``) that sends clean images to ``k``? A
backdoor is a shortcut, so the attacker's target needs a much smaller mask than the
other labels, which shows as an outlier among the mask norms (a robust z-score, the
anomaly index). :class:`~skbackdoor.NeuralCleanse` then repairs the model by
fine-tuning it on clean images of which some carry the reversed trigger and keep
their true label ("unlearning").
"""

# %%
# A digits BadNet
# ---------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skbackdoor import NeuralCleanse
from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet
from skbackdoor.metrics import attack_success_rate, clean_accuracy_score
from skbackdoor.models import predict_proba_batches
from skbackdoor.plotting import plot_anomaly_index, plot_reversed_triggers

digits = load_digits()
X = digits.images[..., np.newaxis].astype("float32")
y = digits.target
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)
trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
badnet = train_badnet(X_train, y_train, trigger=trigger, target=0, epochs=12, batch_size=32, random_state=0)
X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target=0)

labels = predict_proba_batches(badnet, X_test).argmax(axis=1)
print(f"BadNet: CCA {clean_accuracy_score(y_test, labels):.3f}, "
      f"ASR {attack_success_rate(y_target, predict_proba_batches(badnet, X_poisoned).argmax(axis=1)):.3f}")

# %%
# Scan every label
# ----------------
# All ten labels are optimised together (one network call per step for all of them).
# The defender does not know the target: it is what the scan finds.
cleanse = NeuralCleanse(model=badnet, steps=300, epochs=5, learning_rate=1e-2, random_state=0)
cleanse.fit(X_valid, y_valid)
print("flagged labels:", cleanse.flagged_labels_)
print("anomaly index: ", np.round(cleanse.anomaly_index_, 2))

# %%
# The anomaly index of each label
# -------------------------------
# Labels whose (log) mask norm is an outlier below the median, with an index above
# the threshold (2.33 for 10 labels: a 10 % chance of any false flag on a clean net),
# are flagged.
_ = plot_anomaly_index(cleanse.anomaly_index_, threshold=cleanse.anomaly_threshold_, flagged=cleanse.flagged_labels_,
                       title="Neural Cleanse on a digits BadNet (target 0)")

# %%
# The reversed triggers
# ---------------------
# Smallest masks first. The flagged label's trigger is a small bright spot in the
# bottom-right corner, where the real 2x2 patch is.
axes = plot_reversed_triggers(cleanse.masks_, cleanse.patterns_, labels=cleanse.scanned_labels_,
                              flagged=cleanse.flagged_labels_, pixel_range=cleanse.pixel_range_,
                              max_labels=6)
axes[0, 0].figure.tight_layout()

# %%
# After the repair
# ----------------
# The reversed trigger's shift of the head's input is projected out of the head (six
# rounds, searching again for what still works), then the network is fine-tuned on the
# clean images, a fifth of them carrying the reversed trigger. ``predict`` uses the
# repaired network.
print(f"repaired: CCA {clean_accuracy_score(y_test, cleanse.predict(X_test)):.3f}, "
      f"ASR {attack_success_rate(y_target, cleanse.predict(X_poisoned)):.3f}")
plt.show()
