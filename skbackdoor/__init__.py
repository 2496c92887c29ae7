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

__version__ = "0.1.0.dev0"

from ._fine_pruning import FinePruner  # noqa: E402
from ._goodnet import GoodNetClassifier  # noqa: E402
from ._neural_cleanse import NeuralCleanse  # noqa: E402
from ._strip import STRIPDetector  # noqa: E402

__all__ = ["FinePruner", "GoodNetClassifier", "NeuralCleanse", "STRIPDetector", "__version__"]
