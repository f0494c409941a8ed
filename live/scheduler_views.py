"""What the scheduler core sees of live mode's state: a deployment's scaling context and model view,
and the cluster snapshot (slots, storage tiers, and the instances a placement may move or reclaim).

Read-only translations of :mod:`live.state` into the core's types (:mod:`sllmsim.core.snapshot`,
:class:`~sllmsim.core.autoscale.ScalingContext`), so that the controller asks the very functions
the simulator asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from sllmsim.config.hardware import ClusterSpec
from sllmsim.core.autoscale import AutoscalePolicy, IdleInstance, ScalingContext, surplus_idle
from sllmsim.core.migration import movable_from_s
from sllmsim.core.snapshot import ClusterView, IdleInstanceView, ModelView, RunningInstanceView
from sllmsim.core.views import node_view
from sllmsim.records import Phase

from live.state import Deployment, Instance
from live.worker import NodeWorker


def scaling_context(dep: Deployment, now_s: float) -> ScalingContext:
    """What the core's autoscaler decides ``dep``'s instances from; a deployment being deleted
    keeps no instance (no ``min_instances``, no keep-alive)."""
    cfg = dep.config.auto_scaling_config
    if dep.draining:
        cfg = replace(cfg, min_instances=0, keep_alive=0.0)
    alive = dep.alive_instances()
    return ScalingContext(
        model=dep.name, now_s=now_s, in_flight=dep.in_flight, instances=len(alive),
        idle=tuple(IdleInstance(i.instance_id, i.phase_since_s) for i in alive
                   if i.phase == Phase.IDLE and not i.moves_in),
        config=cfg,
    )


def model_view(dep: Deployment) -> ModelView:
    """``dep`` as placement sees it."""
    cfg = dep.config
    return ModelView(name=dep.name, size_bytes=dep.size_bytes, num_gpus=cfg.num_gpus,
                     target_nodes=cfg.placement_config.target_nodes, num_layers=dep.num_layers)


def movable(inst: Instance, now_s: float) -> bool:
    """Whether a migration may move ``inst``: it serves requests that are all decoding, no move
    of it is under way or has failed, and it has passed the core's thrash guard (as in the
    simulator: it has served for as long as it took to start)."""
    if (inst.phase != Phase.READY or inst.migration_failed or inst.moves_in or inst.active == 0
            or len(inst.running) != inst.active or inst.ready_s is None
            or now_s < movable_from_s(inst.placed_s, inst.ready_s)):
        return False
    return all(r.accepted and not r.closed for r in inst.running.values())


def idle_views(deployments: Iterable[Deployment], cluster: ClusterSpec, autoscale: AutoscalePolicy,
               now_s: float) -> dict[str, list[IdleInstanceView]]:
    """Per node, the idle instances whose keep-alive may be cut short: those the core's autoscaler
    would release now if their keep-alive were over. An instance that ``min_instances`` (or the
    requests in flight) keeps is not offered: releasing it would only start another copy."""
    out: dict[str, list[IdleInstanceView]] = {n.node_id: [] for n in cluster.nodes}
    for dep in deployments:
        ctx = scaling_context(dep, now_s)
        if not ctx.idle:
            continue
        for instance_id in surplus_idle(autoscale, ctx):
            inst = dep.instances[instance_id]
            out[inst.node_id].append(IdleInstanceView(instance_id, dep.name, inst.num_gpus, inst.phase_since_s))
    return out


def running_views(deployments: Iterable[Deployment], cluster: ClusterSpec,
                  is_movable: Callable[[Instance], bool]) -> dict[str, list[RunningInstanceView]]:
    """Per node, the instances a migration may move, with their tokens so far."""
    out: dict[str, list[RunningInstanceView]] = {n.node_id: [] for n in cluster.nodes}
    for dep in deployments:
        model = None
        for inst in dep.instances.values():
            if is_movable(inst):
                model = model or model_view(dep)
                tokens = sum(r.tokens_so_far for r in inst.running.values())
                out[inst.node_id].append(RunningInstanceView(inst.instance_id, model, tokens))
    return out


def cluster_view(cluster: ClusterSpec, workers: Mapping[str, NodeWorker], deployments: Iterable[Deployment],
                 slots_used: Mapping[str, int], running: Mapping[str, list[RunningInstanceView]],
                 idle: Mapping[str, list[IdleInstanceView]]) -> ClusterView:
    """The scheduler's snapshot: free slots, which deployments' checkpoints each node holds in host
    memory and on disk, its I/O backlog, and the ``running`` and ``idle`` instances it offers."""
    deployments = list(deployments)
    nodes = []
    for spec in cluster.nodes:
        state = workers[spec.node_id].storage_state()
        host = frozenset(d.name for d in deployments if d.store_key in state.host_models)
        disk = frozenset(d.name for d in deployments if d.store_key in state.disk_models)
        nodes.append(node_view(spec, spec.num_gpus - slots_used[spec.node_id], host, disk,
                               state.io_backlog_s, tuple(running.get(spec.node_id, ())),
                               tuple(idle.get(spec.node_id, ()))))
    return ClusterView(tuple(nodes))
