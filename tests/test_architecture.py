"""The layering of docs/architecture.md, read from the code's own imports (function-level ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("attribution", "serving", "components", "pipelines")
ADAPTERS = ("serving", "components", "pipelines")
# The command line and the demo drive the adapters; nothing else in the library may.
ENTRY_POINTS = {"attribution.cli", "attribution.demo"}
# layer -> the attribution layers it must never import (lower layers never reach up).
FORBIDDEN = {
    "attribution.schema": ("attribution.",),
    "attribution.storage": ("attribution.",),
    "attribution.io": ("attribution.features", "attribution.model", "attribution.training", "attribution.evaluation",
                       "attribution.platform", "attribution.inference", "attribution.batch", "attribution.steps"),
    "attribution.features": ("attribution.model", "attribution.training", "attribution.evaluation",
                             "attribution.platform.deploy", "attribution.inference", "attribution.batch",
                             "attribution.steps"),
    "attribution.model": ("attribution.training", "attribution.evaluation", "attribution.platform",
                          "attribution.inference", "attribution.batch", "attribution.steps"),
    "attribution.training": ("attribution.inference", "attribution.batch", "attribution.steps",
                             "attribution.platform.deploy"),
    "attribution.evaluation": ("attribution.training", "attribution.inference", "attribution.steps"),
    # the monitor reads logs and postbacks; it never trains, serves or runs steps (the core's hook is duck-typed)
    "attribution.monitoring": ("attribution.training", "attribution.inference", "attribution.batch",
                               "attribution.steps", "attribution.platform"),
    "attribution.inference": ("attribution.training", "attribution.evaluation", "attribution.steps"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every project module `path` imports, at any depth of the file (functions, branches)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        for target in imports_of(path, set(files)):
            # A module importing its own package's __init__ is not an edge of the layering.
            if target != name and not name.startswith(target + "."):
                g.add_edge(name, target)
    return g


def test_the_graph_sees_function_level_imports(graph: nx.DiGraph) -> None:
    # train() picks its trainer inside the function: if the reader missed such imports, every rule below
    # would pass vacuously.
    assert graph.has_edge("attribution.training.train", "attribution.training.large")
    assert graph.has_edge("attribution.cli", "pipelines.local_run")


def test_no_import_cycle_in_the_library(graph: nx.DiGraph) -> None:
    library = graph.subgraph(n for n in graph if n.startswith("attribution"))
    cycles = list(nx.simple_cycles(library))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_only_the_entry_points_import_adapters(graph: nx.DiGraph) -> None:
    bad = [(a, b) for a, b in graph.edges
           if a.startswith("attribution") and a not in ENTRY_POINTS and b.split(".")[0] in ADAPTERS]
    assert not bad, f"library modules importing components/, pipelines/ or serving/: {bad}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(graph: nx.DiGraph, layer: str) -> None:
    bad = [(a, b) for a, b in graph.edges
           if (a == layer or a.startswith(layer + "."))
           and any(b == f or b.startswith(f) for f in FORBIDDEN[layer])
           and not (b == layer or b.startswith(layer + "."))]
    assert not bad, f"{layer} imports a layer above it: {bad}"


def test_every_module_is_mapped_in_the_architecture_doc() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [module_name(p) for p in (REPO / "attribution").rglob("*.py")
               if p.name != "__init__.py" and f"`{p.relative_to(REPO / 'attribution').as_posix()}`" not in doc]
    assert not missing, f"docs/architecture.md does not mention: {missing}"
