"""Sphinx configuration for the trio_tlsretry documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (or ``nox -s docs``).
The build works offline: intersphinx is off unless ``TLSRETRY_DOCS_INTERSPHINX=1``
is set, and without it references to Python's and Trio's objects render as plain
literals instead of links (``nitpicky`` stays off so they do not warn).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

# Import the package from this checkout even when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_tlsretry

# -- Project -----------------------------------------------------------------

project = "trio_tlsretry"
author = "trio_tlsretry developers"
copyright = "trio_tlsretry developers"
version = release = trio_tlsretry.__version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
]

if os.environ.get("TLSRETRY_DOCS_INTERSPHINX") == "1":
    # Needs network access to fetch the inventories; a failed fetch is a
    # warning, which -W turns into an error. Off by default for that reason.
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_timeout = 10
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "trio": ("https://trio.readthedocs.io/en/stable", None),
    }

nitpicky = False
exclude_patterns = ["_build"]
default_role = "py:obj"
primary_domain = "py"

# Google-style docstrings (``Args:``, ``Raises:``, ``Attributes:``).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# -- HTML ----------------------------------------------------------------------

html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {
    "description": "A cancellation-safe TLS stream for Trio",
    "fixed_sidebar": False,
}

# -- Optional API entries --------------------------------------------------------
#
# ``api.rst`` documents some names only if the package exports them, so the
# -W build passes in a checkout where they do not exist (yet). A block written
#
#     .. if-exported:: NAME [NAME ...]
#
#        indented reST, which may contain section titles
#
# is replaced before parsing by its dedented content when ``trio_tlsretry``
# exports every NAME, and by blank lines otherwise. It is done on the source
# text, not as a directive, so titles inside land at the right section level.
# Line numbers are preserved, so warnings point at the right line.

_IF_EXPORTED = re.compile(r"^\.\. if-exported::[ \t]+(?P<names>\S.*)$")
_logger = logging.getLogger(__name__)


def _expand_if_exported(text: str, docname: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _IF_EXPORTED.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        names = match["names"].split()
        missing = [name for name in names if not hasattr(trio_tlsretry, name)]
        block_start = i + 1
        i = block_start
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
            i += 1
        block = lines[block_start:i]
        out.append("")
        if missing:
            _logger.info(
                "%s: left out a block because trio_tlsretry does not export %s",
                docname,
                ", ".join(missing),
            )
            out.extend("" for _ in block)
        else:
            out.extend(line[3:] for line in block)
    return "\n".join(out)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    source[0] = _expand_if_exported(source[0], docname)


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", _on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
