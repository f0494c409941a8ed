"""The engine skips the autoscaler while the core says its decision would change nothing
(:func:`sllmsim.core.autoscale.decision_holds_until`), idle instances included; these tests replay
traces with a reference engine that consults it on every call and require the same records."""

from __future__ import annotations

import pytest

import sllmsim.sim.engine as engine_module
from sllmsim.bench.sim import benchmark_trace
from sllmsim.config.trace import load_trace
from sllmsim.sim.engine import Simulation

from simtoy import model, node, req, toy_trace


class AlwaysDecide(Simulation):
    """The straightforward reference: every _rescale call asks the autoscaler."""

    def _rescale(self, m):
        m.holds = None
        super()._rescale(m)


def _run_counting(cls, trace, monkeypatch):
    """Run ``trace`` with ``cls``; also count decisions, and skips made while idle instances existed."""
    counts = {"decided": 0, "skipped_with_idle": 0}
    decide = engine_module.decide_scaling

    def counting_decide(policy, ctx):
        counts["decided"] += 1
        return decide(policy, ctx)

    rescale = Simulation._rescale

    def counting_rescale(self, m):
        before = counts["decided"]
        rescale(self, m)
        if counts["decided"] == before and m.idle:
            counts["skipped_with_idle"] += 1

    monkeypatch.setattr(engine_module, "decide_scaling", counting_decide)
    monkeypatch.setattr(Simulation, "_rescale", counting_rescale)
    try:
        result = cls(trace).run()
    finally:
        monkeypatch.undo()
    return result, counts


def _assert_same(trace, monkeypatch):
    expected, ref_counts = _run_counting(AlwaysDecide, trace, monkeypatch)
    got, counts = _run_counting(Simulation, trace, monkeypatch)
    assert got.requests == expected.requests
    assert got.phases == expected.phases
    assert got.timeseries == expected.timeseries
    assert got.scheduler_log == expected.scheduler_log
    return ref_counts, counts


def test_skipping_with_idle_instances_keeps_every_record_on_the_benchmark_scenario(monkeypatch):
    trace = benchmark_trace(num_requests=10000, num_nodes=8, gpus_per_node=8, num_models=12)
    ref_counts, counts = _assert_same(trace, monkeypatch)
    assert counts["decided"] < ref_counts["decided"]
    assert counts["skipped_with_idle"] > 0  # the idle-instance path is exercised, not only the old one


# Short keep-alives and bursts: idle instances expire between arrivals, at arrivals' very instants
# and while starts wait for GPUs (the two-GPU cluster cannot hold every instance asked for).
_BURSTS = [req(float(t) + d, name, input_tokens=8, output_tokens=o)
           for t in range(0, 60, 3) for d, name, o in ((0.0, "a", 1), (0.5, "b", 4), (1.0, "a", 6), (1.0, "a", 2))]


@pytest.mark.parametrize("keep_alive", [0, 1, 2.5])
def test_skipping_keeps_every_record_when_keep_alives_expire(monkeypatch, keep_alive):
    trace = toy_trace([node(num_gpus=2)],
                      [model("a", keep_alive=keep_alive, auto_scaling_config={"target": 1, "max_instances": 3}),
                       model("b", keep_alive=keep_alive, auto_scaling_config={"min_instances": 1})],
                      _BURSTS)
    _assert_same(trace, monkeypatch)


@pytest.mark.parametrize("name", ["burst-example", "contention-example", "two-server-mix", "paper-cluster"])
def test_skipping_keeps_every_record_on_shipped_traces(monkeypatch, name):
    _assert_same(load_trace(f"traces/{name}.yaml"), monkeypatch)
