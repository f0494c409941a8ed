"""The import graph of the project's own packages, read from the sources, and its cycles.

``python -m sllmsim.tools.import_graph`` prints every import cycle among the modules of ``sllmsim``
and ``live`` (one line per strongly connected group, with one cycle through it), or ``no import
cycles``; it exits 1 when there is a cycle. ``tests/test_import_cycles.py`` asserts the same.

The graph is built with :mod:`ast`, without importing anything, so a cycle that only bites at
run time (an import inside a function, or ``importlib.import_module("...")`` with a literal name)
counts as much as one at module level. Edges:

- ``import a.b.c`` and ``from a.b.c import x`` point at module ``a.b.c`` (a package's
  ``__init__``), or at ``a.b.c.x`` when ``x`` is itself a module;
- relative imports are resolved against the importing module's package;
- the parent packages Python runs on the way to a submodule are not edges: otherwise every
  package whose ``__init__`` re-exports a submodule would be a cycle with it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import networkx as nx

#: The project's top-level packages whose modules make up the graph.
PACKAGES = ("sllmsim", "live")


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """``{dotted module name: source file}`` for every ``.py`` file under ``root/<package>``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _resolve_from(node: ast.ImportFrom, importer: str, modules: dict[str, Path]) -> str:
    """The absolute module a ``from ... import`` names (relative ones resolved against ``importer``)."""
    if node.level == 0:
        return node.module or ""
    # The package a relative import starts from: the module's own package, or the package itself
    # for an ``__init__``; each extra dot goes one level up.
    base = importer.split(".") if _is_package(importer, modules) else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _literal_import_module(node: ast.Call) -> str | None:
    # importlib.import_module("a.b") / import_module("a.b") with a literal, absolute name.
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
        return arg.value
    return None


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``importer`` (source ``path``) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, importer, modules)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
        elif isinstance(node, ast.Call):
            name = _literal_import_module(node)
            if name:
                targets.add(name)
    return {t for t in targets if t in modules}


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> nx.DiGraph:
    """The directed graph ``importer -> imported`` over the modules of ``packages`` under ``root``."""
    modules = module_files(root, packages)
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        # Sorted, so that the graph (and the loop printed for a cycle) does not vary with hash seeds.
        graph.add_edges_from((name, target) for target in sorted(imports_of(name, path, modules)))
    return graph


def cycles(graph: nx.DiGraph) -> list[frozenset[str]]:
    """Every group of modules that import each other (directly or round a loop), largest first;
    a module that imports itself is a group of one."""
    groups = [frozenset(c) for c in nx.strongly_connected_components(graph)
              if len(c) > 1 or graph.has_edge(next(iter(c)), next(iter(c)))]
    return sorted(groups, key=lambda g: (-len(g), sorted(g)))


def describe(graph: nx.DiGraph, group: frozenset[str]) -> str:
    """One line for a cycle group: its modules, and one loop through them (``a -> b -> a``)."""
    loop = [edge[0] for edge in nx.find_cycle(graph.subgraph(group), source=min(group))]
    start = loop.index(min(loop))  # begin at the loop's first name: the same line on every run
    loop = loop[start:] + loop[:start]
    path = " -> ".join(loop + loop[:1])
    return f"{len(group)} modules ({', '.join(sorted(group))}): {path}"


def main(argv: list[str] | None = None) -> int:
    """Print the import cycles of the project found under ``--root``; 1 when there is any."""
    parser = argparse.ArgumentParser(prog="python -m sllmsim.tools.import_graph", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the repository root holding the packages (default: this checkout)")
    args = parser.parse_args(argv)
    missing = [p for p in PACKAGES if not (args.root / p).is_dir()]
    if missing:
        parser.error(f"--root {args.root}: no package folder {', '.join(missing)} there")
    graph = import_graph(args.root)
    found = cycles(graph)
    print(f"{graph.number_of_nodes()} modules, {graph.number_of_edges()} imports")
    for group in found:
        print(describe(graph, group))
    if not found:
        print("no import cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
