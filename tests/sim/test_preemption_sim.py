"""The Shepherd*-like baseline in the simulator: running instances are stopped and their requests
re-queued, on the toy cluster of tests/sim/test_migration_sim.py."""

from __future__ import annotations

import pytest
from simtoy import model, node, phases, req, samples, toy_trace
from test_migration_sim import A, A_OUT, A_READY, B_ARRIVES, B_HOST_LOAD, DEST_LOADED, checked, models, requests

from sllmsim.metrics import frames_from_result, summarize


def test_shepherd_preempts_the_running_request_and_requeues_it():
    result = checked(toy_trace([node(), node()], models(), requests(), scheduler="shepherd"))
    a, b = result.requests
    assert phases(result, "a-0") == [("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, A_READY),
                                     ("ready", A_READY, B_ARRIVES), ("preempted", B_ARRIVES, B_ARRIVES),
                                     ("released", B_ARRIVES, B_ARRIVES)]
    assert (b.node, b.tier, b.queued_until_s) == ("0", "host", B_ARRIVES + B_HOST_LOAD)
    # A's request starts over on a new instance on node 1 (loaded from its disk): the 168 tokens it
    # had computed are lost, and it is a cold start of that instance.
    assert phases(result, "a-1")[:3] == [("queued", B_ARRIVES, B_ARRIVES), ("loading_to_host", B_ARRIVES, DEST_LOADED),
                                         ("ready", DEST_LOADED, a.finish_s)]
    assert (a.node, a.instance_id, a.cold_start, a.tier, a.migrated) == ("1", "a-1", True, "disk", False)
    assert (a.queued_until_s, a.first_token_s) == (DEST_LOADED, DEST_LOADED + A.floor_s)
    assert a.finish_s == pytest.approx(DEST_LOADED + A_OUT * A.floor_s, rel=1e-12)
    assert samples(result, "preempted_requests", "a") == [(B_ARRIVES, 1)]
    assert samples(result, "preempted_tokens", "a") == [(B_ARRIVES, 168)]
    assert "Preempting instances ['a-0'] on node 0 for model b (tokens_lost=168, freed_gpus=1)" in result.scheduler_log
    summary = summarize(*frames_from_result(result))
    assert (summary["preemptions"], summary["preempted_requests"], summary["preempted_tokens"]) == (1, 1, 168)
    assert summary["migrations"] == summary["migrated_requests"] == 0



def test_preempted_requests_keep_their_place_in_the_queue():
    # A serves two requests (max_batch_size 2, one instance at most) and a third waits; B's arrival
    # stops A. The three go back in arrival order: the two that had started are served first by
    # A's next instance, on node 1; the third still waits for a slot.
    a = model("a", size="2GB", placement_config={"host_memory": ["0"], "local_disk": ["1"]},
              auto_scaling_config={"max_instances": 1}, backend_config={"max_batch_size": 2})
    b = model("b", size="16GB", placement_config={"host_memory": ["0"]})
    reqs = [req(0.0, "a", output_tokens=3000), req(0.01, "a", output_tokens=3000), req(0.1, "a", output_tokens=10),
            req(B_ARRIVES, "b")]
    result = checked(toy_trace([node(), node()], [a, b], reqs, scheduler="shepherd"))
    r0, r1, r2, _ = result.requests
    assert [(r.instance_id, r.queued_until_s) for r in (r0, r1)] == [("a-1", DEST_LOADED), ("a-1", DEST_LOADED)]
    assert r2.instance_id == "a-1" and r2.queued_until_s == r0.finish_s
    assert samples(result, "preempted_requests", "a") == [(B_ARRIVES, 2)]
    assert phases(result, "a-0")[-2:] == [("preempted", B_ARRIVES, B_ARRIVES), ("released", B_ARRIVES, B_ARRIVES)]


def test_two_models_that_keep_wanting_one_gpu_stop_each_other_at_most_once_per_request():
    # One GPU, two long generations: B stops A (once A has served as long as its load took), then A
    # stops B the same way; both requests have now been stopped once, so neither is stopped again
    # and both finish. (With the time guard alone they would stop each other forever.)
    both_cached = {"placement_config": {"host_memory": ["0"]}}
    models_ = [model("a", size="2GB", **both_cached), model("b", size="16GB", **both_cached)]
    reqs = [req(0.0, "a", output_tokens=A_OUT), req(0.1, "b", output_tokens=A_OUT)]
    # until_s turns a livelock into failed requests instead of a hung test.
    result = checked(toy_trace([node()], models_, reqs, scheduler="shepherd", simulation={"until_s": 60}))
    a, b = result.requests
    assert samples(result, "preempted_requests", "a") == [(0.1, 1)]
    b_ready = 0.1 + B_HOST_LOAD
    # A's new instance may stop B once B has served for as long as its own load took.
    assert samples(result, "preempted_requests", "b") == [(pytest.approx(b_ready + B_HOST_LOAD, rel=1e-12), 1)]
    assert a.queued_until_s == pytest.approx(b_ready + B_HOST_LOAD + A_READY, rel=1e-12)
    assert b.queued_until_s == pytest.approx(a.finish_s + B_HOST_LOAD, rel=1e-12)
