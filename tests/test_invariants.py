"""The numbered run invariants (sllmsim.invariants) on every trace shipped in traces/, plus determinism."""

from __future__ import annotations

import dataclasses

import pytest
from repo_paths import TRACES
from run_checks import assert_identical_csvs

from sllmsim.config.trace import load_trace
from sllmsim.invariants import check_invariants
from sllmsim.sim import simulate

TRACE_FILES = sorted(TRACES.glob("*.yaml"))


@pytest.fixture(scope="module", params=TRACE_FILES, ids=[p.stem for p in TRACE_FILES])
def traced_run(request):
    trace = load_trace(request.param)
    return trace, simulate(trace)


def test_traces_are_shipped():
    assert "seed-example" in [p.stem for p in TRACE_FILES]


def test_invariants_hold(traced_run):
    trace, result = traced_run
    assert check_invariants(trace, result) == []


def test_every_request_is_completed_or_failed_with_a_reason(traced_run):
    trace, result = traced_run
    until = trace.simulation.until_s
    expected = len(trace.requests) if until is None else int((trace.requests.time_s <= until).sum())
    assert len(result.requests) == expected
    assert {r.status for r in result.requests} <= {"completed", "failed"}
    assert all(r.reason for r in result.requests if r.status == "failed")
    assert all(r.finish_s is not None for r in result.requests if r.status == "completed")


def test_cold_starts_name_the_tier_they_loaded_from(traced_run):
    _, result = traced_run
    for r in result.requests:
        if r.status == "completed":
            assert r.tier in (("host", "disk", "network") if r.cold_start else ("gpu",)), r


def test_instances_phases_follow_the_lifecycle(traced_run):
    _, result = traced_run
    order = {"queued": 0, "downloading": 1, "loading_to_host": 2, "loading_to_gpu": 3}
    by_instance: dict[str, list] = {}
    for p in result.phases:
        by_instance.setdefault(p.instance_id, []).append(p)
    for iid, phases in by_instance.items():
        names = [p.phase for p in phases]
        assert names[0] == "queued", iid
        loads = [order[n] for n in names if n in order]
        assert loads == sorted(loads), iid
        if "released" in names:
            assert names[-1] == "released" and phases[-1].start_s == phases[-1].end_s, iid
        for a, b in zip(phases, phases[1:]):
            assert a.end_s == b.start_s, iid


def test_same_seed_gives_byte_identical_csvs(tmp_path, traced_run):
    trace, first = traced_run
    # A fresh TraceConfig (dataclasses.replace drops the cached request stream) is drawn again.
    second = simulate(dataclasses.replace(trace))
    assert_identical_csvs(tmp_path, first, second)
