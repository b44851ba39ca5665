"""Sphinx configuration of the spherax docs (built offline: `make -C docs html`)."""

import os
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # spherax and experiments from this checkout

project = "spherax"
author = "The spherax authors"
copyright = "the spherax authors; Apache-2.0"
release = version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# API pages: one stub per documented name, signatures as written.
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the Args sections say the types; aliases such as
# optax.ScalarOrSchedule would otherwise be expanded into long unions
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # NamedTuple "Attributes:" as fields, not duplicate entries

# Notebooks are rendered from their stored outputs; nothing is executed.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# MathJax is loaded by the reader's browser; the build itself needs no network
# (no intersphinx, nothing fetched).
exclude_patterns = ["_build", "notebooks/README.md", "**.ipynb_checkpoints"]

html_theme = "furo"
html_title = f"spherax {release}"

# The docs import the package: keep jax on the CPU with one device.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
