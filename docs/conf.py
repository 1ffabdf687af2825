"""Sphinx configuration for the trio_tlsretry documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (or ``nox -s docs``).
The build works offline: intersphinx is off unless ``TLSRETRY_DOCS_INTERSPHINX=1``
is set, and without it references to Python's and Trio's objects render as plain
literals instead of links (``nitpicky`` stays off so they do not warn).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sphinx.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Sphinx itself depends on tomli before Python 3.11
    import tomli as tomllib

# Import the package from this checkout even when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_tlsretry
from trio_tlsretry import _busy_poll, _cli, _closing, _engine, _listener, _stream

ROOT = Path(__file__).resolve().parent.parent

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

# -- Numbers from the code ---------------------------------------------------------
#
# Sizes, timeouts and the list of extras are read from the package and from
# pyproject.toml, so the pages cannot state a value the code does not have.
# Use them as |name| in any page; they cannot be used inside literals.


def _size(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:g} ms"
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")


# What each optional extra of pyproject.toml is for. The build fails when the
# two disagree, so a new extra cannot go undocumented.
_EXTRA_PURPOSES = {
    "testing": "throw-away certificates and test helpers for your own tests, see :doc:`testing`",
    "test": "everything the library's own test suite needs",
    "docs": "what building this documentation needs",
    "dev": "``test`` and ``docs`` plus the linters, the type checker and ``nox``",
    "bench": "what the benchmarks need (``testing`` included), see :doc:`performance`",
}
_NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

with (ROOT / "pyproject.toml").open("rb") as _pyproject:
    _project = tomllib.load(_pyproject)["project"]
_extras = list(_project["optional-dependencies"])
# The lowest versions pyproject.toml declares ("trio>=0.27", ">=3.10").
(_trio_floor,) = [
    requirement.split(">=", 1)[1]
    for requirement in _project["dependencies"]
    if requirement.startswith("trio>=")
]
_python_floor = _project["requires-python"].removeprefix(">=")
if set(_extras) != set(_EXTRA_PURPOSES):
    raise ConfigError(
        f"docs/conf.py describes the extras {sorted(_EXTRA_PURPOSES)}, "
        f"but pyproject.toml has {sorted(_extras)}: update _EXTRA_PURPOSES"
    )

_serve_defaults = _cli._parser().parse_args(["serve", "--port", "0"])
_demo_defaults = _cli._parser().parse_args(["demo"])

SUBSTITUTIONS = {
    "write_chunk": _size(_engine.DEFAULT_WRITE_CHUNK),
    "plaintext_buffer_limit": _size(_engine.PLAINTEXT_BUFFER_LIMIT),
    "receive_size": _size(_stream.DEFAULT_RECEIVE_SIZE),
    "transport_receive_size": _size(_stream.TRANSPORT_RECEIVE_SIZE),
    "top_up_read_size": _size(_stream.TOP_UP_READ_SIZE),
    "alert_timeout": _duration(_stream.ALERT_TIMEOUT),
    "handshake_timeout": _duration(_listener.DEFAULT_HANDSHAKE_TIMEOUT),
    "close_drain_limit": _size(_stream.CLOSE_DRAIN_LIMIT),
    "linger_seconds": _duration(_closing.DEFAULT_LINGER_SECONDS),
    "linger_bytes": _size(_closing.DEFAULT_LINGER_BYTES),
    "busy_poll": _duration(_busy_poll.DEFAULT_BUSY_POLL),
    "default_grace": _duration(_listener.DEFAULT_GRACE),
    "close_timeout": _duration(_listener.DEFAULT_CLOSE_TIMEOUT),
    "cli_close_timeout": _duration(_cli._CLOSE_TIMEOUT),
    "serve_grace": _duration(_cli.DEFAULT_SERVE_GRACE),
    # Defaults of the command's options, as its argument parser has them.
    "cli_handshake_timeout": _duration(_serve_defaults.handshake_timeout),
    "demo_size": _size(_demo_defaults.size),
    "extras_count": _NUMBER_WORDS[len(_extras)] if len(_extras) < 10 else str(len(_extras)),
    "trio_floor": _trio_floor,
    "python_floor": _python_floor,
    "extras": "; ".join(f"``{name}`` ({_EXTRA_PURPOSES[name]})" for name in _extras),
}

# -- Numbers from recorded runs ----------------------------------------------------
#
# Figures the pages quote from a benchmark run are read from the run's file in
# benchmarks/results/ (the tables are generated into the pages by the
# benchmark scripts themselves); which commit a run measured, and when, comes
# from benchmarks/_docs.py. tests/test_docs_numbers.py checks both.

sys.path.insert(0, str(ROOT / "benchmarks"))
import _docs as _benchmark_docs  # noqa: E402

_RESULTS = ROOT / "benchmarks" / "results"
_RUNS = _benchmark_docs.recorded_runs()


def _load_json(name: str) -> dict:
    import json

    return json.loads((_RESULTS / name).read_text(encoding="utf-8"))


_latest = _load_json("latest.json")
_summary = _latest["summary"]
_ceiling = _latest["meta"]["crypto_ceiling_mb_s"]
_after_transfer = _load_json("connections.json")["results"]["after_transfer"]


def _grouped(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


RECORDED = {
    "bench_date": _RUNS["latest.json"]["date"],
    "bench_commit": f"``{_RUNS['latest.json']['commit']}``",
    "connections_date": _RUNS["connections.json"]["date"],
    "cancellation_date": _RUNS["cancellation.txt"]["date"],
    "cancellation_commit": f"``{_RUNS['cancellation.txt']['commit']}``",
    "aes_encrypt": f"{_grouped(_ceiling['encrypt'])} MB/s",
    "aes_decrypt": f"{_grouped(_ceiling['decrypt'])} MB/s",
    # The cipher's own time for one write chunk at the measured ceiling.
    "aes_chunk_time": f"{_engine.DEFAULT_WRITE_CHUNK / (_ceiling['encrypt'] * 1e6) * 1e6:.0f} µs",
    "pingpong_cpu_tlsretry": f"{_summary['pingpong_cpu']['tlsretry']['median']:.1f} µs",
    "pingpong_cpu_trio": f"{_summary['pingpong_cpu']['trio']['median']:.1f} µs",
    "handshake_cpu_tlsretry": f"{_grouped(_summary['handshake_cpu']['tlsretry']['median'])} µs",
    "handshake_cpu_trio": f"{_grouped(_summary['handshake_cpu']['trio']['median'])} µs",
    "sslstream_onecall_rss": f"{_summary['onecall_rss']['trio']['median']:.0f} MiB",
    "sslstream_after_transfer": f"{_grouped(_after_transfer['trio']['kib_per_connection'])} KiB",
}
SUBSTITUTIONS.update(RECORDED)

rst_prolog = "\n".join(f".. |{name}| replace:: {text}" for name, text in SUBSTITUTIONS.items())
