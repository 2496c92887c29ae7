"""Backdoor attacks, to build BadNets the defenses can be tested against.

- Triggers: :class:`PatchTrigger` (BadNets patch), :class:`BlendTrigger` (blended
  pattern), :class:`MaskTrigger` (an image pasted through a mask, e.g. sunglasses);
- Poisoning: :func:`poison`, :func:`poison_multi` (multi-trigger multi-target) and
  :func:`make_poisoned_test_set` (triggered test images for the attack success rate);
- Training: :func:`small_cnn`, :func:`train_badnet`, and :func:`pruning_aware_badnet`
  (Liu et al.'s attack that hides the backdoor from Fine-Pruning).
"""

from ._poison import make_poisoned_test_set, poison, poison_multi
from ._pruning_aware import pruning_aware_badnet
from ._train import small_cnn, train_badnet
from ._triggers import BlendTrigger, MaskTrigger, PatchTrigger, Trigger

__all__ = [
    "BlendTrigger",
    "MaskTrigger",
    "PatchTrigger",
    "Trigger",
    "make_poisoned_test_set",
    "poison",
    "poison_multi",
    "pruning_aware_badnet",
    "small_cnn",
    "train_badnet",
]
