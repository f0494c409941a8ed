"""Building the scheduler's views from the configuration and a runtime's state, for both runtimes.

The simulator and live mode keep their state differently, but hand the core the same things: a
node's static figures come from its :class:`~sllmsim.config.hardware.NodeSpec` here, once, and only
the runtime's own state (free GPUs, checkpoints per tier, loading backlog, instances that may make
room) is theirs to supply.
"""

from __future__ import annotations

from sllmsim.config.hardware import NodeSpec
from sllmsim.core.snapshot import IdleInstanceView, NodeView, RunningInstanceView


def node_view(spec: NodeSpec, free_gpus: int, host_models: frozenset[str], disk_models: frozenset[str],
              io_backlog_s: float, running: tuple[RunningInstanceView, ...] = (),
              idle: tuple[IdleInstanceView, ...] = ()) -> NodeView:
    """The :class:`NodeView` of node ``spec`` in the given runtime state."""
    return NodeView(spec.node_id, spec.num_gpus, free_gpus, host_models, disk_models, io_backlog_s,
                    *static_figures(spec), running, idle)


def static_figures(spec: NodeSpec) -> tuple[float, float, float, float, float]:
    """The fields of node ``spec``'s :class:`NodeView` that only its configuration sets, in field
    order after ``io_backlog_s`` (disk, network and host-to-GPU bandwidths, fixed load costs): a
    runtime that rebuilds a node's view often can keep them and pass them positionally."""
    return (spec.disk_bandwidth_bytes_per_s, spec.network_bandwidth_bytes_per_s, spec.host_to_gpu_bytes_per_s,
            spec.load_overhead_s, spec.load_overhead_per_layer_s)
