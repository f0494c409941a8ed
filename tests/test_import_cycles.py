"""No import cycles among the modules of ``sllmsim`` and ``live``, read from the sources with ast
(:mod:`sllmsim.tools.import_graph`: every import, at module level or inside a function, relative
ones resolved, a package's import counted as its ``__init__``)."""

from __future__ import annotations

import textwrap

import pytest
from repo_paths import REPO

from sllmsim.tools.import_graph import cycles, describe, import_graph, main

#: Cycles another branch of this round removes, each as the set of its modules; the integrator
#: empties this after merging it. The one named for this round (``live`` <-> ``sllmsim.fidelity``,
#: removed on branch i-calib) is a cycle between packages, not between modules: no module of one
#: imports, round a loop, itself, so it needs no entry here.
ALLOWED_CYCLES: tuple[frozenset[str], ...] = ()


def test_the_project_has_no_import_cycle():
    graph = import_graph(REPO)
    found = cycles(graph)
    unexpected = [describe(graph, group) for group in found if group not in ALLOWED_CYCLES]
    assert not unexpected, "import cycles:\n" + "\n".join(unexpected)
    stale = [sorted(group) for group in ALLOWED_CYCLES if group not in found]
    assert not stale, f"ALLOWED_CYCLES names cycles that are gone; remove them: {stale}"


def _tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_graph_sees_every_kind_of_import(tmp_path):
    _tree(tmp_path, {
        "sllmsim/__init__.py": "",
        "sllmsim/a.py": "from sllmsim import b\n",          # a package's submodule: the submodule
        "sllmsim/b.py": "def f():\n    from .pkg import thing\n",  # relative, inside a function
        "sllmsim/pkg/__init__.py": "from .inner import thing\n",  # an __init__'s relative import
        "sllmsim/pkg/inner.py": "import importlib\nimportlib.import_module('sllmsim.c')\nthing = 1\n",
        "sllmsim/c.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sllmsim.pkg\n"
                         "import os, numpy\n"),             # outside imports are not nodes
        "live/__init__.py": "",
        "live/d.py": "from sllmsim.pkg.inner import thing\nfrom sllmsim import nothing_such\n",
    })
    graph = import_graph(tmp_path)
    assert set(graph.edges) == {
        ("sllmsim.a", "sllmsim.b"),
        ("sllmsim.b", "sllmsim.pkg"),
        ("sllmsim.pkg", "sllmsim.pkg.inner"),
        ("sllmsim.pkg.inner", "sllmsim.c"),
        ("sllmsim.c", "sllmsim.pkg"),
        ("live.d", "sllmsim.pkg.inner"),
        ("live.d", "sllmsim"),  # a name that is no module: the package's __init__
    }
    [group] = cycles(graph)
    assert group == {"sllmsim.pkg", "sllmsim.pkg.inner", "sllmsim.c"}
    assert describe(graph, group) == ("3 modules (sllmsim.c, sllmsim.pkg, sllmsim.pkg.inner): "
                                      "sllmsim.c -> sllmsim.pkg -> sllmsim.pkg.inner -> sllmsim.c")


def test_a_module_importing_itself_is_a_cycle(tmp_path):
    _tree(tmp_path, {"sllmsim/__init__.py": "", "sllmsim/x.py": "def f():\n    import sllmsim.x\n",
                     "live/__init__.py": ""})
    assert cycles(import_graph(tmp_path)) == [frozenset({"sllmsim.x"})]


def test_the_script_prints_the_cycles_and_fails_on_one(tmp_path, capsys):
    assert main(["--root", str(REPO)]) == 0
    assert capsys.readouterr().out.strip().endswith("no import cycles")
    _tree(tmp_path, {"sllmsim/__init__.py": "", "sllmsim/p.py": "import live.q\n",
                     "live/__init__.py": "", "live/q.py": "from sllmsim import p\n"})
    assert main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 modules (live.q, sllmsim.p)" in out


def test_the_script_names_a_root_without_the_packages(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path)])
    assert exc.value.code == 2
    assert "no package folder sllmsim, live there" in capsys.readouterr().err
