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


def test_in_flight_range_is_exactly_where_the_desired_count_holds():
    # Every count inside the range gives the same desired count; the counts just outside do not.
    for target in (1, 2, 3, 4, 7, 16):
        for n in range(0, 100):
            c = ctx(n, 0, target=target, max_instances=1000)
            low, high = POLICY.in_flight_range(c)
            want = POLICY.desired_instances(c)
            assert low <= n <= high
            assert all(POLICY.desired_instances(c._replace(in_flight=k)) == want for k in range(low, high + 1))
            assert low == 0 or POLICY.desired_instances(c._replace(in_flight=low - 1)) != want
            assert POLICY.desired_instances(c._replace(in_flight=high + 1)) != want


def test_decision_holds_only_where_deciding_again_would_repeat_nothing():
    from sllmsim.core.autoscale import decision_holds

    for target, instances in ((4, 3), (4, 5), (1, 2), (2, 0)):
        for n in range(0, 40):
            c = ctx(n, instances, target=target, max_instances=8)
            d = decide_scaling(POLICY, c)
            span = decision_holds(POLICY, c, d)
            if span is None:
                continue
            after = instances + d.start
            for k in range(span[0], span[1] + 1):
                again = decide_scaling(POLICY, c._replace(in_flight=k, instances=after))
                assert (again.start, again.release, again.next_check_s, again.desired) == (0, (), None, d.desired)
    # Idle instances (their keep-alive depends on the time) and policies without a range: no promise.
    c = ctx(1, 2, idle=[IdleInstance("a", 0.0)], target=1)
    assert decision_holds(POLICY, c, decide_scaling(POLICY, c)) is None


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


def test_decision_holds_until_promises_only_what_deciding_again_repeats():
    # With idle instances too: over the range, at the instance count after the decision and at any
    # time and idle set, the desired count and the surplus are as promised, nothing starts, and with
    # no surplus nothing is released and no check asked.
    from sllmsim.core.autoscale import decision_holds_until

    idle_sets = ((), (IdleInstance("a", 0.0),), (IdleInstance("a", 0.0), IdleInstance("b", 3.0)))
    for target, instances, min_instances in ((4, 3, 0), (4, 5, 0), (1, 2, 1), (2, 0, 0), (3, 6, 2)):
        for idle in idle_sets:
            for n in range(0, 30):
                c = ctx(n, instances, idle, now=1.0, target=target, max_instances=8, min_instances=min_instances,
                        keep_alive=5)
                d = decide_scaling(POLICY, c)
                span = decision_holds_until(POLICY, c, d)
                if d.release:
                    assert span is None
                    continue
                low, high, surplus = span
                after = instances + d.start
                assert low <= n <= high and surplus == after - d.desired
                for k in range(low, high + 1):
                    for now in (1.0, 4.9, 5.0, 100.0):
                        for later_idle in idle_sets:
                            again = decide_scaling(POLICY, c._replace(in_flight=k, instances=after, now_s=now,
                                                                      idle=later_idle))
                            assert (again.start, again.desired) == (0, d.desired)
                            assert after - again.desired == surplus
                            if surplus <= 0:
                                assert (again.release, again.next_check_s) == ((), None)
