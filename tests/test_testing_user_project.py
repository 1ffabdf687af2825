"""docs/testing.rst as a user follows it: a project of its own, in a fresh
virtual environment, with trio_tlsretry installed from this checkout.

The project is the page's files, saved where the page says: ``pytest.ini``
at the root, ``greeting.py`` (the application) next to the four test files
in ``tests/``. Nothing else: no conftest, no fixtures of its own. The
environment is new, but it reuses this environment's packages (pytest,
pytest-trio, trio, trustme, hatchling) through a ``.pth`` file, so nothing
is downloaded; trio_tlsretry itself is built and installed into it by pip,
so the test also checks that the wheel carries the testing package and the
pytest plugin's entry point.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PAGE = ROOT / "docs" / "testing.rst"

#: docs/examples file -> where the page tells the user to save it.
PROJECT_FILES = {
    "testing_pytest.ini": "pytest.ini",
    "testing_app.py": "tests/greeting.py",
    "testing_test_pairs.py": "tests/test_pairs.py",
    "testing_test_network.py": "tests/test_network.py",
    "testing_test_faults.py": "tests/test_faults.py",
    "testing_test_retry.py": "tests/test_retry.py",
}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def make_environment(directory: Path) -> Path:
    """A new virtual environment that sees this one's packages; its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=60
    )
    python = directory / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], directory
    ).stdout.strip()
    # Appended to sys.path after the environment's own site-packages, so what
    # pip installs there comes first.
    (Path(purelib) / "_this_test_environment.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    return python


def test_the_page_tells_where_each_file_goes() -> None:
    page = PAGE.read_text(encoding="utf-8")
    words = " ".join(page.split())
    for example, target in PROJECT_FILES.items():
        assert f".. literalinclude:: examples/{example}" in page, example
        if target.startswith("tests/test_"):
            assert f"Save as ``{target}``" in words, target
    assert "saved as ``greeting.py`` next to the tests" in words
    assert "Put this in a ``pytest.ini`` at the root of your project" in words


def test_the_documented_project_passes_in_a_fresh_environment(tmp_path: Path) -> None:
    python = make_environment(tmp_path / "venv")
    install = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            str(ROOT),
        ],
        tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    project = tmp_path / "project"
    for example, target in PROJECT_FILES.items():
        (project / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLES / example, project / target)

    where = run([str(python), "-c", "import trio_tlsretry; print(trio_tlsretry.__file__)"], project)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr

    result = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "7 passed" in result.stdout, output


def test_without_trio_mode_the_project_fails_as_the_page_says(tmp_path: Path) -> None:
    # The page quotes pytest's complaint; it must still be what pytest says.
    (tmp_path / "test_one.py").write_text(
        textwrap.dedent(
            """
            async def test_async():
                pass
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path)
    assert result.returncode != 0
    assert "async def functions are not natively supported" in result.stdout + result.stderr
    assert "async def functions are not natively supported" in PAGE.read_text(encoding="utf-8")
