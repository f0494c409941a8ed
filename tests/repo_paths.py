"""Paths of the repository that tests read (a uniquely named module: every conftest.py is called
"conftest", so importing constants from one is ambiguous)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "traces"
EXPERIMENTS = REPO / "experiments"
SHARED = REPO.parent / "shared"


def load_experiment_script(relative: str):
    """Import a script of ``experiments/`` (not a package) as a module, e.g.
    ``load_experiment_script("validation-cpu/decode_gap.py")``."""
    import importlib.util

    path = EXPERIMENTS / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
