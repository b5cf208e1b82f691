"""The dependency rules (docs/architecture.md): no module of data/, train/ or eval/ imports
serve/, launch/ or the CLI, directly or through a package `__init__` it imports; and no import
cycle among calibtune's modules.

Imports anywhere in a module count (also inside functions: they run when called, and a lazy
import that closes a circle is still a circle in the design), except the lazy `calibtune.Scorer` of the package's PEP 562
`__getattr__`, which runs only when that attribute is read. An edge goes to the module an
import names (`from a.b import c` is a.b.c when c is a module, else a.b), relative imports
resolved; the package `__init__`s Python runs on the way (importing a.b.c runs a/__init__ and
a/b/__init__) are no edges of the cycle check, since a package that re-exports its submodules
would otherwise always be a circle, but `closure` follows them for the one-way rule."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "calibtune"
FORBIDDEN = ("calibtune.serve", "calibtune.launch", "calibtune.cli")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """The dotted name of a module file under the package directory `root`."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules(root: Path = PACKAGE) -> frozenset[str]:
    """Every module (and package) of the package directory `root`."""
    return frozenset(module_name(path, root) for path in root.rglob("*.py"))


def source_tree(name: str, root: Path) -> tuple[ast.Module, bool]:
    """The parsed module, without a package's PEP 562 `__getattr__`, and whether it is a package."""
    path = root.parent.joinpath(*name.split("."))
    is_package = path.is_dir()
    path = path / "__init__.py" if is_package else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if is_package:  # a PEP 562 `__getattr__` runs on attribute access only
        tree.body = [n for n in tree.body if getattr(n, "name", None) != "__getattr__"]
    return tree, is_package


def resolve(dotted: str, known: frozenset[str]) -> str | None:
    """The longest prefix of `dotted` that is a module of the package, or None."""
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imported_names(node: ast.AST, name: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in module `name` brings in (relative resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = (name if is_package else name.rpartition(".")[0]).split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def imports_of(name: str, root: Path = PACKAGE) -> set[str]:
    """Every module of the package that module `name` imports (module level or in functions)."""
    tree, is_package = source_tree(name, root)
    known = modules(root)
    found = {
        resolve(dotted, known)
        for node in ast.walk(tree)
        for dotted in imported_names(node, name, is_package)
    }
    return {module for module in found if module is not None and module != name}


def closure(name: str) -> dict[str, str]:
    """Every calibtune module reachable from `name`, with one module that imports it; importing
    a.b.c also runs a/__init__ and a/b/__init__."""
    seen, todo = {name: name}, [name]
    while todo:
        current = todo.pop()
        targets = set(imports_of(current))
        for target in list(targets):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts))}
        for target in targets - set(seen):
            seen[target] = current
            todo.append(target)
    return seen


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    return {name: imports_of(name, root) for name in sorted(modules(root))}


def strong_components(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of two or more modules (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_in(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One shortest cycle through the first module of a component, as a path back to it."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                todo.append(target)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def describe(graph: dict[str, set[str]], component: frozenset[str]) -> str:
    """'a -> b -> a', plus the component's other modules that are on circles with them."""
    path = cycle_in(graph, component)
    others = sorted(component - set(path))
    return " -> ".join(path) + (f" (also in the circle: {', '.join(others)})" if others else "")


def cycle_report(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle, described."""
    return [describe(graph, component) for component in strong_components(graph)]


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


def test_no_import_cycles():
    cycles = cycle_report(import_graph())
    assert not cycles, "import cycles (break each):\n" + "\n".join(cycles)


def test_the_cycle_check_reports_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    assert cycle_report(graph) == ["a -> b -> c -> a"]
    graph_two = {**graph, "d": {"b"}}  # a second circle through b: one component
    assert cycle_report(graph_two) == ["a -> b -> c -> a (also in the circle: d)"]
    assert cycle_report({**graph, "c": {"d"}}) == []
    two = {"p": {"r"}, "r": {"p"}}
    assert cycle_report(two) == ["p -> r -> p"]
    assert strong_components(two) == [frozenset(two)]


def test_the_import_graph_resolves_relative_lazy_and_from_package_imports(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("def __getattr__(name):\n    from pkg import a\n")
    (root / "a.py").write_text("from .sub import b\nfrom pkg.sub.b import f\n")
    (root / "sub" / "__init__.py").write_text("from pkg.sub.b import f\n")
    (root / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    import pkg\n")
    graph = import_graph(root)
    assert graph == {
        "pkg": set(),  # the PEP 562 __getattr__ does not count
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg", "pkg.a"},  # lazy imports count
    }
    assert cycle_report(graph) == ["pkg.a -> pkg.sub.b -> pkg.a"]
