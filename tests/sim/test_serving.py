"""Serving on toy clusters: autoscaling, keep-alive, batching and the roofline's decode times."""

from __future__ import annotations

import pytest
from simtoy import GiB, model, node, phases, req, run, samples, toy_trace

from sllmsim.catalog import lookup
from sllmsim.config.hardware import GPU_TYPES
from sllmsim.sim import simulate
from sllmsim.sim.roofline import Roofline

A100 = GPU_TYPES["A100-80GB"]
# The toy checkpoints are 4 GiB fp16 of an unknown architecture: no KV term, and both prefill and
# decode of small batches are memory-bound, i.e. take F = weights / bandwidth.
TOY = Roofline.build(2 * GiB, 2, None, A100, 1)
F = TOY.floor_s
LOAD = 0.0625  # 4 GiB from host memory at 64 GiB/s
CACHED = {"placement_config": {"host_memory": ["0"]}}


def test_toy_roofline_is_memory_bound():
    assert TOY.prefill_s(16) == F and TOY.step_base_s(2) == F and TOY.kv_s_per_token == 0.0


def test_scale_from_zero_then_warm_then_released_after_keep_alive():
    result = run([node()], [model("m", keep_alive=5, **CACHED)], [req(0.0, "m"), req(3.0, "m"), req(20.0, "m")])
    first, second, third = result.requests
    assert (first.cold_start, first.tier, first.queued_until_s) == (True, "host", LOAD)
    assert first.first_token_s == first.finish_s == pytest.approx(LOAD + F, rel=1e-12)
    # The second request finds the instance idle within its keep-alive: warm, no load.
    assert (second.cold_start, second.tier, second.instance_id) == (False, "gpu", first.instance_id)
    assert second.queued_until_s == 3.0
    names = [p for p, _, _ in phases(result)]
    assert names == ["queued", "loading_to_gpu", "ready", "idle", "ready", "idle", "released"]
    idle_start, idle_end = phases(result)[-2][1:]
    assert idle_start == second.finish_s and idle_end == pytest.approx(second.finish_s + 5, rel=1e-12)
    assert samples(result, "instances", "m")[2] == (idle_end, 0)
    # Past the keep-alive the instance is gone: the third request scales from zero again.
    assert (third.cold_start, third.instance_id) == (True, "m-1")


def test_keep_alive_zero_releases_as_soon_as_idle_so_every_request_is_cold():
    result = run([node()], [model("m", **CACHED)], [req(0.0, "m"), req(10.0, "m")])
    assert [(r.cold_start, r.instance_id) for r in result.requests] == [(True, "m-0"), (True, "m-1")]


def test_min_instances_loads_at_time_zero():
    result = run([node()], [model("m", auto_scaling_config={"min_instances": 1}, **CACHED)], [req(10.0, "m")])
    assert phases(result)[:2] == [("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, LOAD)]
    assert (result.requests[0].cold_start, result.requests[0].tier) == (False, "gpu")
    # min_instances keeps it loaded to the end of the run: its last phase closes at the end.
    assert phases(result)[-1][0] == "idle"


def test_concurrency_target_scales_out_and_batches_beyond_max_batch_queue():
    one = {"auto_scaling_config": {"max_instances": 1}, "backend_config": {"max_batch_size": 2}}
    cfg = model("m", **CACHED)
    cfg["auto_scaling_config"].update(one["auto_scaling_config"])
    cfg["backend_config"].update(one["backend_config"])
    result = run([node()], [cfg], [req(0.0, "m", output_tokens=5), req(0.0, "m", output_tokens=3),
                                   req(0.0, "m", output_tokens=2)])
    r0, r1, r2 = result.requests
    approx = lambda x: pytest.approx(x, rel=1e-9)  # noqa: E731
    # r0 and r1 share one prefill and decode together; r2 waits for a batch slot.
    assert r0.queued_until_s == r1.queued_until_s == LOAD
    assert r0.first_token_s == r1.first_token_s == approx(LOAD + F)
    assert r1.finish_s == approx(LOAD + 3 * F)          # 2 decode steps after its first token
    assert r2.queued_until_s == r1.finish_s             # admitted when r1 leaves
    assert r2.first_token_s == approx(LOAD + 4 * F)     # its prefill pauses r0's decode
    assert r2.finish_s == approx(LOAD + 5 * F)
    assert r0.finish_s == approx(LOAD + 6 * F)          # 4 decode steps + r2's prefill pause
    assert {r.instance_id for r in result.requests} == {"m-0"}
    assert r2.cold_start and r2.tier == "host"


def test_target_one_starts_an_instance_per_concurrent_request_and_the_first_ready_serves():
    result = run([node(num_gpus=4)], [model("m", **CACHED)], [req(0.0, "m"), req(0.0, "m"), req(0.0, "m")])
    # ceil(3 in flight / target 1) = 3 instances; their loads share the host → GPU link and end
    # together, and the first one ready takes every queued request that fits its batch.
    assert [p for p, _, _ in phases(result, "m-2")][:2] == ["queued", "loading_to_gpu"]
    assert phases(result, "m-2")[1] == ("loading_to_gpu", 0.0, 3 * LOAD)
    assert {r.instance_id for r in result.requests} == {"m-0"}


def test_a_request_joining_mid_decode_pauses_the_batch_for_its_prefill():
    cfg = model("m", **CACHED)
    cfg["auto_scaling_config"]["max_instances"] = 1
    join = LOAD + F + 50.5 * F  # r0 has decoded 50.5 steps (progress is continuous)
    result = run([node()], [cfg], [req(0.0, "m", output_tokens=101), req(join, "m", output_tokens=3)])
    r0, r1 = result.requests
    assert r1.first_token_s == pytest.approx(join + F, rel=1e-9)
    assert r1.finish_s == pytest.approx(join + 3 * F, rel=1e-9)
    assert r0.finish_s == pytest.approx(LOAD + 102 * F, rel=1e-9)  # 1 prefill + 100 steps + r1's prefill


def test_decode_steps_grow_with_the_kv_cache_as_the_roofline_says():
    arch = lookup("facebook/opt-1.3b")
    cfg = {"model": "opt-1.3b", "backend_config": {"pretrained_model_name_or_path": "facebook/opt-1.3b"},
           "placement_config": {"host_memory": ["0"]}}
    trace = toy_trace([node()], [cfg], [req(0.0, "opt-1.3b", input_tokens=1000, output_tokens=200)])
    rec = simulate(trace).requests[0]
    roof = Roofline.build(arch.num_params, 2, arch, A100, 1)
    assert roof.kv_bytes_per_token == 2 * 24 * 32 * 64 * 2  # K and V, 24 layers, 32 heads of 64, fp16
    steps = [roof.step_base_s(1) + roof.kv_s_per_token * (1000 + 1 + j) for j in range(199)]
    assert rec.first_token_s - rec.queued_until_s == pytest.approx(roof.prefill_s(1000), rel=1e-9)
    assert rec.finish_s - rec.first_token_s == pytest.approx(sum(steps), rel=1e-9)
    assert roof.prefill_s(1000) > roof.floor_s  # 1000 prompt tokens are compute-bound on an A100


def test_instance_waits_queued_for_a_gpu_held_by_another_model():
    result = run([node()], [model("a", **CACHED), model("b", **CACHED)], [req(0.0, "a"), req(0.0, "b")])
    a, b = result.requests
    assert phases(result, "b-0")[0] == ("queued", 0.0, a.finish_s)
    assert b.queued_until_s == pytest.approx(a.finish_s + LOAD, rel=1e-12)
    # No placement is attempted (and logged) while no GPU is free.
    assert result.scheduler_log == ["Sorted scheduling options: [('0', 0.0625)]", "Allocated node 0 for model a",
                                    "Sorted scheduling options: [('0', 0.0625)]", "Allocated node 0 for model b"]


def test_unservable_model_fails_its_requests_with_a_reason():
    result = run([node(), node()], [model("big", num_gpus=2), model("m", **CACHED)],
                 [req(0.0, "big"), req(0.0, "m")])
    big, m = result.requests
    assert big.status == "failed" and "needs 2 GPUs" in big.reason
    assert m.status == "completed"


def test_until_s_fails_unfinished_requests_and_skips_later_arrivals():
    result = run([node()], [model("m", **CACHED)], [req(0.0, "m", output_tokens=1000), req(5.0, "m")],
                 simulation={"until_s": 0.5})
    assert len(result.requests) == 1
    assert result.requests[0].status == "failed" and "until_s" in result.requests[0].reason


def test_cold_request_tier_names_the_instance_source_and_gpus_busy_tracks_instances():
    result = run([node(num_gpus=2)], [model("m", **CACHED)], [req(0.0, "m"), req(0.0, "m")])
    busy = samples(result, "gpus_busy", "0")
    assert max(v for _, v in busy) == 2 and busy[-1][1] == 0


def test_checkpoint_larger_than_gpu_memory_fails_with_a_reason():
    result = run([node()], [model("huge", size="100GB")], [req(0.0, "huge")])
    assert result.requests[0].status == "failed" and "does not fit" in result.requests[0].reason


def test_scheduler_log_limit_caps_the_kept_lines():
    requests = [req(float(t), "m") for t in range(0, 50, 10)]
    result = run([node()], [model("m", **CACHED)], requests, simulation={"scheduler_log_limit": 3})
    assert len(result.scheduler_log) == 3
    assert all(r.status == "completed" for r in result.requests)


def test_progress_callback_reaches_the_total():
    seen = []
    trace = toy_trace([node()], [model("m", **CACHED)], [req(float(t), "m") for t in range(5)])
    simulate(trace, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5, 5) and all(d <= t for d, t in seen)
