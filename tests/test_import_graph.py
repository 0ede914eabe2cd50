"""The house's layers point downward and no module imports another in a circle.

``eventstore`` imports none of the others; ``projections`` only ``eventstore``; ``backends``
both; ``tools`` any. Every import counts, also those inside functions or behind
``TYPE_CHECKING``: a cycle hidden there is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("eventstore", "projections", "backends", "tools")  # each may import those before it
TEST_CODE = {"eventstore.testing"}  # the log's contract tests: beside the interface, not runtime


def modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (a package import counts as its ``__init__``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def test_layers_point_downward() -> None:
    wrong = []
    for module, imported in graph().items():
        mine = LAYERS.index(module.split(".")[0])
        for other in imported:
            if LAYERS.index(other.split(".")[0]) > mine:
                wrong.append(f"{module} -> {other}")
    assert wrong == []


def test_no_module_imports_in_a_circle() -> None:
    edges = graph()
    # A package's __init__ re-exports its modules: the edge from a module to its own
    # package's __init__ would make every re-export look circular, so it is not followed.
    for module, imported in edges.items():
        edges[module] = {m for m in imported if not module.startswith(m + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(edges[module]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_runtime_never_imports_the_contract_tests() -> None:
    users = [m for m, imported in graph().items() if imported & TEST_CODE]
    assert users == []


def test_the_core_imports_no_backend() -> None:
    """The Core knows backends only through the registry the front door hands it."""
    builtin = {"backends.sys", "backends.generic", "backends.aws", "backends.registry"}
    assert graph()["backends.core"] & builtin == set()
