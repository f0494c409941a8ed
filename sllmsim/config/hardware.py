"""The hardware JSON of the storage-aware scheduling spec, validated into frozen dataclasses.

The spec's keys (``host_size``, ``host_bandwidth``, ``disk_size``, ``disk_bandwidth``,
``network_bandwidth``) are required for every node; ``num_gpus``, ``gpu`` and ``pcie_bandwidth`` are
optional extensions with the defaults documented on :class:`NodeSpec`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllmsim.errors import ConfigError, check_keys
from sllmsim.units import UnitError, parse_bandwidth_bytes_per_s, parse_size_bytes


@dataclass(frozen=True)
class GpuType:
    """One GPU model: memory size, memory bandwidth and dense fp16 tensor throughput."""

    name: str
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    fp16_flops_per_s: float


_GiB = 1024**3

#: Built-in GPU table. Numbers are the vendor datasheet figures (NVIDIA A100, A40, RTX A5000, L4 and
#: H100 SXM datasheets): HBM/GDDR bandwidth in decimal bytes/s and dense (non-sparse) fp16 tensor FLOP/s.
GPU_TYPES: dict[str, GpuType] = {
    g.name: g
    for g in (
        GpuType("A100-40GB", 40 * _GiB, 1555e9, 312e12),
        GpuType("A100-80GB", 80 * _GiB, 2039e9, 312e12),
        GpuType("A40", 48 * _GiB, 696e9, 149.7e12),
        GpuType("A5000", 24 * _GiB, 768e9, 111.1e12),
        GpuType("L4", 24 * _GiB, 300e9, 121e12),
        GpuType("H100-80GB", 80 * _GiB, 3350e9, 989e12),
        # The live mode's CPU "device"; figures are placeholders that `sllmsim calibrate` replaces.
        GpuType("CPU", 16 * _GiB, 20e9, 0.5e12),
    )
}

#: GPU type used when a node does not name one.
DEFAULT_GPU = "A100-80GB"
#: GPUs per node when a node does not say (the spec's example has one GPU per worker).
DEFAULT_NUM_GPUS = 1

_REQUIRED = ("host_size", "host_bandwidth", "disk_size", "disk_bandwidth", "network_bandwidth")
_OPTIONAL = ("num_gpus", "gpu", "pcie_bandwidth", "load_overhead_s", "gpu_memory_bandwidth", "gpu_flops",
             "forward_overhead_s", "request_overhead_s", "forward_overhead_per_layer_s", "load_overhead_per_layer_s",
             "decode_overhead_per_sequence_s", "decode_overhead_per_sequence_per_layer_s",
             "fresh_memory_bandwidth", "warm_memory_size", "disk_aggregate_bandwidth")


@dataclass(frozen=True)
class NodeSpec:
    """One server of the cluster.

    ``host_bandwidth`` is, as in the reference implementation, the bandwidth at which a checkpoint
    cached in host memory is loaded to the GPU; ``pcie_bandwidth`` overrides it for that link.
    """

    node_id: str
    host_size_bytes: int
    host_bandwidth_bytes_per_s: float
    disk_size_bytes: int
    disk_bandwidth_bytes_per_s: float
    network_bandwidth_bytes_per_s: float
    num_gpus: int = DEFAULT_NUM_GPUS
    gpu: GpuType = GPU_TYPES[DEFAULT_GPU]
    pcie_bandwidth_bytes_per_s: float | None = None
    load_overhead_s: float = 0.0
    """Fixed time per load to the device (model construction, warm-up); measured by `sllmsim calibrate`."""
    forward_overhead_s: float = 0.0
    """Fixed time of every forward pass (prefill or one decode step) on top of the roofline: kernel
    launches and framework work that do not scale with the model (`sllmsim calibrate` fits it)."""
    request_overhead_s: float = 0.0
    """Fixed serving time per request before its prefill (tokenising, request handling)."""
    forward_overhead_per_layer_s: float = 0.0
    """Fixed time of every forward pass per layer of the model, on top of ``forward_overhead_s``:
    framework and kernel-launch work repeated in every transformer block. Needs each deployed model's
    depth (catalog or the deploy config's ``num_layers``)."""
    load_overhead_per_layer_s: float = 0.0
    """Fixed time per load per layer of the model, on top of ``load_overhead_s`` (constructing each
    block's modules)."""
    decode_overhead_per_sequence_s: float = 0.0
    """Time a decode step adds for each sequence of its batch beyond the first, on top of the
    roofline's own batch term: per-request work of a batched step (its own attention over its own
    KV cache, sampling, handing its token over) that does not shrink with batching. `sllmsim
    calibrate` fits it to decode steps measured at several batch sizes."""
    decode_overhead_per_sequence_per_layer_s: float = 0.0
    """The same per extra sequence and per layer of the model (the per-request attention runs in every
    transformer block)."""
    fresh_memory_bytes_per_s: float | None = None
    """Rate at which the machine hands a load device memory it has not used lately, on top of the copy
    itself: the page-fault cost of a CPU "device" on a VM that backs guest memory lazily (measured by
    ``experiments/validation-cpu/first_touch.py``; 0.19-0.24 GB/s of faults on the 2-core VM). None: free."""
    warm_memory_bytes: int = 0
    """How much of a load's device memory comes quick (memory the machine used lately); only the
    bytes beyond it pay ``fresh_memory_bytes_per_s``."""
    disk_aggregate_bandwidth_bytes_per_s: float | None = None
    """What the disk delivers in all to several reads at once, when one read alone gets only
    ``disk_bandwidth`` (an SSD or virtual disk that needs several requests in flight to reach its
    rate). Concurrent reads share it equally, each at most ``disk_bandwidth``. None: one read already
    takes the whole disk (the spec's model). ``sllmsim calibrate`` measures it with two readers."""

    def forward_fixed_s(self, num_layers: int) -> float:
        """Fixed seconds of one forward pass of a model with ``num_layers`` layers on this node."""
        return self.forward_overhead_s + num_layers * self.forward_overhead_per_layer_s

    def decode_sequence_s(self, num_layers: int) -> float:
        """Seconds a decode step of a model with ``num_layers`` layers adds per sequence beyond the first."""
        return self.decode_overhead_per_sequence_s + num_layers * self.decode_overhead_per_sequence_per_layer_s

    def load_fixed_s(self, num_layers: int) -> float:
        """Fixed seconds of one load of a model with ``num_layers`` layers on this node."""
        return self.load_overhead_s + num_layers * self.load_overhead_per_layer_s

    def fresh_memory_s(self, nbytes: int) -> float:
        """Seconds a load of ``nbytes`` to the device spends getting memory beyond the warm part."""
        if self.fresh_memory_bytes_per_s is None or nbytes <= self.warm_memory_bytes:
            return 0.0
        return (nbytes - self.warm_memory_bytes) / self.fresh_memory_bytes_per_s

    @property
    def has_per_layer_costs(self) -> bool:
        """Whether a model's depth changes its times on this node."""
        return bool(self.forward_overhead_per_layer_s or self.load_overhead_per_layer_s
                    or self.decode_overhead_per_sequence_per_layer_s)

    @property
    def host_to_gpu_bytes_per_s(self) -> float:
        """Bandwidth of the host-memory → GPU link."""
        return self.pcie_bandwidth_bytes_per_s or self.host_bandwidth_bytes_per_s


def node_to_dict(node: NodeSpec) -> dict:
    """A node's resolved settings in bytes and bytes/s (what the run folder's resolved config shows)."""
    out = {
        "host_size_bytes": node.host_size_bytes,
        "host_bandwidth_bytes_per_s": node.host_bandwidth_bytes_per_s,
        "disk_size_bytes": node.disk_size_bytes,
        "disk_bandwidth_bytes_per_s": node.disk_bandwidth_bytes_per_s,
        "network_bandwidth_bytes_per_s": node.network_bandwidth_bytes_per_s,
        "num_gpus": node.num_gpus,
        "gpu": node.gpu.name,
        "gpu_memory_bytes": node.gpu.memory_bytes,
        "gpu_memory_bandwidth_bytes_per_s": node.gpu.memory_bandwidth_bytes_per_s,
        "gpu_flops_per_s": node.gpu.fp16_flops_per_s,
        "host_to_gpu_bytes_per_s": node.host_to_gpu_bytes_per_s,
        "load_overhead_s": node.load_overhead_s,
        "forward_overhead_s": node.forward_overhead_s,
        "request_overhead_s": node.request_overhead_s,
        "forward_overhead_per_layer_s": node.forward_overhead_per_layer_s,
        "load_overhead_per_layer_s": node.load_overhead_per_layer_s,
        "decode_overhead_per_sequence_s": node.decode_overhead_per_sequence_s,
        "decode_overhead_per_sequence_per_layer_s": node.decode_overhead_per_sequence_per_layer_s,
    }
    if node.fresh_memory_bytes_per_s is not None:  # only when set: older run folders stay byte-identical
        out["fresh_memory_bytes_per_s"] = node.fresh_memory_bytes_per_s
        out["warm_memory_bytes"] = node.warm_memory_bytes
    if node.disk_aggregate_bandwidth_bytes_per_s is not None:
        out["disk_aggregate_bandwidth_bytes_per_s"] = node.disk_aggregate_bandwidth_bytes_per_s
    return out


@dataclass(frozen=True)
class ClusterSpec:
    """All nodes of a hardware JSON, in the file's order."""

    nodes: tuple[NodeSpec, ...]
    source: str = "<inline>"

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes)


def _field(source: str, field: str, parse, value):
    try:
        return parse(value)
    except UnitError as exc:
        raise ConfigError(source, field, str(exc)) from None


def parse_node(node_id: str, raw: Any, source: str) -> NodeSpec:
    """Validate one node's mapping from the hardware JSON."""
    if not isinstance(raw, dict):
        raise ConfigError(source, node_id, f"expected a mapping of node settings, got {type(raw).__name__}")
    check_keys(raw, _REQUIRED + _OPTIONAL, source, prefix=f"{node_id}.")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(source, f"{node_id}.{key}", "missing required key")
    num_gpus = raw.get("num_gpus", DEFAULT_NUM_GPUS)
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 0:
        raise ConfigError(source, f"{node_id}.num_gpus", f"expected a non-negative integer, got {num_gpus!r}")
    gpu_name = raw.get("gpu", DEFAULT_GPU)
    if gpu_name not in GPU_TYPES:
        raise ConfigError(source, f"{node_id}.gpu", f"unknown GPU type {gpu_name!r}; known: {', '.join(GPU_TYPES)}")
    gpu = GPU_TYPES[gpu_name]
    if "gpu_memory_bandwidth" in raw or "gpu_flops" in raw:
        # Calibrated figures for this machine's device override the table's.
        gpu = GpuType(
            gpu.name,
            gpu.memory_bytes,
            _field(source, f"{node_id}.gpu_memory_bandwidth", parse_bandwidth_bytes_per_s,
                   raw.get("gpu_memory_bandwidth", gpu.memory_bandwidth_bytes_per_s)),
            _field(source, f"{node_id}.gpu_flops", _positive_float, raw.get("gpu_flops", gpu.fp16_flops_per_s)),
        )
    pcie = raw.get("pcie_bandwidth")
    overhead = _field(source, f"{node_id}.load_overhead_s", _non_negative_float, raw.get("load_overhead_s", 0.0))
    forward_overhead = _field(source, f"{node_id}.forward_overhead_s", _non_negative_float,
                              raw.get("forward_overhead_s", 0.0))
    request_overhead = _field(source, f"{node_id}.request_overhead_s", _non_negative_float,
                              raw.get("request_overhead_s", 0.0))
    forward_per_layer = _field(source, f"{node_id}.forward_overhead_per_layer_s", _non_negative_float,
                               raw.get("forward_overhead_per_layer_s", 0.0))
    load_per_layer = _field(source, f"{node_id}.load_overhead_per_layer_s", _non_negative_float,
                            raw.get("load_overhead_per_layer_s", 0.0))
    per_sequence = _field(source, f"{node_id}.decode_overhead_per_sequence_s", _non_negative_float,
                          raw.get("decode_overhead_per_sequence_s", 0.0))
    per_sequence_layer = _field(source, f"{node_id}.decode_overhead_per_sequence_per_layer_s", _non_negative_float,
                                raw.get("decode_overhead_per_sequence_per_layer_s", 0.0))
    fresh = raw.get("fresh_memory_bandwidth")
    if "warm_memory_size" in raw and fresh is None:
        raise ConfigError(source, f"{node_id}.warm_memory_size", "needs fresh_memory_bandwidth beside it")
    disk_bytes_per_s = _field(source, f"{node_id}.disk_bandwidth", parse_bandwidth_bytes_per_s, raw["disk_bandwidth"])
    aggregate = raw.get("disk_aggregate_bandwidth")
    if aggregate is not None:
        aggregate = _field(source, f"{node_id}.disk_aggregate_bandwidth", parse_bandwidth_bytes_per_s, aggregate)
        if aggregate < disk_bytes_per_s:
            raise ConfigError(source, f"{node_id}.disk_aggregate_bandwidth",
                              f"expected at least disk_bandwidth ({raw['disk_bandwidth']}): it is what several "
                              f"reads at once get in all, each read getting at most disk_bandwidth; "
                              f"got {raw['disk_aggregate_bandwidth']!r}")
    return NodeSpec(
        node_id=node_id,
        host_size_bytes=_field(source, f"{node_id}.host_size", parse_size_bytes, raw["host_size"]),
        host_bandwidth_bytes_per_s=_field(source, f"{node_id}.host_bandwidth", parse_bandwidth_bytes_per_s,
                                          raw["host_bandwidth"]),
        disk_size_bytes=_field(source, f"{node_id}.disk_size", parse_size_bytes, raw["disk_size"]),
        disk_bandwidth_bytes_per_s=disk_bytes_per_s,
        network_bandwidth_bytes_per_s=_field(source, f"{node_id}.network_bandwidth", parse_bandwidth_bytes_per_s,
                                             raw["network_bandwidth"]),
        num_gpus=num_gpus,
        gpu=gpu,
        pcie_bandwidth_bytes_per_s=None if pcie is None else _field(
            source, f"{node_id}.pcie_bandwidth", parse_bandwidth_bytes_per_s, pcie),
        load_overhead_s=overhead,
        forward_overhead_s=forward_overhead,
        request_overhead_s=request_overhead,
        forward_overhead_per_layer_s=forward_per_layer,
        load_overhead_per_layer_s=load_per_layer,
        decode_overhead_per_sequence_s=per_sequence,
        decode_overhead_per_sequence_per_layer_s=per_sequence_layer,
        fresh_memory_bytes_per_s=None if fresh is None else _field(
            source, f"{node_id}.fresh_memory_bandwidth", parse_bandwidth_bytes_per_s, fresh),
        warm_memory_bytes=_field(source, f"{node_id}.warm_memory_size", parse_size_bytes,
                                 raw.get("warm_memory_size", 0)),
        disk_aggregate_bandwidth_bytes_per_s=aggregate,
    )


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UnitError(f"expected a positive number, got {value!r}")
    return float(value)


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise UnitError(f"expected a non-negative number of seconds, got {value!r}")
    return float(value)


def parse_hardware(raw: Any, source: str = "<inline hardware>") -> ClusterSpec:
    """Validate a hardware mapping ``{node_id: {...}}`` as in the spec."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(source, "", "expected a non-empty JSON object mapping node ids to node settings")
    for node_id in raw:
        check_node_id(node_id, source)
    return ClusterSpec(tuple(parse_node(str(k), v, source) for k, v in raw.items()), source=source)


#: A node id names a folder of live mode's store and a label in every output: letters, digits, ``.``,
#: ``_`` and ``-``, starting with a letter or digit (so never empty, ``..``, a path or ``_import``).
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_node_id(node_id: object, source: str) -> None:
    """Refuse a node id that could not name a folder safely, naming the file."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id) or ".." in node_id:
        raise ConfigError(source, repr(node_id) if isinstance(node_id, str) else str(node_id),
                          "a node id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                          "digit (no '/', no '..')")


def load_hardware(path: str | Path) -> ClusterSpec:
    """Read and validate a hardware JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read hardware config: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    return parse_hardware(raw, str(path))
