"""`sllmsim calibrate` and `sllmsim validate` end to end on tiny models (CPU, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("httpx")

from sllmsim.cli import main  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402
from sllmsim.config.trace import load_trace  # noqa: E402
from live.live_run import live_deploy_configs, load_recipes  # noqa: E402
from sllmsim.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.slow

#: Hardware of a CPU "device" fast enough that the tiny models load in well under a second.
_NODE = {"host_size": "1GB", "host_bandwidth": "1GB/s", "disk_size": "2GB", "disk_bandwidth": "1GB/s",
         "network_bandwidth": "1Gbps", "num_gpus": 1, "gpu": "CPU", "load_overhead_s": 0.1,
         "gpu_memory_bandwidth": "1GB/s", "gpu_flops": 1e10}


def _deploy(model: str, local_disk: list[str]) -> dict:
    return {"model": model, "backend": "transformers", "num_gpus": 1, "checkpoint_size": "1MB",
            "auto_scaling_config": {"metric": "concurrency", "target": 1, "min_instances": 0, "max_instances": 1,
                                    "keep_alive": 0.5},
            "placement_config": {"local_disk": local_disk},
            "backend_config": {"pretrained_model_name_or_path": model, "torch_dtype": "float32", "max_batch_size": 1}}


@pytest.fixture
def tiny_trace(tmp_path: Path) -> Path:
    """Two tiny models on the spec's two nodes: a disk load, a network load, a warm hit, a host hit."""
    (tmp_path / "hw.json").write_text(json.dumps({"0": _NODE, "1": _NODE}))
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "models.yaml").write_text(yaml.safe_dump({
        "tiny-a": {"hidden_size": 64, "num_layers": 1, "seed": 1},
        "tiny-b": {"hidden_size": 128, "num_layers": 1, "seed": 2},
    }))
    trace = {
        "hardware": "hw.json",
        "models": [_deploy("tiny-a", ["0"]), _deploy("tiny-b", [])],
        "requests": [
            {"time": 0.0, "model": "tiny-a", "input_tokens": 8, "output_tokens": 4},
            {"time": 0.1, "model": "tiny-b", "input_tokens": 8, "output_tokens": 4},
            {"time": 1.5, "model": "tiny-a", "input_tokens": 8, "output_tokens": 4},
            {"time": 4.0, "model": "tiny-a", "input_tokens": 8, "output_tokens": 4},
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(trace, sort_keys=False))
    return path


def test_validate_end_to_end_writes_the_report(tiny_trace: Path, tmp_path: Path):
    out = tmp_path / "report"
    code = main(["validate", str(tiny_trace), "--hardware", str(tmp_path / "hw.json"), "--out", str(out),
                 "--models-dir", str(tmp_path / "models"), "--threads", "1"])
    assert code == 0
    for name in ("report.md", "summary.json", "requests.csv", "loads.csv", "errors.csv", "scatter.png", "cdf.png",
                 "load_phases.png", "hw.json", "live/requests.csv", "sim/requests.csv", "sim/instances.csv"):
        assert (out / name).is_file(), name
    assert not (out / "store").exists()  # the live run's store is removed afterwards

    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 4
    assert summary["requests_completed_both"] == 4
    assert summary["placement_paired_loads"] >= 2
    assert summary["placement_live_only_loads"] == 0
    for key in ("cold_start_load_median_ape", "latency_median_ape", "ttft_median_ape"):
        assert summary[key] is not None and summary[key] >= 0, key
    assert set(summary["targets"]) == {"cold-start load time median APE ≤ 10%",
                                       "end-to-end latency median APE ≤ 15%", "placement same node ≥ 95%"}

    loads = pd.read_csv(out / "loads.csv", dtype={"node_live": str, "node_sim": str})
    first_a = loads[(loads["model"] == "tiny-a") & (loads["first_rank"] == 0)].iloc[0]
    assert (first_a["tier_live"], first_a["node_live"]) == ("disk", "0")  # its checkpoint starts on node 0's disk
    first_b = loads[(loads["model"] == "tiny-b") & (loads["first_rank"] == 0)].iloc[0]
    assert first_b["tier_live"] == "network"
    assert first_b["download_s_live"] > 0 and first_b["download_s_sim"] > 0

    requests = pd.read_csv(out / "requests.csv")
    assert requests["paired"].all()
    if Path("/proc/stat").is_file():  # other processes' CPU use was sampled during the live run
        assert requests["other_cores_live"].notna().all() and (requests["other_cores_live"] >= 0).all()
        assert (out / "contention.png").is_file() and "## Machine contention" in (out / "report.md").read_text()
    # The simulator was given the live run's token counts and (shifted) arrival times.
    assert (requests["output_tokens_live"].clip(lower=1) == requests["output_tokens_sim"]).all()
    gaps_live = requests["arrival_s_live"] - requests["arrival_s_live"].min()
    gaps_sim = requests["arrival_s_sim"] - requests["arrival_s_sim"].min()
    assert (gaps_live - gaps_sim).abs().max() < 1e-5  # the CSVs keep microseconds

    report = (out / "report.md").read_text()
    assert "## Targets" in report and "cold-start load time" in report and "![simulated vs measured]" in report
    sim_config = yaml.safe_load((out / "sim" / "resolved_config.yaml").read_text())
    assert sim_config["simulation"]["loading"] == "sequential"

    # The saved live run re-simulates without serving again, to the same numbers.
    again = tmp_path / "again"
    assert main(["validate", str(tiny_trace), "--hardware", str(tmp_path / "hw.json"), "--out", str(again),
                 "--reuse-live", str(out)]) == 0
    resummary = json.loads((again / "summary.json").read_text())
    for key in ("cold_start_load_median_ape", "latency_median_ape", "placement_same_node"):
        assert resummary[key] == summary[key], key
    assert (again / "sim" / "requests.csv").read_bytes() == (out / "sim" / "requests.csv").read_bytes()
    assert (again / "requests.csv").read_bytes() == (out / "requests.csv").read_bytes()  # CPU samples kept too


def test_validate_rejects_hardware_without_the_traces_nodes(tiny_trace: Path, tmp_path: Path, capsys):
    (tmp_path / "one-node.json").write_text(json.dumps({"1": _NODE}))
    code = main(["validate", str(tiny_trace), "--hardware", str(tmp_path / "one-node.json"),
                 "--out", str(tmp_path / "never")])
    assert code == 2
    assert "node '0' is not in the hardware config" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_live_deploy_configs_fold_the_initial_disk_placement(tiny_trace: Path, tmp_path: Path):
    trace = load_trace(tiny_trace)
    configs = live_deploy_configs(trace, {"tiny-a": tmp_path / "built-a"})
    assert configs[0]["backend_config"]["pretrained_model_name_or_path"] == str(tmp_path / "built-a")
    assert configs[0]["placement_config"]["local_disk"] == ["0"]
    assert configs[1]["backend_config"]["pretrained_model_name_or_path"] == "tiny-b"  # no recipe given
    assert "checkpoint_size" not in configs[0]


def test_bad_recipes_name_the_field(tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"m": {"hidden_size": 100, "num_layers": 2}}))
    with pytest.raises(ConfigError, match=r"m\.hidden_size.*multiple of 64"):
        load_recipes(path)
    path.write_text(yaml.safe_dump({"m": {"hidden_size": 64, "layers": 2}}))
    with pytest.raises(ConfigError, match=r"m\.layers"):
        load_recipes(path)


def test_calibrate_writes_hardware_that_both_runtimes_read(tmp_path: Path, tiny_model_dir: Path):
    out = tmp_path / "machine.json"
    code = main(["calibrate", "--storage", str(tmp_path / "store"), "--out", str(out), "--repeats", "2",
                 "--probe-size", "2MB", "--models", str(tiny_model_dir), "--prompt-tokens", "16"])
    assert code == 0
    cluster = load_hardware(out)
    assert cluster.node_ids == ("0", "1")
    node = cluster.node("0")
    assert node.gpu.name == "CPU"
    assert node.load_overhead_s > 0
    assert node.disk_bandwidth_bytes_per_s > 0 and node.host_to_gpu_bytes_per_s > 0
    assert node.gpu.memory_bandwidth_bytes_per_s > 0 and node.gpu.fp16_flops_per_s > 0
    details = json.loads((tmp_path / "machine.calibration.json").read_text())
    # The configured 1 Gbps is written, unless a throttled copy could not reach it (then said so).
    if node.network_bandwidth_bytes_per_s != pytest.approx(1024**3 / 8, rel=1e-3):
        assert node.network_bandwidth_bytes_per_s < 1024**3 / 8
        assert any("throttled copy reached only" in n for n in details["notes"])
    keys = {m["key"]: m for m in details["measurements"]}
    # Two repeats: two samples of the seconds-long throttled copies, four of the quick reads and copies.
    for key, n in (("disk_read_bytes_per_s", 4), ("page_cache_read_bytes_per_s", 4), ("host_copy_bytes_per_s", 4),
                   ("host_to_device_bytes_per_s", 4), ("network_copy_bytes_per_s", 2),
                   ("unthrottled_copy_bytes_per_s", 2), ("disk_pair_read_bytes_per_s", 4)):
        assert len(keys[key]["samples"]) == n and keys[key]["median"] > 0, key
    # Two readers at once: an aggregate above one reader's rate is written, one at or below it is not.
    if keys["disk_pair_read_bytes_per_s"]["median"] > keys["disk_read_bytes_per_s"]["median"] * 1.001:
        assert node.disk_aggregate_bandwidth_bytes_per_s > node.disk_bandwidth_bytes_per_s
    elif keys["disk_pair_read_bytes_per_s"]["median"] <= keys["disk_read_bytes_per_s"]["median"]:
        assert node.disk_aggregate_bandwidth_bytes_per_s is None
    assert details["models"][0]["decode_step_s"]["samples"]
    # The fitted steps are the served ones; the generation loop's own timing is kept beside them.
    assert "served" in details["models"][0]["decode_step_s"]["label"]
    assert len(details["models"][0]["direct_decode_step_s"]["samples"]) == 2
    # One model size: no fixed per-pass cost can be separated from the bandwidth, and the sidecar says so.
    assert node.forward_overhead_s == 0.0 and details["pass_fit"]["method"].startswith("weights / bandwidth only")
    # Warm requests through the real server give the per-request overhead, written to the JSON.
    serving = details["serving"]
    assert len(serving["ttft_s"]["samples"]) == 2 and min(serving["ttft_s"]["samples"]) > 0
    assert node.request_overhead_s == pytest.approx(max(0.0, serving["request_overhead_s"]["median"]), abs=1e-5)
    # Loads through the server (no keep-alive: every request after the first loads from host memory) set
    # the fixed load cost; the model's one depth leaves no per-layer term.
    assert len(serving["load_s"]["samples"]) == 2 and min(serving["load_s"]["samples"]) > 0
    assert node.load_overhead_per_layer_s == 0.0
    assert node.load_overhead_s == pytest.approx(max(0.0, serving["load_fixed_s"]["median"]), abs=1e-5)
    assert set(details["small_checkpoint"]) == {"disk_read_fixed_s", "download_fixed_s"}
    # The batch sweep: the model served with 1, 2, 4 and 8 requests at once, two rounds each, and the
    # per-sequence term fitted from it (one model: one depth, no per-layer part) and written.
    sweep = details["batch_sweep"]
    assert [p["batch"] for p in sweep["points"]] == [1, 2, 4, 8]
    assert all(p["step_s"] > 0 and p["base_step_s"] == sweep["points"][0]["step_s"] for p in sweep["points"])
    assert [len(s["samples"]) for s in sweep["samples"]] == [2, 2, 2, 2]
    assert sweep["fit"]["points"] == 3 and "one depth" in sweep["fit"]["method"]
    assert node.decode_overhead_per_sequence_per_layer_s == 0.0
    assert node.decode_overhead_per_sequence_s == pytest.approx(sweep["fit"]["decode_overhead_per_sequence_s"],
                                                                abs=1e-7)
    assert not (tmp_path / "store" / ".sllmsim-calibrate").exists()  # probe files are removed


def test_calibrate_rejects_a_bad_bandwidth(tmp_path: Path, capsys):
    code = main(["calibrate", "--storage", str(tmp_path), "--out", str(tmp_path / "m.json"),
                 "--network-bandwidth", "fast"])
    assert code == 2
    assert "--network-bandwidth" in capsys.readouterr().err
