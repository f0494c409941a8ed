"""Experiments end to end on a small grid: report files, one row per point × seed, intervals, cache reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sstats

from sllmsim.cli import main
from sllmsim.errors import ConfigError
from sllmsim.experiments import points as points_mod
from sllmsim.experiments.experiment_report import REPORT_MD, RESULTS_CSV, RESULTS_PARQUET, SUMMARY_CSV, write_report
from sllmsim.experiments.runner import run_experiment
from sllmsim.experiments.spec import load_experiment, parse_experiment
from sllmsim.experiments.stats import mean_ci, paired_difference, significance

REPO = Path(__file__).resolve().parents[2]

TRACE = {
    "name": "two-node-toy",
    "hardware": {n: {"host_size": "8GB", "host_bandwidth": "24GB/s", "disk_size": "64GB", "disk_bandwidth": "2GB/s",
                     "network_bandwidth": "10Gbps", "num_gpus": 1} for n in ("0", "1")},
    "models": [
        {"model": name, "backend": "transformers", "num_gpus": 1,
         "auto_scaling_config": {"target": 1, "max_instances": 2, "keep_alive": 5},
         "placement_config": {"local_disk": [node]},
         "backend_config": {"pretrained_model_name_or_path": f"facebook/{name}", "torch_dtype": "float16"}}
        for name, node in (("opt-125m", "0"), ("opt-1.3b", "1"), ("opt-2.7b", "0"))
    ],
    "workloads": [{"models": ["opt-125m", "opt-1.3b", "opt-2.7b"], "rate_per_s": 0.5, "duration_s": 120,
                   "input_tokens": 64, "output_tokens": 32}],
}


def _experiment(tmp_path: Path, file_name: str = "small.yaml", **overrides) -> Path:
    spec = {"name": "small", "description": "Two policies on a toy cluster.", "trace": TRACE,
            "grid": {"scheduler": ["storage_aware", "random"]}, "seeds": 2,
            "report": {"compare": {"key": "scheduler", "reference": "storage_aware"}}}
    spec.update(overrides)
    path = tmp_path / file_name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_small_grid_writes_the_report_folder(tmp_path):
    spec = load_experiment(_experiment(tmp_path))
    out = tmp_path / "small"
    run = run_experiment(spec, out, jobs=1, progress=False)
    assert run.ran == 4 and not run.violations
    written = {p.name for p in write_report(run, out, "sllmsim experiment small.yaml")}
    for name in (RESULTS_CSV, RESULTS_PARQUET, SUMMARY_CSV, REPORT_MD, "latency_cdf.png", "by_policy.png",
                 "start_tiers.png", "busy_gpus.png"):
        assert name in written and (out / name).stat().st_size > 0
    assert "vs_rate.png" not in written and "keep_alive_tradeoff.png" not in written  # not varied here

    table = pd.read_csv(out / RESULTS_CSV)
    assert len(table) == 4  # two policies × two seeds
    assert table[["scheduler", "seed"]].values.tolist() == [["storage_aware", 0], ["storage_aware", 1],
                                                             ["random", 0], ["random", 1]]
    assert (table["invariant_violations"] == 0).all()
    assert (table["requests"] == table["completed"] + table["failed"]).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / RESULTS_PARQUET), table, check_dtype=False)
    # The same seed gives both policies the same arrivals.
    assert table.loc[table.seed == 0, "requests"].nunique() == 1

    summary = pd.read_csv(out / SUMMARY_CSV)
    for policy in ("storage_aware", "random"):
        values = table.loc[table.scheduler == policy, "latency_mean_s"].to_numpy()
        row = summary[summary.scheduler == policy].iloc[0]
        half = sstats.t.ppf(0.975, 1) * values.std(ddof=1) / np.sqrt(2)
        assert row["n"] == 2
        assert row["latency_mean_s_mean"] == pytest.approx(values.mean())
        assert row["latency_mean_s_ci95"] == pytest.approx(half)

    report = (out / REPORT_MD).read_text()
    assert "# Experiment: small" in report and "95% CI over 2 seeds" in report
    assert "## Comparison: `scheduler = storage_aware`" in report and "## Verdict" in report
    assert "held on all 4 runs" in report
    assert "![Latency CDF per scheduler](latency_cdf.png)" in report


def test_unchanged_points_come_from_the_cache(tmp_path):
    path = _experiment(tmp_path)
    out = tmp_path / "small"
    first = run_experiment(load_experiment(path), out, jobs=1, progress=False)
    again = run_experiment(load_experiment(path), out, jobs=1, progress=False)
    assert again.ran == 0
    assert [o.summary for o in again.outcomes] == [o.summary for o in first.outcomes]
    # A third policy adds two new points; the four old ones are reused.
    grown = _experiment(tmp_path, "grown.yaml", grid={"scheduler": ["storage_aware", "random", "first_fit"]})
    third = run_experiment(load_experiment(grown), out, jobs=1, progress=False)
    assert third.ran == 2 and len(third.outcomes) == 6
    # --no-cache re-runs everything and gets the same numbers (the simulator is deterministic).
    fresh = run_experiment(load_experiment(path), out, jobs=1, progress=False, use_cache=False)
    assert fresh.ran == 4
    assert [o.summary for o in fresh.outcomes] == [o.summary for o in first.outcomes]


def test_worker_processes_give_the_same_results(tmp_path):
    path = _experiment(tmp_path)
    serial = run_experiment(load_experiment(path), tmp_path / "a", jobs=1, progress=False)
    parallel = run_experiment(load_experiment(path), tmp_path / "b", jobs=2, progress=False)
    assert parallel.ran == 4
    assert [o.summary for o in parallel.outcomes] == [o.summary for o in serial.outcomes]


def test_cli_writes_the_report_and_reports_invariant_violations(tmp_path, monkeypatch, capsys):
    path = _experiment(tmp_path, seeds=[3])
    assert main(["experiment", str(path), "--jobs", "1", "-q"]) == 0
    assert (tmp_path / "small" / REPORT_MD).is_file()
    capsys.readouterr()

    def broken(trace, frames):
        return ["invariant 2 (causality): made up for this test"]

    monkeypatch.setattr("sllmsim.invariants.check_invariants", broken)
    assert main(["experiment", str(path), "--jobs", "1", "-q", "--no-cache"]) == 2
    assert "2 invariant violations" in capsys.readouterr().err
    assert "**2 invariant violations** in 2 of 2 runs" in (tmp_path / "small" / REPORT_MD).read_text()


def test_ray_without_ray_installed_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("sllmsim")
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed here")
    except ImportError:
        pass
    path = _experiment(tmp_path, seeds=1)
    assert main(["experiment", str(path), "--ray", "auto", "-q"]) == 2
    assert "pip install 'sllmsim[ray]'" in capsys.readouterr().err


# --------------------------------------------------------------------------- spec and variations


def _inputs(spec_dict: dict, tmp_path: Path, index: int = 0):
    spec = parse_experiment(spec_dict, tmp_path, "exp.yaml")
    point = spec.points()[index]
    return spec, point, spec.inputs(point)


def test_variations_edit_the_right_fields(tmp_path):
    grid = {"keep_alive_s": [60], "gpus_per_node": [4], "host_size": ["64GB"], "disk_bandwidth": ["1GB/s"],
            "rate_scale": [2.0], "trace.simulation.loading": ["sequential"], "scheduler": ["first_fit"]}
    spec, point, inputs = _inputs({"trace": TRACE, "grid": grid, "seeds": [7]}, tmp_path)
    assert all(m["auto_scaling_config"]["keep_alive"] == 60 for m in inputs.trace["models"])
    assert all(n["num_gpus"] == 4 and n["host_size"] == "64GB" and n["disk_bandwidth"] == "1GB/s"
               for n in inputs.trace["hardware"].values())
    assert inputs.trace["workloads"][0]["rate_per_s"] == 1.0
    assert inputs.trace["simulation"] == {"loading": "sequential"}
    assert inputs.trace["scheduler"] == "first_fit" and inputs.trace["seed"] == 7
    assert TRACE["workloads"][0]["rate_per_s"] == 0.5  # the base trace is never edited in place
    trace = points_mod.build_trace(inputs, tmp_path)
    assert trace.cluster.nodes[0].num_gpus == 4 and trace.simulation.loading == "sequential"


def test_rate_scale_compresses_explicit_requests_in_time(tmp_path):
    base = {**TRACE, "workloads": [], "requests": [{"time": 10.0, "model": "opt-125m", "input_tokens": 8,
                                                   "output_tokens": 8}]}
    spec, point, inputs = _inputs({"trace": base, "grid": {"rate_scale": [4]}}, tmp_path)
    assert points_mod.build_trace(inputs, tmp_path).requests.time_s.tolist() == [2.5]


def test_cases_are_crossed_with_the_grid_and_seeds(tmp_path):
    spec = parse_experiment({"trace": TRACE, "grid": {"scheduler": ["storage_aware", "random"]}, "seeds": 2,
                             "cases": {"baseline": {}, "fast disk": {"disk_bandwidth": "8GB/s"}}}, tmp_path, "e")
    pts = spec.points()
    assert len(pts) == 8
    assert pts[4].param_dict() == {"case": "fast disk", "scheduler": "storage_aware", "disk_bandwidth": "8GB/s"}
    assert pts[0].param_dict()["disk_bandwidth"] is None
    fast = spec.inputs(pts[4])
    assert fast.trace["hardware"]["1"]["disk_bandwidth"] == "8GB/s"
    # Points that differ only in the seed differ in their cache key; equal inputs share one.
    keys = [points_mod.point_key(spec.inputs(p)) for p in pts]
    assert len(set(keys)) == 8


def test_requests_converter_per_point(tmp_path):
    fixtures = REPO / "tests" / "traces" / "fixtures"
    spec_dict = {"trace": TRACE, "seeds": 2,
                 "requests": {"converter": "azure_functions", "invocations": str(fixtures / "azure_functions_tiny.csv"),
                              "tokens": [str(fixtures / "azure_llm_tiny_conv.csv")], "target_rps": 0.05},
                 "grid": {"requests.spread": ["uniform", "even"], "rate_scale": [1, 2]}}
    spec = parse_experiment(spec_dict, tmp_path, "e")
    pts = spec.points()
    inputs = spec.inputs(pts[2])  # spread uniform, rate_scale 2, seed 0
    assert inputs.requests["target_rps"] == pytest.approx(0.1)
    trace = points_mod.build_trace(inputs, tmp_path)
    # The three most popular functions map onto the trace's three models, in their listed order.
    assert set(trace.requests.model.tolist()) <= {"opt-125m", "opt-1.3b", "opt-2.7b"}
    assert spec.inputs(pts[0]).requests["seed"] != spec.inputs(pts[1]).requests["seed"]


@pytest.mark.parametrize("change, field, words", [
    ({"grid": {"keepalive_s": [1]}}, "grid.keepalive_s", "did you mean 'keep_alive_s'"),
    ({"grid": {"scheduler": "random"}}, "grid.scheduler", "non-empty list"),
    ({"grid": {"scheduler": ["random", "random"]}}, "grid.scheduler", "repeat"),
    ({"grid": {"requests.target_rps": [1]}}, "grid.requests.target_rps", "no 'requests:'"),
    ({"seeds": 0}, "seeds", "at least 1"),
    ({"seeds": [1, 1]}, "seeds", "distinct"),
    ({"trace": "missing.yaml"}, "trace", "file not found"),
    ({"requests": {"converter": "azure_functions", "invocations": "nope.csv", "tokens": []}},
     "requests.invocations", "file not found"),
    ({"report": {"reference": {"scheduler": "first_fit"}}}, "report.reference.scheduler", "grid's values"),
    ({"report": {"compare": {"key": "scheduler", "reference": "shepherd"}}}, "report.compare.reference", "one of"),
    ({"colour": 1}, "colour", "unknown key"),
])
def test_bad_experiment_files_name_the_field(tmp_path, change, field, words):
    spec = {"trace": TRACE, "grid": {"scheduler": ["storage_aware", "random"]}, **change}
    with pytest.raises(ConfigError) as info:
        parse_experiment(spec, tmp_path, "exp.yaml")
    assert info.value.field == field
    assert words in str(info.value)


def test_a_bad_value_fails_before_any_run(tmp_path):
    path = _experiment(tmp_path, grid={"scheduler": ["storage_aware", "fastest"]})
    with pytest.raises(ConfigError, match=r"point 2 \(scheduler=fastest\).*scheduler"):
        run_experiment(load_experiment(path), tmp_path / "x", jobs=1, progress=False)


# --------------------------------------------------------------------------- statistics


def test_mean_ci_is_student_t():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302652729749462 * 1.0 / np.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None, 1)
    assert mean_ci([None, float("nan")]) == (None, None, 0)


def test_paired_difference_removes_shared_variation():
    table = pd.DataFrame({"policy": ["a", "a", "a", "b", "b", "b"], "seed": [0, 1, 2] * 2,
                          "x": [10.0, 20.0, 30.0, 11.0, 21.2, 30.8]})
    diff = paired_difference(table, "policy", "a", "b", "x", match=[]).iloc[0]
    assert diff["diff_mean"] == pytest.approx(1.0)
    assert diff["n"] == 3 and diff["relative"] == pytest.approx(1.0 / 20.0)
    assert significance(diff["diff_mean"], diff["diff_ci95"]) == "higher"
    assert significance(-1.0, 0.5) == "lower" and significance(0.2, 0.5) == "unclear"
    assert significance(1.0, None) == "unclear"


def test_cache_key_follows_inputs_and_files(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("time,model,input_tokens,output_tokens\n0,opt-125m,8,8\n")
    base = {**TRACE, "workloads": [], "requests_csv": str(csv)}
    spec, point, inputs = _inputs({"trace": base}, tmp_path)
    key = points_mod.point_key(inputs)
    assert points_mod.point_key(spec.inputs(point)) == key
    csv.write_text("time,model,input_tokens,output_tokens\n1,opt-125m,8,8\n")
    points_mod._file_digest.cache_clear()
    assert points_mod.point_key(spec.inputs(point)) != key
    assert json.loads(json.dumps(points_mod.resolved_inputs(inputs)))["trace"]["requests_csv"]["sha256"]


# --------------------------------------------------------------------------- reclaim_idle, migration cost, panels


def test_reclaim_idle_variation_sets_the_scheduler_flag(tmp_path):
    grid = {"scheduler": ["random"], "reclaim_idle": [True]}
    spec, point, inputs = _inputs({"trace": TRACE, "grid": grid}, tmp_path)
    assert inputs.trace["scheduler"] == {"placement": "random", "reclaim_idle": True}
    assert points_mod.build_trace(inputs, tmp_path).scheduler.reclaim_idle is True
    # The variation order does not matter: the flag survives a later change of policy.
    spec, point, inputs = _inputs({"trace": TRACE, "grid": {"reclaim_idle": [False], "scheduler": ["first_fit"]}},
                                  tmp_path)
    assert inputs.trace["scheduler"] == {"placement": "first_fit", "reclaim_idle": False}


def test_keep_alive_plot_draws_one_panel_per_value_of_the_panel_key(tmp_path):
    from sllmsim.experiments.plots import plot_keep_alive_tradeoff

    summary = pd.DataFrame({"reclaim": [False, False, True, True], "curve": ["a"] * 4, "keep_alive_s": [0, 60] * 2,
                            "gpu_seconds_mean": [1.0, 2.0, 1.0, 1.5], "gpu_seconds_ci95": [0.1] * 4,
                            "latency_p99_s_mean": [5.0, 9.0, 5.0, 3.0], "latency_p99_s_ci95": [0.5] * 4})
    fig = plot_keep_alive_tradeoff(summary, "keep_alive_s", "curve", panel_key="reclaim")
    assert [ax.get_title() for ax in fig.axes] == ["reclaim = False", "reclaim = True"]
    assert len(plot_keep_alive_tradeoff(summary, "keep_alive_s", "curve").axes) == 1
    # One row of panels per metric.
    summary["latency_mean_s_mean"], summary["latency_mean_s_ci95"] = [2.0, 3.0, 2.0, 1.0], 0.2
    two = plot_keep_alive_tradeoff(summary, "keep_alive_s", "curve", y_metrics=("latency_p99_s", "latency_mean_s"),
                                   panel_key="reclaim")
    assert [ax.get_ylabel() for ax in two.axes] == ["p99 latency (s)"] * 2 + ["mean latency (s)"] * 2


MIGRATION_TRACE = {
    "name": "migration-toy",
    # Node 0 caches both models in host memory; A's long generation holds its GPU when B arrives.
    # Node 1 (where A can move) has a slower GPU, so a moved request decodes slower there.
    "hardware": {n: {"host_size": "64GB", "host_bandwidth": "64GB/s", "disk_size": "256GB", "disk_bandwidth": "2GB/s",
                     "network_bandwidth": "8Gbps", "num_gpus": 1, "gpu": gpu} for n, gpu in (("0", "A100-80GB"),
                                                                                            ("1", "A40"))},
    "models": [
        {"model": "a", "checkpoint_size": "2GB", "backend_config": {"pretrained_model_name_or_path": "toy/a"},
         "placement_config": {"host_memory": ["0"], "local_disk": ["1"]}},
        {"model": "b", "checkpoint_size": "16GB", "backend_config": {"pretrained_model_name_or_path": "toy/b"},
         "placement_config": {"host_memory": ["0"]}},
    ],
    "scheduler": {"placement": "storage_aware"},
    "requests": [{"time": 0.0, "model": "a", "input_tokens": 8, "output_tokens": 4000},
                 {"time": 0.2, "model": "b", "input_tokens": 8, "output_tokens": 4}],
}


def test_migration_cost_pairs_each_migrated_request_with_itself_without_migration(tmp_path):
    from sllmsim.config.trace import parse_trace
    from sllmsim.sim import simulate

    path = _experiment(tmp_path, trace=MIGRATION_TRACE, grid={}, seeds=2,
                       cases={"migration": {"trace.scheduler.enable_migration": True},
                              "no migration": {"trace.scheduler.enable_migration": False}},
                       report={"migration_cost": {"key": "case", "migrated": "migration", "baseline": "no migration"}})
    spec = load_experiment(path)
    out = tmp_path / "mig"
    run = run_experiment(spec, out, jobs=1, progress=False)
    assert not run.violations
    write_report(run, out, "sllmsim experiment small.yaml")
    report = (out / REPORT_MD).read_text()
    section = report.split("## What migration costs the migrated requests")[1].split("## ")[0]
    # The same explicit requests under both seeds: A's request moves in each migration run.
    moved = simulate(parse_trace({**MIGRATION_TRACE, "scheduler": {"enable_migration": True}}, tmp_path)).requests[0]
    still = simulate(parse_trace(MIGRATION_TRACE, tmp_path)).requests[0]
    assert moved.migrated and not still.migrated
    delta = (moved.finish_s - moved.arrival_s) - (still.finish_s - still.arrival_s)
    row = next(line for line in section.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert delta > 1.0  # ~3,800 tokens decoded on an A40 instead of an A100
    assert cells[0] == "2" and float(cells[3]) == pytest.approx(delta, rel=1e-2)  # median Δ (one value, twice)
    assert cells[6] == "100%"


def test_report_lists_every_invariant(tmp_path):
    from sllmsim.invariants import INVARIANTS

    spec = load_experiment(_experiment(tmp_path))
    out = tmp_path / "small"
    write_report(run_experiment(spec, out, jobs=1, progress=False), out, "sllmsim experiment small.yaml")
    report = (out / REPORT_MD).read_text()
    assert f"All {len(INVARIANTS)} invariants" in report
    assert all(f"{n}. {text}" in report for n, text in INVARIANTS.items())


@pytest.mark.parametrize("change, field", [
    ({"migration_cost": {"key": "scheduler", "migrated": "storage_aware", "baseline": "fifo"}},
     "report.migration_cost.baseline"),
    ({"migration_cost": {"key": "seed", "migrated": 1, "baseline": 0}}, "report.migration_cost.key"),
    ({"panel_key": "keep_alive_s"}, "report.panel_key"),
    ({"tradeoff_metrics": ["latency_p99"]}, "report.tradeoff_metrics"),
])
def test_bad_report_options_name_the_field(tmp_path, change, field):
    spec = {"trace": TRACE, "grid": {"scheduler": ["storage_aware", "random"]}, "report": change}
    with pytest.raises(ConfigError) as info:
        parse_experiment(spec, tmp_path, "exp.yaml")
    assert info.value.field == field
