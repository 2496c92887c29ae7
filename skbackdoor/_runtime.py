"""The one place that configures TensorFlow's process-wide settings.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it is first imported, so the
default has to be set before any ``import keras``: every skbackdoor module that imports
Keras imports this module first. A value the user exported is left alone.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
