"""Hand-built runs for the metrics, report and output tests (no simulator needed).

``tiny_result()`` is small enough to check every metric by hand; ``synthetic_result()`` is a larger,
self-consistent run (one instance per model at a time, keep-alive, loads from each tier) for plots,
determinism and the compare command.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sllmsim.records import PhaseRecord, RequestRecord, RunResult, TimeseriesRecord

GIB = 1024**3


def tiny_result() -> RunResult:
    """Four completed requests with latencies 1, 2, 3, 4 s and one failed request on two nodes.

    Requests 0 and 1 (model a) cold-start from disk and host; requests 2 and 3 (model b) are
    served warm, by an instance already loaded on node 1 at time 0.
    """
    reqs = [
        RequestRecord(0, "a", 0.0, 8, 8, queued_until_s=0.5, first_token_s=0.6, finish_s=1.0, node="0",
                      instance_id="a-0", cold_start=True, tier="disk"),
        RequestRecord(1, "a", 1.0, 8, 8, queued_until_s=2.0, first_token_s=2.5, finish_s=3.0, node="0",
                      instance_id="a-1", cold_start=True, tier="host"),
        RequestRecord(2, "b", 2.0, 8, 8, queued_until_s=2.0, first_token_s=2.2, finish_s=5.0, node="1",
                      instance_id="b-0", tier="gpu"),
        RequestRecord(3, "b", 3.0, 8, 8, queued_until_s=3.0, first_token_s=3.4, finish_s=7.0, node="1",
                      instance_id="b-0", tier="gpu"),
        RequestRecord(4, "b", 4.0, 8, 8, status="failed", reason="timeout"),
    ]
    phases = [
        PhaseRecord("a-0", "a", "0", "queued", 0.0, 0.1),
        PhaseRecord("a-0", "a", "0", "loading_to_host", 0.1, 0.4, tier="disk", bytes=GIB),
        PhaseRecord("a-0", "a", "0", "loading_to_gpu", 0.4, 0.5, tier="host", bytes=GIB),
        PhaseRecord("a-0", "a", "0", "ready", 0.5, 1.0),
        PhaseRecord("a-0", "a", "0", "released", 1.0, 1.0),
        PhaseRecord("a-1", "a", "0", "loading_to_gpu", 1.0, 2.0, tier="host", bytes=GIB),
        PhaseRecord("a-1", "a", "0", "ready", 2.0, 3.0),
        PhaseRecord("a-1", "a", "0", "released", 3.0, 3.0),
        PhaseRecord("b-0", "b", "1", "ready", 0.0, 7.0),
        PhaseRecord("b-0", "b", "1", "released", 7.0, 7.0),
    ]
    ts = [
        TimeseriesRecord(0.0, "instances", "b", 1),
        TimeseriesRecord(0.0, "gpus_busy", "1", 2),  # model b spans two GPUs
        TimeseriesRecord(0.0, "instances", "a", 1),
        TimeseriesRecord(0.0, "gpus_busy", "0", 1),
        TimeseriesRecord(1.0, "gpus_busy", "0", 0),
        TimeseriesRecord(1.0, "gpus_busy", "0", 1),  # released and reloaded at the same instant
        TimeseriesRecord(3.0, "instances", "a", 0),
        TimeseriesRecord(3.0, "gpus_busy", "0", 0),
        TimeseriesRecord(7.0, "instances", "b", 0),
        TimeseriesRecord(7.0, "gpus_busy", "1", 0),
        TimeseriesRecord(0.0, "host_used_bytes", "0", GIB),
    ]
    return RunResult(name="tiny", requests=reqs, phases=phases, timeseries=ts,
                     resolved_config={"seed": 0, "scheduler": "storage_aware"},
                     scheduler_log=["Sorted scheduling options: [('0', 0.5)]", "Allocated node 0 for model a"])


_LOAD_S = {"host": 1.0, "disk": 4.0, "network": 20.0}
_LOAD_PHASES = {"network": ["downloading", "loading_to_host", "loading_to_gpu"],
                "disk": ["loading_to_host", "loading_to_gpu"], "host": ["loading_to_gpu"]}


def synthetic_result(n_requests: int = 2000, n_models: int = 12, n_nodes: int = 4, seed: int = 0,
                     keep_alive_s: float = 30.0, name: str = "synthetic") -> RunResult:
    """A seeded, self-consistent run: Zipf-popular models, one instance per model at a time,
    loaded from host/disk/network, kept alive ``keep_alive_s`` after its last request."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.2, n_requests))
    popularity = 1.0 / np.arange(1, n_models + 1)
    models = rng.choice(n_models, size=n_requests, p=popularity / popularity.sum())
    service = rng.gamma(2.0, 0.6, n_requests)
    tiers = rng.choice(list(_LOAD_S), size=n_requests, p=[0.5, 0.35, 0.15])

    requests, phases, events = [], [], []  # events: (time, order, metric, key, delta)
    instance = {}  # model -> dict(id, node, tier, start, ready, last_finish)
    counter = defaultdict(int)

    def close(m: int) -> None:
        inst = instance.pop(m)
        end = inst["last_finish"] + keep_alive_s
        phases.append(PhaseRecord(inst["id"], f"m{m}", inst["node"], "ready", inst["ready"], inst["last_finish"]))
        phases.append(PhaseRecord(inst["id"], f"m{m}", inst["node"], "idle", inst["last_finish"], end))
        phases.append(PhaseRecord(inst["id"], f"m{m}", inst["node"], "released", end, end))
        events.append((end, 1, "instances", f"m{m}", -1))
        events.append((end, 1, "gpus_busy", inst["node"], -1))
        events.append((end, 1, "host_used_bytes", inst["node"], -GIB))

    for i in range(n_requests):
        t, m = float(arrivals[i]), int(models[i])
        inst = instance.get(m)
        if inst is not None and t > inst["last_finish"] + keep_alive_s:
            close(m)
            inst = None
        if inst is None:
            tier = str(tiers[i])
            node = str(m % n_nodes)
            inst_id = f"m{m}-{counter[m]}"
            counter[m] += 1
            clock = t + 0.05
            phases.append(PhaseRecord(inst_id, f"m{m}", node, "queued", t, clock))
            for ph in _LOAD_PHASES[tier]:
                step = _LOAD_S[tier] / len(_LOAD_PHASES[tier])
                phases.append(PhaseRecord(inst_id, f"m{m}", node, ph, clock, clock + step, tier=tier, bytes=GIB))
                clock += step
            inst = {"id": inst_id, "node": node, "tier": tier, "start": t, "ready": clock, "last_finish": clock}
            instance[m] = inst
            events += [(t, 0, "instances", f"m{m}", 1), (t, 0, "gpus_busy", node, 1),
                       (t, 0, "host_used_bytes", node, GIB)]
        cold = t < inst["ready"]
        start = max(t, inst["ready"])
        first = start + 0.04
        finish = first + float(service[i])
        inst["last_finish"] = max(inst["last_finish"], finish)
        requests.append(RequestRecord(i, f"m{m}", t, 64, 128, queued_until_s=start, first_token_s=first,
                                      finish_s=finish, node=inst["node"], instance_id=inst["id"],
                                      cold_start=cold, tier=inst["tier"] if cold else "gpu"))
    for m in sorted(instance):
        close(m)

    # Turn the +1/-1 events into the absolute samples a runtime writes whenever a value changes.
    level: dict[tuple[str, str], float] = defaultdict(float)
    timeseries = []
    for time, _, metric, key, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level[(metric, key)] += delta
        timeseries.append(TimeseriesRecord(time, metric, key, level[(metric, key)]))
    return RunResult(name=name, requests=requests, phases=phases, timeseries=timeseries,
                     resolved_config={"seed": seed, "keep_alive_s": keep_alive_s, "models": n_models},
                     scheduler_log=[f"Allocated node {p.node} for model {p.model}" for p in phases
                                    if p.phase == "queued"])
