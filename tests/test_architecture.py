"""The ``edgekit`` package's import graph has no cycles.

Every ``import``/``from ... import`` of ``edgekit.*`` is an edge, at module level and inside
functions (a function-level import is a dependency too, only a deferred one). A module-level import
of ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py`` at that moment, so it is an
edge to ``a.b`` as well: that is how ``quantize.ort.settings -> targets.isa`` once failed at import
time (``targets/__init__`` loads the profiles, which load the settings model).
"""
from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific existing module ``name`` refers to (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST, module: str, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every edgekit import in ``tree``."""
    found: list[tuple[str, bool]] = []
    package = module if _is_package(module, modules) else module.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = _resolve(name, modules) if name.startswith("edgekit") else None
                if target and target != module:
                    found.append((target, top))
            visit(child, inner)

    visit(tree, True)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        for target, top in _imports(ast.parse(path.read_text(encoding="utf-8")), module, modules):
            graph[module].add(target)
            if top:  # importing a.b.c runs a/__init__ and a/b/__init__ first, unless we are inside them
                parts = target.split(".")
                for depth in range(2, len(parts)):
                    ancestor = ".".join(parts[:depth])
                    if ancestor != module and not module.startswith(ancestor + "."):
                        graph[module].add(ancestor)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``a -> b -> a``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    return [*paths[node], start]
                if succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_import_runs_the_package_init() -> None:
    graph = import_graph()
    assert "edgekit.quantize.ort.settings" in graph["edgekit.targets.profiles"]
    assert "edgekit.quantize.ort" in graph["edgekit.targets.profiles"]  # its __init__ runs first
    assert "edgekit.isa" in graph["edgekit.quantize.ort.settings"]


def test_edgekit_has_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
