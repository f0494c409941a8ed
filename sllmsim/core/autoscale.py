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
from sllmsim.registry import register, resolve


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


@register("autoscale", "concurrency")
class ConcurrencyAutoscaler(AutoscalePolicy):
    """ServerlessLLM's concurrency metric: ceil(in-flight requests / target)."""

    def desired_instances(self, ctx: ScalingContext) -> int:
        return math.ceil(ctx.in_flight / ctx.config.target)


def make_autoscale_policy(name: str = "concurrency") -> AutoscalePolicy:
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


def surplus_idle(policy: AutoscalePolicy, ctx: ScalingContext) -> tuple[str, ...]:
    """The idle instances of ``ctx`` the autoscaler would release if every keep-alive were over:
    those beyond what ``min_instances`` and the requests in flight need. What both runtimes offer
    the scheduler as reclaimable (``reclaim_idle``); one kept by ``min_instances`` never is."""
    return decide_scaling(policy, ctx._replace(now_s=math.inf)).release
