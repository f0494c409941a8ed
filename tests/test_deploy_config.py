"""Deploy configs: the spec's files parse unchanged, defaults are the reference's, errors name the field."""

from __future__ import annotations

import pytest

from repo_paths import TRACES
from sllmsim.config.deploy import (
    BackendConfig,
    DeployConfig,
    deploy_config_to_dict,
    load_deploy_config,
    parse_deploy_config,
)
from sllmsim.config.hardware import load_hardware, parse_hardware
from sllmsim.errors import ConfigError


def test_spec_deploy_config_parses_unchanged():
    cfg = load_deploy_config(TRACES / "config-opt-2.7b.json")
    assert cfg.model == "opt-2.7b"
    assert cfg.placement_config.target_nodes == ("0",)
    assert cfg.backend_config.pretrained_model_name_or_path == "facebook/opt-2.7b"
    assert cfg.auto_scaling_config.max_instances == 10


def test_reference_defaults():
    cfg = parse_deploy_config({"model": "m"})
    asc = cfg.auto_scaling_config
    assert (asc.target, asc.min_instances, asc.max_instances, asc.keep_alive) == (1, 0, 10, 0.0)
    assert cfg.num_gpus == 1 and cfg.backend == "transformers"
    assert cfg.backend_config.pretrained_model_name_or_path == "m"


def test_the_parser_takes_every_default_from_the_dataclasses():
    # A config that gives only the model must equal the dataclasses built with their own defaults:
    # a default restated in the parser that drifted from its dataclass would show here.
    source = "<defaults>"
    assert parse_deploy_config({"model": "m"}, source) == DeployConfig(
        model="m", backend_config=BackendConfig(pretrained_model_name_or_path="m"), source=source)
    # Empty sections too (each key absent inside its section).
    raw = {"model": "m", "auto_scaling_config": {}, "placement_config": {}, "backend_config": {}}
    assert parse_deploy_config(raw, source) == parse_deploy_config({"model": "m"}, source)


def test_round_trip_through_dict():
    cfg = load_deploy_config(TRACES / "config-opt-1.3b.json")
    again = parse_deploy_config(deploy_config_to_dict(cfg), cfg.source)
    assert again == cfg


def test_memory_pool_is_the_reference_key_and_host_memory_its_alias():
    ref = parse_deploy_config({"model": "m", "placement_config": {"memory_pool": ["1"], "local_disk": ["0"]}})
    ours = parse_deploy_config({"model": "m", "placement_config": {"host_memory": ["1"], "local_disk": ["0"]}})
    assert ref.placement_config == ours.placement_config
    assert (ref.placement_config.local_disk, ref.placement_config.host_memory) == (("0",), ("1",))
    # The dump uses the reference's name, and an absent local_disk stays absent (round-robin registration).
    assert deploy_config_to_dict(ref)["placement_config"] == {"memory_pool": ["1"], "local_disk": ["0"]}
    bare = parse_deploy_config({"model": "m"})
    assert bare.placement_config.local_disk is None
    assert "local_disk" not in deploy_config_to_dict(bare)["placement_config"]
    assert parse_deploy_config({"model": "m", "placement_config": {"local_disk": []}}).placement_config.local_disk == ()


@pytest.mark.parametrize("raw, field, message", [
    ({"model": ""}, "model", "non-empty"),
    ({"model": "m", "placement_config": {"memory_pool": ["0"], "host_memory": ["0"]}},
     "placement_config.host_memory", "only one"),
    ({"model": "m", "placement_config": {"memory_pool": "0"}}, "placement_config.memory_pool", "list of node ids"),
    ({"model": "m", "num_gpu": 1}, "num_gpu", "did you mean 'num_gpus'"),
    ({"model": "m", "auto_scaling_config": {"targt": 2}}, "auto_scaling_config.targt", "did you mean 'target'"),
    ({"model": "m", "auto_scaling_config": {"min_instances": 3, "max_instances": 2}},
     "auto_scaling_config.min_instances", "exceeds"),
    ({"model": "m", "auto_scaling_config": {"keep_alive": -1}}, "auto_scaling_config.keep_alive", "non-negative"),
    ({"model": "m", "placement_config": {"target_nodes": "0"}}, "placement_config.target_nodes", "list of node ids"),
    ({"model": "m", "backend_config": {"torch_dtype": "float17"}}, "backend_config.torch_dtype", "float16"),
    ({"model": "m", "backend": "tgi"}, "backend", "transformers"),
    ({"model": "m", "checkpoint_size": "big"}, "checkpoint_size", "expected a size"),
])
def test_bad_deploy_configs_name_file_and_field(raw, field, message):
    with pytest.raises(ConfigError) as err:
        parse_deploy_config(raw, "cfg.json")
    assert err.value.source == "cfg.json"
    assert err.value.field == field
    assert message in str(err.value)


def test_spec_hardware_parses_with_binary_units_and_defaults():
    cluster = load_hardware(TRACES / "hardware_config.json")
    assert cluster.node_ids == ("0", "1")
    node = cluster.node("0")
    assert node.host_size_bytes == 32 * 1024**3
    assert node.disk_bandwidth_bytes_per_s == 5 * 1024**3
    assert node.network_bandwidth_bytes_per_s == 10 * 1024**3 / 8
    assert node.host_to_gpu_bytes_per_s == 24 * 1024**3
    assert node.num_gpus == 1 and node.gpu.name == "A100-80GB"


@pytest.mark.parametrize("raw, field, message", [
    ({"0": {"host_size": "32GB"}}, "0.host_bandwidth", "missing"),
    ({"0": {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
            "network_bandwidth": "10Gbps", "num_gpu": 2}}, "0.num_gpu", "did you mean 'num_gpus'"),
    ({"0": {"host_size": "32 gigs", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
            "network_bandwidth": "10Gbps"}}, "0.host_size", "expected a size"),
    ({"0": {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
            "network_bandwidth": "10Gbps", "gpu": "V100"}}, "0.gpu", "A100-80GB"),
    ({}, "", "non-empty"),
])
def test_bad_hardware_names_node_and_field(raw, field, message):
    with pytest.raises(ConfigError) as err:
        parse_hardware(raw, "hw.json")
    assert err.value.field == field
    assert message in str(err.value)


def test_unreadable_and_invalid_json_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_hardware(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"0": {')
    with pytest.raises(ConfigError, match="invalid JSON") as err:
        load_hardware(bad)
    assert str(bad) in str(err.value)


def test_calibrated_overheads_are_optional_and_validated():
    base = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
            "network_bandwidth": "10Gbps"}
    node = parse_hardware({"0": dict(base, forward_overhead_s=0.006, request_overhead_s=0.05)}, "hw.json").node("0")
    assert (node.forward_overhead_s, node.request_overhead_s) == (0.006, 0.05)
    assert parse_hardware({"0": base}, "hw.json").node("0").forward_overhead_s == 0.0
    with pytest.raises(ConfigError) as err:
        parse_hardware({"0": dict(base, forward_overhead_s=-1)}, "hw.json")
    assert err.value.field == "0.forward_overhead_s"
