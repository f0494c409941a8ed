"""Registration: where deploying a model puts its checkpoint, as ServerlessLLM's store manager does.

ServerlessLLM 0.8.0 (``sllm/serve/store_manager.py``, ``StoreManager.register``) downloads a newly
deployed model's checkpoint onto the local disk of every node in ``placement_config.local_disk``;
without that key, onto one node chosen round-robin over the worker nodes, in registration (deploy)
order, the counter advancing only for such models. It then loads the checkpoint into the host
memory pool of the nodes in ``placement_config.memory_pool``.

One difference, documented in the README: the reference preloads host memory only on memory-pool
nodes that also got the disk copy (it reads the pool's copy from that disk); here a memory-pool
node always gets both, since a host-memory copy is read from the node's own disk.

Both runtimes use :class:`Registrar`: the simulator for the state at time 0 (models in the trace's
order), live mode on every deploy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sllmsim.config.deploy import DeployConfig, PlacementConfig
from sllmsim.config.hardware import ClusterSpec
from sllmsim.errors import ConfigError


class Registration(NamedTuple):
    """Where one model's checkpoint is put when it is deployed."""

    disk_nodes: tuple[str, ...]
    """Nodes whose local disk gets the checkpoint (every host-memory node among them)."""
    host_nodes: tuple[str, ...]
    """Nodes whose host memory gets the checkpoint."""


class Registrar:
    """Places registered checkpoints; holds the round-robin position across deploys."""

    def __init__(self, node_ids: Sequence[str]):
        if not node_ids:
            raise ValueError("registration needs at least one node")
        self.node_ids = tuple(node_ids)
        self._next = 0

    def register(self, placement: PlacementConfig) -> Registration:
        """Where a model deployed with ``placement`` gets its checkpoint (advances the round robin
        when ``local_disk`` is absent)."""
        if placement.local_disk is None:
            disk = (self.node_ids[self._next % len(self.node_ids)],)
            self._next += 1
        else:
            disk = placement.local_disk
        host = tuple(dict.fromkeys(placement.host_memory))
        return Registration(tuple(dict.fromkeys(disk + host)), host)


def register_all(placements: Iterable[tuple[str, PlacementConfig]],
                 node_ids: Sequence[str]) -> dict[str, Registration]:
    """``{model: Registration}`` for models deployed in the given order onto a fresh cluster."""
    registrar = Registrar(node_ids)
    return {model: registrar.register(pc) for model, pc in placements}


def check_fits_cluster(cfg: DeployConfig, cluster: ClusterSpec) -> None:
    """Raise a :class:`ConfigError` naming the deploy config's field when its placement names a node
    the hardware config lacks. Both runtimes check a deploy config with this before registering it."""
    pc = cfg.placement_config
    for key, nodes in (("target_nodes", pc.target_nodes or ()), ("local_disk", pc.local_disk or ()),
                       ("memory_pool", pc.host_memory)):
        for node in nodes:
            if node not in cluster.node_ids:
                raise ConfigError(cfg.source, f"placement_config.{key}",
                                  f"node {node!r} is not in the hardware config {cluster.source} "
                                  f"(nodes: {', '.join(cluster.node_ids)})")
