"""Autoscaling: how many instances a model should have, and which idle ones to release.

A policy is a pure function of a :class:`ScalingContext` returning a raw desired count (as Ray
Serve's autoscaling policies are); :func:`decide_scaling` is the one wrapper that applies what every
policy shares: the min/max clamp, the keep-alive delay before an idle instance is released, and the
0 → 1 cold start.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

from sllmsim.config.deploy import AutoScalingConfig
from sllmsim.core.registry import DEFAULT_AUTOSCALE, register, resolve


# The three value types below are immutable named tuples, not frozen dataclasses: a runtime builds
# a context and gets a decision on nearly every request, and tuples are several times cheaper to make.


class IdleInstance(NamedTuple):
    """A loaded instance serving no request since ``idle_since_s``."""

    instance_id: str
    idle_since_s: float


class ScalingContext(NamedTuple):
    """What an autoscaling policy sees for one model."""

    model: str
    now_s: float
    in_flight: int
    """Requests arrived and not yet finished (queued or running)."""
    instances: int
    """Instances not released: starting, loading, ready or idle."""
    idle: tuple[IdleInstance, ...]
    config: AutoScalingConfig


class ScalingDecision(NamedTuple):
    """What the runtime should do now: start ``start`` instances and release ``release``."""

    desired: int
    start: int
    release: tuple[str, ...]
    next_check_s: float | None
    """When an idle instance's keep-alive will expire next (the runtime re-decides then), if ever."""


class AutoscalePolicy(ABC):
    """Maps a context to a raw desired instance count (clamped by :func:`decide_scaling`)."""

    policy_name: str = "?"

    @abstractmethod
    def desired_instances(self, ctx: ScalingContext) -> int:
        """Raw desired instance count for the context."""

    def in_flight_range(self, ctx: ScalingContext) -> tuple[int, int] | None:
        """The in-flight counts ``(low, high)``, inclusive and around ``ctx.in_flight``, over which
        :meth:`desired_instances` gives the same answer with the rest of ``ctx`` unchanged; or None
        when the policy cannot say. A runtime may skip re-deciding while the count stays in range
        (see :func:`decision_holds`)."""
        return None


@register("autoscale", "concurrency")
class ConcurrencyAutoscaler(AutoscalePolicy):
    """ServerlessLLM's concurrency metric: ceil(in-flight requests / target)."""

    def desired_instances(self, ctx: ScalingContext) -> int:
        return math.ceil(ctx.in_flight / ctx.config.target)

    def in_flight_range(self, ctx: ScalingContext) -> tuple[int, int]:
        target = ctx.config.target
        n = ctx.in_flight
        desired = math.ceil(n / target)
        if desired <= 0:
            return n, n
        # ceil(n / target) == desired for (desired - 1) * target < n <= desired * target; the guess
        # from that is checked (and moved) with the very expression above, so float rounding
        # cannot make the range claim an in-flight count whose answer differs.
        low = max(math.floor((desired - 1) * target) + 1, 1)
        while low > 1 and math.ceil((low - 1) / target) == desired:
            low -= 1
        while math.ceil(low / target) != desired:
            low += 1
        high = max(math.floor(desired * target), low)
        while math.ceil((high + 1) / target) == desired:
            high += 1
        while math.ceil(high / target) != desired:
            high -= 1
        return low, high


def make_autoscale_policy(name: str = DEFAULT_AUTOSCALE) -> AutoscalePolicy:
    """Instantiate the autoscaling policy registered (or importable) as ``name``."""
    return resolve("autoscale", name)()


def keep_alive_expires_s(inst: IdleInstance, config: AutoScalingConfig) -> float:
    """When an idle instance's keep-alive runs out and it may be released."""
    return inst.idle_since_s + config.keep_alive


def _longest_idle_first(inst: IdleInstance) -> tuple[float, str]:
    return inst.idle_since_s, inst.instance_id


def decide_scaling(policy: AutoscalePolicy, ctx: ScalingContext) -> ScalingDecision:
    """Apply ``policy`` to ``ctx`` with the shared clamps and keep-alive rule."""
    cfg = ctx.config
    desired = min(max(policy.desired_instances(ctx), cfg.min_instances), cfg.max_instances)
    if ctx.in_flight > 0:
        desired = max(desired, 1)  # a waiting request always gets an instance (0 -> 1 cold start)
    start = max(desired - ctx.instances, 0)
    release: list[str] = []
    next_check = None
    surplus = ctx.instances - desired
    if surplus > 0 and ctx.idle:
        # Release the longest-idle instances first, and only once their keep-alive has expired.
        for inst in sorted(ctx.idle, key=_longest_idle_first):
            if len(release) == surplus:
                break
            expires_s = keep_alive_expires_s(inst, cfg)
            if expires_s <= ctx.now_s:
                release.append(inst.instance_id)
            elif next_check is None or expires_s < next_check:
                next_check = expires_s
    return ScalingDecision(desired=desired, start=start, release=tuple(release), next_check_s=next_check)


def decision_holds(policy: AutoscalePolicy, ctx: ScalingContext, decision: ScalingDecision) -> tuple[int, int] | None:
    """The in-flight counts over which re-deciding would repeat "do nothing", once ``decision`` has
    been carried out: while the instance count stays ``ctx.instances + decision.start``, no
    instance is idle and, when that count exceeds the desired one, no start waits for GPUs (the
    runtime cancels surplus unplaced starts), the clamped desired count, hence the decision,
    depends on nothing else. None when that cannot be promised (idle instances, whose keep-alive
    depends on the time; a release; a policy that gives no range)."""
    if ctx.idle or decision.release or decision.next_check_s is not None:
        return None
    if ctx.instances + decision.start < decision.desired:
        return None
    held = decision_holds_until(policy, ctx, decision)
    return None if held is None else held[:2]


def decision_holds_until(policy: AutoscalePolicy, ctx: ScalingContext,
                         decision: ScalingDecision) -> tuple[int, int, int] | None:
    """Like :func:`decision_holds`, also with idle instances: ``(low, high, surplus)`` such that, once
    ``decision`` has been carried out, re-deciding with the in-flight count in ``[low, high]`` and
    ``ctx.instances + decision.start`` instances (whatever the time and the idle instances) gives
    the same desired count, starts nothing, and leaves ``surplus`` instances beyond the desired
    count. With ``surplus <= 0`` it releases nothing and asks no check either; otherwise it follows
    :func:`decide_scaling`'s keep-alive rule alone: it releases (longest idle first) only idle
    instances whose keep-alive has run out, and asks a check at the earliest expiry of the rest.
    So while no idle instance is past its keep-alive and a check at the earliest expiry is already
    scheduled, the decision changes nothing (cancelling surplus starts that wait for GPUs aside).
    None after a release, or for a policy that gives no range."""
    if decision.release:
        return None
    span = policy.in_flight_range(ctx)
    if span is None:
        return None
    low, high = span
    if low <= 0 < high:  # the 0 -> 1 rule makes 0 in flight differ from any positive count
        low = 1 if ctx.in_flight > 0 else 0
        high = high if ctx.in_flight > 0 else 0
    return low, high, ctx.instances + decision.start - decision.desired


def surplus_idle(policy: AutoscalePolicy, ctx: ScalingContext) -> tuple[str, ...]:
    """The idle instances of ``ctx`` the autoscaler would release if every keep-alive were over:
    those beyond what ``min_instances`` and the requests in flight need. What both runtimes offer
    the scheduler as reclaimable (``reclaim_idle``); one kept by ``min_instances`` never is."""
    return decide_scaling(policy, ctx._replace(now_s=math.inf)).release
