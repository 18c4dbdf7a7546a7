"""The package's layer graph, read from the source: every import (function-local ones too) goes to the importer's
layer or one below it, and no chain of imports comes back to where it started."""

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {"clsp": REPO / "clsp", "clsp.export": REPO / "export", "clsp.runtime": REPO / "runtime"}
LAYERS = (
    "base",  # the modules directly in clsp/: config, errors, atomic writes, progress, run layout, features...
    "clsp.data",
    "clsp.diffusion",
    "clsp.positives",
    "clsp.contrastive",
    "clsp.evaluation",
    "deployment",  # clsp.export and clsp.runtime
    "commands",  # each stage's commands.py, clsp.cli, clsp.demo and the accelerate-launch entry point clsp.train
)
TOP_MODULES = ("clsp.cli", "clsp.demo", "clsp.train")


def package_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module that ``pip install`` ships."""
    modules = {}
    for package, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def layer_of(module: str) -> int:
    parts = module.split(".")
    if module in TOP_MODULES or parts[-1] == "commands":
        return LAYERS.index("commands")
    if len(parts) > 1 and parts[1] in ("export", "runtime"):
        return LAYERS.index("deployment")
    package = ".".join(parts[:2])
    return LAYERS.index(package) if package in LAYERS else LAYERS.index("base")


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (``from p import m`` counts p and p.m)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def test_the_graph_reads_the_imports_it_should(graph) -> None:
    assert len(graph) > 80  # every shipped module, the export and runtime folders included
    assert "clsp.data.rows" in graph["clsp.data.imageset"]
    assert "clsp.runtime.load" in graph["clsp.demo"]  # a function-local import counts
    assert layer_of("clsp.positives.commands") > layer_of("clsp.runtime.load") > layer_of("clsp.evaluation.report")
    assert layer_of("clsp.config") == 0 and layer_of("clsp.export.specs") == layer_of("clsp.runtime.ort")


def test_no_module_imports_from_a_layer_above_its_own(graph) -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle(graph) -> None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
