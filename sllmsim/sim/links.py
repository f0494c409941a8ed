"""Bandwidth sharing between concurrent transfers: an event-driven fluid model.

Every link (a node's network → disk, disk → host and host → GPU paths) carries a set of flows and
shares its bandwidth equally among them (processor sharing), no flow taking more than the link's
per-stream rate (a disk that one reader cannot saturate: ``disk_aggregate_bandwidth``). A flow may
cross several links at once
(a pipelined load streams chunks through all of them); its rate is the smallest of its links'
shares. Rates change only when a flow starts or ends, so the model advances in those instants: each
affected flow's remaining bytes are brought up to date, its rate recomputed, and its completion
rescheduled. Superseded completion events stay in SimPy's queue and are ignored by a version check
(SimPy events cannot be cancelled).
"""

from __future__ import annotations

import simpy
from simpy.events import NORMAL, Event


class Link:
    """One shared-bandwidth path of a node: ``bandwidth_bytes_per_s`` in all, shared equally by its
    flows, each taking at most ``stream_bytes_per_s`` (by default the whole bandwidth)."""

    __slots__ = ("name", "bandwidth_bytes_per_s", "stream_bytes_per_s", "flows")

    def __init__(self, name: str, bandwidth_bytes_per_s: float, stream_bytes_per_s: float | None = None):
        self.name = name
        self.bandwidth_bytes_per_s = float(bandwidth_bytes_per_s)
        self.stream_bytes_per_s = self.bandwidth_bytes_per_s if stream_bytes_per_s is None else float(stream_bytes_per_s)
        if not 0 < self.stream_bytes_per_s <= self.bandwidth_bytes_per_s:
            raise ValueError(f"link {name}: a stream's rate {self.stream_bytes_per_s} must be positive and at most "
                             f"the link's bandwidth {self.bandwidth_bytes_per_s}")
        self.flows: list[Flow] = []

    def share_bytes_per_s(self) -> float:
        """The rate this link gives each of its flows now."""
        share = self.bandwidth_bytes_per_s / len(self.flows)
        return share if share < self.stream_bytes_per_s else self.stream_bytes_per_s

    def backlog_s(self, now: float) -> float:
        """Seconds this link needs to carry what its current flows still have to move, at the rate
        it carries them now."""
        flows = self.flows
        if not flows:
            return 0.0
        left = 0.0
        for f in flows:
            # max(x, 0.0) written out (it was a large share of a placement's cost): the same value,
            # as max keeps x unless 0.0 > x.
            x = f.remaining_bytes - f.rate * (now - f.updated_s)
            if not 0.0 > x:
                left += x
        carried = self.stream_bytes_per_s * len(flows)
        # Without a stream cap `carried` is never below the bandwidth: the same division as before.
        return left / (carried if carried < self.bandwidth_bytes_per_s else self.bandwidth_bytes_per_s)


class Flow(Event):
    """A transfer of ``size_bytes`` over ``links``; the event succeeds when the last byte arrives."""

    def __init__(self, env: simpy.Environment, links: tuple[Link, ...], size_bytes: float):
        super().__init__(env)
        self.links = links
        self.size_bytes = size_bytes
        self.remaining_bytes = float(size_bytes)
        self.rate = 0.0
        self.updated_s = env.now
        self.version = 0


class _FlowDone(Event):
    """The (possibly superseded) completion instant of a flow at its current rate."""

    def __init__(self, env: simpy.Environment, flow: Flow, callback):
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        self.flow = flow
        self.version = flow.version


class FlowNetwork:
    """Starts flows and keeps every flow's completion time right as others start and end."""

    def __init__(self, env: simpy.Environment):
        self.env = env

    def transfer(self, links: tuple[Link, ...], size_bytes: float) -> Flow:
        """Start moving ``size_bytes`` over ``links`` now; returns the event that fires when done."""
        env = self.env
        flow = Flow(env, links, size_bytes)
        if size_bytes <= 0 or not links:
            flow.succeed()
            return flow
        affected = self._flows_on(links)
        self._advance(affected)
        for link in links:
            link.flows.append(flow)
        affected.append(flow)
        self._rerate(affected)
        return flow

    @staticmethod
    def _flows_on(links: tuple[Link, ...]) -> list[Flow]:
        # Insertion-ordered de-duplication keeps the event order deterministic.
        return list(dict.fromkeys(f for link in links for f in link.flows))

    def _advance(self, flows: list[Flow]) -> None:
        now = self.env.now
        for f in flows:
            if f.rate:
                f.remaining_bytes = max(f.remaining_bytes - f.rate * (now - f.updated_s), 0.0)
            f.updated_s = now

    def _rerate(self, flows: list[Flow]) -> None:
        env = self.env
        for f in flows:
            rate = min(link.share_bytes_per_s() for link in f.links)
            if rate == f.rate:
                continue  # its scheduled completion still holds
            f.rate = rate
            f.version += 1
            env.schedule(_FlowDone(env, f, self._on_done), NORMAL, f.remaining_bytes / rate)

    def _on_done(self, event: _FlowDone) -> None:
        flow = event.flow
        if event.version != flow.version or flow.triggered:
            return
        flow.remaining_bytes = 0.0
        flow.updated_s = self.env.now
        for link in flow.links:
            link.flows.remove(flow)
        affected = self._flows_on(flow.links)
        self._advance(affected)
        self._rerate(affected)
        flow.succeed()
