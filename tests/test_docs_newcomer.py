"""A newcomer's path, followed as written: README -> quickstart -> server page.

Every shell command those pages show (README's ``sh`` block, the ``$ ``
lines of the console blocks of docs/quickstart.rst, docs/server.rst and the
``serve`` section of docs/cli.rst) is read from the page and either run, in
order, in a fresh virtual environment and a copy of this checkout, or named
in ``NOT_RUN`` with the reason; a command the test does not know fails it,
so a page cannot gain a step nobody has tried. The environment is new but
sees this one's packages through a ``.pth`` file (as in
``test_testing_user_project.py``), and pip is told through its environment
variables to stay offline (``PIP_NO_INDEX``) and to build with the hatchling
it finds (``PIP_NO_BUILD_ISOLATION``), so the commands themselves are the
pages' own.

The servers of the pages listen on port 8443, as written; a lock file keeps
two runs of this test (CI runs the suite on several Pythons at once) from
starting them at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_testing_user_project import make_environment

ROOT = Path(__file__).resolve().parent.parent
PORT = 8443

#: Commands of the pages that this test does not run, and why.
NOT_RUN = {
    # README command 2 is the test suite itself: CI runs it as written.
    "python -m pip install -e '.[test]' && python -m pytest -q": "the suite itself",
    # A self-signed alternative to trustme; the test follows the trustme path.
    "openssl req -x509": "the alternative to python -m trustme",
    # cli.rst's serve without --cert (a throw-away certificate) needs only
    # cryptography and is run by tests/test_server_cli.py.
    "trio-tlsretry serve --port 8443": "run by tests/test_server_cli.py",
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def console_commands(page: str, section: str | None = None) -> list[str]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    if section is not None:
        text = text.split(section, 1)[1].split("\n``", 1)[0]
    return re.findall(r"^   \$ (.*)$", text, re.MULTILINE)


def the_path() -> list[tuple[str, str]]:
    """``(page, command)`` in the order a newcomer meets them."""
    return [
        *(("README.md", command) for command in readme_commands()),
        *(("quickstart.rst", command) for command in console_commands("quickstart.rst")),
        *(("server.rst", command) for command in console_commands("server.rst")),
        *(
            ("cli.rst", command)
            for command in console_commands("cli.rst", "``serve``: a TLS echo or discard server")
        ),
    ]


def skipped(command: str) -> bool:
    return any(
        command == known or (known.endswith(" -x509") and command.startswith(known))
        for known in NOT_RUN
    ) or (command.startswith("trio-tlsretry serve --port 8443") and "--cert" not in command)


@contextlib.contextmanager
def port_lock() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / f"trio-tlsretry-docs-{PORT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def interruptible() -> None:
    """In the child: Ctrl-C (SIGINT) interrupts, as in the newcomer's terminal.

    A test run started in the background by a non-interactive shell (CI's
    parallel lanes) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the page's server would not stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_listening(process: subprocess.Popen[str], deadline: float) -> None:
    """Until something accepts on localhost:8443 (the program prints nothing)."""
    while True:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("localhost", PORT), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start listening"
            time.sleep(0.02)  # a readiness poll, bounded by the deadline


def test_every_command_on_the_path_is_run_or_named() -> None:
    path = the_path()
    assert len(path) >= 8, path
    known = {"python -m pip install -e '.[testing]' && python -m trio_tlsretry demo"}
    for _page, command in path:
        assert (
            skipped(command)
            or command in known
            or command.startswith(("pip install", "python -m trustme", "mv ", "python server_"))
            or command.startswith(("echo hello | trio-tlsretry connect", "trio-tlsretry serve"))
        ), f"a command this test does not know: {command!r}"


def test_a_newcomer_follows_readme_quickstart_and_server_page(tmp_path: Path) -> None:
    python = make_environment(tmp_path / "venv")
    bin_dir = python.parent
    # No pip in the new environment's bin/ (it was made --without-pip): a
    # "pip" on PATH must not be another environment's.
    (bin_dir / "pip").write_text(
        f"#!{python}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n"
    )
    (bin_dir / "pip").chmod(0o755)
    checkout = tmp_path / "trio_tlsretry"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(".git", "build", "_build", "__pycache__", ".nox", ".ci-venv"),
    )
    work = tmp_path / "work"  # where the server page's files go
    work.mkdir()
    shutil.copy(ROOT / "docs" / "examples" / "server_smallest.py", work)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("PYTEST_ADDOPTS", None)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(bin_dir.parent),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )

    def shell(command: str, cwd: Path) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result.stdout

    server: subprocess.Popen[str] | None = None
    ran: list[str] = []
    with port_lock():
        try:
            for page, command in the_path():
                if skipped(command):
                    continue
                ran.append(command)
                cwd = checkout if page in ("README.md", "quickstart.rst") else work
                if command.endswith(" &"):  # the server of the page, in the background
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec {command[:-2]}"],
                        cwd=cwd,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        preexec_fn=interruptible,
                    )
                    wait_listening(server, time.monotonic() + 30)
                elif command.startswith("trio-tlsretry serve"):
                    serve = subprocess.Popen(
                        ["bash", "-c", f"exec {command}"],
                        cwd=cwd,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    try:
                        assert serve.stdout is not None
                        assert "listening on" in serve.stdout.readline()
                        echoed = shell(
                            "echo hello | trio-tlsretry connect localhost:8443 --cafile client.pem",
                            cwd,
                        )
                        assert echoed == "hello\n"
                    finally:
                        serve.send_signal(signal.SIGTERM)
                        assert serve.wait(timeout=30) == 0, serve.communicate()
                else:
                    output = shell(command, cwd)
                    if "trio_tlsretry demo" in command:
                        assert "delivered exactly once" in output, output
                    if command.startswith("echo hello | trio-tlsretry connect"):
                        assert output == "hello\n"
                        assert server is not None
                        server.send_signal(signal.SIGINT)
                        server.wait(timeout=30)
                        server = None
        finally:
            if server is not None:
                server.kill()
                server.wait()
    where = shell("python -c 'import trio_tlsretry; print(trio_tlsretry.__file__)'", work)
    # quickstart's "pip install ." replaced README's editable install.
    assert where.startswith(str(bin_dir.parent)), where
    assert any(command.startswith("python -m trustme") for command in ran)
    assert any("--cert cert.pem" in command for command in ran)
    assert len(ran) >= 9, ran


@pytest.fixture(autouse=True)
def _needs_hatchling() -> None:
    pytest.importorskip("hatchling")
    pytest.importorskip("trustme")
