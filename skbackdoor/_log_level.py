"""TensorFlow's C++ log level: the one environment variable skbackdoor sets.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it is first imported, so a level
has to be set before any ``import tensorflow`` or ``import keras``. This module imports
neither, unlike :mod:`skbackdoor._runtime` (which sets the library's level on import,
then imports TensorFlow at once), so the
command line can ask for its quieter level before anything imports TensorFlow. The
first level set wins, and a level the user exported is left alone.
"""

import os

__all__ = ["LIBRARY_LOG_LEVEL", "LOG_LEVEL_VARIABLE", "QUIET_LOG_LEVEL", "default_tensorflow_log_level"]

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
LIBRARY_LOG_LEVEL = "2"  # TensorFlow's C++ info and warning lines hidden
QUIET_LOG_LEVEL = "3"  # its error lines too: the command line without --verbose


def default_tensorflow_log_level(level):
    """Set ``TF_CPP_MIN_LOG_LEVEL`` to ``level`` unless it is set already (by the user,
    or by an earlier call); it takes effect only before TensorFlow is imported."""
    os.environ.setdefault(LOG_LEVEL_VARIABLE, level)
