"""scikit-learn compatible defenses against backdoored Keras image classifiers."""

__version__ = "0.1.0.dev0"
