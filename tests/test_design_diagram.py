"""The design page's diagram and the layer rule it states (docs/design.rst).

``docs/make_design_diagram.py`` draws ``docs/_static/design.svg`` and holds
the table of layers the page describes. These tests keep the committed
picture in step with the script, and the package in step with the picture:
every module belongs to exactly one layer, imports only from its own layer
or a lower one, and the engine uses nothing but the standard library.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trio_tlsretry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(trio_tlsretry.__file__).resolve().parent


def _load_script() -> ModuleType:
    path = ROOT / "docs" / "make_design_diagram.py"
    spec = importlib.util.spec_from_file_location("make_design_diagram", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up while the class body runs.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


diagram = _load_script()


def _package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name relative to it (``""`` is ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _level_of(module: str) -> int:
    """The layer level of a module (the package's ``__init__`` has its own)."""
    if module == "":
        return int(diagram.PACKAGE_LEVEL)
    (layer,) = _layers_of(module)
    return int(layer.level)


def _layers_of(module: str) -> list[Any]:
    return [
        layer
        for layer in diagram.LAYERS
        if any(module == name or module.startswith(name + ".") for name in layer.modules)
    ]


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """``(name, line)`` of every import in the module, wherever it sits.

    Imports of this package come back relative to it, like the keys of
    :func:`_package_modules` (``from ._engine import X`` in ``_stream`` gives
    ``_engine``; ``from . import __version__`` gives ``""``); any other
    import comes back as its absolute name.
    """
    is_package = path.name == "__init__.py"
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]
    known = _package_modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join([*base, *([node.module] if node.module else [])])
                prefix = "trio_tlsretry" + ("." + target if target else "")
            else:
                prefix = node.module or ""
            # ``from pkg import name`` imports the module pkg.name if there is one.
            names = [prefix]
            for alias in node.names:
                relative = f"{prefix}.{alias.name}".removeprefix("trio_tlsretry.")
                if prefix.startswith("trio_tlsretry") and relative in known:
                    names.append(f"trio_tlsretry.{relative}")
        else:
            continue
        for name in names:
            if name == "trio_tlsretry":
                found.append(("", node.lineno))
            elif name.startswith("trio_tlsretry."):
                found.append((name.removeprefix("trio_tlsretry."), node.lineno))
            else:
                found.append((name, node.lineno))
    return found


def test_committed_svg_is_what_the_script_draws() -> None:
    committed = diagram.OUTPUT.read_text(encoding="utf-8")
    assert committed == diagram.render(), (
        "docs/_static/design.svg is stale: run python docs/make_design_diagram.py"
    )


def test_svg_is_well_formed_and_names_every_layer() -> None:
    root = ET.fromstring(diagram.render())
    texts = {element.text for element in root.iter("{http://www.w3.org/2000/svg}text")}
    for layer in diagram.LAYERS:
        assert layer.name in texts


def test_every_module_is_in_exactly_one_layer() -> None:
    homeless = [name for name in _package_modules() if name and len(_layers_of(name)) != 1]
    assert not homeless, (
        f"{homeless}: put each in exactly one layer of LAYERS in docs/make_design_diagram.py "
        "and describe it in docs/design.rst"
    )


def test_every_layer_module_exists() -> None:
    modules = _package_modules()
    for layer in diagram.LAYERS:
        for name in layer.modules:
            assert name in modules, f"layer {layer.name!r} names {name}, which does not exist"


@pytest.mark.parametrize("module", sorted(_package_modules()), ids=lambda name: name or "__init__")
def test_no_import_points_up_or_sideways(module: str) -> None:
    path = _package_modules()[module]
    modules = _package_modules()
    level = _level_of(module)
    own = set(_layers_of(module)) if module else set()
    for name, line in _imports(module, path):
        if name not in modules:
            continue  # not this package
        if name == module or (own and set(_layers_of(name)) == own):
            continue
        imported = _level_of(name)
        assert imported < level, (
            f"{path.relative_to(ROOT)}:{line} imports {name or 'trio_tlsretry'} "
            f"(level {imported}) from level {level}"
        )


def _engine_import_violations(module: str, path: Path) -> list[str]:
    """What ``module`` (at ``path``) imports besides the engine layer and the
    standard library, as ``"module:line imports name"``."""
    modules = _package_modules()
    violations = []
    for name, line in _imports(module, path):
        if name in modules:
            allowed = _layers_of(name) == [diagram.LAYERS[0]]
        else:
            allowed = name.split(".")[0] in sys.stdlib_module_names
        if not allowed:
            violations.append(f"{module}:{line} imports {name or 'trio_tlsretry'}")
    return violations


@pytest.mark.parametrize("module", diagram.LAYERS[0].modules)
def test_engine_imports_only_the_standard_library(module: str) -> None:
    assert diagram.LAYERS[0].name == "engine"
    assert _engine_import_violations(module, _package_modules()[module]) == []


def test_the_checks_see_an_upward_import(tmp_path: Path) -> None:
    """The import walk itself: a stray ``import trio`` or upward import is found."""
    stray = tmp_path / "_engine.py"
    stray.write_text("import trio\nfrom ._stream import TLSStream\nfrom . import __version__\n")
    names = [name for name, _ in _imports("_engine", stray)]
    assert names == ["trio", "_stream", ""]
    assert _level_of("_stream") > _level_of("_engine")
    # The engine check reports all three: trio is not the standard library,
    # and the package's other layers are not the engine's.
    assert _engine_import_violations("_engine", stray) == [
        "_engine:1 imports trio",
        "_engine:2 imports _stream",
        "_engine:3 imports trio_tlsretry",
    ]
