"""Development tasks: ``nox`` runs tests, lint, typecheck and docs.

Run one session with ``nox -s NAME``; extra arguments after ``--`` go to the
tool (for example ``nox -s tests -- -k renegotiation``). ``nox -s bench`` runs
the benchmarks and is not part of the default set.

``nox -s tests`` runs the suite on every supported Python (``tests-3.10``,
``tests-3.11``, ...) that this machine has, and skips the others; ``nox -s
oldest`` runs it once with the lowest versions of trio and the test tools
that pyproject.toml declares, on the oldest supported Python.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["tests", "oldest", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PACKAGE = "trio_tlsretry"

# One list for nox, .ci/run and the classifiers (tests/test_packaging.py checks them).
PYTHON_VERSIONS = [
    line.strip()
    for line in (Path(__file__).parent / ".ci" / "python-versions").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def _select_pyenv_pythons() -> None:
    """Make pyenv's shims run every installed supported Python, not only the selected one.

    A pyenv shim such as ``python3.12`` fails with "command not found" unless
    3.12 is among the selected versions, and nox then skips ``tests-3.12``
    although the interpreter is installed. The versions already selected come
    first, so ``python3`` stays what it was. An explicit ``PYENV_VERSION``
    is left alone.
    """
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    try:
        selected = subprocess.run(
            ["pyenv", "version-name"], capture_output=True, text=True, check=True
        ).stdout.strip()
        installed = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return
    names = selected.split(":")
    for version in PYTHON_VERSIONS:
        # Plain releases only (3.12.1, not 3.13.0t or a virtualenv); the newest patch level.
        patches = [
            int(name.rsplit(".", 1)[1])
            for name in installed
            if re.fullmatch(re.escape(version) + r"\.\d+", name)
        ]
        if patches:
            names.append(f"{version}.{max(patches)}")
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(names))


_select_pyenv_pythons()


@nox.session(python=PYTHON_VERSIONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on each supported Python this machine has."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=PYTHON_VERSIONS[0])
def oldest(session: nox.Session) -> None:
    """Run the test suite with the lowest versions pyproject.toml declares.

    pip has no "lowest versions" resolution, so every ``name>=X`` of the
    package's dependencies and of its ``test`` extra (trio, trustme, pytest,
    pytest-trio, ...) is pinned to ``name==X`` in a constraints file
    (``.ci/lowest_constraints.py``); what they depend on resolves as usual.
    On the oldest supported Python. ``.ci/run`` runs the same in a lane.
    """
    floors = runpy.run_path(str(Path(__file__).parent / ".ci" / "lowest_constraints.py"))
    constraints = Path(session.create_tmp()) / "lowest-constraints.txt"
    pins = floors["floors"](["test"])
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    session.install("-c", str(constraints), "-e", ".[test]")
    session.run("python", "-m", "pip", "list")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting (changes nothing)."""
    session.install("ruff")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    # The test extra brings trustme and pytest, which trio_tlsretry.testing imports.
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "-p", PACKAGE, *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML documentation; any Sphinx warning fails the build."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-E",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (slow; not in the default set)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
