"""scheduler.reclaim_idle in the simulator: an idle instance waiting out its keep-alive gives up its
GPU to another model instead of keeping it to the end of its keep-alive."""

from __future__ import annotations

import dataclasses

import pytest
from simtoy import GiB, model, node, phases, req, samples, toy_trace

from sllmsim.config.hardware import GPU_TYPES
from sllmsim.config.trace import load_trace
from sllmsim.errors import ConfigError
from sllmsim.invariants import assert_invariants
from sllmsim.sim import simulate
from sllmsim.sim.roofline import Roofline

from repo_paths import REPO
from run_checks import assert_identical_csvs

F = Roofline.build(2 * GiB, 2, None, GPU_TYPES["A100-80GB"], 1).floor_s  # one memory-bound pass of a 4 GiB model
LOAD = 0.0625  # 4 GiB from host memory at 64 GiB/s
CACHED = {"placement_config": {"host_memory": ["0"]}}
A_IDLE = LOAD + F  # A's one-token request finishes here; A then idles for its keep-alive
B_ARRIVES = 10.0


def scenario(reclaim: bool, a_overrides: dict | None = None):
    """One GPU; A serves one request and idles with keep_alive 100 s; a request for B comes at 10 s."""
    a = model("a", keep_alive=100, **CACHED, **(a_overrides or {}))
    b = model("b", keep_alive=100, **CACHED)
    trace = toy_trace([node(host_size="64GB")], [a, b], [req(0.0, "a"), req(B_ARRIVES, "b")],
                      scheduler={"placement": "storage_aware", "reclaim_idle": reclaim})
    result = simulate(trace)
    assert_invariants(trace, result)
    return result


def test_without_reclaim_the_request_waits_for_the_whole_keep_alive():
    result = scenario(reclaim=False)
    _, b = result.requests
    assert b.status == "completed"
    a_released = A_IDLE + 100
    assert phases(result, "a-0")[-2:] == [("idle", A_IDLE, a_released), ("released", a_released, a_released)]
    assert phases(result, "b-0")[:2] == [("queued", B_ARRIVES, a_released), ("loading_to_gpu", a_released, a_released + LOAD)]
    assert (b.queued_until_s, b.first_token_s) == (a_released + LOAD, a_released + LOAD + F)
    assert not any("Reclaiming" in line for line in result.scheduler_log)


def test_with_reclaim_the_idle_instance_is_released_and_the_request_starts_at_once():
    result = scenario(reclaim=True)
    _, b = result.requests
    assert b.status == "completed"
    assert phases(result, "a-0") == [("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, LOAD), ("ready", LOAD, A_IDLE),
                                     ("idle", A_IDLE, B_ARRIVES), ("released", B_ARRIVES, B_ARRIVES)]
    assert phases(result, "b-0")[:2] == [("queued", B_ARRIVES, B_ARRIVES), ("loading_to_gpu", B_ARRIVES, B_ARRIVES + LOAD)]
    assert (b.queued_until_s, b.first_token_s, b.tier) == (B_ARRIVES + LOAD, B_ARRIVES + LOAD + F, "host")
    # The GPU goes from A to B at the same instant; A's instance count drops to 0 then.
    assert samples(result, "gpus_busy", "0") == [(0.0, 0), (0.0, 1), (B_ARRIVES, 0), (B_ARRIVES, 1),
                                                 (B_ARRIVES + LOAD + F + 100, 0)]
    assert samples(result, "instances", "a") == [(0.0, 0), (0.0, 1), (B_ARRIVES, 0)]
    # A's checkpoint stays in host memory: no host-memory sample after time 0 (nothing evicted).
    assert samples(result, "host_used_bytes", "0") == [(0.0, 8 * GiB)]
    assert result.scheduler_log[-3:] == ["Sorted scheduling options: [('0', 0.0625)]",
                                         "Reclaiming idle instances ['a-0'] on node 0 for model b",
                                         "Allocated node 0 for model b"]


def test_a_reclaimed_model_reloads_from_host_memory():
    a = model("a", keep_alive=100, **CACHED)
    b = model("b", keep_alive=100, **CACHED)
    trace = toy_trace([node()], [a, b], [req(0.0, "a"), req(B_ARRIVES, "b"), req(20.0, "a")],
                      scheduler={"placement": "storage_aware", "reclaim_idle": True})
    result = simulate(trace)
    assert_invariants(trace, result)
    _, b_req, a_again = result.requests
    # B idles from 10 + LOAD + F; A's second request reclaims B and reloads A from host memory.
    assert phases(result, "b-0")[-2:] == [("idle", B_ARRIVES + LOAD + F, 20.0), ("released", 20.0, 20.0)]
    assert (a_again.instance_id, a_again.tier, a_again.queued_until_s) == ("a-1", "host", 20.0 + LOAD)


def test_an_instance_kept_for_min_instances_is_not_reclaimed():
    result = scenario(reclaim=True, a_overrides={"auto_scaling_config": {"keep_alive": 100, "min_instances": 1}})
    _, b = result.requests
    assert phases(result, "a-0")[-1] == ("idle", A_IDLE, B_ARRIVES)  # kept to the end of the run
    assert (b.status, b.reason) == ("failed", "no node had enough free GPUs for an instance before the simulation ended")
    assert not any("Reclaiming" in line for line in result.scheduler_log)


def test_a_waiting_instance_takes_a_gpu_when_an_instance_turns_idle():
    # A's long request occupies the only GPU when B arrives; B waits. When A's request finishes,
    # A's instance idles (keep_alive 100 s) and B's waiting instance reclaims it at that instant.
    a = model("a", keep_alive=100, **CACHED)
    b = model("b", keep_alive=100, **CACHED)
    trace = toy_trace([node()], [a, b], [req(0.0, "a", output_tokens=1000), req(1.0, "b")],
                      scheduler={"placement": "storage_aware", "reclaim_idle": True})
    result = simulate(trace)
    assert_invariants(trace, result)
    a_req, b_req = result.requests
    done = a_req.finish_s
    assert phases(result, "a-0")[-2:] == [("idle", done, done), ("released", done, done)]
    assert phases(result, "b-0")[:2] == [("queued", 1.0, done), ("loading_to_gpu", done, done + LOAD)]
    assert b_req.queued_until_s == done + LOAD


def test_reclaim_idle_keeps_shipped_traces_sound_and_deterministic(tmp_path):
    trace = load_trace(REPO / "traces" / "contention-example.yaml")
    trace = dataclasses.replace(trace, scheduler=dataclasses.replace(trace.scheduler, reclaim_idle=True))
    runs = [simulate(trace), simulate(dataclasses.replace(trace))]
    assert_invariants(trace, runs[0])
    assert any("Reclaiming idle instances" in line for line in runs[0].scheduler_log)
    assert_identical_csvs(tmp_path, *runs)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_reclaim_idle_must_be_a_boolean(value):
    with pytest.raises(ConfigError) as err:
        toy_trace([node()], [model("a")], [], scheduler={"reclaim_idle": value})
    assert err.value.field == "scheduler.reclaim_idle" and "true or false" in err.value.message
