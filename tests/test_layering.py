"""Imports run in one direction: the runtime core never imports calibration, the bench or the CLI; calibration
and the bench never import the CLI; and no modules import each other in a circle.

The graph is read from the source (every ``import``, also inside functions), so a lazy import counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).parent.parent
PACKAGES = {"accel": "accel", "accel.pipelines": "pipelines", "accel.kernels": "kernels",
            "accel.calibrate": "calibrate"}  # as pyproject.toml maps them
CLI = ("accel.cli", "accel.cli_args", "accel.bench_cli", "accel.calibrate_cli", "accel.distill_cli", "accel.tune_cli")
CALIBRATION = ("accel.calibrate", "accel.distill")
BENCH = ("accel.bench",)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in PACKAGES.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if pkg == "accel" and parts and f"accel.{parts[0]}" in PACKAGES:
                continue
            mods[".".join([pkg, *parts])] = f
    return mods


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, f in mods.items():
        here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            g.add_edges_from((name, t) for t in targets if t in mods and t != name)
    return g


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_the_packages():
    g = _graph()
    assert {"accel.api", "accel.cache.state", "accel.calibrate.bac", "accel.bench.driver", "accel.cli"} <= set(g)
    assert g.has_edge("accel.cli", "accel.cli_args")  # an import the test must see


def test_the_core_imports_neither_calibration_bench_nor_cli():
    g = _graph()
    core = [m for m in g if not _within(m, CLI + CALIBRATION + BENCH) and m != "accel.pipelines.training"
            and not m.startswith("accel.pipelines.training.")]
    bad = [(m, t) for m in core for t in g.successors(m) if _within(t, CLI + CALIBRATION + BENCH)]
    assert not bad, f"core modules importing calibration, bench or CLI: {bad}"


def test_only_the_cli_imports_the_cli():
    g = _graph()
    bad = [(m, t) for m in g if not _within(m, CLI) for t in g.successors(m) if _within(t, CLI)]
    assert not bad, f"imports of CLI modules outside the CLI: {bad}"


def test_no_import_cycles():
    g = _graph()
    # a package's __init__ re-exports its modules, and they may import the package's public names: not a cycle
    # of concepts, so __init__ files are left out
    inits = {m for m, f in _modules().items() if f.name == "__init__.py"}
    cycles = list(nx.simple_cycles(g.subgraph(set(g) - inits)))
    assert not cycles, f"modules importing each other in a circle: {cycles[:5]}"
