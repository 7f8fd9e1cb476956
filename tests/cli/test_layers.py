"""The command line sits on top: nothing below imports it, and no two modules import each other.

Imports are read from the source (every `import`, at module level or inside a function), so a
lazy import that closes a cycle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import otfuzz

ROOT = Path(otfuzz.__file__).parent


def _modules() -> dict[str, Path]:
    out = {"otfuzz": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="otfuzz."):
        path = ROOT.joinpath(*info.name.split(".")[1:])
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """otfuzz modules that `name` imports (a package counts as its __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_module_walk_sees_every_layer() -> None:
    for layer in ("protocols", "engine", "transport", "monitor", "store", "compliance", "report", "stress", "agents", "cli"):
        assert any(m.startswith(f"otfuzz.{layer}.") for m in MODULES), layer
    assert "otfuzz.cli.common" in GRAPH["otfuzz.cli.campaign"]  # the import reader works


def test_no_module_outside_the_cli_package_imports_it() -> None:
    offenders = {name: sorted(m for m in deps if m == "otfuzz.cli" or m.startswith("otfuzz.cli."))
                 for name, deps in GRAPH.items() if not (name == "otfuzz.cli" or name.startswith("otfuzz.cli."))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_there_is_no_import_cycle() -> None:
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert cycles == []
