"""Deploy configs, exactly as the spec's ``config-opt-2.7b.json`` (plus documented optional keys).

The same file drives the simulator and live mode (``sllmsim deploy --config``).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from sllmsim.errors import ConfigError, check_keys
from sllmsim.units import UnitError, parse_size_bytes

#: Bytes per parameter for each ``torch_dtype`` a deploy config may name. ``auto`` is taken as the
#: half-precision checkpoints that Hugging Face hubs commonly ship.
DTYPE_BYTES: dict[str, int] = {
    "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "auto": 2,
    "float32": 4, "fp32": 4, "float": 4, "float64": 8, "int8": 1, "uint8": 1,
}

BACKENDS = ("transformers", "vllm", "dummy")


@dataclass(frozen=True)
class AutoScalingConfig:
    """``auto_scaling_config``: scale on concurrency between min and max instances."""

    metric: str = "concurrency"
    """Only ``concurrency`` (in-flight requests per instance) is modelled, as in the reference."""
    target: int = 1
    """Requests per instance that the autoscaler aims for: desired = ceil(in_flight / target)."""
    min_instances: int = 0
    """0 allows scale to zero."""
    max_instances: int = 10
    keep_alive: float = 0.0
    """Seconds an idle instance stays loaded before it is released."""


@dataclass(frozen=True)
class PlacementConfig:
    """``placement_config``: where instances may run and where the checkpoint already is."""

    target_nodes: tuple[str, ...] | None = None
    """Nodes allowed to run this model; ``None`` means any node."""
    local_disk: tuple[str, ...] | None = None
    """Nodes whose local disk registration puts the checkpoint on; ``None`` (the key absent): one
    node chosen round-robin in deploy order, as the reference's store manager does
    (:mod:`sllmsim.core.registration`); ``()``: no node."""
    host_memory: tuple[str, ...] = ()
    """Nodes whose host-memory cache registration loads the checkpoint into (it is put on their
    disk too). The reference's key is ``memory_pool``; ``host_memory`` is this project's older name
    for the same list (a config gives one of them)."""


@dataclass(frozen=True)
class BackendConfig:
    """``backend_config``: how the backend loads and runs the model."""

    pretrained_model_name_or_path: str
    torch_dtype: str = "float16"
    device_map: str = "auto"
    max_batch_size: int = 8
    """Requests one instance decodes together; more queue at the instance."""
    extra: tuple[tuple[str, Any], ...] = ()
    """Other backend keys, passed through to the backend untouched."""

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.torch_dtype]


@dataclass(frozen=True)
class DeployConfig:
    """One model deployment."""

    model: str
    backend_config: BackendConfig
    backend: str = "transformers"
    num_gpus: int = 1
    auto_scaling_config: AutoScalingConfig = field(default_factory=AutoScalingConfig)
    placement_config: PlacementConfig = field(default_factory=PlacementConfig)
    checkpoint_size_bytes: int | None = None
    """Explicit checkpoint size for a model the catalog does not know (``checkpoint_size`` key)."""
    num_layers: int | None = None
    """Explicit depth (transformer layers) of a model the catalog does not know (``num_layers`` key;
    simulator only): it prices the nodes' per-layer fixed costs."""
    source: str = "<inline>"


_TOP_KEYS = ("model", "backend", "num_gpus", "auto_scaling_config", "placement_config", "backend_config",
             "checkpoint_size", "num_layers")
_BACKEND_KNOWN = ("pretrained_model_name_or_path", "torch_dtype", "device_map", "max_batch_size")


def _default(cls: type, name: str) -> Any:
    """The default that dataclass ``cls`` declares for field ``name``: each deploy default is written
    once, on its dataclass, and the parser reads it from there."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _int(raw: dict, key: str, default: int, source: str, field_name: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(source, field_name, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _node_list(value: Any, source: str, field_name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(source, field_name, f"expected a list of node ids such as [\"0\", \"1\"], got {value!r}")
    return tuple(str(v) for v in value)


def _mapping(raw: dict, key: str, source: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__}")
    return value


def parse_deploy_config(raw: Any, source: str = "<inline deploy config>") -> DeployConfig:
    """Validate one deploy config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a JSON object with at least a 'model' key")
    check_keys(raw, _TOP_KEYS, source)
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(source, "model", f"expected a non-empty model name, got {model!r}")
    backend = raw.get("backend", _default(DeployConfig, "backend"))
    if backend not in BACKENDS:
        raise ConfigError(source, "backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")

    asc = _mapping(raw, "auto_scaling_config", source)
    check_keys(asc, ("metric", "target", "min_instances", "max_instances", "keep_alive"), source,
               "auto_scaling_config.")
    defaults = AutoScalingConfig()
    metric = asc.get("metric", defaults.metric)
    if metric != "concurrency":
        raise ConfigError(source, "auto_scaling_config.metric", f"only 'concurrency' is supported, got {metric!r}")
    min_i = _int(asc, "min_instances", defaults.min_instances, source, "auto_scaling_config.min_instances", 0)
    max_i = _int(asc, "max_instances", defaults.max_instances, source, "auto_scaling_config.max_instances", 1)
    if min_i > max_i:
        raise ConfigError(source, "auto_scaling_config.min_instances",
                          f"min_instances ({min_i}) exceeds max_instances ({max_i})")
    keep_alive = asc.get("keep_alive", defaults.keep_alive)
    if (isinstance(keep_alive, bool) or not isinstance(keep_alive, (int, float))
            or not math.isfinite(keep_alive) or keep_alive < 0):
        raise ConfigError(source, "auto_scaling_config.keep_alive",
                          f"expected a finite, non-negative number of seconds, got {keep_alive!r}")
    autoscaling = AutoScalingConfig(
        metric=metric,
        target=_int(asc, "target", defaults.target, source, "auto_scaling_config.target", 1),
        min_instances=min_i,
        max_instances=max_i,
        keep_alive=float(keep_alive),
    )

    pc = _mapping(raw, "placement_config", source)
    check_keys(pc, ("target_nodes", "local_disk", "memory_pool", "host_memory"), source, "placement_config.")
    if "memory_pool" in pc and "host_memory" in pc:
        raise ConfigError(source, "placement_config.host_memory",
                          "host_memory is another name for memory_pool; give only one of them")
    pool_key = "memory_pool" if "memory_pool" in pc else "host_memory"
    pc_defaults = PlacementConfig()
    target_nodes = pc.get("target_nodes", pc_defaults.target_nodes)
    local_disk = pc.get("local_disk", pc_defaults.local_disk)
    placement = PlacementConfig(
        target_nodes=None if target_nodes is None else _node_list(target_nodes, source, "placement_config.target_nodes"),
        local_disk=None if local_disk is None else _node_list(local_disk, source, "placement_config.local_disk"),
        host_memory=_node_list(pc.get(pool_key, list(pc_defaults.host_memory)), source, f"placement_config.{pool_key}"),
    )
    if placement.target_nodes is not None and not placement.target_nodes:
        raise ConfigError(source, "placement_config.target_nodes", "expected at least one node id (or omit the key)")

    bc = _mapping(raw, "backend_config", source)
    path = bc.get("pretrained_model_name_or_path", model)
    if not isinstance(path, str) or not path:
        raise ConfigError(source, "backend_config.pretrained_model_name_or_path", f"expected a string, got {path!r}")
    dtype = bc.get("torch_dtype", _default(BackendConfig, "torch_dtype"))
    if dtype not in DTYPE_BYTES:
        raise ConfigError(source, "backend_config.torch_dtype", f"expected one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    backend_config = BackendConfig(
        pretrained_model_name_or_path=path,
        torch_dtype=dtype,
        device_map=str(bc.get("device_map", _default(BackendConfig, "device_map"))),
        max_batch_size=_int(bc, "max_batch_size", _default(BackendConfig, "max_batch_size"), source,
                            "backend_config.max_batch_size", 1),
        extra=tuple(sorted((k, v) for k, v in bc.items() if k not in _BACKEND_KNOWN)),
    )

    size = raw.get("checkpoint_size")
    try:
        size_bytes = None if size is None else parse_size_bytes(size)
    except UnitError as exc:
        raise ConfigError(source, "checkpoint_size", str(exc)) from None

    num_layers = raw.get("num_layers")
    if num_layers is not None and (isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1):
        raise ConfigError(source, "num_layers", f"expected a positive integer (the model's transformer layers), "
                                                f"got {num_layers!r}")

    return DeployConfig(
        model=model,
        backend=backend,
        num_gpus=_int(raw, "num_gpus", _default(DeployConfig, "num_gpus"), source, "num_gpus", 1),
        auto_scaling_config=autoscaling,
        placement_config=placement,
        backend_config=backend_config,
        checkpoint_size_bytes=size_bytes,
        num_layers=num_layers,
        source=source,
    )


def load_deploy_config(path: str | Path) -> DeployConfig:
    """Read and validate a deploy config JSON file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read deploy config: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    return parse_deploy_config(raw, str(path))


def deploy_config_to_dict(cfg: DeployConfig) -> dict:
    """The JSON form of a deploy config (as a user would write it), for resolved-config dumps."""
    out: dict[str, Any] = {
        "model": cfg.model,
        "backend": cfg.backend,
        "num_gpus": cfg.num_gpus,
        "auto_scaling_config": {
            "metric": cfg.auto_scaling_config.metric,
            "target": cfg.auto_scaling_config.target,
            "min_instances": cfg.auto_scaling_config.min_instances,
            "max_instances": cfg.auto_scaling_config.max_instances,
            "keep_alive": cfg.auto_scaling_config.keep_alive,
        },
        "placement_config": {"memory_pool": list(cfg.placement_config.host_memory)},
        "backend_config": {
            "pretrained_model_name_or_path": cfg.backend_config.pretrained_model_name_or_path,
            "torch_dtype": cfg.backend_config.torch_dtype,
            "device_map": cfg.backend_config.device_map,
            "max_batch_size": cfg.backend_config.max_batch_size,
            **dict(cfg.backend_config.extra),
        },
    }
    if cfg.placement_config.target_nodes is not None:
        out["placement_config"]["target_nodes"] = list(cfg.placement_config.target_nodes)
    if cfg.placement_config.local_disk is not None:  # absent: registration picks a node round-robin
        out["placement_config"]["local_disk"] = list(cfg.placement_config.local_disk)
    if cfg.checkpoint_size_bytes is not None:
        out["checkpoint_size"] = cfg.checkpoint_size_bytes
    if cfg.num_layers is not None:
        out["num_layers"] = cfg.num_layers
    return out
