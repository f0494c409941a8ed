"""simulation.until_s: the run covers [0, until_s). Later arrivals are outside it (no record, not
counted as arrived); requests still in flight at until_s fail as unfinished; the invariant checker
agrees."""

from __future__ import annotations

import dataclasses

from simtoy import model, node, phases, req, toy_trace

from sllmsim.config.trace import SimulationOptions, arrives_in_run
from sllmsim.invariants import check_invariants
from sllmsim.metrics import frames_from_result, summarize
from sllmsim.sim import simulate

CACHED = {"placement_config": {"host_memory": ["0"]}}
LOAD = 0.0625


def cut_trace(until_s=10.0):
    # A short request, a long one still decoding at 10 s, one arriving exactly at 10 s and one after.
    return toy_trace([node()], [model("m", **CACHED)],
                     [req(0.0, "m", output_tokens=10), req(5.0, "m", output_tokens=100_000), req(10.0, "m"),
                      req(12.0, "m")], simulation={"until_s": until_s})


def test_arrivals_from_until_s_on_are_outside_the_run():
    assert arrives_in_run([0.0, 9.999, 10.0, 12.0], 10.0).tolist() == [True, True, False, False]
    assert arrives_in_run([0.0, 12.0], None).tolist() == [True, True]


def test_requests_in_flight_at_until_s_fail_and_later_ones_get_no_record():
    trace = cut_trace()
    result = simulate(trace)
    assert [r.arrival_s for r in result.requests] == [0.0, 5.0]
    done, cut = result.requests
    assert done.status == "completed"
    assert (cut.status, cut.reason, cut.finish_s) == ("failed", "unfinished when the simulation stopped at until_s=10", None)
    assert cut.first_token_s is not None  # it was being served
    assert phases(result, "m-1")[-1] == ("ready", 5.0 + LOAD, 10.0)  # open phases close at until_s
    assert check_invariants(trace, result) == []
    summary = summarize(*frames_from_result(result))
    assert (summary["requests"], summary["completed"], summary["failed"]) == (2, 1, 1)


def test_the_checker_counts_only_the_requests_before_until_s():
    trace = cut_trace()
    full = simulate(dataclasses.replace(trace, simulation=SimulationOptions()))  # the same requests, not cut
    assert len(full.requests) == 4
    found = check_invariants(trace, full)
    assert [v.number for v in found] == [1] and "the trace has 2 requests but the run recorded 4" in found[0].message
