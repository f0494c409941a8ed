"""The committed experiments' results.csv are reproduced byte for byte by today's simulator.

Speed work on the engine must not change a single result: this re-runs points of every committed
experiment and formats their rows exactly as ``write_report`` writes results.csv. By default the
first seed of every configuration runs (a few seconds each); ``SLLMSIM_ALL_POINTS=1`` runs them all.
"""

from __future__ import annotations

import os

import pytest
from repo_paths import EXPERIMENTS, SHARED

from sllmsim.errors import ConfigError
from sllmsim.experiments.points import run_point
from sllmsim.experiments.experiment_report import results_table
from sllmsim.experiments.runner import ExperimentRun, make_tasks
from sllmsim.experiments.spec import load_experiment

SPECS = sorted(EXPERIMENTS.glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_committed_results_are_reproduced(path):
    try:
        spec = load_experiment(path)
    except ConfigError as exc:
        if (SHARED / "traces-real").is_dir():
            raise
        pytest.skip(f"needs the raw traces in {SHARED / 'traces-real'}: {exc}")
    points, tasks = make_tasks(spec)
    first_seed = min(p.seed for p in points)
    keep = [i for i, p in enumerate(points) if os.environ.get("SLLMSIM_ALL_POINTS") or p.seed == first_seed]
    outcomes = [run_point(tasks[i]) for i in keep]
    table = results_table(ExperimentRun(spec, [points[i] for i in keep], outcomes))
    got = table.to_csv(index=False, float_format="%.9g", lineterminator="\n").splitlines()
    committed = (path.parent / path.stem / "results.csv").read_text().splitlines()
    assert got[0] == committed[0]
    # Rows are in point order; the committed file holds every point.
    want = [committed[1 + i] for i in keep]
    assert got[1:] == want
