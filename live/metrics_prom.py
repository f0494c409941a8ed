"""``GET /metrics``: the live server's counters and gauges in Prometheus text format.

Built on ``prometheus_client`` with one registry per server (no process-global metrics, so two
servers in one process, as in tests, never mix their numbers). Counters and histograms are fed by
the controller as events happen; gauges (instances per model and phase, queue lengths, GPU slots) are
read from the controller's state at scrape time by a custom collector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: Buckets (seconds) for load times and latencies: tiny models load in milliseconds, large ones in tens of seconds.
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)


@dataclass(frozen=True)
class GaugeState:
    """The controller's state that gauges report, read at scrape time."""

    instances: dict[tuple[str, str], int] = field(default_factory=dict)
    """(model, phase) -> instances in that phase."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """model -> requests arrived and not finished."""
    queued: dict[str, int] = field(default_factory=dict)
    """model -> requests waiting for an instance."""
    slots_used: dict[str, int] = field(default_factory=dict)
    """node -> GPU slots held by instances."""
    slots_total: dict[str, int] = field(default_factory=dict)


class _StateCollector:
    def __init__(self, state: Callable[[], GaugeState]):
        self._state = state

    def collect(self):
        st = self._state()
        inst = GaugeMetricFamily("sllmsim_instances", "Instances per model and phase (loading, ready, idle)",
                                 labels=["model", "phase"])
        for (model, phase), n in sorted(st.instances.items()):
            inst.add_metric([model, phase], n)
        yield inst
        flight = GaugeMetricFamily("sllmsim_requests_in_flight", "Requests arrived and not yet finished",
                                   labels=["model"])
        for model, n in sorted(st.in_flight.items()):
            flight.add_metric([model], n)
        yield flight
        queued = GaugeMetricFamily("sllmsim_requests_queued", "Requests waiting for an instance", labels=["model"])
        for model, n in sorted(st.queued.items()):
            queued.add_metric([model], n)
        yield queued
        used = GaugeMetricFamily("sllmsim_gpu_slots_used", "GPU slots held by instances", labels=["node"])
        for node, n in sorted(st.slots_used.items()):
            used.add_metric([node], n)
        yield used
        total = GaugeMetricFamily("sllmsim_gpu_slots", "GPU slots of the node (num_gpus)", labels=["node"])
        for node, n in sorted(st.slots_total.items()):
            total.add_metric([node], n)
        yield total


class LiveMetrics:
    """The server's Prometheus metrics; the controller calls the ``on_*`` methods."""

    def __init__(self, state: Callable[[], GaugeState]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sllmsim_requests", "Requests finished, by model and status (completed, failed)",
                                ["model", "status"], registry=r)
        self.cold_starts = Counter("sllmsim_cold_starts", "Instance loads, by the tier the checkpoint came from",
                                   ["model", "tier"], registry=r)
        self.load_failures = Counter("sllmsim_load_failures", "Instance loads that failed", ["model"], registry=r)
        self.load_seconds = Histogram("sllmsim_load_seconds", "Seconds from placing an instance to it being ready",
                                      ["model", "tier"], buckets=_SECONDS_BUCKETS, registry=r)
        self.latency_seconds = Histogram("sllmsim_request_latency_seconds", "Arrival to last token",
                                         ["model"], buckets=_SECONDS_BUCKETS, registry=r)
        self.ttft_seconds = Histogram("sllmsim_time_to_first_token_seconds", "Arrival to first token",
                                      ["model"], buckets=_SECONDS_BUCKETS, registry=r)
        self.tokens = Counter("sllmsim_tokens", "Tokens processed, by model and kind (prompt, completion)",
                              ["model", "kind"], registry=r)
        r.register(_StateCollector(state))

    def on_load(self, model: str, tier: str, seconds: float) -> None:
        self.cold_starts.labels(model, tier).inc()
        self.load_seconds.labels(model, tier).observe(seconds)

    def on_load_failed(self, model: str) -> None:
        self.load_failures.labels(model).inc()

    def on_request(self, model: str, status: str, latency_s: float | None, ttft_s: float | None,
                   prompt_tokens: int, completion_tokens: int) -> None:
        self.requests.labels(model, status).inc()
        if latency_s is not None:
            self.latency_seconds.labels(model).observe(latency_s)
        if ttft_s is not None:
            self.ttft_seconds.labels(model).observe(ttft_s)
        if prompt_tokens:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, "completion").inc(completion_tokens)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
