"""The decode step's per-sequence term: ``(k − 1) · q`` on top of the roofline for a batch of ``k``,
with ``q = decode_overhead_per_sequence_s + L · decode_overhead_per_sequence_per_layer_s`` (hardware
JSON, per node), with exact times on a toy cluster."""

from __future__ import annotations

import math

import pytest
from simtoy import GiB, model, node, run

from sllmsim.config.hardware import GPU_TYPES, parse_hardware
from sllmsim.errors import ConfigError
from sllmsim.sim.roofline import Roofline

F = Roofline.build(2 * GiB, 2, None, GPU_TYPES["A100-80GB"], 1).floor_s  # one memory-bound pass of a 4 GiB model
LOAD = 0.0625  # 4 GiB from host memory at 64 GiB/s
CACHED = {"placement_config": {"host_memory": ["0"]}}
Q = 0.002
Q_LAYER = 0.0005
BASE = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "1TB", "disk_bandwidth": "5GB/s",
        "network_bandwidth": "10Gbps"}
KEYS = ("decode_overhead_per_sequence_s", "decode_overhead_per_sequence_per_layer_s")


def approx(x):
    return pytest.approx(x, rel=1e-12)


def test_the_keys_default_to_zero_and_add_per_layer():
    plain = parse_hardware({"0": BASE}, "hw.json").node("0")
    assert plain.decode_sequence_s(12) == 0.0 and not plain.has_per_layer_costs
    node_ = parse_hardware({"0": dict(BASE, decode_overhead_per_sequence_s=Q,
                                      decode_overhead_per_sequence_per_layer_s=Q_LAYER)}, "hw.json").node("0")
    assert node_.decode_sequence_s(12) == Q + 12 * Q_LAYER
    assert node_.has_per_layer_costs  # a model's depth is then needed


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("bad", [-0.001, "1ms", True, math.inf])
def test_bad_values_name_the_file_and_the_node_key(key, bad):
    with pytest.raises(ConfigError) as err:
        parse_hardware({"n1": dict(BASE, **{key: bad})}, "hw.json")
    assert (err.value.source, err.value.field) == ("hw.json", f"n1.{key}")


def test_roofline_charges_every_sequence_beyond_the_first():
    plain = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 1)
    batched = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 1, sequence_overhead_s=Q)
    assert batched.step_base_s(1) == plain.step_base_s(1)
    assert batched.step_base_s(8) == approx(plain.step_base_s(8) + 7 * Q)
    assert batched.prefill_s(100) == plain.prefill_s(100)  # prefill is not a decode step


def _batch_of(n: int, hw: dict, num_layers: int | None = None):
    extra = {"num_layers": num_layers} if num_layers is not None else {}
    cfg = model("m", **CACHED, backend_config={"max_batch_size": n}, **extra)
    cfg["auto_scaling_config"]["max_instances"] = 1
    reqs = [{"time": 0.0, "model": "m", "input_tokens": 8, "output_tokens": 5} for _ in range(n)]
    return run([node(**hw)], [cfg], reqs).requests


def test_a_batch_of_four_pays_three_sequence_costs_per_decode_step():
    records = _batch_of(4, {"decode_overhead_per_sequence_s": Q})
    for r in records:
        # One prefill of the four prompts, then four decode steps of the batch of four.
        assert r.first_token_s == approx(LOAD + F)
        assert r.finish_s == approx(LOAD + F + 4 * (F + 3 * Q))


def test_the_per_layer_part_follows_the_models_depth():
    (r, *_) = _batch_of(2, {"decode_overhead_per_sequence_per_layer_s": Q_LAYER}, num_layers=10)
    assert r.finish_s == approx(LOAD + F + 4 * (F + 10 * Q_LAYER))


def test_a_request_alone_pays_nothing_and_zero_changes_nothing():
    (alone,) = _batch_of(1, {"decode_overhead_per_sequence_s": Q})
    assert alone.finish_s == approx(LOAD + 5 * F)
    assert _batch_of(3, {"decode_overhead_per_sequence_s": 0.0}) == _batch_of(3, {})
