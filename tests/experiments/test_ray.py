"""``sllmsim experiment --ray ADDRESS`` on a real (local, one-CPU) Ray cluster gives the local rows."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_experiment import _experiment

from sllmsim.experiments.experiment_report import RESULTS_CSV

ray = pytest.importorskip("ray")

_CLI = "import sys; from sllmsim.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    # The `ray` script next to this interpreter (the venv's), else the one on PATH.
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


@pytest.mark.slow
def test_experiment_on_a_local_ray_cluster_matches_the_local_run(tmp_path):
    path = _experiment(tmp_path, seeds=1)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    local = subprocess.run([sys.executable, "-c", _CLI, "experiment", str(path), "--jobs", "1", "-q",
                            "--out", str(tmp_path / "local")], env=env, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr

    port = _free_port()
    # A short temp dir: Ray's socket paths must fit the OS limit.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # --block keeps `ray start` in the foreground as the parent of the cluster's processes: ending
    # its process group stops exactly this cluster (`ray stop` would stop every Ray on the machine).
    head = subprocess.Popen([_ray_cli(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(port), "--num-cpus", "1", "--num-gpus", "0",
                             "--include-dashboard", "false", "--temp-dir", ray_tmp, "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        remote = None
        while time.monotonic() < deadline:
            remote = subprocess.run([sys.executable, "-c", _CLI, "experiment", str(path), "--ray", address, "-q",
                                     "--out", str(tmp_path / "ray")], env=env, capture_output=True, text=True)
            if remote.returncode == 0 or "cannot connect" not in remote.stderr or head.poll() is not None:
                break
            time.sleep(2)  # the head is still starting
        assert head.poll() is None, f"ray start exited: {head.stderr.read()[-2000:] if head.stderr else ''}"
        assert remote is not None and remote.returncode == 0, remote.stderr[-3000:]
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    local_rows = (tmp_path / "local" / RESULTS_CSV).read_text()
    ray_rows = (tmp_path / "ray" / RESULTS_CSV).read_text()
    assert len(local_rows.splitlines()) == 3  # header + two points (two schedulers, one seed)
    assert ray_rows == local_rows
