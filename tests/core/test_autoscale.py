"""The autoscaler wrapper: clamps, keep-alive and the 0 -> 1 cold start."""

from __future__ import annotations

from sllmsim.config.deploy import AutoScalingConfig
from sllmsim.core.autoscale import IdleInstance, ScalingContext, decide_scaling, make_autoscale_policy

POLICY = make_autoscale_policy("concurrency")


def ctx(in_flight, instances, idle=(), now=0.0, **cfg):
    return ScalingContext("m", now, in_flight, instances, tuple(idle), AutoScalingConfig(**cfg))


def test_desired_is_ceil_of_in_flight_over_target():
    assert decide_scaling(POLICY, ctx(5, 0, target=2)).desired == 3
    assert decide_scaling(POLICY, ctx(5, 0, target=2)).start == 3


def test_clamped_to_max_and_min():
    assert decide_scaling(POLICY, ctx(50, 0, max_instances=4)).desired == 4
    assert decide_scaling(POLICY, ctx(0, 0, min_instances=2)).start == 2


def test_first_request_triggers_cold_start_from_zero():
    decision = decide_scaling(POLICY, ctx(1, 0))
    assert (decision.desired, decision.start) == (1, 1)


def test_idle_instance_released_only_after_keep_alive():
    idle = [IdleInstance("a", idle_since_s=10.0)]
    early = decide_scaling(POLICY, ctx(0, 1, idle, now=12.0, keep_alive=5))
    assert early.release == () and early.next_check_s == 15.0
    late = decide_scaling(POLICY, ctx(0, 1, idle, now=15.0, keep_alive=5))
    assert late.release == ("a",) and late.next_check_s is None


def test_keep_alive_zero_releases_at_once_and_min_instances_is_kept():
    idle = [IdleInstance("a", 1.0), IdleInstance("b", 0.5)]
    decision = decide_scaling(POLICY, ctx(0, 2, idle, now=1.0, min_instances=1))
    assert decision.release == ("b",)  # the longest-idle one goes; one stays for min_instances


def test_busy_instances_are_never_released():
    decision = decide_scaling(POLICY, ctx(1, 3, [IdleInstance("c", 0.0)], now=100.0))
    assert decision.release == ("c",)


def test_surplus_idle_is_what_would_go_once_every_keep_alive_is_over():
    from sllmsim.config.deploy import AutoScalingConfig
    from sllmsim.core.autoscale import IdleInstance, ScalingContext, make_autoscale_policy, surplus_idle

    policy = make_autoscale_policy("concurrency")
    idle = (IdleInstance("b", 5.0), IdleInstance("a", 1.0))
    cfg = AutoScalingConfig(min_instances=1, keep_alive=100.0)
    # Three instances, one request in flight and min_instances 1: one instance is needed, the two
    # idle ones are surplus (longest idle first), although their keep-alive has not run out at t=10.
    assert surplus_idle(policy, ScalingContext("m", 10.0, 1, 3, idle, cfg)) == ("a", "b")
    # Two instances and no request: min_instances keeps one, so only the longest idle goes.
    assert surplus_idle(policy, ScalingContext("m", 10.0, 0, 2, idle, cfg)) == ("a",)
