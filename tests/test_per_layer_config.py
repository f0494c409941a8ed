"""Per-layer fixed costs: the hardware keys, the deploy config's ``num_layers``, a model's depth from
the catalog, and the error for a model of unknown depth on a node that charges per layer."""

from __future__ import annotations

import math

import pytest

from repo_paths import TRACES
from sllmsim import catalog
from sllmsim.config.deploy import deploy_config_to_dict, parse_deploy_config
from sllmsim.config.hardware import parse_hardware
from sllmsim.config.trace import parse_trace, trace_to_dict
from sllmsim.errors import ConfigError

BASE = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
        "network_bandwidth": "10Gbps"}
PER_LAYER = ("forward_overhead_per_layer_s", "load_overhead_per_layer_s")


def test_per_layer_keys_default_to_zero():
    node = parse_hardware({"0": BASE}, "hw.json").node("0")
    assert (node.forward_overhead_per_layer_s, node.load_overhead_per_layer_s) == (0.0, 0.0)
    assert not node.has_per_layer_costs


def test_per_layer_keys_parse_and_add_to_the_constant_per_layer():
    raw = dict(BASE, forward_overhead_s=0.0013, forward_overhead_per_layer_s=0.00053,
               load_overhead_s=0.0158, load_overhead_per_layer_s=0.0042)
    node = parse_hardware({"0": raw}, "hw.json").node("0")
    assert (node.forward_overhead_per_layer_s, node.load_overhead_per_layer_s) == (0.00053, 0.0042)
    assert node.has_per_layer_costs
    assert node.forward_fixed_s(12) == 0.0013 + 12 * 0.00053
    assert node.load_fixed_s(12) == 0.0158 + 12 * 0.0042
    assert node.forward_fixed_s(0) == 0.0013 and node.load_fixed_s(0) == 0.0158


@pytest.mark.parametrize("key", PER_LAYER)
@pytest.mark.parametrize("bad", [-0.001, "1ms", True, None, math.inf, math.nan])
def test_bad_per_layer_values_name_the_file_and_the_node_key(key, bad):
    with pytest.raises(ConfigError) as err:
        parse_hardware({"n1": dict(BASE, **{key: bad})}, "hw.json")
    assert (err.value.source, err.value.field) == ("hw.json", f"n1.{key}")
    assert "non-negative" in err.value.message


def test_num_layers_is_optional_and_written_back_only_when_set():
    plain = parse_deploy_config({"model": "m"})
    assert plain.num_layers is None and "num_layers" not in deploy_config_to_dict(plain)
    deep = parse_deploy_config({"model": "m", "num_layers": 12})
    assert deep.num_layers == 12 and deploy_config_to_dict(deep)["num_layers"] == 12
    assert parse_deploy_config(deploy_config_to_dict(deep)) == deep


@pytest.mark.parametrize("bad", [0, -3, 2.5, "12", True, None])
def test_bad_num_layers_names_the_field(bad):
    raw = {"model": "m", "num_layers": bad}
    if bad is None:
        # JSON null reads as "not given".
        assert parse_deploy_config(raw, "cfg.json").num_layers is None
        return
    with pytest.raises(ConfigError) as err:
        parse_deploy_config(raw, "cfg.json")
    assert (err.value.source, err.value.field) == ("cfg.json", "num_layers")
    assert "positive integer" in err.value.message


def test_depth_comes_from_the_deploy_config_else_the_catalog_else_unknown():
    opt = parse_deploy_config({"model": "opt-1.3b",
                               "backend_config": {"pretrained_model_name_or_path": "facebook/opt-1.3b"}})
    assert catalog.model_depth(opt) == catalog.lookup("facebook/opt-1.3b").num_layers == 24
    assert catalog.model_size(opt).num_layers == 24
    overridden = parse_deploy_config({"model": "opt-1.3b", "num_layers": 4})
    assert catalog.model_depth(overridden) == catalog.model_size(overridden).num_layers == 4
    unknown = parse_deploy_config({"model": "toy", "checkpoint_size": "1GB"})
    assert catalog.model_depth(unknown) is None and catalog.model_size(unknown).num_layers is None
    assert catalog.model_depth(parse_deploy_config({"model": "toy"})) is None  # no size needed to ask


def trace(node_overrides: dict, model_overrides: dict | None = None, nodes: int = 1) -> dict:
    model = {"model": "toy", "checkpoint_size": "1GB", **(model_overrides or {})}
    return {"hardware": {str(i): dict(BASE, **(node_overrides if i == 0 else {})) for i in range(nodes)},
            "models": [model], "requests": [{"time": 0, "model": "toy", "input_tokens": 4, "output_tokens": 2}]}


@pytest.mark.parametrize("key", PER_LAYER)
def test_unknown_depth_on_a_node_with_per_layer_costs_is_an_error(key):
    with pytest.raises(ConfigError) as err:
        parse_trace(trace({key: 0.001}), source="t.yaml")
    assert (err.value.source, err.value.field) == ("t.yaml: models[0]", "num_layers")
    assert '"num_layers": N' in err.value.message and "'0'" in err.value.message


def test_known_depth_or_no_per_layer_cost_is_fine():
    parse_trace(trace({}), source="t.yaml")  # unknown depth, no per-layer cost: as every shipped trace
    parse_trace(trace({"forward_overhead_per_layer_s": 0.001}, {"num_layers": 6}), source="t.yaml")
    catalogued = trace({}, nodes=2)
    for spec in catalogued["hardware"].values():
        spec["load_overhead_per_layer_s"] = 0.001
    catalogued["models"] = ["config-opt-1.3b.json"]  # the spec's deploy config: depth from the catalog
    catalogued["requests"][0]["model"] = "opt-1.3b"
    parse_trace(catalogued, base_dir=TRACES, source="t.yaml")


def test_a_model_kept_off_the_costly_nodes_needs_no_depth():
    raw = trace({"forward_overhead_per_layer_s": 0.001}, {"placement_config": {"target_nodes": ["1"]}}, nodes=2)
    parse_trace(raw, source="t.yaml")
    raw["models"][0]["placement_config"]["target_nodes"] = ["0", "1"]
    with pytest.raises(ConfigError):
        parse_trace(raw, source="t.yaml")


def test_resolved_config_shows_the_per_layer_keys():
    resolved = trace_to_dict(parse_trace(trace({"forward_overhead_per_layer_s": 0.002}, {"num_layers": 3}),
                                         source="t.yaml"))
    node = resolved["hardware"]["0"]
    assert (node["forward_overhead_per_layer_s"], node["load_overhead_per_layer_s"]) == (0.002, 0.0)
    assert resolved["models"][0]["num_layers"] == 3
