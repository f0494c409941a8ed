"""Fixtures of the fidelity tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny OPT model folder (random weights, about 1 MB), built once per session. Read-only."""
    pytest.importorskip("torch")
    from live.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-opt") / "model", "opt", 0)
