"""The test files of docs/testing.rst, run as part of this suite.

The page shows ``docs/examples/testing_*.py`` whole (imports included), as a
user would save them: ``testing_app.py`` as ``greeting.py``, the application
under test, and ``testing_test_pairs.py``, ``testing_test_network.py``,
``testing_test_faults.py`` and ``testing_test_retry.py`` as test modules
that import it. Their tests are collected here, under the same fixtures, so
the page cannot show a test that does not pass. ``test_testing_user_project.py``
also runs them in a fresh virtual environment, as a project of its own.
"""

from __future__ import annotations

import sys

from streamtools import load_docs_example

# The test files import the application as ``greeting``, as in a user's project.
sys.modules["greeting"] = load_docs_example("testing_app")

for _name in (
    "testing_test_pairs",
    "testing_test_network",
    "testing_test_faults",
    "testing_test_retry",
):
    _module = load_docs_example(_name)
    for _attribute, _value in vars(_module).items():
        if _attribute.startswith("test_"):
            globals()[f"{_attribute}__{_name.removeprefix('testing_test_')}"] = _value
