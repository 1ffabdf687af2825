"""Development tasks: ``nox`` runs tests, lint, typecheck and docs.

Run one session with ``nox -s NAME``; extra arguments after ``--`` go to the
tool (for example ``nox -s tests -- -k renegotiation``). ``nox -s bench`` runs
the benchmarks and is not part of the default set.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PACKAGE = "trio_tlsretry"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
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
