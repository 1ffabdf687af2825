"""Print a pip constraints file that pins every dependency to its declared floor.

pip has no "lowest versions" resolution, so the oldest-dependencies run
(``nox -s oldest``, the ``oldest`` lane of ``.ci/run``) installs the package
with this file as ``-c``: each requirement of ``[project].dependencies`` and of
the extras named on the command line (default: ``test``) that says
``name>=X`` becomes ``name==X``. Extras that name the package itself
(``trio-tlsretry[testing]``) are followed. A requirement without a ``>=``
floor is an error: nothing would say which version is the oldest supported.

Usage: ``python .ci/lowest_constraints.py [EXTRA ...] > constraints.txt``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - a fresh 3.10 virtualenv has pip's copy of tomli
    try:
        import tomli as tomllib
    except ImportError:
        from pip._vendor import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)$")


def floors(extras: list[str], pyproject: Path = PYPROJECT) -> dict[str, str]:
    """``{distribution name: lowest declared version}`` for the package and ``extras``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own = project["name"]
    optional = project.get("optional-dependencies", {})
    pinned: dict[str, str] = {}
    todo = [("dependencies", requirement) for requirement in project["dependencies"]]
    seen: set[str] = set()
    pending = list(extras)
    while todo or pending:
        if not todo:
            extra = pending.pop(0)
            if extra in seen:
                continue
            seen.add(extra)
            todo = [(extra, requirement) for requirement in optional[extra]]
            continue
        where, requirement = todo.pop(0)
        requirement = requirement.split("#")[0].strip()
        self_extras = re.fullmatch(re.escape(own) + r"\[([^\]]*)\]", requirement)
        if self_extras:
            pending.extend(name.strip() for name in self_extras.group(1).split(","))
            continue
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {where}: {requirement!r} has no '>=' floor")
        name, _extras, version = match.groups()
        name = name.lower()
        # Named twice (an extra and the package itself): the higher floor holds.
        if name not in pinned or _key(version) > _key(pinned[name]):
            pinned[name] = version
    return pinned


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def main(argv: list[str]) -> None:
    for name, version in sorted(floors(argv or ["test"]).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1:])
