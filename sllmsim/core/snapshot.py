"""Read-only views of the cluster that the runtimes hand to the policies.

Policies never see or mutate the runtime's own objects, only these frozen views; and they never see
a request's true output length (the oracle boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Tier(str, Enum):
    """Where a checkpoint came from when an instance started (fastest first)."""

    GPU = "gpu"
    """Warm: served by an instance that was already loaded."""
    HOST = "host"
    """Loaded from the node's host-memory cache."""
    DISK = "disk"
    """Loaded from the node's local disk."""
    NETWORK = "network"
    """Downloaded over the network first."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the scheduler knows about one node at decision time."""

    node_id: str
    total_gpus: int
    free_gpus: int
    host_models: frozenset[str]
    """Models whose checkpoint is in this node's host-memory cache."""
    disk_models: frozenset[str]
    """Models whose checkpoint is on this node's local disk."""
    io_backlog_s: float
    """Seconds until the loads already queued or running on this node finish (the reference's queue time)."""
    disk_bandwidth_bytes_per_s: float
    network_bandwidth_bytes_per_s: float
    host_to_gpu_bytes_per_s: float
    load_overhead_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the scheduler knows about the model to place."""

    name: str
    size_bytes: int
    num_gpus: int = 1
    target_nodes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ClusterView:
    """All nodes, in the hardware JSON's order."""

    nodes: tuple[NodeView, ...]


def node_sort_key(node_id: str) -> tuple[int, int | str]:
    """Order node ids numerically where they are numbers ('2' before '10'), else by text."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
