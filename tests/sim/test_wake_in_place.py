"""An instance keeps at most one batch timer in SimPy's queue and re-arms it in place
(:meth:`Simulation._set_wake`); these tests replay traces with a reference engine that queues a
fresh timer for every wake and ignores superseded ones by their version (the engine before), and
require the same records, clock and event ids, including where wakes coincide with other events."""

from __future__ import annotations

import pytest

import sllmsim.sim.engine as engine_module
from sllmsim.bench.sim import benchmark_trace
from sllmsim.config.trace import load_trace
from sllmsim.sim.engine import Simulation
from sllmsim.sim.timers import Wake

from simtoy import model, node, req, toy_trace


class FreshTimers(Simulation):
    """The straightforward reference: one new timer per wake; a stale one fires and does nothing."""

    def _set_wake(self, inst, callback, delay_s):
        inst.version += 1
        Wake(self.env, inst, lambda event: event.version == event.target.version and callback(event.target), delay_s)


def _compare(trace, monkeypatch):
    reference = FreshTimers(trace)
    expected = reference.run()
    queued = []
    pending = engine_module.PendingWake

    def counting(*args):
        queued.append(1)
        return pending(*args)

    monkeypatch.setattr(engine_module, "PendingWake", counting)
    engine = Simulation(trace)
    got = engine.run()
    assert got.requests == expected.requests
    assert got.phases == expected.phases
    assert got.timeseries == expected.timeseries
    assert got.scheduler_log == expected.scheduler_log
    assert engine.env.now == reference.env.now
    assert next(engine.env._eid) == next(reference.env._eid)  # every wake took the id its timer had
    return len(queued)


def test_wakes_in_place_match_fresh_timers_on_the_benchmark_scenario(monkeypatch):
    trace = benchmark_trace(num_requests=5000, num_nodes=4, gpus_per_node=4, num_models=6)
    wakes = []
    set_wake = Simulation._set_wake
    monkeypatch.setattr(Simulation, "_set_wake", lambda self, *a: (wakes.append(1), set_wake(self, *a)))
    queued = _compare(trace, monkeypatch)
    assert 0 < queued < len(wakes)  # later wakes did re-arm a queued timer instead of queueing one


# Integer times and round sizes: arrivals land on the instants of completions, prefill ends and
# keep-alive checks; the last wake of a burst can be superseded before it is ever queued.
_TIED = [req(float(t), name, input_tokens=8, output_tokens=o)
         for t in range(0, 40, 2) for name, o in (("a", 1), ("b", 3), ("a", 2), ("a", 7))] + [req(3.0, "b")] * 4


@pytest.mark.parametrize("extra", [{}, {"simulation": {"until_s": 20.0}}, {"simulation": {"loading": "sequential"}}])
def test_wakes_in_place_match_fresh_timers_where_events_tie(monkeypatch, extra):
    trace = toy_trace([node(), node(num_gpus=2)],
                      [model("a", keep_alive=2, auto_scaling_config={"min_instances": 1}),
                       model("b", size="8GB", keep_alive=4)],
                      _TIED, **extra)
    _compare(trace, monkeypatch)


@pytest.mark.parametrize("name", ["burst-example", "contention-example", "two-server-mix", "paper-cluster",
                                  "validation-policies"])
def test_wakes_in_place_match_fresh_timers_on_shipped_traces(monkeypatch, name):
    _compare(load_trace(f"traces/{name}.yaml"), monkeypatch)


@pytest.mark.parametrize("scheduler", [{"placement": "storage_aware", "enable_migration": True}, "shepherd"])
def test_wakes_in_place_match_fresh_timers_through_migrations_and_preemptions(monkeypatch, scheduler):
    # The toy cluster of test_migration_sim.py with more traffic: hand-overs and preemptions cancel
    # pending wakes (by version) while their timers are queued or only promised.
    from test_migration_sim import models, requests

    reqs = requests() + [req(0.5 + 0.1 * i, "ab"[i % 2], input_tokens=8 + i, output_tokens=200 + 50 * i)
                         for i in range(12)]
    _compare(toy_trace([node(), node(), node()], models(), reqs, scheduler=scheduler), monkeypatch)
