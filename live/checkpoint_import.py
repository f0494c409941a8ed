"""A deployment's checkpoint on its way in: imported into the store, then registered on the nodes'
disks and host memory, before the deploy answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sllmsim.config.deploy import DeployConfig
from sllmsim.config.hardware import ClusterSpec
from sllmsim.core.registration import Registrar, Registration
from sllmsim.errors import ConfigError

from live.store import StoreError
from live.worker import NodeWorker, WorkerError

logger = logging.getLogger("sllmsim.live")


class _ImportProgress:
    """Logs a long import's progress every 10% (called from the import thread)."""

    #: Imports smaller than this finish too fast to be worth a progress line.
    MIN_BYTES = 256 * 1024**2

    def __init__(self, model: str):
        self.model = model
        self.next_tenth = 1

    def __call__(self, done_bytes: int, total_bytes: int) -> None:
        if total_bytes < self.MIN_BYTES:
            return
        while done_bytes * 10 >= self.next_tenth * total_bytes and self.next_tenth <= 10:
            logger.info("importing %s: %d%% of %.2f GiB", self.model, self.next_tenth * 10, total_bytes / 1024**3)
            self.next_tenth += 1


class CheckpointImporter:
    """Brings deployments' checkpoints into the store and onto the nodes, in deploy order."""

    def __init__(self, cluster: ClusterSpec, workers: Mapping[str, NodeWorker], registry):
        self.cluster = cluster
        self.workers = workers
        self.registry = registry
        self._registrar = Registrar(cluster.node_ids)

    async def prepare(self, cfg: DeployConfig, store_key: str | None) -> tuple[str, int]:
        """The store key of the deployment's checkpoint and its size in bytes.

        A local folder is imported into the store under the deployment's name; a name already in the
        store is used as it is. Then registration (:class:`~sllmsim.core.registration.Registrar`, as
        the reference's store manager) puts it on the disks of ``placement_config.local_disk`` (else
        of one node chosen round-robin in deploy order), each copy throttled to that node's network
        bandwidth as a network-tier load is, and into the host memory of the ``memory_pool`` nodes,
        before the deploy answers. A restored deployment reuses its stored copies (the round robin
        still advances, so deploys after a restart continue its order).
        """
        field_name = "backend_config.pretrained_model_name_or_path"
        registration = self._registrar.register(cfg.placement_config)
        if store_key is not None and self.registry.is_imported(store_key):
            try:
                await asyncio.gather(*(worker.prepare(store_key) for worker in self.workers.values()))
            except WorkerError as exc:
                raise ConfigError(cfg.source, field_name, str(exc)) from None
            return store_key, int(self.registry.model_bytes(store_key))
        try:
            source = self.registry.resolve(cfg.backend_config.pretrained_model_name_or_path)
            key = source.store_name or cfg.model
            nbytes = await asyncio.to_thread(self.registry.import_model, key, source, (), _ImportProgress(key))
            await asyncio.gather(*(worker.prepare(key) for worker in self.workers.values()))
            await self._register_copies(key, registration)
        except (StoreError, WorkerError) as exc:
            raise ConfigError(cfg.source, field_name, str(exc)) from None
        return key, int(nbytes)

    async def _register_copies(self, key: str, registration: Registration) -> None:
        """Put ``key`` where registration says: disks first (one copy per node, in parallel, each
        throttled like a download), then host memory."""
        specs = {n.node_id: n for n in self.cluster.nodes}

        def to_disk(node_id: str) -> int:
            return self.registry.node(node_id).place_on_disk(key, specs[node_id].network_bandwidth_bytes_per_s)

        await asyncio.gather(*(asyncio.to_thread(to_disk, n) for n in registration.disk_nodes))
        for node_id in registration.host_nodes:
            await asyncio.to_thread(self.registry.node(node_id).place_in_host, key)
        if registration.disk_nodes:
            logger.info("registered %s on the disk of node(s) %s%s", key, ", ".join(registration.disk_nodes),
                        f" and in the host memory of node(s) {', '.join(registration.host_nodes)}"
                        if registration.host_nodes else "")
