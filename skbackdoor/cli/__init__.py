"""The ``skbackdoor`` console command: scan, repair, predict and evaluate from the shell.

``skbackdoor scan`` tells whether a model looks backdoored and towards which label
(Neural Cleanse); ``skbackdoor repair`` makes a GoodNet from it and clean data;
``skbackdoor predict`` prints one label per image in the CSAW-HackML submission format:
the class in ``0 .. N-1``, or ``N`` when the defense judges the image poisoned;
``skbackdoor evaluate`` prints the clean accuracy and attack success rate.

The command is quiet: TensorFlow's log lines are hidden unless ``--verbose`` is given
(see :mod:`skbackdoor.cli._quiet`), and ``--help`` and
``--version`` answer without importing TensorFlow.

Security: ``--defense`` loads a joblib file, which is as unsafe as ``pickle.load``:
it can run any code. Only load files you made or trust.
"""

import sys

from ._inputs import CommandError
from ._parser import build_parser

__all__ = ["CommandError", "main"]

# Errors that a user's input causes: one line on stderr, exit status 2. Anything else is
# a bug and keeps its traceback.
_USER_ERRORS = (CommandError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, TypeError)


def main(argv=None):
    """Entry point of the ``skbackdoor`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ._quiet import import_tensorflow_quietly, import_tensorflow_verbosely

    if args.verbose:
        import_tensorflow_verbosely()
    else:
        import_tensorflow_quietly()
    from ._commands import COMMANDS

    try:
        COMMANDS[args.command](args)
    except _USER_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skbackdoor: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skbackdoor: interrupted", file=sys.stderr)
        return 130
    return 0
