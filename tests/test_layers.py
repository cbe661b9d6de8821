"""The package's shape: imports only go down the layers, and no function grows past a screenful.

Layers, lowest first (docs/architecture.md)::

    data -> geometry -> capture -> hands -> calibration -> fusion -> sim -> apps

A module may import its own layer and the layers below it, plus ``omnimocap.errors``. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("data", "geometry", "capture", "hands", "calibration", "fusion", "sim", "apps")
RANK = {name: i for i, name in enumerate(LAYERS)}
MAX_FUNCTION_LINES = 100
# apps/ parses, calls and prints: a function there longer than this holds logic that belongs below,
# except argparse declarations (``register``) and the Qt window's construction and drawing.
MAX_APPS_FUNCTION_LINES = 30
APPS_EXEMPT_FILES = {"gui.py"}
APPS_EXEMPT_FUNCTIONS = {"register", "build_parser"}


def package_modules() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of ``omnimocap.*`` in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.extend((node.lineno, n) for n in names if n.startswith("omnimocap."))
    return out


def layer_of(module: str) -> str | None:
    part = module.split(".")[1]
    return part if part in RANK else None


def upward_imports() -> list[str]:
    bad = []
    for layer, path in package_modules():
        for line, module in imported_modules(path):
            target = layer_of(module)
            if target is not None and RANK[target] > RANK[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})")
    return sorted(set(bad))


def test_every_layer_is_a_folder():
    for layer in LAYERS:
        assert (ROOT / layer / "__init__.py").is_file(), layer


def test_imports_only_go_down_the_layers():
    bad = upward_imports()
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a capture module importing fusion (also inside a function) is reported."""
    fake = tmp_path / "capture"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from omnimocap.fusion.pipeline import ProcessConfig\n")
    for layer in LAYERS:
        if layer != "capture":
            (tmp_path / layer).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert "capture/bad.py:2 (capture) imports omnimocap.fusion.pipeline (fusion)" in upward_imports()


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_a_screenful():
    long = [f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)" for _, path in package_modules()
            for name, line, n in functions(path) if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_apps_only_parse_call_and_print():
    long = [f"apps/{path.name}:{line} {name} ({n} lines)" for layer, path in package_modules() if layer == "apps"
            and path.name not in APPS_EXEMPT_FILES for name, line, n in functions(path)
            if n > MAX_APPS_FUNCTION_LINES and name not in APPS_EXEMPT_FUNCTIONS]
    assert not long, f"apps/ functions over {MAX_APPS_FUNCTION_LINES} lines (move the logic below apps/):\n" + "\n".join(long)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_module_says_what_it_is(layer):
    """Each file opens with a docstring (its one job)."""
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / layer).rglob("*.py"))
               if ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None]
    assert not missing, "modules without an opening docstring: " + ", ".join(missing)
