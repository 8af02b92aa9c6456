"""Sphinx configuration of the ugvae documentation.

Built from the installed package, nothing of the checkout on the import path (`pip install -e
'.[docs]'` first; the notebooks' executed copies go beside the output, in docs/_build/):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The tutorials are notebooks stored with their outputs, rendered as they are (tests/docs/
test_tutorials.py executes them); the API reference is autodoc + napoleon over NumPy-style
docstrings; every settings dataclass gets its table of fields from its `setting()` declarations
(_ext/settings_table.py), so no bound is typed twice.
"""

import importlib.util
from pathlib import Path

import ugvae

project = "ugvae"
author = "the ugvae authors"
copyright = "2026, the ugvae authors"
release = ugvae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "results/data", "results/_tables"]
root_doc = "index"

# MyST: $...$ math, ::: fences, and anchors for links to a page's sections.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks render from their stored outputs: the tests execute them (a build never trains).
nb_execution_mode = "off"
nb_merge_streams = True

# NumPy-style docstrings only, one style everywhere.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_class_signature = "separated"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
# Annotations name torch and pyro classes that this site does not document: shown, not linked.
nitpicky = False
suppress_warnings = ["myst.header"]

# Flags are spelled `--flag` in help texts: no typographic dashes.
smartquotes = False

html_theme = "furo"
html_title = f"ugvae {release}"
html_static_path = ["_static"]


def setup(app):
    """This site's own extension (_ext/settings_table.py), loaded by path: the docs import the
    installed package and nothing else from the checkout."""
    path = Path(__file__).parent / "_ext" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("ugvae_docs_settings_table", path)
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    return extension.setup(app)
