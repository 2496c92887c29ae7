"""Docstring fragments (skbackdoor._docstrings.fill_doc) and the docstrings filled with them."""

import importlib
import inspect
import pkgutil

import pytest

import skbackdoor
from skbackdoor._docstrings import fill_doc


def test_fill_doc_replaces_marked_lines_with_the_fragment_indented():
    @fill_doc(shared="x : int\n    The x.\n", unused="not marked anywhere")
    def function():
        """Do it.

        Parameters
        ----------
        %(shared)s
        y : int
            100% of y, %(not a mark)s.
        """

    assert function.__doc__.splitlines()[4:8] == [
        "        x : int",
        "            The x.",
        "        y : int",
        "            100% of y, %(not a mark)s.",
    ]


def test_fill_doc_fills_a_class_and_its_methods():
    @fill_doc(part="filled")
    class Documented:
        """Class.

        %(part)s
        """

        def method(self):
            """Method.

            %(part)s
            """

        @classmethod
        def build(cls):
            """Constructor.

            %(part)s
            """

    for documented in (Documented, Documented.method, Documented.build):
        assert "%(" not in documented.__doc__ and "filled" in documented.__doc__


def test_an_unknown_mark_fails_at_decoration():
    def function():
        """Doc.

        %(misspelt)s
        """

    with pytest.raises(ValueError, match="unknown fragment '%\\(misspelt\\)s'"):
        fill_doc(known="text")(function)


def _public_docstrings():
    packages = pkgutil.walk_packages(skbackdoor.__path__, "skbackdoor.")
    modules = ["skbackdoor"] + [info.name for info in packages if not info.name.endswith("__main__")]
    for name in modules:
        module = importlib.import_module(name)
        for attribute, member in vars(module).items():
            if getattr(member, "__module__", None) != name:
                continue
            if not (inspect.isclass(member) or inspect.isfunction(member)):
                continue
            yield f"{name}.{attribute}", member.__doc__
            if inspect.isclass(member):
                for method_name, method in vars(member).items():
                    method = getattr(method, "__func__", method)
                    if inspect.isfunction(method):
                        yield f"{name}.{attribute}.{method_name}", method.__doc__


def test_no_docstring_keeps_an_unfilled_mark():
    unfilled = [name for name, doc in _public_docstrings() if doc and "\n" in doc and _has_mark(doc)]
    assert unfilled == []


def _has_mark(doc):
    return any(line.strip().startswith("%(") and line.strip().endswith(")s") for line in doc.splitlines())
