"""The one place that configures TensorFlow's process-wide settings.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it is first imported, so the
default has to be set before any ``import keras``: every skbackdoor module that imports
Keras imports this module first. A value the user exported is left alone.
"""

import os

# Read before the default below is set: whether the user chose a log level themselves.
_EXPORTED_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ----------------------------------------------------------- quiet command line


def import_tensorflow_quietly():
    """Import TensorFlow and Keras with their log lines silenced (the command line's default).

    ``TF_CPP_MIN_LOG_LEVEL=2`` does not silence everything: while TensorFlow is imported
    its C++ runtime prints, before its logging is set up and whatever the level, "WARNING:
    All log messages before absl::InitializeLog() is called are written to STDERR" and
    the oneDNN notice (twice each), and the grappler graph optimiser logs errors
    ("... tfg_optimizer_hook.cc:135] ... has an empty op name") that are harmless but
    look like a crash. So: level 3 (C++ errors too) unless the user exported a level, the
    standard error file descriptor sent to a temporary file while TensorFlow and Keras
    are imported (replayed if the import fails), and TensorFlow's Python logger (the
    retracing warnings) and absl's set to errors only. Does nothing once TensorFlow is
    imported, except the Python loggers. Numerical results are unchanged.
    """
    import sys

    if "tensorflow" not in sys.modules:
        if _EXPORTED_LOG_LEVEL is None:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        with _standard_error_captured() as captured:
            try:
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
            except BaseException:
                captured.replay = True
                raise
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


class _standard_error_captured:
    """Send file descriptor 2 (C and C++ code write there directly) to a temporary file."""

    replay = False

    def __enter__(self):
        import sys
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        import sys

        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if self.replay:
            self._file.seek(0)
            sys.stderr.write(self._file.read().decode(errors="replace"))
        self._file.close()
        return False
