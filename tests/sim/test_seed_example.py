"""The spec's example, simulated: same placements and the reference's estimates to the last digit."""

from __future__ import annotations

from repo_paths import TRACES

from sllmsim.cli import main
from sllmsim.config.trace import load_trace, parse_trace
from sllmsim.sim import simulate

SPEC_LOG = [
    "Sorted scheduling options: [('0', 0.9877967834472656)]",
    "Allocated node 0 for model opt-2.7b",
    "Sorted scheduling options: [('1', 0.4901580810546875)]",
    "Allocated node 1 for model opt-1.3b",
]


def test_seed_example_logs_the_spec_lines_and_placements():
    trace = load_trace(TRACES / "seed-example.yaml")
    result = simulate(trace)
    assert result.scheduler_log == SPEC_LOG
    assert [(r.model, r.node, r.status, r.cold_start, r.tier) for r in result.requests] == [
        ("opt-2.7b", "0", "completed", True, "disk"),
        ("opt-1.3b", "1", "completed", True, "disk"),
    ]
    # The load takes exactly the estimate: nothing else shares node 0's disk.
    load = next(p for p in result.phases if p.phase == "loading_to_host" and p.model == "opt-2.7b")
    assert (load.start_s, load.end_s) == (0.0, 0.9877967834472656)


def test_seed_example_deploy_files_are_the_spec_files_unchanged():
    trace = load_trace(TRACES / "seed-example.yaml")
    assert [cfg.placement_config.local_disk for cfg in trace.models] == [None, None]
    assert trace.storage.local_disk == () and trace.storage.host_memory == ()
    # Registration alone (no `storage:` key): one disk copy each, round-robin in deploy order.
    assert trace.initial_storage() == {"opt-2.7b": (("0",), ()), "opt-1.3b": (("1",), ())}


def test_registration_follows_deploy_order_not_target_nodes():
    # Deployed the other way round, the round robin puts opt-1.3b on node 0 and opt-2.7b on node 1:
    # each then runs where its target_nodes say, downloading its checkpoint over the network.
    trace = parse_trace({"hardware": "hardware_config.json", "models": ["config-opt-1.3b.json", "config-opt-2.7b.json"],
                         "requests": [{"time": 0.0, "model": "opt-2.7b", "input_tokens": 24, "output_tokens": 64}]},
                        TRACES)
    assert trace.initial_storage() == {"opt-1.3b": (("0",), ()), "opt-2.7b": (("1",), ())}
    result = simulate(trace)
    assert result.requests[0].tier == "network"
    assert result.scheduler_log[0].startswith("Sorted scheduling options: [('0', 3.9")


def test_storage_none_overrides_registration():
    trace = parse_trace({"hardware": "hardware_config.json", "models": ["config-opt-2.7b.json", "config-opt-1.3b.json"],
                         "storage": {"local_disk": "none"},
                         "requests": [{"time": 0.0, "model": "opt-2.7b", "input_tokens": 24, "output_tokens": 64}]},
                        TRACES)
    assert trace.initial_storage() == {"opt-2.7b": ((), ()), "opt-1.3b": ((), ())}
    assert simulate(trace).requests[0].tier == "network"
    one = parse_trace({"hardware": "hardware_config.json", "models": ["config-opt-2.7b.json", "config-opt-1.3b.json"],
                       "storage": {"local_disk": {"opt-1.3b": "none"}, "host_memory": {"opt-2.7b": ["1"]}}}, TRACES)
    assert one.initial_storage() == {"opt-2.7b": (("0", "1"), ("1",)), "opt-1.3b": ((), ())}


def test_sllmsim_run_prints_the_log_and_a_summary_and_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TRACES / "seed-example.yaml"), "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    for line in SPEC_LOG:
        assert line in printed
    assert "latency p50" in printed and str(out) in printed
    for name in ("requests.csv", "instances.csv", "timeseries.csv", "summary.json", "resolved_config.yaml",
                 "scheduler.log"):
        assert (out / name).is_file(), name
    assert (out / "scheduler.log").read_text().splitlines() == SPEC_LOG


def test_sllmsim_run_quiet_prints_only_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TRACES / "seed-example.yaml"), "--out", str(out), "--no-plots", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)


def test_sllmsim_run_scheduler_and_seed_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TRACES / "seed-example.yaml"), "--out", str(out), "--no-plots",
                 "--scheduler", "first_fit", "--seed", "3"]) == 0
    assert "seed-example (first_fit)" in capsys.readouterr().out
    config = (out / "resolved_config.yaml").read_text()
    assert "placement: first_fit" in config and "seed: 3" in config
