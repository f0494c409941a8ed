"""Fixed costs beside the roofline: ``forward_overhead_s`` on every forward pass and
``request_overhead_s`` before each request's prefill (per node, hardware JSON), with exact times."""

from __future__ import annotations

import pytest
from simtoy import GiB, model, node, phases, req, run, samples, toy_trace
from test_migration_sim import A_OUT, B_ARRIVES, checked

from sllmsim.config.hardware import GPU_TYPES
from sllmsim.sim.roofline import Roofline

F = Roofline.build(2 * GiB, 2, None, GPU_TYPES["A100-80GB"], 1).floor_s  # one memory-bound pass of a 4 GiB model
LOAD = 0.0625  # 4 GiB from host memory at 64 GiB/s
CACHED = {"placement_config": {"host_memory": ["0"]}}
O = 0.004       # forward overhead: a few milliseconds, like the calibrated 6.1 ms
R = 0.5         # request overhead


def approx(x):
    return pytest.approx(x, rel=1e-12)


def test_roofline_adds_the_forward_overhead_to_every_pass():
    plain = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 1)
    slow = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 1, forward_overhead_s=O)
    assert slow.prefill_s(1) == plain.prefill_s(1) + O and slow.prefill_s(10**5) == plain.prefill_s(10**5) + O
    assert slow.step_base_s(4) == plain.step_base_s(4) + O


def test_forward_overhead_lengthens_the_prefill_and_every_decode_step():
    result = run([node(forward_overhead_s=O)], [model("m", **CACHED)], [req(0.0, "m", output_tokens=5)])
    (r,) = result.requests
    assert r.queued_until_s == LOAD
    assert r.first_token_s == approx(LOAD + F + O)
    assert r.finish_s == approx(LOAD + 5 * (F + O))  # the prefill and 4 decode steps


def test_forward_overhead_is_paid_once_per_step_of_a_batch():
    cfg = model("m", **CACHED, backend_config={"max_batch_size": 2})
    result = run([node(forward_overhead_s=O)], [cfg], [req(0.0, "m", output_tokens=5), req(0.0, "m", output_tokens=3)])
    r0, r1 = result.requests
    # One prefill of both prompts, then steps of the batch of two: one overhead per pass, not per request.
    assert r0.first_token_s == r1.first_token_s == approx(LOAD + F + O)
    assert r1.finish_s == approx(LOAD + 3 * (F + O))
    assert r0.finish_s == approx(LOAD + 5 * (F + O))


def test_request_overhead_delays_the_prefill():
    result = run([node(request_overhead_s=R)], [model("m", **CACHED)], [req(0.0, "m", output_tokens=3)])
    (r,) = result.requests
    assert (r.queued_until_s, r.cold_start) == (LOAD + R, True)
    assert r.first_token_s == approx(LOAD + R + F)
    assert r.finish_s == approx(LOAD + R + 3 * F)
    assert phases(result)[:3] == [("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, LOAD), ("ready", LOAD, r.finish_s)]


def test_request_overhead_runs_beside_the_batch_decode():
    # r0 decodes 1,000 tokens (~2.1 s); r1 arrives at 1 s and is admitted at once. Its request
    # overhead does not stop r0's decode; only its prefill (one pass) pauses it.
    cfg = model("m", **CACHED)
    cfg["auto_scaling_config"]["max_instances"] = 1
    result = run([node(request_overhead_s=R, forward_overhead_s=O)], [cfg],
                 [req(0.0, "m", output_tokens=1000), req(1.0, "m", output_tokens=2)])
    r0, r1 = result.requests
    step = F + O
    assert (r0.queued_until_s, r0.first_token_s) == (LOAD + R, approx(LOAD + R + step))
    assert (r1.queued_until_s, r1.first_token_s) == (1.0 + R, approx(1.0 + R + step))
    assert r1.finish_s == approx(1.0 + R + 2 * step)
    assert r0.finish_s == approx(LOAD + R + 1000 * step + step)  # 999 steps + its prefill + r1's prefill
    assert r1.instance_id == r0.instance_id == "m-0"


def test_without_overheads_nothing_changes():
    with_zero = run([node(forward_overhead_s=0, request_overhead_s=0)], [model("m", **CACHED)],
                    [req(0.0, "m", output_tokens=7), req(0.01, "m", output_tokens=2)])
    plain = run([node()], [model("m", **CACHED)], [req(0.0, "m", output_tokens=7), req(0.01, "m", output_tokens=2)])
    assert with_zero.requests == plain.requests and with_zero.phases == plain.phases


def two_a_requests_and_b(**node_overrides):
    """The migration toy cluster of test_migration_sim with a second A request admitted 10 ms
    before B arrives: with a 50 ms request overhead it is still waiting to be prefilled then."""
    a = model("a", size="2GB", placement_config={"host_memory": ["0"], "local_disk": ["1"]},
              auto_scaling_config={"max_instances": 1})
    b = model("b", size="16GB", placement_config={"host_memory": ["0"]})
    reqs = [req(0.0, "a", output_tokens=A_OUT), req(B_ARRIVES - 0.01, "a", output_tokens=A_OUT),
            req(B_ARRIVES, "b", output_tokens=4)]
    return [node(**node_overrides), node(**node_overrides)], [a, b], reqs


def test_a_preempted_instance_gives_back_requests_still_in_their_overhead():
    nodes, models, reqs = two_a_requests_and_b(request_overhead_s=0.05)
    result = checked(toy_trace(nodes, models, reqs, scheduler="shepherd"))
    assert samples(result, "preempted_requests", "a") == [(B_ARRIVES, 2)]
    r0, r1, _ = result.requests
    assert r0.instance_id == r1.instance_id == "a-1" and r1.queued_until_s > B_ARRIVES


@pytest.mark.parametrize("overhead", [0.05, 1.5])
def test_a_migration_waits_for_requests_still_in_their_overhead_and_moves_them_too(overhead):
    # With 1.5 s, r1 is still in its overhead when the destination has loaded (1.2 s): the
    # hand-over waits until it has been prefilled on the source.
    nodes, models, reqs = two_a_requests_and_b(request_overhead_s=overhead)
    result = checked(toy_trace(nodes, models, reqs, scheduler={"placement": "storage_aware", "enable_migration": True}))
    r0, r1, b = result.requests
    # r1 is prefilled on the source when its overhead ends, then both move to node 1.
    assert r1.queued_until_s == pytest.approx(B_ARRIVES - 0.01 + overhead, rel=1e-12)
    assert (r0.migrated, r1.migrated, r0.node, r1.node, b.node) == (True, True, "1", "1", "0")
    handover = next(end for name, _, end in phases(result, "a-0") if name == "migrating")
    assert handover >= r1.first_token_s  # its prefill ran on the source before the hand-over
