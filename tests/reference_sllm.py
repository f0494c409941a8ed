"""The real ServerlessLLM (``serverless-llm`` 0.8.0 from PyPI, installed with ``--no-deps``), driven
in a subprocess through ``reference_standins/run_reference.py`` with a stand-in for Ray.

CI installs it (``.ci/run``); elsewhere the tests that need it skip, saying how to install it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE_VERSION = "0.8.0"
STANDINS = Path(__file__).resolve().parent / "reference_standins"
RUNNER = STANDINS / "run_reference.py"
#: What the package's client module imports besides itself and Ray.
CLIENT_MODULES = ("click", "requests", "uvicorn", "fastapi")
INSTALL_HINT = (f"pip install --no-deps serverless-llm=={REFERENCE_VERSION} (plus: {', '.join(CLIENT_MODULES)}), "
                "as .ci/run does")


def skip_unless_reference(*modules: str) -> None:
    """Skip the calling test unless the reference package (and ``modules``) can be imported."""
    try:
        version = importlib.metadata.version("serverless-llm")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"the reference package serverless-llm is not installed: {INSTALL_HINT}")
    if version != REFERENCE_VERSION:
        pytest.skip(f"serverless-llm {version} is installed; these tests compare with {REFERENCE_VERSION}: "
                    f"{INSTALL_HINT}")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the reference's client needs {', '.join(missing)}: {INSTALL_HINT}")


def run_reference(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 120.0
                  ) -> subprocess.CompletedProcess:
    """Run ``run_reference.py ARGS`` with the Ray stand-in first on the path (only in that process)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STANDINS), full_env.get("PYTHONPATH")) if p)
    full_env.setdefault("LOG_LEVEL", "WARNING")  # the reference logs every step at DEBUG on stdout
    return subprocess.run([sys.executable, str(RUNNER), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout_s)
