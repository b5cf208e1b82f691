"""The one-way dependency rule (docs/architecture.md): no module of data/, train/ or eval/
imports serve/, launch/ or the CLI, directly or through a package `__init__` it imports.

Imports anywhere in a module count (also inside functions: they run when called), except the
lazy `calibtune.Scorer` of the package's PEP 562 `__getattr__`, which runs only when that
attribute is read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "calibtune"
FORBIDDEN = ("calibtune.serve", "calibtune.launch", "calibtune.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(name: str) -> set[str]:
    """Every calibtune module `name` imports (module level or inside functions)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name == "__init__.py":  # a PEP 562 `__getattr__` runs on attribute access only
        tree.body = [n for n in tree.body if getattr(n, "name", None) != "__getattr__"]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.startswith("calibtune") and resolves(m)}


def resolves(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def closure(name: str) -> dict[str, str]:
    """Every calibtune module reachable from `name`, with one module that imports it; importing
    a.b.c also runs a/__init__ and a/b/__init__."""
    seen, todo = {name: name}, [name]
    while todo:
        current = todo.pop()
        targets = set(imports_of(current))
        for target in list(targets):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts))}
        for target in targets - set(seen):
            seen[target] = current
            todo.append(target)
    return seen


LOWER = sorted(
    module_name(p) for stage in ("data", "train", "eval") for p in (PACKAGE / stage).rglob("*.py")
)


@pytest.mark.parametrize("name", LOWER)
def test_lower_stages_never_reach_serve_launch_or_cli(name):
    reached = closure(name)
    bad = {m: via for m, via in reached.items() if m.startswith(FORBIDDEN)}
    assert not bad, f"{name} reaches {bad} (module: imported by)"


def test_the_closure_follows_imports_and_package_inits():
    reached = closure("calibtune.serve.export")
    assert "calibtune.serve.score" in reached and "calibtune.serve" in reached
    assert "calibtune.models.confidence" in reached  # through serve.score
