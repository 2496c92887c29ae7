"""``python -m skbackdoor.cli``: the same as the ``skbackdoor`` command."""

import sys

from . import main

sys.exit(main())
