"""What TensorFlow's C++ runtime writes on file descriptor 2 while it starts.

While ``tensorflow`` is imported, its runtime prints, before its logging is set up and
whatever ``TF_CPP_MIN_LOG_LEVEL`` says, "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR" and info lines such as the
oneDNN notice (TensorFlow 2.21: four lines). Python's ``sys.stderr`` never sees them:
C++ code writes to the file descriptor itself, so only redirecting the descriptor
catches them. :class:`CapturedStandardError` does that around an import;
:func:`without_start_up_lines` keeps everything but those lines.
"""

import os
import re
import sys
import tempfile

__all__ = ["CapturedStandardError", "without_start_up_lines"]

# absl's info and warning lines ("I0000 00:00:1796138058.894117    1269 port.cc:153] ..."),
# its notice that they come before its set-up, and the continuation line of the CPU
# feature notice. Error and fatal lines (E..., F...) are kept.
_START_UP_LINE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\.)$"
)


def without_start_up_lines(text):
    """``text`` without the lines TensorFlow's runtime prints at start-up (see above)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _START_UP_LINE.match(line.rstrip("\n")))


class CapturedStandardError:
    """Send file descriptor 2 to a temporary file; on exit write ``passed_on(text)`` back.

    When the block raises, everything captured is written back, unfiltered. Without a
    usable descriptor 2 (a process started without one) nothing is captured.
    """

    def __init__(self, passed_on):
        self.passed_on = passed_on

    def __enter__(self):
        self._saved = None
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            return self
        self._file = tempfile.TemporaryFile()
        self._saved = saved
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, exc_type, *exc_info):
        if self._saved is None:
            return False
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode(errors="replace")
        self._file.close()
        kept = text if exc_type is not None else self.passed_on(text)
        if kept and sys.stderr is not None:
            sys.stderr.write(kept)
            sys.stderr.flush()
        return False
