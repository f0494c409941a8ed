"""Startup-time estimate of a model on a node: the quantity storage-aware placement minimises.

As in ServerlessLLM's storage-aware scheduler: the node's loading-queue backlog plus the checkpoint
size over the bandwidth of the tier it is read from. A checkpoint streams through the tiers in chunks,
so a load through several links is limited by the slowest of them: host memory → GPU for a cached
checkpoint; disk (then host → GPU) for one on local disk; network (then disk, then host → GPU) for a
node with no local copy, which the reference skips and we estimate instead.

A node's calibrated fixed cost per load (``load_overhead_s``, plus ``load_overhead_per_layer_s`` per
layer of the model) is added, so the estimate prices a load as the simulator's engine does.
"""

from __future__ import annotations

from sllmsim.core.snapshot import ModelView, NodeView, Tier


def source_tier(node: NodeView, model_name: str) -> Tier:
    """The fastest tier of ``node`` holding the checkpoint of ``model_name``."""
    if model_name in node.host_models:
        return Tier.HOST
    if model_name in node.disk_models:
        return Tier.DISK
    return Tier.NETWORK


_HOST, _DISK, _NETWORK = Tier.HOST, Tier.DISK, Tier.NETWORK  # plain names: this runs once per node per decision


def startup_estimate_s(node: NodeView, model: ModelView) -> tuple[float, Tier]:
    """Estimated seconds until ``model`` is loaded on ``node``, and the tier it would load from."""
    name = model.name
    # The load's fixed cost is summed first, as the engine sums it, so both give the same seconds.
    queued_s = node.io_backlog_s + (node.load_overhead_s + model.num_layers * node.load_overhead_per_layer_s)
    bottleneck = node.host_to_gpu_bytes_per_s
    if name in node.host_models:
        return queued_s + model.size_bytes / bottleneck, _HOST
    disk = node.disk_bandwidth_bytes_per_s
    if disk < bottleneck:
        bottleneck = disk
    if name in node.disk_models:
        return queued_s + model.size_bytes / bottleneck, _DISK
    network = node.network_bandwidth_bytes_per_s
    if network < bottleneck:
        bottleneck = network
    return queued_s + model.size_bytes / bottleneck, _NETWORK
