"""Where a validation finds each model's depth for the simulator's per-layer costs."""

from __future__ import annotations

import json
from pathlib import Path

from sllmsim.catalog import config_num_layers
from sllmsim.config.trace import parse_trace
from sllmsim.fidelity.sim_trace import model_depths


def _folder(tmp_path: Path, name: str, config) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_config_num_layers_reads_each_architectures_key(tmp_path: Path):
    assert config_num_layers(_folder(tmp_path, "opt", {"num_hidden_layers": 12})) == 12
    assert config_num_layers(_folder(tmp_path, "gpt2", {"n_layer": 6})) == 6
    assert config_num_layers(_folder(tmp_path, "odd", {"num_layers": 3})) == 3
    assert config_num_layers(_folder(tmp_path, "none", {"hidden_size": 64})) is None
    assert config_num_layers(_folder(tmp_path, "bad", {"num_hidden_layers": "12"})) is None
    assert config_num_layers(_folder(tmp_path, "list", [1, 2])) is None
    assert config_num_layers(tmp_path / "missing") is None


def _deploy(model: str, path: str) -> dict:
    return {"model": model, "checkpoint_size": "10MB",
            "backend_config": {"pretrained_model_name_or_path": path, "torch_dtype": "float32"}}


def test_model_depths_prefer_the_live_record_then_the_recipe_then_the_folder(tmp_path: Path):
    folder = _folder(tmp_path, "m-folder", {"num_hidden_layers": 5})
    hardware = {"0": {"host_size": "1GB", "host_bandwidth": "1GB/s", "disk_size": "1GB", "disk_bandwidth": "1GB/s",
                      "network_bandwidth": "1Gbps"}}
    trace = parse_trace({"hardware": hardware, "models": [_deploy("a", "recipe-a"), _deploy("b", str(folder)),
                                                           _deploy("c", str(folder)), _deploy("d", "nowhere")],
                         "requests": [{"time": 0, "model": "a", "input_tokens": 4, "output_tokens": 4}]}, tmp_path)
    recipes = {"recipe-a": {"hidden_size": 64, "num_layers": 2}}
    assert model_depths(trace, recipes) == {"a": 2, "b": 5, "c": 5}
    assert model_depths(trace, recipes, measured={"a": 7, "c": 9}) == {"a": 7, "b": 5, "c": 9}
