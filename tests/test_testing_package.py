"""The ``trio_tlsretry.testing`` package as a whole (``testing/__init__.py``,
``testing/_requires_trustme.py``): what it exports is documented, and it is
optional: the library never imports it, and without trustme it says what to
install.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamtools import run_python

import trio_tlsretry.testing

DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.rst"


def test_testing_page_documents_every_export() -> None:
    page = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto\w+:: (\w+)", page, re.MULTILINE))
    assert documented == set(trio_tlsretry.testing.__all__)


def test_importing_the_library_does_not_import_trustme() -> None:
    result = run_python(
        "import sys, trio_tlsretry\n"
        "assert 'trustme' not in sys.modules, 'trustme imported'\n"
        "assert 'trio_tlsretry.testing' not in sys.modules, 'testing imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_testing_without_trustme_says_what_to_install() -> None:
    result = run_python("import trio_tlsretry.testing\n", block_trustme=True)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: trio_tlsretry.testing needs trustme")
    assert "pip install 'trio-tlsretry[testing]'" in last_line
    # One clean message: no chained "During handling..." traceback.
    assert "During handling" not in result.stderr
    # The library itself still imports.
    result = run_python("import trio_tlsretry\n", block_trustme=True)
    assert result.returncode == 0, result.stderr
