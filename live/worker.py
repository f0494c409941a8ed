"""Node workers: one per node of the hardware JSON, bound to a local device.

The controller talks to a node only through :class:`NodeWorker` (a storage snapshot, load, generate,
release), with plain-data arguments and results and the loaded models kept inside the worker, so a
worker could become a Ray actor on another machine without the controller changing.
:class:`LocalNodeWorker` runs in the server's process: loads and forward passes run in threads so the
event loop stays responsive.

Serving model: an instance runs one generation loop (:class:`live.batching.BatchEngine`) that
decodes all its requests together, one forward pass per step, up to the deployment's
``max_batch_size`` at once (the sim's per-instance limit); requests join and leave between steps.

Live migration (token-based, see :mod:`live.migration`) uses two sides of the same interface: the
source pauses a running generation at a token boundary (:meth:`NodeWorker.pause`, answered by a
:class:`Paused` event carrying a :class:`~live.generation.DecodeCheckpoint`) and either goes on
(:meth:`NodeWorker.unpause`) or stops when its stream is closed; the destination re-computes the
KV cache from tokens (:meth:`NodeWorker.resume_prefill`, then :meth:`NodeWorker.resume_feed` for
each round of catching up) and continues the generation (:meth:`NodeWorker.resume_generate`).
Everything crossing the interface is plain data: token ids, the checkpoint, session ids.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sllmsim.config.hardware import ClusterSpec, NodeSpec
from sllmsim.errors import ConfigError, SllmsimError

from live.batching import BatchedSequence, BatchEngine
from live.generation import DecodeCheckpoint, DecodeControl, GenerationOutput, GenerationRequest


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
    token_id: int | None = None
    """The generated token; None for text held back until the end (no new token)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """Last event of a generation."""

    output: GenerationOutput


@dataclass(frozen=True, slots=True)
class Paused:
    """The generation stopped at a token boundary, as :meth:`NodeWorker.pause` asked; it waits for
    :meth:`NodeWorker.unpause` (go on here) or for its stream to be closed (it went elsewhere)."""

    checkpoint: DecodeCheckpoint


GenerationEvent = PromptAccepted | TextDelta | Paused | Finished


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
    def generate(self, instance_id: str, request: GenerationRequest,
                 session_id: str | None = None) -> AsyncIterator[GenerationEvent]:
        """Run one request on a loaded instance: yields :class:`PromptAccepted`, then a
        :class:`TextDelta` per token, then :class:`Finished`. Closing the iterator early cancels.

        With ``session_id`` the generation can be paused (:meth:`pause`): the stream then yields a
        :class:`Paused` event and waits."""

    @abstractmethod
    async def pause(self, session_id: str) -> None:
        """Ask the generation ``session_id`` to pause after its next token (no-op once it ended)."""

    @abstractmethod
    async def unpause(self, session_id: str) -> None:
        """Let a paused generation go on here."""

    @abstractmethod
    async def resume_prefill(self, instance_id: str, session_id: str, request: GenerationRequest,
                             generated: list[int]) -> int:
        """Start taking over a generation of ``request`` on a loaded instance: tokenize its prompt and
        compute the KV cache of the prompt and the ``generated`` tokens. Returns the prompt's tokens."""

    @abstractmethod
    async def resume_feed(self, session_id: str, token_ids: list[int]) -> None:
        """Extend a resuming generation's KV cache with tokens the source produced since."""

    @abstractmethod
    def resume_generate(self, session_id: str, checkpoint: DecodeCheckpoint) -> AsyncIterator[GenerationEvent]:
        """Continue a resuming generation from the source's checkpoint: yields a :class:`TextDelta` per
        new token, then :class:`Finished` (for the whole reply). Closing the iterator early cancels; it
        can be paused like :meth:`generate`'s."""

    @abstractmethod
    async def drop_session(self, session_id: str) -> None:
        """Forget a resuming generation that will not continue here."""

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
        self._engines: dict[str, BatchEngine] = {}
        self._controls: dict[str, tuple[str, DecodeControl]] = {}
        """Running generations that may be paused, by session id (-> instance id, control)."""
        self._resuming: dict[str, tuple[str, BatchedSequence]] = {}
        """Generations being taken over here (session id -> instance id, sequence) until they continue."""

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
        try:
            engine = BatchEngine(loaded.model, loaded.tokenizer, max_concurrency, name=f"{instance_id}-gen")
        except BaseException:
            await asyncio.to_thread(self._storage.release, loaded)
            raise
        self._loaded[instance_id] = loaded
        self._engines[instance_id] = engine
        tier = getattr(loaded.tier, "value", loaded.tier)
        return LoadInfo(tier=str(tier), nbytes=int(loaded.nbytes))

    def generate(self, instance_id: str, request: GenerationRequest,
                 session_id: str | None = None) -> AsyncIterator[GenerationEvent]:
        engine = self._engines[instance_id]

        def start(control, on_token, on_pause, done, put) -> None:
            engine.start(request, control, on_token, on_pause, done, on_accept=lambda n: put(PromptAccepted(n)))

        return self._stream(instance_id, session_id, start)

    async def _stream(self, instance_id: str, session_id: str | None,
                      start: Callable[..., None]) -> AsyncIterator[GenerationEvent]:
        """Hand a generation to the instance's engine (``start(control, on_token, on_pause, done, put)``)
        and yield what it reports, then its result as :class:`Finished`. Closing the iterator stops
        the generation before the engine's next step."""
        loop = asyncio.get_running_loop()
        engine = self._engines[instance_id]
        events: asyncio.Queue = asyncio.Queue()
        ended = loop.create_future()
        control = DecodeControl()

        def put(item) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def done(result) -> None:
            put(result if isinstance(result, BaseException) else Finished(result))
            loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))

        if session_id is not None:
            self._controls[session_id] = (instance_id, control)
        start(control, lambda delta, token: put(TextDelta(delta, token)), lambda checkpoint: put(Paused(checkpoint)),
              done, put)
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            control.stop()
            engine.wake()
            if session_id is not None and self._controls.get(session_id, (None, None))[1] is control:
                del self._controls[session_id]
            if not ended.done():
                # The engine drops it before its next step; wait so the instance is never oversubscribed.
                await asyncio.shield(ended)

    def _control(self, session_id: str) -> tuple[BatchEngine | None, DecodeControl | None]:
        instance_id, control = self._controls.get(session_id, (None, None))
        return self._engines.get(instance_id), control

    async def pause(self, session_id: str) -> None:
        engine, control = self._control(session_id)
        if control is not None:
            control.pause()

    async def unpause(self, session_id: str) -> None:
        engine, control = self._control(session_id)
        if control is not None:
            control.resume()
            if engine is not None:
                engine.wake()

    async def resume_prefill(self, instance_id: str, session_id: str, request: GenerationRequest,
                             generated: list[int]) -> int:
        seq = await asyncio.wrap_future(self._engines[instance_id].prefill(request, list(generated)))
        self._resuming[session_id] = (instance_id, seq)
        return len(seq.prompt_ids)

    async def resume_feed(self, session_id: str, token_ids: list[int]) -> None:
        instance_id, seq = self._resuming[session_id]
        await asyncio.wrap_future(self._engines[instance_id].feed(seq, list(token_ids)))

    def resume_generate(self, session_id: str, checkpoint: DecodeCheckpoint) -> AsyncIterator[GenerationEvent]:
        instance_id, seq = self._resuming.pop(session_id)
        engine = self._engines[instance_id]

        def start(control, on_token, on_pause, done, put) -> None:
            engine.resume(seq, checkpoint, control, on_token, on_pause, done)

        # Under the same session id: a moved generation can be paused, and moved, again.
        return self._stream(instance_id, session_id, start)

    async def drop_session(self, session_id: str) -> None:
        self._resuming.pop(session_id, None)

    async def release(self, instance_id: str) -> None:
        for session_id in [k for k, (inst, _) in self._resuming.items() if inst == instance_id]:
            del self._resuming[session_id]
        loaded = self._loaded.pop(instance_id, None)
        engine = self._engines.pop(instance_id, None)
        if engine is not None:
            await asyncio.to_thread(engine.close)
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
