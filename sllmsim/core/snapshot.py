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


#: Reference defaults of the resume-time model ``alpha × tokens + beta`` (ServerlessLLM's
#: storage-aware scheduler uses 0.01 s per token and 0.1 s unless a model's scheduler config says otherwise).
DEFAULT_RESUME_ALPHA_S_PER_TOKEN = 0.01
DEFAULT_RESUME_BETA_S = 0.1


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the scheduler knows about a model: the one to place, or one a running instance serves."""

    name: str
    size_bytes: int
    num_gpus: int = 1
    target_nodes: tuple[str, ...] | None = None
    resume_alpha_s_per_token: float = DEFAULT_RESUME_ALPHA_S_PER_TOKEN
    """Seconds per token to re-compute the KV cache when a running inference of this model resumes elsewhere."""
    resume_beta_s: float = DEFAULT_RESUME_BETA_S
    """Fixed seconds of a resume (hand-over, first re-computation step)."""
    num_layers: int = 0
    """Transformer layers, which scale a node's per-layer load cost (0: unknown, no per-layer cost)."""


@dataclass(frozen=True, slots=True)
class RunningInstanceView:
    """A loaded instance serving at least one request: a candidate to migrate or preempt.

    ``tokens_so_far`` is what a destination would have to re-compute to resume it: the prompt tokens
    plus the tokens generated so far, summed over the instance's running requests.
    """

    instance_id: str
    model: ModelView
    tokens_so_far: int

    @property
    def num_gpus(self) -> int:
        return self.model.num_gpus


@dataclass(frozen=True, slots=True)
class IdleInstanceView:
    """A loaded instance serving nothing while it waits out its keep-alive: GPUs the scheduler may
    reclaim for another model when nothing else fits (``reclaim_idle``)."""

    instance_id: str
    model: str
    num_gpus: int
    idle_since_s: float


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
    """Fixed seconds of every load on this node (model construction, warm-up)."""
    load_overhead_per_layer_s: float = 0.0
    """Further fixed seconds of a load per layer of the model loaded (:attr:`ModelView.num_layers`)."""
    running: tuple[RunningInstanceView, ...] = ()
    """Instances on this node that may be migrated or preempted (empty: none may)."""
    idle: tuple[IdleInstanceView, ...] = ()
    """Idle instances on this node whose keep-alive may be cut short (empty: none may)."""


@dataclass(frozen=True)
class ClusterView:
    """All nodes, in the hardware JSON's order."""

    nodes: tuple[NodeView, ...]


def node_sort_key(node_id: str) -> tuple[int, int | str]:
    """Order node ids numerically where they are numbers ('2' before '10'), else by text."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
