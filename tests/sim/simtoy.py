"""Toy clusters for scenario tests: round binary sizes and bandwidths so event times are exact."""

from __future__ import annotations

from sllmsim.config.trace import TraceConfig, parse_trace
from sllmsim.records import RunResult
from sllmsim.sim import simulate

GiB = 1024**3


def node(**overrides) -> dict:
    """A node of the hardware JSON: disk 2 GiB/s, network 1 GiB/s (8Gbps), host → GPU 64 GiB/s, 1 GPU."""
    spec = {"host_size": "64GB", "host_bandwidth": "64GB/s", "disk_size": "256GB", "disk_bandwidth": "2GB/s",
            "network_bandwidth": "8Gbps", "num_gpus": 1}
    spec.update(overrides)
    return spec


def model(name: str, size: str = "4GB", keep_alive: float = 0, **overrides) -> dict:
    """A deploy config of an uncatalogued model with an explicit checkpoint size."""
    cfg = {"model": name, "checkpoint_size": size,
           "auto_scaling_config": {"keep_alive": keep_alive},
           "backend_config": {"pretrained_model_name_or_path": f"toy/{name}"}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def req(time: float, name: str, input_tokens: int = 8, output_tokens: int = 1) -> dict:
    return {"time": time, "model": name, "input_tokens": input_tokens, "output_tokens": output_tokens}


def toy_trace(nodes: list[dict], models: list[dict], requests: list[dict], **extra) -> TraceConfig:
    raw = {"name": "toy", "hardware": {str(i): n for i, n in enumerate(nodes)}, "models": models,
           "requests": requests, **extra}
    return parse_trace(raw, source="<toy>")


def run(nodes, models, requests, **extra) -> RunResult:
    return simulate(toy_trace(nodes, models, requests, **extra))


def phases(result: RunResult, instance: str | None = None) -> list[tuple[str, float, float]]:
    """(phase, start, end) of one instance (default: the first one), in order."""
    instance = instance or result.phases[0].instance_id
    return [(p.phase, p.start_s, p.end_s) for p in result.phases if p.instance_id == instance]


def samples(result: RunResult, metric: str, key: str) -> list[tuple[float, float]]:
    return [(t.time_s, t.value) for t in result.timeseries if t.metric == metric and t.key == key]
