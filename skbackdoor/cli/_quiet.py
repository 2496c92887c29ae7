"""The command line's quiet start: TensorFlow imported with its log lines silenced.

``TF_CPP_MIN_LOG_LEVEL=2`` (skbackdoor's default) does not silence everything: while
TensorFlow is imported its C++ runtime prints, before its logging is set up and whatever
the level, "WARNING: All log messages before absl::InitializeLog() is called are written
to STDERR" and the oneDNN notice (twice each), and the grappler graph optimiser logs
errors ("... tfg_optimizer_hook.cc:135] ... has an empty op name") that are harmless but
look like a crash. So, unless ``--verbose``:

- ``TF_CPP_MIN_LOG_LEVEL=3`` (C++ errors hidden too), unless the user exported a level;
  set (by :mod:`skbackdoor._log_level`) before :mod:`skbackdoor._runtime` is imported,
  since that module may import TensorFlow at once (to size its thread pools in a worker);
- file descriptor 2 (where C and C++ code write directly) sent to a temporary file while
  ``_runtime``, TensorFlow and Keras are imported, and replayed if an import fails;
- TensorFlow's Python logger (the retracing warnings) and absl's set to errors only.

Numerical results are unchanged. Once TensorFlow is imported (e.g. ``main`` called from
Python), only the Python loggers are quieted.
"""

import logging
import os
import sys
import tempfile

from .._log_level import QUIET_LOG_LEVEL, default_tensorflow_log_level

__all__ = ["import_tensorflow_quietly"]


def import_tensorflow_quietly():
    """Import skbackdoor's runtime settings, TensorFlow and Keras without their log lines."""
    if "tensorflow" not in sys.modules:
        default_tensorflow_log_level(QUIET_LOG_LEVEL)
        with _StandardErrorCaptured() as captured:
            try:
                from .. import _runtime  # noqa: F401  (may import TensorFlow)
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
            except BaseException:
                captured.replay = True
                raise
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


class _StandardErrorCaptured:
    """Send file descriptor 2 to a temporary file; write it back to stderr if ``replay``."""

    replay = False

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if self.replay:
            self._file.seek(0)
            sys.stderr.write(self._file.read().decode(errors="replace"))
        self._file.close()
        return False
