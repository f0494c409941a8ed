"""Building the scheduler's views from the configuration and a runtime's state, for both runtimes.

The simulator and live mode keep their state differently, but hand the core the same things: a
node's static figures come from its :class:`~sllmsim.config.hardware.NodeSpec` here, once, and only
the runtime's own state (free GPUs, checkpoints per tier, loading backlog, instances that may make
room) is theirs to supply.
"""

from __future__ import annotations

from dataclasses import fields

from sllmsim.config.hardware import NodeSpec
from sllmsim.core.snapshot import IdleInstanceView, NodeView, RunningInstanceView

#: NodeView's fields in order, each with its slot's setter (see :func:`build_node_view`).
_NODE_VIEW_FIELDS = tuple(f.name for f in fields(NodeView))
(_set_node_id, _set_total_gpus, _set_free_gpus, _set_host_models, _set_disk_models, _set_io_backlog_s,
 _set_disk_bandwidth, _set_network_bandwidth, _set_host_to_gpu, _set_load_overhead_s, _set_load_overhead_per_layer_s,
 _set_running, _set_idle) = (NodeView.__dict__[name].__set__ for name in _NODE_VIEW_FIELDS)
_new = object.__new__


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


def build_node_view(node_id: str, total_gpus: int, free_gpus: int, host_models: frozenset[str],
                    disk_models: frozenset[str], io_backlog_s: float, disk_bandwidth_bytes_per_s: float,
                    network_bandwidth_bytes_per_s: float, host_to_gpu_bytes_per_s: float,
                    load_overhead_s: float, load_overhead_per_layer_s: float) -> NodeView:
    """``NodeView(...)`` with these arguments and no running or idle instances: an equal object,
    built about twice as fast. A frozen dataclass's ``__init__`` sets each of the 13 fields through
    ``object.__setattr__``; here each slot is written by its own descriptor, bound once at import.
    The simulator rebuilds the view of every loading node at every placement (its backlog changes
    with time), which on many models is ~17 views per cold start. NodeView has no ``__post_init__``
    to skip; ``tests/core/test_views.py`` checks equality with the constructor and the field list."""
    view = _new(NodeView)
    _set_node_id(view, node_id)
    _set_total_gpus(view, total_gpus)
    _set_free_gpus(view, free_gpus)
    _set_host_models(view, host_models)
    _set_disk_models(view, disk_models)
    _set_io_backlog_s(view, io_backlog_s)
    _set_disk_bandwidth(view, disk_bandwidth_bytes_per_s)
    _set_network_bandwidth(view, network_bandwidth_bytes_per_s)
    _set_host_to_gpu(view, host_to_gpu_bytes_per_s)
    _set_load_overhead_s(view, load_overhead_s)
    _set_load_overhead_per_layer_s(view, load_overhead_per_layer_s)
    _set_running(view, ())
    _set_idle(view, ())
    return view
