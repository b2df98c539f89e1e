"""The package's shape (issue: one layer per concern), checked so that it holds.

- no module reads another object's private attribute (``x._name`` where ``x`` is not
  ``self``/``cls``) or imports another module's private name;
- no import cycle at run time (imports under ``if TYPE_CHECKING:`` are annotations only:
  at most one such cycle);
- no function over 80 lines; the client module at most 500 lines, each command-line module
  at most 400.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aiob24flow"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(run-time imports, annotation-only imports) of package modules, at module level
    and inside functions (a function-level import is still a run-time edge)."""
    tree = ast.parse(path.read_text())
    runtime: set[str] = set()
    typing_only: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, annotations: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for grandchild in child.body:
                    visit_one(grandchild, True)
                for grandchild in child.orelse:
                    visit_one(grandchild, annotations)
                continue
            visit_one(child, annotations)

    def visit_one(child: ast.AST, annotations: bool) -> None:
        target = typing_only if annotations else runtime
        if isinstance(child, ast.ImportFrom):
            base = _resolve(module, child, is_package)
            for alias in child.names:
                name = f"{base}.{alias.name}"
                target.add(name if name in modules else base)
        elif isinstance(child, ast.Import):
            target.update(alias.name for alias in child.names)
        visit(child, annotations)

    visit(tree, False)
    inside = {m for m in runtime if m in modules and m != module}
    return inside, {m for m in typing_only if m in modules and m != module} - inside


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def _graph(annotations: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        runtime, typing_only = _imports(module, path, modules)
        edges = runtime | (typing_only if annotations else set())
        # Importing a submodule runs its package's __init__ first; that edge is a
        # package's own business, not a cycle between concerns.
        graph[module] = {e for e in edges if not module.startswith(e + ".")}
    return graph


def test_no_runtime_import_cycle() -> None:
    assert _cycles(_graph(annotations=False)) == []


def test_at_most_one_annotation_only_cycle() -> None:
    cycles = _cycles(_graph(annotations=True))
    assert len(cycles) <= 1, cycles


def _private_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue  # dunders are public protocol
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    if node.module is None:  # ``from . import _json``: a module
                        continue
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
    return found


def test_no_module_reads_another_objects_private_names() -> None:
    found = [hit for path in _modules().values() for hit in _private_reads(path)]
    assert found == []


def test_functions_are_short() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_module_sizes() -> None:
    assert len((PACKAGE / "_client.py").read_text().splitlines()) <= 500
    cli = PACKAGE / "cli"
    for path in sorted(cli.glob("*.py")) if cli.is_dir() else []:
        assert len(path.read_text().splitlines()) <= 400, path.name
