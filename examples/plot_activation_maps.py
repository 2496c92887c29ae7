"""
======================================================
Where the backdoor lives: activations before and after
======================================================

Fine-Pruning rests on an observation: the channels a trigger excites are often ones
clean inputs leave quiet. This example looks inside a digits BadNet with
:func:`~skbackdoor.models.layer_activations`: the mean activation of every channel of
the last convolution on clean and on triggered inputs, and the spatial map of every
channel with :func:`~skbackdoor.plotting.plot_activation_maps`, before and after
:class:`~skbackdoor.FinePruner` repairs the network (the CSAW-HackML-2020 reports drew
the same maps for the DeepID face BadNets).
"""

# %%
# A BadNet and its repair
# -----------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skbackdoor import FinePruner
from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, train_badnet
from skbackdoor.models import conv_layer_names, layer_activations
from skbackdoor.plotting import plot_activation_maps

digits = load_digits()
X = digits.images[..., np.newaxis].astype("float32")
y = digits.target
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(X_rest, y_rest, train_size=400, stratify=y_rest, random_state=0)
trigger = PatchTrigger.square(size=2, value=16, location="bottom-right")
badnet = train_badnet(X_train, y_train, trigger=trigger, target=0, epochs=12, batch_size=32, random_state=0)
X_poisoned, _, source = make_poisoned_test_set(X_test, y_test, trigger, target=0, return_indices=True)
X_clean = X_test[source]  # the same digits without the trigger

layer = conv_layer_names(badnet)[-1]
# FST without its clean-accuracy check (max_fine_tuning_drop=None): on 400 clean 8x8
# digits the check would keep the head, and this example is about the channels.
pruner = FinePruner(model=badnet, layer=layer, max_accuracy_drop=0.04, epochs=10, learning_rate=1e-2,
                    batch_size=32, max_fine_tuning_drop=None, random_state=0).fit(X_valid, y_valid)
print(f"pruned {len(pruner.pruned_channels_)} of the {pruner.n_channels_} channels of {layer!r}")

# %%
# Mean activation of each channel
# -------------------------------
# Channels are ordered as Fine-Pruning ranks them: by mean activation on the clean
# validation set, most dormant first. Pruned channels are silent after the repair.
networks = {"BadNet B": badnet, "fine-pruned B'": pruner.model_}
activations = {}  # name -> (clean, triggered), each of shape (n, height, width, channels)
for name, network in networks.items():
    both = layer_activations(network, np.concatenate([X_clean, X_poisoned]), layer)
    activations[name] = (both[: len(X_clean)], both[len(X_clean):])

order = pruner.pruning_order_
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), sharey=True, layout="constrained")
for ax, (name, (clean_maps, poisoned_maps)) in zip(axes, activations.items()):
    clean = clean_maps.mean(axis=(0, 1, 2))[order]
    poisoned = poisoned_maps.mean(axis=(0, 1, 2))[order]
    positions = np.arange(len(order))
    ax.bar(positions - 0.2, clean, 0.4, label="clean inputs", color="tab:blue")
    ax.bar(positions + 0.2, poisoned, 0.4, label="triggered inputs", color="tab:red")
    n_pruned = len(pruner.pruned_channels_)
    ax.axvspan(-0.5, n_pruned - 0.5, color="0.85", zorder=0, label="pruned")
    ax.set_title(name)
    ax.set_xticks(positions[::2], order[::2], fontsize=7)
fig.supxlabel(f"channel of {layer!r} (number), ranked by clean activation, most dormant first", fontsize=9)
axes[0].set_ylabel("mean activation")
_ = axes[0].legend(fontsize=8)

# %%
# Activation maps of every channel
# --------------------------------
# :func:`~skbackdoor.plotting.plot_activation_maps` draws the mean activation map of
# each channel of the pruned layer, averaged over the given images, for the BadNet
# and for the repaired network on one colour scale; pruned channels are outlined in
# red. On triggered digits, the channels that light up in the bottom-right corner
# (where the trigger is) in the BadNet are the backdoor's; after fine-pruning they are
# pruned or quiet.
axes = plot_activation_maps(pruner, X_poisoned)
_ = axes[0].figure.suptitle("triggered test digits")

# %%
# The same channels on the clean versions of those digits, for comparison.
axes = plot_activation_maps(pruner, X_clean)
_ = axes[0].figure.suptitle("clean test digits")
plt.show()
