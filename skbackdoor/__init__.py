"""scikit-learn compatible defenses against backdoored Keras image classifiers.

Estimators
----------
STRIPDetector
    Run-time detection of trojaned inputs by superimposition (Gao et al., ACSAC 2019).
FinePruner
    Repair by pruning dormant channels and fine-tuning (Liu et al., RAID 2018).
GoodNetClassifier
    The CSAW-HackML classifier with N+1 labels (N = "poisoned").
NeuralCleanse
    Finds the backdoored label, reverse-engineers its trigger and unlearns it
    (Wang et al., IEEE S&P 2019).
"""

import importlib

__version__ = "0.1.0.dev0"

# The estimators import Keras, hence TensorFlow (seconds). They are imported on first
# use, so that ``import skbackdoor`` (and ``skbackdoor --help`` / ``--version``) stays fast.
_ESTIMATOR_MODULES = {
    "FinePruner": "._fine_pruning",
    "GoodNetClassifier": "._goodnet",
    "NeuralCleanse": "._neural_cleanse",
    "STRIPDetector": "._strip",
}

__all__ = ["FinePruner", "GoodNetClassifier", "NeuralCleanse", "STRIPDetector", "__version__"]


def __getattr__(name):
    module = _ESTIMATOR_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'skbackdoor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
