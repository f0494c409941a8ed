"""The engine handles arrivals inside its event loop, without a SimPy event each; these tests replay
traces with a reference engine that still schedules one timer event per arrival instant and runs
``env.run`` (the engine before the merge), and require the same records, including where arrivals
coincide in time with other events."""

from __future__ import annotations

import pytest

from sllmsim.bench.sim import benchmark_trace
from sllmsim.config.trace import arrives_in_run
from sllmsim.records import RequestRecord
from sllmsim.sim.engine import Simulation
from sllmsim.sim.timers import Wake

from simtoy import model, node, req, toy_trace


class TimerArrivals(Simulation):
    """The straightforward reference: each arrival instant is a timer event that schedules the next."""

    version = 0  # arrival timers never go stale

    def _run_events(self, until: float | None) -> None:
        reqs = self.trace.requests
        n = int(arrives_in_run(reqs.time_s, until).sum())
        self._cols = (reqs.time_s[:n].tolist(), reqs.model[:n].tolist(),
                      reqs.input_tokens[:n].tolist(), reqs.output_tokens[:n].tolist())
        self._i = 0
        self.tied_instants = 0
        """Arrival instants at which another event was due at the very same time."""
        self._schedule_arrival()
        if until is None:
            self.env.run()
        else:
            self.env.run(until=until)

    def _schedule_arrival(self) -> None:
        times = self._cols[0]
        if self._i < len(times):
            Wake(self.env, self, self._on_arrival, times[self._i] - self.env.now)
        elif self.progress is not None:
            self.progress(len(times), len(times))

    def _on_arrival(self, event: Wake) -> None:
        now = self.env.now
        self.tied_instants += any(entry[0] == now for entry in self.env._queue)
        times, names, inputs, outputs = self._cols
        i = self._i
        while True:
            rec = RequestRecord(i, names[i], now, inputs[i], outputs[i])
            self.requests.append(rec)
            self._arrive(rec, self.deployments[names[i]], now)
            i += 1
            if i == len(times) or times[i] > now:
                break
        self._i = i
        if self.progress is not None:
            self.progress(i, len(times))
        self._schedule_arrival()


def _both(trace):
    seen_ref, seen = [], []
    reference = TimerArrivals(trace, progress=lambda d, t: seen_ref.append((d, t)))
    expected = reference.run()
    engine = Simulation(trace, progress=lambda d, t: seen.append((d, t)))
    got = engine.run()
    return reference, expected, got, engine, seen_ref, seen


def _assert_same(expected, got, reference, engine):
    assert got.requests == expected.requests
    assert got.phases == expected.phases
    assert got.timeseries == expected.timeseries
    assert engine.env.now == reference.env.now
    # The arrivals took the event ids their timers had: every later event kept its place too.
    # (env.run(until=...) re-schedules its stop marker once it has stopped: one id more.)
    stopped = engine.trace.simulation.until_s is not None
    assert next(engine.env._eid) + stopped == next(reference.env._eid)


# Integer arrival times, bursts at one instant, keep-alives and loads of round lengths: arrivals land
# on the same instants as loads finishing, keep-alive checks and completions.
_TIED = [req(float(t), name, input_tokens=8, output_tokens=o)
         for t in range(0, 40, 2) for name, o in (("a", 1), ("b", 3), ("a", 2))] + [req(3.0, "b")] * 4


@pytest.mark.parametrize("extra", [{}, {"simulation": {"until_s": 20.0}}, {"simulation": {"until_s": 21.5}},
                                   {"simulation": {"loading": "sequential"}}])
def test_merged_arrivals_match_one_timer_per_arrival_instant(extra):
    trace = toy_trace([node(), node(num_gpus=2)],
                      [model("a", keep_alive=2, auto_scaling_config={"min_instances": 1}),
                       model("b", size="8GB", keep_alive=4)],
                      _TIED, **extra)
    reference, expected, got, engine, seen_ref, seen = _both(trace)
    _assert_same(expected, got, reference, engine)
    assert reference.tied_instants > 0  # the scenario does exercise ties
    assert seen[-1] == seen_ref[-1] == (len(got.requests), len(got.requests))


def test_merged_arrivals_match_on_the_benchmark_scenario():
    trace = benchmark_trace(num_requests=3000, num_nodes=4, gpus_per_node=2, num_models=12)
    reference, expected, got, engine, _, _ = _both(trace)
    _assert_same(expected, got, reference, engine)
    assert len(got.requests) > 2500


def test_a_trace_without_arrivals_in_the_run_still_reports_progress():
    trace = toy_trace([node()], [model("a")], [req(5.0, "a")], simulation={"until_s": 1.0})
    reference, expected, got, engine, seen_ref, seen = _both(trace)
    _assert_same(expected, got, reference, engine)
    assert got.requests == [] and seen == seen_ref == [(0, 0)]
