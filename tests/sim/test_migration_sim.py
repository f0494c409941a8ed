"""Live migration in the simulator, on a two-node toy cluster with exact phase times.

Node 0 has model B in host memory but its only GPU runs a long generation of model A (also cached
there); node 1 has A on disk and B nowhere. B's request arrives at 0.2 s. With migration, A moves to
node 1 and B loads from node 0's host memory; without, B downloads on node 1; with the shepherd
policy, A is preempted (tests/sim/test_preemption_sim.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from repo_paths import EXPERIMENTS
from simtoy import GiB, model, node, phases, req, run, samples, toy_trace

from sllmsim.config.hardware import GPU_TYPES
from sllmsim.experiments.points import build_trace
from sllmsim.experiments.runner import make_tasks
from sllmsim.experiments.spec import load_experiment
from sllmsim.invariants import assert_invariants
from sllmsim.metrics import frames_from_result, summarize
from sllmsim.sim import simulate
from sllmsim.sim.engine import MAX_CATCHUP_ROUNDS
from sllmsim.sim.roofline import Roofline

MIGRATE = {"placement": "storage_aware", "enable_migration": True}
# A: 2 GiB fp16 (1 Gi parameters), B: 16 GiB; the toy architectures are unknown, so decode has no
# KV term: one step of a batch of one takes A.floor_s, and prefills of a few tokens take floor_s.
A = Roofline.build(GiB, 2, None, GPU_TYPES["A100-80GB"], 1)
B = Roofline.build(8 * GiB, 2, None, GPU_TYPES["A100-80GB"], 1)
A_READY = 2 / 64                      # 2 GiB from host memory at 64 GiB/s
A_FIRST = A_READY + A.floor_s         # its 8-token prompt is one memory-bound pass
A_OUT = 4000
B_ARRIVES = 0.2
DEST_LOADED = B_ARRIVES + 1.0         # 2 GiB from node 1's disk at 2 GiB/s
B_HOST_LOAD = 16 / 64


def models(a_output=A_OUT, **b_overrides):
    return [model("a", size="2GB", placement_config={"host_memory": ["0"], "local_disk": ["1"]}),
            model("b", size="16GB", placement_config={"host_memory": ["0"], **b_overrides})]


def requests(a_output=A_OUT, b_at=B_ARRIVES):
    return [req(0.0, "a", input_tokens=8, output_tokens=a_output), req(b_at, "b", input_tokens=8, output_tokens=4)]


def a_tokens_at(t: float) -> float:
    """Prompt + generated tokens of A's request at ``t`` while it decodes alone on an A100."""
    return 8 + 1 + (t - A_FIRST) / A.floor_s


def catch_up(dest: Roofline, start: float, source_step_s: float) -> tuple[list[float], float]:
    """The catch-up rounds as documented in the engine: round 1 re-computes every token at
    ``start``; each later round the tokens generated during the previous one; hand-over once a
    round leaves at most one token. Returns (round durations, pause at a forced hand-over)."""
    rounds, todo, t = [], a_tokens_at(start), start
    while True:
        r = dest.prefill_s(todo)
        rounds.append(r)
        t += r
        todo = r / source_step_s
        if todo <= 1 + 1e-9:
            return rounds, 0.0
        if len(rounds) == MAX_CATCHUP_ROUNDS:
            return rounds, dest.prefill_s(todo)


def checked(trace):
    result = simulate(trace)
    assert_invariants(trace, result)
    assert all(r.status == "completed" for r in result.requests)  # no request lost
    return result


def test_migration_frees_the_host_memory_node_and_the_request_continues_on_the_destination():
    result = checked(toy_trace([node(), node()], models(), requests(), scheduler=MIGRATE))
    a, b = result.requests
    r1, r2 = catch_up(A, DEST_LOADED, A.floor_s)[0]
    handover = DEST_LOADED + r1 + r2
    # Round 1 re-computes the ~1,118 tokens A has at 1.2 s (compute-bound), round 2 the ~7 tokens
    # generated meanwhile (one memory-bound pass, during which the source makes exactly one more).
    assert r1 == A.flop_s_per_token * a_tokens_at(DEST_LOADED) and r2 == A.floor_s
    approx = lambda x: pytest.approx(x, rel=1e-12, abs=1e-12)  # noqa: E731
    assert phases(result, "a-0") == [
        ("queued", 0.0, 0.0), ("loading_to_gpu", 0.0, A_READY), ("ready", A_READY, B_ARRIVES),
        ("migrating", B_ARRIVES, approx(handover)), ("released", approx(handover), approx(handover))]
    dest = phases(result, "a-1")
    assert dest[:4] == [("queued", B_ARRIVES, B_ARRIVES), ("loading_to_host", B_ARRIVES, DEST_LOADED),
                        ("resuming", DEST_LOADED, approx(handover)), ("ready", approx(handover), a.finish_s)]
    assert phases(result, "b-0")[:3] == [
        ("queued", B_ARRIVES, approx(handover)), ("loading_to_gpu", approx(handover), approx(handover + B_HOST_LOAD)),
        ("ready", approx(handover + B_HOST_LOAD), b.finish_s)]
    assert (b.node, b.tier, b.queued_until_s) == ("0", "host", approx(handover + B_HOST_LOAD))
    assert b.first_token_s == approx(handover + B_HOST_LOAD + B.floor_s)
    # A's request kept its first token and ends where it would have ended unmoved: the hand-over
    # happened with no gap and node 1 decodes at the same speed.
    assert (a.migrated, a.node, a.instance_id, a.first_token_s) == (True, "1", "a-1", A_FIRST)
    assert a.finish_s == pytest.approx(A_FIRST + (A_OUT - 1) * A.floor_s, rel=1e-12)
    # The source's GPU went straight to B: node 0 never had a free GPU in between.
    assert [v for _, v in samples(result, "gpus_busy", "0")] == [0, 1, 1, 0]
    assert result.scheduler_log[2:5] == [
        "Sorted scheduling options: [('0', 3.0300000000000002), ('1', 16.0)]",
        "Migration plan for model b on node 0: [('a-0', '0', '1', 2.7800000000000002)] "
        "(total_cost_s=2.7800000000000002, freed_gpus=1)",
        "Allocated node 0 for model b"]
    # The plan's cost: resume 0.01 s × 168 tokens + 0.1 s, plus A's 1 s load from node 1's disk.
    assert int(a_tokens_at(B_ARRIVES)) == 168
    summary = summarize(*frames_from_result(result))
    assert (summary["migrations"], summary["migrated_requests"], summary["preemptions"]) == (1, 1, 0)
    assert summary["migrated_latency_mean_s"] == pytest.approx(a.finish_s, abs=1e-9)


def test_without_migration_b_downloads_on_the_other_node():
    result = checked(toy_trace([node(), node()], models(), requests()))
    a, b = result.requests
    assert (a.migrated, a.node) == (False, "0")
    assert a.finish_s == pytest.approx(A_FIRST + (A_OUT - 1) * A.floor_s, rel=1e-12)
    assert phases(result, "b-0")[:2] == [("queued", B_ARRIVES, B_ARRIVES), ("downloading", B_ARRIVES, B_ARRIVES + 16.0)]
    assert (b.node, b.tier, b.queued_until_s) == ("1", "network", B_ARRIVES + 16.0)


@pytest.mark.parametrize("scheduler, phase, plan", [
    (MIGRATE, "migrating", "Migration plan for model b on node 0: [('a-0', '0', '1', 1.47)] (total_cost_s=1.47, "
                           "freed_gpus=1)"),
    ("shepherd", "preempted", "Preempting instances ['a-0'] on node 0 for model b (tokens_lost=37, freed_gpus=1)"),
])
def test_an_instance_is_not_moved_before_it_has_served_as_long_as_it_took_to_start(scheduler, phase, plan):
    # B may only run on node 0. At 0.05 s A has served for 0.01875 s, less than its 0.03125 s load:
    # B waits, and the placement is retried exactly when A passes that guard (2 × A_READY).
    result = checked(toy_trace([node(), node()], models(target_nodes=["0"]), requests(b_at=0.05), scheduler=scheduler))
    guard = 2 * A_READY
    assert phases(result, "a-0")[3][:2] == (phase, guard)
    # B loads once it has the GPU: at once when A is stopped, at the hand-over when A moves.
    b_loads = guard if phase == "preempted" else guard + 1.0 + sum(catch_up(A, guard + 1.0, A.floor_s)[0])
    approx = lambda x: pytest.approx(x, rel=1e-12)  # noqa: E731
    assert phases(result, "b-0")[:2] == [("queued", 0.05, approx(b_loads)),
                                         ("loading_to_gpu", approx(b_loads), approx(b_loads + B_HOST_LOAD))]
    # No placement was attempted (nor logged) before the guard; the one at the guard sees A's 37 tokens.
    assert int(a_tokens_at(guard)) == 37
    assert result.scheduler_log[3] == plan
    assert sum(line == "Allocated node 0 for model b" for line in result.scheduler_log) == 1


def test_a_migration_whose_requests_finish_first_releases_the_source_at_once():
    # A's 400 tokens end at ~0.45 s, before node 1 has loaded A (1.2 s): B gets the GPU then, and
    # the destination, once loaded, is an ordinary idle instance (released: keep_alive 0).
    result = checked(toy_trace([node(), node()], models(), requests(a_output=400), scheduler=MIGRATE))
    a, b = result.requests
    a_done = A_FIRST + 399 * A.floor_s
    assert (a.migrated, a.node, a.finish_s) == (False, "0", pytest.approx(a_done, rel=1e-12))
    assert phases(result, "a-0")[3:] == [("migrating", B_ARRIVES, a.finish_s), ("released", a.finish_s, a.finish_s)]
    assert phases(result, "b-0")[1] == ("loading_to_gpu", a.finish_s, pytest.approx(a_done + B_HOST_LOAD, rel=1e-12))
    assert phases(result, "a-1") == [("queued", B_ARRIVES, B_ARRIVES), ("loading_to_host", B_ARRIVES, DEST_LOADED),
                                     ("idle", DEST_LOADED, DEST_LOADED), ("released", DEST_LOADED, DEST_LOADED)]


def test_requests_arriving_during_a_migration_wait_for_the_destination():
    reqs = requests() + [req(0.5, "a", input_tokens=8, output_tokens=2)]
    result = checked(toy_trace([node(), node()], models(), reqs, scheduler=MIGRATE))
    first, _, late = result.requests
    handover = phases(result, "a-1")[2][2]
    # The source took no new request; the destination serves it right after the hand-over.
    assert (late.instance_id, late.migrated, late.cold_start, late.tier) == ("a-1", False, True, "disk")
    assert late.queued_until_s == handover and late.first_token_s == pytest.approx(handover + A.floor_s, rel=1e-12)
    assert first.migrated and first.instance_id == "a-1"


def test_a_destination_too_slow_to_catch_up_forces_the_hand_over_and_the_stream_pauses():
    # Node 1's GPU computes 1.25x slower than node 0's generates (per token): each round leaves a
    # larger gap than the last; after MAX_CATCHUP_ROUNDS the source stops and the request waits
    # while node 1 re-computes the rest.
    flops = GPU_TYPES["A100-80GB"].memory_bandwidth_bytes_per_s / 1.25
    slow = Roofline.build(GiB, 2, None, replace(GPU_TYPES["A100-80GB"], fp16_flops_per_s=flops), 1)
    out = 100_000
    result = checked(toy_trace([node(), node(gpu_flops=flops)], models(), requests(a_output=out), scheduler=MIGRATE))
    a = result.requests[0]
    rounds, pause = catch_up(slow, DEST_LOADED, A.floor_s)
    assert len(rounds) == MAX_CATCHUP_ROUNDS and rounds[-1] > rounds[0] and pause > 0
    handover = DEST_LOADED + sum(rounds)
    # The source stops at the hand-over; the destination re-computes the rest before it serves.
    approx = lambda x: pytest.approx(x, rel=1e-12)  # noqa: E731
    assert phases(result, "a-0")[3] == ("migrating", B_ARRIVES, approx(handover))
    assert phases(result, "a-1")[2:4] == [("resuming", DEST_LOADED, approx(handover + pause)),
                                          ("ready", approx(handover + pause), a.finish_s)]
    generated = a_tokens_at(handover) - 8
    # After the pause, the rest decodes on node 1, one compute-bound step per token.
    assert a.finish_s == pytest.approx(handover + pause + (out - generated) * slow.step_base_s(1), rel=1e-9)
    assert a.migrated


@pytest.mark.parametrize("scheduler", [MIGRATE, "shepherd"])
def test_same_trace_same_records(scheduler):
    reqs = requests() + [req(0.5 + 0.1 * i, "ab"[i % 2], input_tokens=8 + i, output_tokens=200 + 50 * i)
                         for i in range(12)]
    runs = [run([node(), node(), node()], models(), reqs, scheduler=scheduler) for _ in range(2)]
    assert runs[0].requests == runs[1].requests and runs[0].phases == runs[1].phases
    assert runs[0].timeseries == runs[1].timeseries


def test_the_migration_experiment_runs_one_policy_per_case():
    spec = load_experiment(EXPERIMENTS / "migration.yaml")
    points, tasks = make_tasks(spec)  # validates every configuration
    schedulers = {p.param_dict()["case"]: build_trace(t.inputs, t.base_dir, draw=False).scheduler
                  for p, t in zip(points, tasks)}
    assert {case: (s.placement, s.enable_migration) for case, s in schedulers.items()} == {
        "migration": ("storage_aware", True), "no migration": ("storage_aware", False),
        "shepherd (preemption)": ("shepherd", False)}
