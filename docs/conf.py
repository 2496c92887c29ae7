"""Sphinx configuration of the skbackdoor documentation.

Build (from the repository root, warnings are errors):

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery in ``examples/`` is executed during the build (tiny models on scikit-learn's
digits, a few minutes on 2 cores); set ``SKBACKDOOR_DOCS_NO_GALLERY=1`` to skip running it.
"""

import os
import re
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

# skbackdoor sets TensorFlow's log level and drops its start-up lines when it imports
# TensorFlow (_runtime, imported here before any example or autodoc page imports Keras);
# setting TF_CPP_MIN_LOG_LEVEL here would read as the user asking for TensorFlow's output.
import skbackdoor  # noqa: E402
import skbackdoor._runtime  # noqa: E402, F401

project = "skbackdoor"
author = "skbackdoor developers"
copyright = "skbackdoor developers"  # noqa: A001
release = skbackdoor.__version__
version = re.sub(r"(\.dev\d*|rc\d*)$", "", release)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_design",
    "benchmark_results",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
# The benchmark report pages include Markdown written by the benchmark scripts, whose
# heading levels the docs do not control.
suppress_warnings = ["myst.header"]

# -- API reference -----------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
# numpydoc lists the members itself; autosummary stubs for them are not generated.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- Gallery -----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(__init__|_helpers)\.py",
    "plot_gallery": "False" if os.environ.get("SKBACKDOOR_DOCS_NO_GALLERY") else "True",
    "doc_module": ("skbackdoor",),
    "backreferences_dir": "gen_modules/backreferences",
    "within_subsection_order": "gallery_order.WorkflowOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "show_memory": False,
    "min_reported_time": 1,
}

# -- MyST --------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# -- HTML --------------------------------------------------------------------------
# pydata-sphinx-theme, the scikit-learn ecosystem's theme: a wide content column, so code
# and gallery output are not cut at the right edge.
html_theme = "pydata_sphinx_theme"
html_title = f"skbackdoor {release}"
html_static_path = ["_static"]
html_css_files = ["skbackdoor.css"]
html_theme_options = {
    "icon_links": [
        {
            "name": "The CSAW-HackML-2020 challenge",
            "url": "https://github.com/csaw-hackml/CSAW-HackML-2020",
            "icon": "fa-brands fa-github",
        }
    ],
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # The gallery's code needs the width more than an "on this page" column.
    "secondary_sidebar_items": {
        **{page: ["page-toc"] for page in ("index", "choosing", "user_guide/*", "getting_started",
                                             "benchmarks", "api", "gen_modules/*", "security", "changelog")},
        "auto_examples/*": [],
    },
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {page: [] for page in ("index", "choosing", "getting_started", "benchmarks", "api", "changelog", "security")}
html_context = {"default_mode": "light"}

# -- Links to other projects' documentation ------------------------------------------
# No intersphinx: it needs each project's objects.inv at build time, and the docs build
# (in CI too) has no network access beyond package registries. The pages link to
# scikit-learn, Keras and NumPy with plain URLs instead.

# -- Hooks -------------------------------------------------------------------------
_SHAPE = re.compile(r"shape \(([^()]*)\)")
_TRAILING_UNDERSCORE = re.compile(r"(?<![\\`\w])([A-Za-z]\w*?)_(?=[,)\s]|$)")


def _escape_fitted_names_in_shapes(app, what, name, obj, options, lines):
    """``shape (n_channels_,)`` would read as an rST link target: escape the underscore."""
    for index, line in enumerate(lines):
        if "shape (" in line:
            lines[index] = _SHAPE.sub(
                lambda match: "shape (" + _TRAILING_UNDERSCORE.sub(r"\1\\_", match.group(1)) + ")", line
            )


def _skip_metadata_routing(app, what, name, obj, skip, options):
    """scikit-learn's generated ``set_*_request`` methods are not skbackdoor's API."""
    if name == "get_metadata_routing" or (name.startswith("set_") and name.endswith("_request")):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _escape_fitted_names_in_shapes)
    app.connect("autodoc-skip-member", _skip_metadata_routing)
