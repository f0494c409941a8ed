"""Per-layer fixed costs (``forward_overhead_per_layer_s``, ``load_overhead_per_layer_s`` per node,
times the model's ``num_layers``): every forward pass and every load of a model of ``L`` layers
takes exactly ``L ×`` the per-layer cost longer, in ordinary serving and in a migration."""

from __future__ import annotations

from dataclasses import replace

import pytest
from repo_paths import TRACES
from simtoy import model, node, phases, req, run, toy_trace
from test_migration_sim import A, A_FIRST, A_OUT, B_ARRIVES, DEST_LOADED, catch_up, checked, models, requests

from sllmsim.config.hardware import GPU_TYPES
from sllmsim.config.trace import load_trace
from sllmsim.sim import simulate
from sllmsim.sim.roofline import Roofline

GiB = 1024**3
F = Roofline.build(2 * GiB, 2, None, GPU_TYPES["A100-80GB"], 1).floor_s  # one memory-bound pass of a 4 GiB model
LOAD = 0.0625          # 4 GiB from host memory at 64 GiB/s
CACHED = {"placement_config": {"host_memory": ["0"]}}
O, LO = 0.0013, 0.0158  # the constants, as fitted on the 2-core CPU
P, Q = 0.00053, 0.0042  # per layer: forward pass, load
CONSTANTS = {"forward_overhead_s": O, "load_overhead_s": LO}
PER_LAYER = {"forward_overhead_per_layer_s": P, "load_overhead_per_layer_s": Q}


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("layers", [2, 12, 32])
def test_a_model_of_l_layers_pays_l_times_the_per_layer_costs(layers):
    cfg = model("m", num_layers=layers, **CACHED)
    reqs = [req(0.0, "m", output_tokens=5)]
    (plain,) = run([node(**CONSTANTS)], [cfg], reqs).requests
    deep_run = run([node(**CONSTANTS, **PER_LAYER)], [cfg], reqs)
    (deep,) = deep_run.requests
    ready = LOAD + (LO + layers * Q)
    step = F + (O + layers * P)
    assert plain.queued_until_s == approx(LOAD + LO)
    assert deep.queued_until_s == approx(ready)
    assert deep.first_token_s == approx(ready + step)
    assert deep.finish_s == approx(ready + 5 * step)  # the prefill and 4 decode steps
    # Against the run without per-layer keys: the load is longer by L·Q, each of the 5 passes by L·P.
    assert deep.queued_until_s - plain.queued_until_s == approx(layers * Q)
    prefill_extra_s = (deep.first_token_s - deep.queued_until_s) - (plain.first_token_s - plain.queued_until_s)
    assert prefill_extra_s == approx(layers * P)
    assert (deep.finish_s - deep.first_token_s) - (plain.finish_s - plain.first_token_s) == approx(4 * layers * P)
    assert phases(deep_run)[:2] == [("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, approx(ready))]


def test_two_models_of_different_depth_on_the_same_nodes():
    shallow = model("s", num_layers=2, placement_config={"host_memory": ["0"], "target_nodes": ["0"]})
    deep = model("d", num_layers=32, placement_config={"host_memory": ["1"], "target_nodes": ["1"]})
    hw = [node(**CONSTANTS, **PER_LAYER), node(**CONSTANTS, **PER_LAYER)]
    s, d = run(hw, [shallow, deep], [req(0.0, "s", output_tokens=3), req(0.0, "d", output_tokens=3)]).requests
    for r, layers in ((s, 2), (d, 32)):
        ready = LOAD + (LO + layers * Q)
        assert r.queued_until_s == approx(ready)
        assert r.finish_s == approx(ready + 3 * (F + (O + layers * P)))
    assert d.finish_s - s.finish_s == approx(30 * Q + 3 * 30 * P)


def test_catalogued_models_take_their_depth_from_the_catalog():
    # opt-125m has 12 layers (sllmsim catalog); its explicit num_layers overrides that.
    cfg = {"model": "opt-125m", "backend_config": {"pretrained_model_name_or_path": "facebook/opt-125m"}, **CACHED}
    hw = [node(load_overhead_per_layer_s=Q)]
    reqs = [req(0.0, "opt-125m")]
    (plain,) = run([node()], [cfg], reqs).requests
    (catalogued,) = run(hw, [cfg], reqs).requests
    (overridden,) = run(hw, [{**cfg, "num_layers": 3}], reqs).requests
    assert catalogued.queued_until_s - plain.queued_until_s == approx(12 * Q)
    assert overridden.queued_until_s - plain.queued_until_s == approx(3 * Q)


def test_the_spec_example_logs_and_takes_the_per_layer_load_cost():
    # The spec's opt-2.7b (32 layers in the catalog) from node 0's disk: 0.9877967834472656 s in the
    # reference log, now plus 32 × 4.2 ms of construction; the load then takes exactly that long.
    trace = load_trace(TRACES / "seed-example.yaml")
    nodes = tuple(replace(n, load_overhead_per_layer_s=Q) for n in trace.cluster.nodes)
    result = simulate(replace(trace, cluster=replace(trace.cluster, nodes=nodes)))
    disk_s = 2651596800 * 2 / (5 * GiB)
    assert disk_s == 0.9877967834472656
    estimate = 0.0 + (0.0 + 32 * Q) + disk_s
    assert result.scheduler_log[:2] == [f"Sorted scheduling options: [('0', {estimate!r})]",
                                        "Allocated node 0 for model opt-2.7b"]
    load = next(p for p in result.phases if p.phase == "loading_to_host" and p.model == "opt-2.7b")
    assert (load.start_s, load.end_s) == (0.0, approx(estimate))


def test_zero_per_layer_costs_change_nothing():
    cfg = model("m", num_layers=24, **CACHED)
    reqs = [req(0.0, "m", output_tokens=7), req(0.01, "m", output_tokens=2)]
    zero = run([node(**CONSTANTS, forward_overhead_per_layer_s=0, load_overhead_per_layer_s=0)], [cfg], reqs)
    plain = run([node(**CONSTANTS)], [model("m", **CACHED)], reqs)
    assert zero.requests == plain.requests and zero.phases == plain.phases
    assert zero.scheduler_log == plain.scheduler_log


def test_a_migration_destination_loads_and_recomputes_with_its_per_layer_costs():
    # The migration toy of test_migration_sim, with per-layer costs on node 1 (the destination) only:
    # A (8 layers) loads there 8·Q longer and re-computes its KV cache in passes 8·P longer each.
    # Those passes are slower than the source's decode steps, so the catch-up never gets within one
    # token: the hand-over is forced after the last round and the stream pauses for the rest.
    layers = 8
    a_cfg, b_cfg = models()
    a_cfg["num_layers"], b_cfg["num_layers"] = layers, 16
    migrate = {"placement": "storage_aware", "enable_migration": True}
    result = checked(toy_trace([node(), node(**PER_LAYER)], [a_cfg, b_cfg], requests(), scheduler=migrate))
    a, _ = result.requests
    dest_roof = Roofline.build(GiB, 2, None, GPU_TYPES["A100-80GB"], 1, forward_overhead_s=layers * P)
    loaded = DEST_LOADED + layers * Q
    rounds, pause = catch_up(dest_roof, loaded, A.floor_s)
    assert pause > 0.0
    handover = loaded + sum(rounds)
    assert phases(result, "a-1")[:4] == [
        ("queued", B_ARRIVES, B_ARRIVES), ("loading_to_host", B_ARRIVES, approx(loaded)),
        ("resuming", approx(loaded), approx(handover + pause)), ("ready", approx(handover + pause), a.finish_s)]
    # A's request moves with the steps it had at the hand-over and decodes on node 1 after the
    # pause, each step 8·P longer than on node 0.
    steps_before = (handover - A_FIRST) / A.floor_s
    assert a.finish_s == pytest.approx(handover + pause + (A_OUT - 1 - steps_before) * (A.floor_s + layers * P),
                                       rel=1e-9)
    # The plan priced the destination's load with its per-layer cost: resume 1.78 s + load (1 s + 8·Q).
    plan = next(line for line in result.scheduler_log if line.startswith("Migration plan"))
    cost = float(plan.split("total_cost_s=")[1].split(",")[0])
    assert cost == approx(0.01 * 168 + 0.1 + 1.0 + layers * Q)
