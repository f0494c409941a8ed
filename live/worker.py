"""Node workers: one per node of the hardware JSON, bound to a local device.

The controller talks to a node only through :class:`NodeWorker` (a storage snapshot, load, generate,
release), with plain-data arguments and results and the loaded models kept inside the worker, so a
worker could become a Ray actor on another machine without the controller changing.
:class:`LocalNodeWorker` runs in the server's process: loads and forward passes run in threads so the
event loop stays responsive.

Serving model: an instance runs each of its requests in its own thread, up to the deployment's
``max_batch_size`` at once (the sim's per-instance limit); there is no batched decoding — concurrent
requests share the model's weights and the device, and each keeps its own KV cache.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sllmsim.config.hardware import ClusterSpec, NodeSpec
from sllmsim.errors import ConfigError, SllmsimError

from live.generation import GenerationOutput, GenerationRequest, generate


@dataclass(frozen=True, slots=True)
class StorageState:
    """What a node's storage holds now: the scheduler's view of its tiers and loading queue."""

    disk_models: frozenset[str]
    host_models: frozenset[str]
    io_backlog_s: float
    host_used_bytes: int = 0
    disk_used_bytes: int = 0


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """A finished load: the tier the checkpoint came from and its bytes."""

    tier: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class PromptAccepted:
    """First event of a generation: the prompt was tokenized and fits the model."""

    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    """One generated token's newly showable text (may be empty)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Last event of a generation."""

    output: GenerationOutput


GenerationEvent = PromptAccepted | TextDelta | Finished


class WorkerError(SllmsimError):
    """A checkpoint that a worker cannot serve (its config names no causal-LM architecture it knows)."""


def import_architecture(folder) -> None:
    """Import the transformers modeling code of the checkpoint in ``folder``.

    transformers imports each architecture's module lazily, on first use; in a fresh server that
    costs seconds, which would otherwise land in the first cold start's load time.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WorkerError(f"{folder}: cannot read config.json ({exc})") from None
    try:
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise WorkerError(f"{folder}: model type {config.model_type!r} is not a causal language model that "
                          "this transformers version can build") from None


class NodeWorker(ABC):
    """One node's device and storage tiers, as the controller sees them."""

    node: NodeSpec
    device: str

    @abstractmethod
    def storage_state(self) -> StorageState:
        """The node's tiers and I/O backlog now (store keys of the checkpoints it holds)."""

    @abstractmethod
    async def prepare(self, model_key: str) -> None:
        """Get ready to load ``model_key`` (import its architecture's code), so that the first cold
        start does not pay for it; raises :class:`WorkerError` when the checkpoint's config is unusable."""

    @abstractmethod
    async def load(self, instance_id: str, model_key: str, max_concurrency: int, dtype: str | None,
                   on_phase: Callable[[object], None]) -> LoadInfo:
        """Load ``model_key`` as instance ``instance_id`` (weights converted to ``dtype`` unless None)
        to serve up to ``max_concurrency`` requests at once; ``on_phase(timing)`` is called (from any
        thread) as each load phase ends. Raises on failure, having freed what the load took."""

    @abstractmethod
    def generate(self, instance_id: str, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Run one request on a loaded instance: yields :class:`PromptAccepted`, then a
        :class:`TextDelta` per token, then :class:`Finished`. Closing the iterator early cancels."""

    @abstractmethod
    async def release(self, instance_id: str) -> None:
        """Unload the instance and free its device memory."""

    async def close(self) -> None:
        """Release everything the worker holds."""


class LocalNodeWorker(NodeWorker):
    """A node served by this process, on ``device``, with its checkpoints in ``storage`` (a
    :class:`live.node_storage.NodeStorage`)."""

    def __init__(self, node: NodeSpec, storage, device: str):
        self.node = node
        self.device = device
        self._storage = storage
        # At most one load per GPU slot can be running; the storage layer orders their I/O.
        self._load_pool = ThreadPoolExecutor(max_workers=max(1, node.num_gpus),
                                             thread_name_prefix=f"node{node.node_id}-load")
        self._loaded: dict[str, object] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def storage_state(self) -> StorageState:
        s = self._storage
        return StorageState(disk_models=frozenset(s.disk_models()), host_models=frozenset(s.host_models()),
                            io_backlog_s=float(s.io_backlog_s()), host_used_bytes=int(s.host_cache.used_bytes),
                            disk_used_bytes=int(s.disk_used_bytes))

    async def prepare(self, model_key: str) -> None:
        await asyncio.to_thread(import_architecture, self._storage.registry.import_path(model_key))

    async def load(self, instance_id: str, model_key: str, max_concurrency: int, dtype: str | None,
                   on_phase: Callable[[object], None]) -> LoadInfo:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(
            self._load_pool, functools.partial(self._storage.load, model_key, on_phase=on_phase, dtype=dtype))
        self._loaded[instance_id] = loaded
        self._pools[instance_id] = ThreadPoolExecutor(max_workers=max_concurrency,
                                                      thread_name_prefix=f"{instance_id}-gen")
        tier = getattr(loaded.tier, "value", loaded.tier)
        return LoadInfo(tier=str(tier), nbytes=int(loaded.nbytes))

    async def generate(self, instance_id: str, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        loaded = self._loaded[instance_id]
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(item) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def work() -> None:
            try:
                out = generate(loaded.model, loaded.tokenizer, request, on_text=lambda d: put(TextDelta(d)),
                               cancel=cancel, on_prompt=lambda n: put(PromptAccepted(n)))
                put(Finished(out))
            except BaseException as exc:  # handed to the event loop, re-raised there
                put(exc)

        running = loop.run_in_executor(self._pools[instance_id], work)
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            cancel.set()
            if not running.done():
                # The thread stops at its next token; wait so the instance is never oversubscribed.
                await asyncio.shield(running)

    async def release(self, instance_id: str) -> None:
        loaded = self._loaded.pop(instance_id, None)
        pool = self._pools.pop(instance_id, None)
        if pool is not None:
            pool.shutdown(wait=False)
        if loaded is not None:
            await asyncio.to_thread(self._storage.release, loaded)

    async def close(self) -> None:
        for instance_id in list(self._loaded):
            await self.release(instance_id)
        self._load_pool.shutdown(wait=False)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_devices(cluster: ClusterSpec, cuda_count: int | None = None) -> dict[str, str]:
    """Node i → ``cuda:i`` when there are at least as many GPUs as nodes, else every node on ``cpu``."""
    count = _cuda_count() if cuda_count is None else cuda_count
    if count >= len(cluster.nodes):
        return {n.node_id: f"cuda:{i}" for i, n in enumerate(cluster.nodes)}
    return {n.node_id: "cpu" for n in cluster.nodes}


def parse_devices(spec: str, cluster: ClusterSpec, cuda_count: int | None = None) -> dict[str, str]:
    """Parse ``--devices 0=cuda:0,1=cpu`` over the default mapping; nodes not named keep their default."""
    count = _cuda_count() if cuda_count is None else cuda_count
    devices = default_devices(cluster, count)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        node_id, sep, device = (x.strip() for x in item.partition("="))
        if not sep or not node_id or not device:
            raise ConfigError("--devices", item, "expected NODE=DEVICE pairs such as 0=cuda:0,1=cpu")
        if node_id not in devices:
            raise ConfigError("--devices", node_id, f"no such node in the hardware config (nodes: {', '.join(devices)})")
        if device == "cpu":
            devices[node_id] = device
            continue
        kind, _, index = device.partition(":")
        if kind != "cuda" or (index and not index.isdigit()):
            raise ConfigError("--devices", node_id, f"expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        idx = int(index or 0)
        if idx >= count:
            raise ConfigError("--devices", node_id,
                              f"{device} does not exist: this machine has {count} CUDA device(s)")
        devices[node_id] = f"cuda:{idx}"
    return devices
