"""What the live controller shows: ``GET /status`` (nodes and deployments as plain data) and the
Prometheus gauges' state, read from the controller's entities without changing them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sllmsim.config.deploy import deploy_config_to_dict
from sllmsim.config.hardware import ClusterSpec
from sllmsim.records import Phase

from live.metrics_prom import GaugeState
from live.state import Deployment
from live.worker import NodeWorker

#: Phases the ``sllmsim_instances`` gauge counts (an instance being released is no longer counted).
GAUGED_PHASES = (Phase.LOADING, Phase.READY, Phase.IDLE, Phase.MIGRATING, Phase.RESUMING)


def unavailable_reason(dep: Deployment, workers: Mapping[str, NodeWorker], registry) -> str:
    """What keeps ``dep`` from serving, as the operator should read it ("" when nothing does)."""
    stored = registry.is_imported(dep.store_key) or any(
        dep.store_key in w.storage_state().disk_models for w in workers.values())
    if not stored:
        return ("no complete copy of its checkpoint is in the store (deleted behind the server's back?); "
                "delete the deployment and deploy it again from its folder")
    return dep.last_load_error


def model_status(dep: Deployment, now_s: float, workers: Mapping[str, NodeWorker], registry) -> dict:
    """One deployment with its instances (node, phase, load phase, requests) as plain data."""
    return {
        "model": dep.name,
        "state": "deleting" if dep.draining else "deployed",
        "pretrained_model_name_or_path": dep.config.backend_config.pretrained_model_name_or_path,
        "store_key": dep.store_key,
        "size_bytes": dep.size_bytes,
        "in_flight": dep.in_flight,
        "queued": dep.queued,
        "unavailable": unavailable_reason(dep, workers, registry),
        "config": deploy_config_to_dict(dep.config),
        "instances": [
            {"instance_id": i.instance_id, "node": i.node_id, "device": workers[i.node_id].device,
             "phase": i.phase.value, "load_phase": i.load_detail if i.phase == Phase.LOADING else "",
             "active_requests": i.active, "tier": i.tier, "estimate_s": i.estimate_s,
             "phase_for_s": now_s - i.phase_since_s}
            for i in dep.instances.values()
        ],
    }


def node_status(cluster: ClusterSpec, workers: Mapping[str, NodeWorker], slots_used: Mapping[str, int]) -> list[dict]:
    """Each node's device, GPU slots in use and storage tiers as plain data."""
    nodes = []
    for spec in cluster.nodes:
        worker = workers[spec.node_id]
        state = worker.storage_state()
        nodes.append({"node": spec.node_id, "device": worker.device, "gpus": spec.num_gpus,
                      "gpus_used": slots_used[spec.node_id], "disk_models": sorted(state.disk_models),
                      "host_models": sorted(state.host_models), "io_backlog_s": state.io_backlog_s})
    return nodes


def gauge_state(deployments: Iterable[Deployment], cluster: ClusterSpec, slots_used: Mapping[str, int]) -> GaugeState:
    """Instances per deployment and phase, queues and GPU slots, for the gauges at scrape time."""
    deployments = list(deployments)
    instances: dict[tuple[str, str], int] = {}
    for dep in deployments:
        for phase in GAUGED_PHASES:
            instances[(dep.name, phase.value)] = 0
        for inst in dep.alive_instances():
            instances[(dep.name, inst.phase.value)] += 1
    return GaugeState(
        instances=instances,
        in_flight={d.name: d.in_flight for d in deployments},
        queued={d.name: d.queued for d in deployments},
        slots_used=dict(slots_used),
        slots_total={n.node_id: n.num_gpus for n in cluster.nodes},
    )
