"""Layering rules, checked on the sources: only sllmsim/sim imports simpy; the simulator path never
imports torch, transformers or fastapi; the scheduler core imports no runtime at all; sllmsim/ imports
live/ only from its command line (sllmsim/cli), so that the layers depend one way: live on sllmsim."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO

PACKAGE = REPO / "sllmsim"
HEAVY = ("torch", "transformers", "fastapi")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from live import live_run`` imports the module live.live_run as well as the package.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts)


def test_only_sllmsim_sim_imports_simpy():
    offenders = [p.relative_to(REPO) for p in _sources(PACKAGE) + _sources(REPO / "live")
                 if "simpy" in _top(_imported_modules(p)) and PACKAGE / "sim" not in p.parents]
    assert offenders == []


def test_the_core_imports_no_runtime():
    for path in _sources(PACKAGE / "core"):
        assert not _top(_imported_modules(path)) & {"simpy", *HEAVY, "time", "asyncio"}, path


def test_simulator_code_does_not_import_heavy_live_dependencies():
    for path in _sources(PACKAGE):
        if "tools" in path.relative_to(PACKAGE).parts:
            continue  # the catalog builder instantiates architectures with transformers on purpose
        assert not _top(_imported_modules(path)) & set(HEAVY), path


def test_importing_the_simulator_loads_no_heavy_module():
    code = ("import sys, sllmsim.core, sllmsim.sim, sllmsim.sim.engine, sllmsim.cli.run, sllmsim.config.trace; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_imported_modules_sees_every_form_of_import(tmp_path):
    """The rule below reads imports at module level and inside functions, plain and ``from``."""
    source = tmp_path / "sample.py"
    source.write_text("import a.b\nfrom c import d\n\ndef f():\n    import e\n    from live import g\n")
    assert _imported_modules(source) == {"a.b", "c", "c.d", "e", "live", "live.g"}


def test_sllmsim_imports_live_only_from_its_command_line():
    """Everything that drives live mode (calibration, the live side of a validation) lives in live/;
    sllmsim/ is what live/ builds on, and only sllmsim/cli reaches the other way, to run live mode."""
    offenders = [str(p.relative_to(REPO)) for p in _sources(PACKAGE)
                 if PACKAGE / "cli" not in p.parents and "live" in _top(_imported_modules(p))]
    assert offenders == []
