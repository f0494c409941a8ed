"""Trace YAML: parsing, re-parsing edited dicts, dataclasses.replace, and errors naming file and field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from repo_paths import TRACES

from sllmsim.cli import main
from sllmsim.config.trace import load_trace, parse_trace
from sllmsim.errors import ConfigError

HARDWARE = json.loads((TRACES / "hardware_config.json").read_text())


def _raw(**extra) -> dict:
    raw = {"hardware": "hardware_config.json", "models": ["config-opt-2.7b.json", "config-opt-1.3b.json"],
           "requests": [{"time": 0.0, "model": "opt-2.7b", "input_tokens": 8, "output_tokens": 4}]}
    raw.update(extra)
    return raw


def _write(tmp_path: Path, raw: dict, name: str = "t.yaml") -> Path:
    for f in ("hardware_config.json", "config-opt-2.7b.json", "config-opt-1.3b.json"):
        (tmp_path / f).write_text((TRACES / f).read_text())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_and_relative_paths(tmp_path):
    trace = load_trace(_write(tmp_path, _raw()))
    assert trace.name == "t"
    assert trace.scheduler.placement == "storage_aware" and trace.scheduler.autoscale == "concurrency"
    assert trace.seed == 0 and trace.simulation.loading == "pipelined"
    assert trace.cluster.node_ids == ("0", "1")
    assert [m.model for m in trace.models] == ["opt-2.7b", "opt-1.3b"]
    assert trace.model_size_bytes("opt-2.7b") == 2651596800 * 2


def test_inline_hardware_models_scheduler_mapping_and_storage():
    trace = parse_trace({
        "name": "inline", "hardware": HARDWARE,
        "models": [{"model": "m", "checkpoint_size": "4GB", "backend_config": {"pretrained_model_name_or_path": "x/m"}}],
        "scheduler": {"placement": "first_fit", "autoscale": "concurrency"},
        "storage": {"local_disk": {"m": ["1"]}, "host_memory": {"m": "all"}},
        "requests": [{"time": 1, "model": "m", "input_tokens": 1, "output_tokens": 1}],
    })
    assert trace.scheduler.placement == "first_fit"
    # host memory implies disk; "all" expands to every node
    assert trace.initial_storage() == {"m": (("1", "0"), ("0", "1"))}


def test_requests_merge_list_csv_and_workloads_sorted_by_time(tmp_path):
    (tmp_path / "arrivals.csv").write_text("time,model,input_tokens,output_tokens\n2.5,opt-1.3b,10,20\n0.5,opt-2.7b,1,2\n")
    raw = _raw(requests_csv="arrivals.csv",
               workloads=[{"model": "opt-1.3b", "rate_per_s": 1.0, "duration_s": 10}])
    trace = load_trace(_write(tmp_path, raw))
    reqs = trace.requests
    assert list(reqs.time_s) == sorted(reqs.time_s)
    assert len(reqs) == 3 + int((reqs.model == "opt-1.3b").sum()) - 1
    assert {0.0, 0.5, 2.5} <= set(reqs.time_s.tolist())


def test_edit_the_raw_dict_and_reparse_or_replace_fields():
    raw = _raw(workloads=[{"model": "opt-1.3b", "rate_per_s": 2.0, "duration_s": 60}])
    base = parse_trace(raw, TRACES)
    edited = parse_trace({**raw, "seed": 5}, TRACES)
    replaced = dataclasses.replace(base, seed=5)
    assert list(replaced.requests.time_s) == list(edited.requests.time_s)
    assert list(replaced.requests.time_s) != list(base.requests.time_s)
    assert dataclasses.replace(base, scheduler=dataclasses.replace(base.scheduler, placement="random")
                               ).scheduler.placement == "random"


@pytest.mark.parametrize("edit, field, message", [
    ({"reqests": []}, "reqests", "did you mean 'requests'"),
    ({"scheduler": {"placment": "storage_aware"}}, "scheduler.placment", "did you mean 'placement'"),
    ({"scheduler": "storage_awar"}, "scheduler.placement", "did you mean 'storage_aware'"),
    ({"seed": -1}, "seed", "non-negative integer"),
    ({"requests": [{"time": 0, "model": "opt-2.7", "input_tokens": 1, "output_tokens": 1}]},
     "requests[0].model", "did you mean 'opt-2.7b'"),
    ({"requests": [{"time": 0, "model": "opt-2.7b", "input_tokens": 1}]}, "requests[0].output_tokens", "missing"),
    ({"requests": [{"time": -1, "model": "opt-2.7b", "input_tokens": 1, "output_tokens": 1}]},
     "requests[0].time", "non-negative"),
    ({"storage": {"local_disk": {"opt-2.7b": ["7"]}}}, "storage.local_disk.opt-2.7b", "node '7'"),
    ({"storage": {"local_disks": "all"}}, "storage.local_disks", "did you mean 'local_disk'"),
    ({"simulation": {"loading": "parallel"}}, "simulation.loading", "pipelined, sequential"),
    ({"workloads": [{"model": "opt-13b", "rate_per_s": 1, "duration_s": 1}]}, "workloads[0].model", "unknown model"),
    ({"scheduler": {"placement": "first_fit", "enable_migration": True}}, "scheduler.enable_migration",
     "cannot migrate"),
])
def test_errors_name_file_and_field(tmp_path, edit, field, message):
    path = _write(tmp_path, _raw(**edit))
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    assert err.value.source == str(path)
    assert err.value.field == field
    assert message in err.value.message


def test_bad_unit_in_inline_hardware_names_the_node_field():
    hardware = {"0": {**HARDWARE["0"], "host_size": "32 gigs"}}
    with pytest.raises(ConfigError) as err:
        parse_trace(_raw(hardware=hardware), TRACES, source="trace.yaml")
    assert err.value.source == "trace.yaml: hardware" and err.value.field == "0.host_size"
    assert "expected a size such as '32GB'" in err.value.message


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="trace file not found"):
        load_trace(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as err:
        load_trace(_write(tmp_path, _raw(hardware="missing.json")))
    assert "missing.json" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_trace(_write(tmp_path, _raw(requests_csv="nope.csv")))
    assert err.value.field == "requests_csv" and "nope.csv" in err.value.message


def test_unknown_model_in_requests_csv_names_file_and_row(tmp_path):
    (tmp_path / "arrivals.csv").write_text(
        "time,model,input_tokens,output_tokens\n0.5,opt-1.3b,1,2\n0.1,opt-6.7b,1,2\n")
    with pytest.raises(ConfigError) as err:
        load_trace(_write(tmp_path, _raw(requests_csv="arrivals.csv")))
    assert err.value.source == str(tmp_path / "arrivals.csv")
    assert err.value.field == "row 3: model" and "opt-6.7b" in err.value.message


def test_storage_beyond_disk_size_is_rejected():
    hardware = {n: {**spec, "disk_size": "4GB"} for n, spec in HARDWARE.items()}
    with pytest.raises(ConfigError) as err:
        parse_trace(_raw(hardware=hardware, storage={"local_disk": "all"}), TRACES, source="t.yaml")
    assert err.value.field == "storage.local_disk" and "disk_size" in err.value.message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("hardware: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    assert err.value.field.startswith("line ")


def test_cli_reports_config_errors_in_one_line_without_traceback(tmp_path, capsys):
    path = _write(tmp_path, _raw(reqests=[]))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: reqests: unknown key; did you mean 'requests'?")
    assert "Traceback" not in err
    assert main(["run", str(TRACES / "seed-example.yaml"), "--scheduler", "fastest"]) == 2
    assert "unknown placement policy 'fastest'" in capsys.readouterr().err
