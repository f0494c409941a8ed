"""The invariant checker finds each kind of broken run, and passes sound ones."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from _synthetic_runs import synthetic_result, tiny_result

from sllmsim.invariants import InvariantError, assert_invariants, check_invariants
from sllmsim.records import TimeseriesRecord

GIB = 1024**3


def _trace_for(result, num_gpus=2, host_size=4 * GIB, disk_size=100 * GIB, nodes=("0", "1")):
    """A stand-in trace: the requests the run should have served and the nodes' capacities."""
    reqs = sorted(result.requests, key=lambda r: r.arrival_s)
    requests = _Requests(np.array([r.arrival_s for r in reqs]), np.array([r.model for r in reqs], dtype=object))
    cluster = SimpleNamespace(nodes=[SimpleNamespace(node_id=n, num_gpus=num_gpus, host_size_bytes=host_size,
                                                     disk_size_bytes=disk_size) for n in nodes])
    return SimpleNamespace(requests=requests, cluster=cluster)


class _Requests:
    def __init__(self, time_s, model):
        self.time_s, self.model = time_s, model

    def __len__(self):
        return len(self.time_s)


def test_sound_runs_pass():
    tiny = tiny_result()
    assert check_invariants(_trace_for(tiny), tiny) == []
    big = synthetic_result(n_requests=3000, n_nodes=4)
    assert check_invariants(_trace_for(big, num_gpus=12, host_size=12 * GIB, nodes=("0", "1", "2", "3")), big) == []


def _numbers(trace, run):
    return sorted({v.number for v in check_invariants(trace, run)})


def test_lost_or_moved_requests_break_invariant_1():
    run = tiny_result()
    trace = _trace_for(run)
    lost = copy.deepcopy(run)
    lost.requests.pop()
    assert _numbers(trace, lost) == [1]
    moved = copy.deepcopy(run)
    moved.requests[2].arrival_s -= 0.5  # still causal: only the arrival time disagrees with the trace
    assert _numbers(trace, moved) == [1]
    silent = copy.deepcopy(run)
    silent.requests[4].reason = ""
    assert "has no reason" in str(check_invariants(trace, silent)[0])


def test_effect_before_cause_breaks_invariant_2():
    run = copy.deepcopy(tiny_result())
    run.requests[1].first_token_s = run.requests[1].finish_s + 1.0
    found = check_invariants(_trace_for(tiny_result()), run)
    assert [v.number for v in found] == [2]
    assert "request 1: first_token_s" in str(found[0])


def test_overlapping_phases_break_invariant_3():
    run = copy.deepcopy(tiny_result())
    run.phases[1].start_s = 0.05  # loading_to_host starts before queued ends at 0.1
    assert _numbers(_trace_for(tiny_result()), run) == [3]


def test_capacities_break_invariants_4_and_5():
    run = copy.deepcopy(tiny_result())
    trace = _trace_for(run, num_gpus=1)  # node 1 holds model b on two GPUs
    assert _numbers(trace, run) == [4]
    run.timeseries.append(TimeseriesRecord(5.0, "disk_used_bytes", "0", 200 * GIB))
    found = check_invariants(_trace_for(run), run)
    assert [v.number for v in found] == [5] and "disk used" in str(found[0])
    with pytest.raises(InvariantError, match="invariant 5"):
        assert_invariants(_trace_for(run), run, where="point 3")
