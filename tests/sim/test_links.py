"""The fluid model of shared links, on its own (a bare SimPy environment)."""

from __future__ import annotations

import simpy

from sllmsim.sim.links import FlowNetwork, Link


def _finish_times(env, flows):
    done = {}
    for name, flow in flows.items():
        flow.callbacks.append(lambda _e, name=name: done.__setitem__(name, env.now))
    env.run()
    return done


def test_processor_sharing_and_pipelined_paths():
    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    disk, pcie = Link("disk", 2.0), Link("pcie", 8.0)
    flows = {"a": net.transfer((disk, pcie), 4.0), "b": net.transfer((pcie,), 4.0)}
    # a is limited by the disk (2/s) and b gets its pcie share (4/s): b ends at 1, a at 2.
    assert _finish_times(env, flows) == {"a": 2.0, "b": 1.0}


def test_a_flow_speeds_up_when_its_peer_finishes():
    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    link = Link("disk", 1.0)
    flows = {"short": net.transfer((link,), 1.0), "long": net.transfer((link,), 3.0)}
    # Both at 1/2 until short is done at t=2 (long has 2 left), then long alone at 1/s until t=4.
    assert _finish_times(env, flows) == {"short": 2.0, "long": 4.0}


def test_backlog_is_remaining_work_over_bandwidth():
    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    link = Link("disk", 2.0)
    net.transfer((link,), 4.0)
    net.transfer((link,), 2.0)
    env.run(until=1.0)
    assert link.backlog_s(env.now) == 2.0  # 6 bytes - 2 moved = 4 left at 2/s


def test_zero_byte_transfer_completes_at_once():
    env = simpy.Environment(initial_time=0.0)
    flow = FlowNetwork(env).transfer((Link("x", 1.0),), 0)
    env.run()
    assert flow.processed


def test_a_stream_cap_limits_one_flow_but_not_the_aggregate():
    # A disk of 3/s in all that one reader drives at 2/s: alone a flow gets 2/s; two share 3/s.
    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    disk = Link("disk", 3.0, stream_bytes_per_s=2.0)
    alone = net.transfer((disk,), 4.0)
    assert _finish_times(env, {"alone": alone}) == {"alone": 2.0}

    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    disk = Link("disk", 3.0, stream_bytes_per_s=2.0)
    flows = {"a": net.transfer((disk,), 3.0), "b": net.transfer((disk,), 6.0)}
    # Both at 1.5/s until a is done at t=2 (b has 3 left), then b alone at its cap of 2/s until 3.5.
    assert _finish_times(env, flows) == {"a": 2.0, "b": 3.5}


def test_backlog_under_a_stream_cap_drains_at_the_rate_the_flows_get():
    env = simpy.Environment(initial_time=0.0)
    net = FlowNetwork(env)
    disk = Link("disk", 3.0, stream_bytes_per_s=2.0)
    net.transfer((disk,), 4.0)
    assert disk.backlog_s(0.0) == 2.0  # one flow: 4 bytes at its cap of 2/s, not at the 3/s aggregate
    net.transfer((disk,), 4.0)
    assert disk.backlog_s(0.0) == 8.0 / 3.0  # two flows carry the aggregate


def test_a_stream_cap_above_the_bandwidth_is_refused():
    import pytest

    with pytest.raises(ValueError, match="at most the link's bandwidth"):
        Link("disk", 1.0, stream_bytes_per_s=2.0)
