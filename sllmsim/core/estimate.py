"""Startup-time estimate of a model on a node: the quantity storage-aware placement minimises.

As in ServerlessLLM's storage-aware scheduler: the node's loading-queue backlog plus the checkpoint
size over the bandwidth of the tier it is read from. A checkpoint streams through the tiers in chunks,
so a load through several links is limited by the slowest of them: host memory → GPU for a cached
checkpoint; disk (then host → GPU) for one on local disk; network (then disk, then host → GPU) for a
node with no local copy, which the reference skips and we estimate instead.
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


def startup_estimate_s(node: NodeView, model: ModelView) -> tuple[float, Tier]:
    """Estimated seconds until ``model`` is loaded on ``node``, and the tier it would load from."""
    tier = source_tier(node, model.name)
    if tier is Tier.HOST:
        bottleneck = node.host_to_gpu_bytes_per_s
    elif tier is Tier.DISK:
        bottleneck = min(node.disk_bandwidth_bytes_per_s, node.host_to_gpu_bytes_per_s)
    else:
        bottleneck = min(node.network_bandwidth_bytes_per_s, node.disk_bandwidth_bytes_per_s,
                         node.host_to_gpu_bytes_per_s)
    return node.io_backlog_s + node.load_overhead_s + model.size_bytes / bottleneck, tier
