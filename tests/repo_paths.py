"""Paths of the repository that tests read (a uniquely named module: every conftest.py is called
"conftest", so importing constants from one is ambiguous)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "traces"
EXPERIMENTS = REPO / "experiments"
SHARED = REPO.parent / "shared"
