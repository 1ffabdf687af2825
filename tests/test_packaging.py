"""What a user installs: the licence in both distributions, the classifiers,
the changelog, and a package namespace that holds only the public API.

The distributions are built with hatchling, the build backend named in
pyproject.toml, through its PEP 517 hooks; the test skips when hatchling is
not installed (pip installs it only in an isolated build environment).
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import subprocess
import sys
import tarfile
import types
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import trio_tlsretry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
LICENSE = ROOT / "LICENSE"


def supported_python_versions() -> list[str]:
    """The versions in .ci/python-versions, which .ci/run and noxfile.py test."""
    lines = (ROOT / ".ci" / "python-versions").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist built from this checkout."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling, the build backend, is not installed in this environment")
    out = tmp_path_factory.mktemp("dist")
    # In a subprocess run from the project root, as a build frontend does.
    build = (
        "import sys, hatchling.build as backend;"
        "print(backend.build_wheel(sys.argv[1]));"
        "print(backend.build_sdist(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    wheel_name, sdist_name = result.stdout.split()[-2:]
    return {"wheel": out / wheel_name, "sdist": out / sdist_name}


def parse_metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


def test_license_file_is_the_mit_license_of_the_project() -> None:
    text = LICENSE.read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} trio_tlsretry developers$", text, re.MULTILINE)
    assert PROJECT["license"] == "MIT"


def test_wheel_ships_the_license(distributions: dict[str, Path]) -> None:
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        names = wheel.namelist()
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = parse_metadata(wheel.read(f"{dist_info}/METADATA").decode("utf-8"))
        # Core metadata 2.4 (PEP 639): license files under .dist-info/licenses/.
        assert wheel.read(f"{dist_info}/licenses/LICENSE") == LICENSE.read_bytes()
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License-Expression"] == "MIT"


def test_sdist_ships_the_license(distributions: dict[str, Path]) -> None:
    with tarfile.open(distributions["sdist"]) as sdist:
        (top,) = {name.split("/")[0] for name in sdist.getnames()}
        shipped = sdist.extractfile(f"{top}/LICENSE")
        pkg_info = sdist.extractfile(f"{top}/PKG-INFO")
        assert shipped is not None and pkg_info is not None
        assert shipped.read() == LICENSE.read_bytes()
        metadata = parse_metadata(pkg_info.read().decode("utf-8"))
        assert f"{top}/CHANGELOG.md" in sdist.getnames()
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_python_classifiers_are_exactly_the_tested_versions() -> None:
    classifiers = PROJECT["classifiers"]
    prefix = "Programming Language :: Python :: "
    listed = [
        c[len(prefix) :] for c in classifiers if re.fullmatch(re.escape(prefix) + r"3\.\d+", c)
    ]
    tested = supported_python_versions()
    assert sorted(listed, key=version_key) == sorted(tested, key=version_key)
    assert f"{prefix}3 :: Only" in classifiers
    # requires-python starts at the oldest tested version.
    assert PROJECT["requires-python"] == f">={min(tested, key=version_key)}"


def test_classifiers_describe_the_project() -> None:
    classifiers = PROJECT["classifiers"]
    for expected in ("Framework :: Trio", "Typing :: Typed", "Intended Audience :: Developers"):
        assert expected in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    # PEP 639: with a `license` expression, licence classifiers are not allowed.
    assert not [c for c in classifiers if c.startswith("License :: ")]
    assert (ROOT / "trio_tlsretry" / "py.typed").is_file()


def test_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", changelog, re.MULTILINE)
    assert PROJECT["version"] == trio_tlsretry.__version__
    assert trio_tlsretry.__version__ in headings
    assert headings[0] == "Unreleased"


def stray_names(package: types.ModuleType, public_subpackages: set[str]) -> list[str]:
    """Names in dir(package) that are neither exported, dunders, nor its submodules.

    Submodules are private (``_x``) unless listed in public_subpackages.
    """
    strays = []
    for name in dir(package):
        if name in package.__all__ or re.fullmatch(r"__\w+__", name):
            continue
        if not name.isidentifier():
            # pytest's assertion rewriting adds names such as "@py_builtins" to the
            # modules of a pytest plugin's distribution; no import statement can reach them.
            continue
        value = getattr(package, name)
        is_submodule = (
            isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{name}"
        )
        if is_submodule and (name.startswith("_") or name in public_subpackages):
            continue
        strays.append(name)
    return strays


def test_package_namespace_is_the_public_api() -> None:
    assert stray_names(trio_tlsretry, public_subpackages={"testing"}) == []
    assert sorted(set(trio_tlsretry.__all__) - set(dir(trio_tlsretry))) == []


def test_testing_namespace_is_its_public_api() -> None:
    import trio_tlsretry.testing as testing

    assert stray_names(testing, public_subpackages=set()) == []
    assert sorted(set(testing.__all__) - set(dir(testing))) == []


def test_every_dependency_has_a_floor_that_the_oldest_run_pins() -> None:
    """``nox -s oldest`` and the oldest lane of .ci/run install every ``>=`` floor."""
    import runpy

    floors = runpy.run_path(str(ROOT / ".ci" / "lowest_constraints.py"))["floors"](["test"])
    (trio,) = [dep for dep in PROJECT["dependencies"] if dep.startswith("trio>=")]
    assert floors["trio"] == trio.split(">=")[1]
    # trio.move_on_after(..., shield=True), which the CLI uses, is new in trio 0.27.
    assert version_key(floors["trio"]) >= (0, 27)
    for extra in ("testing", "test"):
        for requirement in PROJECT["optional-dependencies"][extra]:
            if not requirement.startswith("trio-tlsretry["):
                name = re.split(r"[\[>=<]", requirement, maxsplit=1)[0].lower()
                assert name in floors, requirement
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".ci/lowest_constraints.py test" in run
    assert "lowest_constraints.py" in (ROOT / "noxfile.py").read_text(encoding="utf-8")
