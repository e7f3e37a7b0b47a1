"""Imports in nas_prune run one way: down an explicit order of layers, with no cycle.

The test reads every module's source (``ast``, nothing is imported) and collects every import of
a nas_prune module, the lazy ones inside functions included: ``import nas_prune.x``,
``from .x import y``, ``from .. import x`` (a submodule) and ``importlib.import_module`` with a
literal name. Then:

* every module belongs to a *unit* (a top-level module such as ``config`` or a subpackage such
  as ``search``), every unit has a place in :data:`LAYERS`, and an import from one unit to
  another goes to a strictly lower layer (no upward import, and units of one layer do not import
  each other);
* the graph of modules, within the units too, has no cycle (``ray_backend`` and ``_ray_study``
  once imported each other, lazily);
* ``importlib.import_module`` with a computed name appears only where :data:`DYNAMIC` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nas_prune

ROOT = Path(nas_prune.__file__).resolve().parent
PACKAGE = "nas_prune"

#: Units, lowest layer first. A unit imports only units of lower layers. The package's own
#: ``__init__`` (``build_model`` and friends) is a facade over the layers, so it is on top.
LAYERS: list[list[str]] = [
    ["errors", "_meta", "stats"],
    # the seed rule: search, finalists and evaluation seeds from random_seed; a user's function
    # by its import path (a model factory, a training function)
    ["seeding", "_callables"],
    ["_yaml"],
    ["_io", "families"],
    ["flops", "imagecache", "latency", "surgery", "tensordata"],
    ["widths", "rundir"],
    ["budget", "data", "export", "report"],
    ["train", "rethink_summary"],
    # train.function: mypkg.train:fit (config checks its format; scratch and search use it, and
    # seeds trains a base network with it)
    ["trainfn"],
    ["seeds", "oneshot"],  # seed methods (and one-shot screening) take explicit arguments, never a Config
    ["table"],  # train.source: table:PATH (config checks its format; scratch and search use it)
    ["config"],
    ["scratch", "testing"],
    ["search"],
    ["rethink"],
    ["api"],  # nas_prune.search / propose / compare from Python; the CLI calls them
    ["cli"],
    ["__init__"],
]

#: Modules that call ``importlib.import_module`` with a computed name, and why.
DYNAMIC = {
    "nas_prune.cli": "the subcommand modules of nas_prune.cli itself (COMMANDS)",
    "nas_prune._callables": "a user's function by its path (``model: mypkg.models:make_net``, "
                            "``train.function: mypkg.train:fit``)",
    "nas_prune.search": "the package is callable as nas_prune.search(...), which is "
                        "nas_prune.api.search, a layer above, imported at call time",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").is_file() or \
        (ROOT.parent / rel / "__init__.py").is_file()


def _scan() -> tuple[dict[str, set[tuple[str, int]]], dict[str, list[int]]]:
    """module -> {(imported nas_prune module, line)}, module -> lines of computed imports."""
    edges: dict[str, set[tuple[str, int]]] = {}
    dynamic: dict[str, list[int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == PACKAGE:
                    module = node.module
                else:
                    continue
                # ``from . import zoo`` imports the submodule zoo; ``from .x import y`` imports x
                subs = [f"{module}.{a.name}" for a in node.names]
                targets = [s for s in subs if _is_module(s)] or [module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if arg.value.split(".")[0] == PACKAGE:
                        targets = [arg.value]
                else:
                    dynamic.setdefault(name, []).append(node.lineno)
            out.update((t, node.lineno) for t in targets if t != name)
    return edges, dynamic


EDGES, DYNAMIC_FOUND = _scan()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer_of() -> dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_the_scan_sees_the_imports():
    """Guards the scanner itself: known edges, a lazy one included, are found."""
    found = {t for t, _ in EDGES["nas_prune.config"]}
    assert {"nas_prune.errors", "nas_prune.seeds", "nas_prune.train"} <= found
    assert "nas_prune.imagecache" in {t for t, _ in EDGES["nas_prune.data"]}  # lazy
    assert "nas_prune.families.zoo" in {t for t, _ in EDGES["nas_prune.families.graph"]}  # lazy
    assert "nas_prune.scratch" in {t for t, _ in EDGES["nas_prune.search.evaluate"]}


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in EDGES}
    placed = [u for layer in LAYERS for u in layer]
    assert len(placed) == len(set(placed)), "a unit is placed twice in LAYERS"
    assert units == set(placed), (f"units without a layer: {sorted(units - set(placed))}; "
                                  f"layers naming no unit: {sorted(set(placed) - units)}")


def test_no_upward_import():
    layer = _layer_of()
    bad = []
    for module, targets in EDGES.items():
        for target, line in targets:
            a, b = _unit(module), _unit(target)
            if a != b and layer[b] >= layer[a]:
                bad.append(f"{module}:{line} imports {target} ({a}: layer {layer[a]}, "
                           f"{b}: layer {layer[b]})")
    assert not bad, "imports that do not go down the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in ts if t in EDGES}) for m, ts in EDGES.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [m, t] if t in path else [m, t])
            elif t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_computed_imports_are_the_known_ones():
    unknown = {m: lines for m, lines in DYNAMIC_FOUND.items() if m not in DYNAMIC}
    assert not unknown, (f"importlib.import_module with a computed name in {unknown}: import "
                         f"explicitly, or add the module to DYNAMIC with the reason")


@pytest.mark.parametrize("module", ["nas_prune.config", "nas_prune.seeds"])
def test_nothing_below_the_search_imports_it(module):
    """The two knots this test was written for, stated plainly."""
    targets = {t for m, ts in EDGES.items() if m == module or m.startswith(module + ".")
               for t, _ in ts}
    assert not any(t.startswith("nas_prune.search") for t in targets)
