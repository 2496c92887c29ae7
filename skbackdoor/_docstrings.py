"""Docstring fragments: text that several docstrings share, written once.

A docstring marks where a fragment goes with a line holding only ``%(name)s``, and
:func:`fill_doc` puts the fragment there, indented like the mark. The fragments live
next to what they document (the loading parameters in :mod:`skbackdoor._base`, the
drawing parameters in :mod:`skbackdoor.plotting`, ...), like the parameter
constraints. Only whole marked lines are replaced: any other ``%`` of a docstring is
left alone. This module imports nothing heavy (:mod:`skbackdoor.plotting` uses it).
"""

import inspect
import re
import textwrap

__all__ = ["SCORER_FRAGMENTS", "fill_doc"]

_MARK = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def fill_doc(**fragments):
    """Decorator: replace each ``%(name)s`` line of a docstring by ``fragments[name]``.

    A fragment is written without its indentation (``textwrap.dedent`` removes any)
    and takes the mark's. On a class, the docstrings of the methods defined in its
    body are filled too. One decorator can offer more fragments than a docstring uses
    (a module's shared set), but a mark with no fragment is an error, so that a
    misspelt mark fails at import rather than reaching the documentation.
    """

    def fill_one(documented):
        def replace(match):
            name = match["name"]
            if name not in fragments:
                raise ValueError(
                    f"The docstring of {documented.__qualname__} marks an unknown fragment {match[0].strip()!r}."
                )
            return textwrap.indent(textwrap.dedent(fragments[name]).strip("\n"), match["indent"])

        if documented.__doc__:
            documented.__doc__ = _MARK.sub(replace, documented.__doc__)

    def fill(documented):
        fill_one(documented)
        if isinstance(documented, type):
            for member in vars(documented).values():
                function = getattr(member, "__func__", member)  # classmethod, staticmethod
                if inspect.isfunction(function):
                    fill_one(function)
        return documented

    return fill


# The parameters that skbackdoor.metrics and its clean-data-only scorers
# (skbackdoor._surrogate, which metrics imports) document alike.
SCORER_FRAGMENTS = {
    "X_poisoned": """\
X_poisoned : array-like of shape (n_poisoned, height, width, channels)
    Inputs carrying the trigger.
""",
    "detector_poisoned_label": """\
poisoned_label : int, default=-1
    ``-1`` for outlier detectors, ``N`` for a GoodNet with ``N`` classes.
""",
    "returns_scoring": """\
Returns
-------
scoring : dict of str to callable
""",
}
