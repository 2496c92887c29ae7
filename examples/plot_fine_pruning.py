"""
===================================================
Repair a BadNet: pruning, fine-tuning, fine-pruning
===================================================

Fine-Pruning (Liu, Dolan-Gavitt and Garg, RAID 2018) ranks the channels of a late
convolution by their mean activation on clean data, prunes the most dormant ones, where
a backdoor tends to hide, and then fine-tunes the pruned network on the clean data.
:class:`~skbackdoor.FinePruner` does both; ``epochs=0`` gives pruning alone and
``prune_fraction=0`` fine-tuning alone.

The paper's point is the *pruning-aware* attack: an attacker who expects pruning plants
the backdoor in channels clean inputs also use and leaves decoy channels dormant, so
that pruning removes the decoys and leaves the backdoor; fine-tuning after pruning is
what the paper proposes against it. Both BadNets are built here on scikit-learn's digits
in seconds. The network is tiny (32 channels in the pruned layer), so this shows the
mechanics and the figures; the :doc:`/benchmarks` page compares the defenses on
Fashion-MNIST.
"""

# %%
# Two BadNets: a plain one and a pruning-aware one
# ------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skbackdoor import FinePruner
from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, pruning_aware_badnet, train_badnet
from skbackdoor.metrics import attack_success_rate, clean_accuracy_score
from skbackdoor.models import predict_proba_batches
from skbackdoor.plotting import plot_pruning_curve

digits = load_digits()
X = digits.images[..., np.newaxis].astype("float32")
y = digits.target
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)
trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target=0)

badnets = {
    "plain BadNet": train_badnet(
        X_train, y_train, trigger=trigger, target=0, epochs=12, batch_size=32, random_state=0
    ),
    "pruning-aware BadNet": pruning_aware_badnet(
        X_train, y_train, trigger=trigger, target=0, clean_epochs=8, backdoor_epochs=8,
        batch_size=32, learning_rate=3e-3, random_state=0,
    ),
}


def cca_asr(predict):
    """Clean accuracy on the test digits and attack success on their triggered copies."""
    return (clean_accuracy_score(y_test, predict(X_test)),
            attack_success_rate(y_target, predict(X_poisoned)))


for name, badnet in badnets.items():
    cca, asr = cca_asr(lambda images: predict_proba_batches(badnet, images).argmax(axis=1))
    print(f"{name:21s} CCA {cca:.3f}  ASR {asr:.3f}")

# %%
# Pruning curves
# --------------
# ``pruning_curve_`` holds the clean validation accuracy for every number of channels
# pruned, measured in one pass (the activations up to the pruned layer are computed
# once); :func:`~skbackdoor.plotting.plot_pruning_curve` adds the attack success rate
# on triggered test digits (``pruning_sweep``), to show what pruning alone does to the
# backdoor, and marks the share the paper's stopping rule chose (4 points of accuracy
# lost). On the pruning-aware BadNet the most dormant half of the channels are the
# attacker's decoys, and the backdoor survives until nearly every channel is gone.
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
for ax, (name, badnet) in zip(axes, badnets.items()):
    sweep = FinePruner(model=badnet, max_accuracy_drop=0.04, epochs=0).fit(X_valid, y_valid)
    plot_pruning_curve(sweep, X_poisoned, y_target, title=f"{name}: pruning {sweep.layer_}", ax=ax)
    ax.legend(fontsize=8, loc="lower left")
fig.tight_layout()

# %%
# Pruning alone, fine-tuning alone, fine-pruning
# ----------------------------------------------
# The same estimator with three settings: prune until the validation accuracy drops by
# 4 points (the paper's stopping rule) without training, fine-tune without pruning, and
# both. In a network this small the backdoor shares its channels with clean features:
# pruning alone leaves it in place (the decoys of the pruning-aware BadNet are pruned
# first, as intended by the attacker), and fine-tuning at a learning rate of 0.01 is
# what removes most of it; pruning first helps on the plain BadNet.
settings = {
    "pruning only": dict(max_accuracy_drop=0.04, epochs=0),
    "fine-tuning only": dict(prune_fraction=0.0, epochs=10, learning_rate=1e-2),
    "fine-pruning": dict(max_accuracy_drop=0.04, epochs=10, learning_rate=1e-2),
}
results = {}
for badnet_name, badnet in badnets.items():
    for setting, params in settings.items():
        # FST without its clean-accuracy check: the settings, not the check, are compared here.
        pruner = FinePruner(model=badnet, batch_size=32, max_fine_tuning_drop=None, random_state=0, **params)
        pruner.fit(X_valid, y_valid)
        results[badnet_name, setting] = cca_asr(pruner.predict)
        print(f"{badnet_name:21s} {setting:17s} pruned {len(pruner.pruned_channels_):2d}/"
              f"{pruner.n_channels_} channels: CCA {results[badnet_name, setting][0]:.3f}, "
              f"ASR {results[badnet_name, setting][1]:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
width = 0.38
positions = np.arange(len(settings))
for ax, badnet_name in zip(axes, badnets):
    cca = [results[badnet_name, setting][0] for setting in settings]
    asr = [results[badnet_name, setting][1] for setting in settings]
    ax.bar(positions - width / 2, cca, width, label="CCA", color="tab:green")
    ax.bar(positions + width / 2, asr, width, label="ASR", color="tab:red")
    ax.set_xticks(positions, list(settings), fontsize=8)
    ax.set_title(badnet_name)
    ax.set_ylim(0, 1.05)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
