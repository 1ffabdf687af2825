"""The contract lives on one page, docs/cancellation.rst, next to its tests.

The pages a user reads first (README, index, quickstart, migrating) link to
it instead of restating its promises, the close promises live on
docs/closing.rst alone, every test the contract names exists, and the user
pages keep the stream's internals out (docs/design.rst is where they live).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONTRACT = DOCS / "cancellation.rst"
CLOSING = DOCS / "closing.rst"
#: Pages whose readers are users of the library, not readers of its code.
USER_PAGES = sorted(set(DOCS.glob("*.rst")) - {DOCS / "design.rst"})


def words(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


def defined_tests() -> dict[str, set[str]]:
    """``{test file name: names of the test functions it defines}``."""
    return {
        path.name: set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
        for path in (ROOT / "tests").glob("test_*.py")
    }


def test_every_test_the_contract_names_exists() -> None:
    tests = defined_tests()
    everywhere = set().union(*tests.values())
    text = CONTRACT.read_text(encoding="utf-8") + CLOSING.read_text(encoding="utf-8")
    named = re.findall(r"``(?:(test_\w+\.py)::)?(test_\w+?)(?:\[[^\]]*\])?``", text)
    assert len(named) > 20
    for module, name in named:
        if name.endswith("_"):  # a family: ``test_lingering_close_bounds_*``
            continue
        if module:
            assert name in tests.get(module, set()), f"{module}::{name}"
        else:
            assert name in everywhere, name


def test_the_first_pages_link_to_the_contract() -> None:
    assert "(docs/cancellation.rst)" in words(ROOT / "README.md")
    for page in ("index", "quickstart", "migrating", "design", "closing"):
        assert ":doc:`cancellation`" in words(DOCS / f"{page}.rst"), page


def test_each_promise_is_stated_on_one_page() -> None:
    # Phrases of the contract's promises; a page that states them again
    # would drift from it, as the issue-24 copies did.
    promises = {
        "every public async method is a checkpoint": CONTRACT,
        "resumes at the exact byte": CONTRACT,
        "copied whole, once": CONTRACT,
        "never hangs past your deadline": CONTRACT,
        "reads whatever the kernel already holds": CLOSING,
    }
    readme = ROOT / "README.md"
    for phrase, home in promises.items():
        assert phrase in words(home).lower(), (phrase, home.name)
        for page in [readme, *DOCS.glob("*.rst")]:
            if page not in (home, DOCS / "design.rst", DOCS / "testing.rst"):
                assert phrase not in words(page).lower(), (phrase, page.name)


def test_the_contract_covers_close_by_linking_not_restating() -> None:
    contract = words(CONTRACT)
    assert ":doc:`closing`" in contract
    closing = words(CLOSING)
    assert "promises of :doc:`cancellation`" in closing
    assert "test_every_public_async_method_is_a_checkpoint" not in closing


def test_user_pages_keep_the_internals_out() -> None:
    for page in [ROOT / "README.md", *USER_PAGES]:
        for internal in ("_drive_pinned", "_flush_or_receive", "_ensure_handshake", "_flush``"):
            assert internal not in words(page), (internal, page.name)
