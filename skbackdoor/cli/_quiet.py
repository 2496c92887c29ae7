"""The command line's quiet start: TensorFlow imported with its log lines silenced.

``TF_CPP_MIN_LOG_LEVEL=2`` (skbackdoor's default) does not silence everything: while
TensorFlow is imported its C++ runtime prints, before its logging is set up and whatever
the level, "WARNING: All log messages before absl::InitializeLog() is called are written
to STDERR" and the oneDNN notice (twice each), and the grappler graph optimiser logs
errors ("... tfg_optimizer_hook.cc:135] ... has an empty op name") that are harmless but
look like a crash. So, unless ``--verbose``:

- ``TF_CPP_MIN_LOG_LEVEL=3`` (C++ errors hidden too), unless the user exported a level;
  set (by :mod:`skbackdoor._log_level`) before :mod:`skbackdoor._runtime` is imported,
  since that module imports TensorFlow;
- file descriptor 2 (where C and C++ code write directly) sent to a temporary file while
  ``_runtime``, TensorFlow and Keras are imported (:mod:`skbackdoor._stderr`), and
  replayed if an import fails;
- TensorFlow's Python logger (the retracing warnings) and absl's set to errors only.

Numerical results are unchanged. Once TensorFlow is imported (e.g. ``main`` called from
Python), only the Python loggers are quieted. With ``--verbose`` the level is the
library's (unless exported), set before :mod:`skbackdoor._runtime` is imported, so that
TensorFlow's start-up lines are not filtered either.
"""

import logging
import sys

from .._log_level import LIBRARY_LOG_LEVEL, QUIET_LOG_LEVEL, default_tensorflow_log_level
from .._stderr import CapturedStandardError

__all__ = ["import_tensorflow_quietly", "import_tensorflow_verbosely"]


def import_tensorflow_quietly():
    """Import skbackdoor's runtime settings, TensorFlow and Keras without their log lines."""
    if "tensorflow" not in sys.modules:
        default_tensorflow_log_level(QUIET_LOG_LEVEL)
        # Nothing is written back unless an import fails.
        with CapturedStandardError(passed_on=lambda text: ""):
            from .. import _runtime  # noqa: F401  (imports TensorFlow)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def import_tensorflow_verbosely():
    """``--verbose``: import TensorFlow with every line it prints at start-up."""
    if "tensorflow" not in sys.modules:
        default_tensorflow_log_level(LIBRARY_LOG_LEVEL)  # a level set before _runtime: nothing filtered
        from .. import _runtime  # noqa: F401  (imports TensorFlow)
