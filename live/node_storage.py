"""One node's storage tiers in live mode: local disk, host-memory cache, device.

A :class:`NodeStorage` is the live counterpart of the simulator's per-node tiers. It keeps real
checkpoint folders on the node's "disk" (a folder capped at the hardware config's ``disk_size``,
least-recently-used unpinned checkpoints evicted to make room), a host-memory cache of loaded
tensors capped at ``host_size``, and loads models onto the node's torch device through them:

* network tier — the checkpoint is copied from the import area (or another node's disk), throttled
  to the node's ``network_bandwidth``;
* disk tier — the checkpoint's files are read into a host buffer (:mod:`live.loader`);
* host tier — the cached tensors are copied to the device and the model is built around them.

Loads on one node run one at a time, in arrival order, like the reference system's per-node loading
queue; :meth:`NodeStorage.io_backlog_s` estimates when the queue empties, for the scheduler.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from live.checkpoint_format import (
    MANIFEST,
    InvalidModelNameError,
    StorageFullError,
    StoreError,
    copy_checkpoint,
    install_folder,
    manifest_bytes,
    model_folder,
    read_manifest,
    remove_empty_parents,
)
from live.host_cache import HostCache
from live.loader import CheckpointError, allocate_host_buffer, build_model, read_checkpoint, to_device
from sllmsim.config.hardware import NodeSpec
from sllmsim.core import ModelView, Tier, startup_estimate_s
from sllmsim.core.views import node_view
from sllmsim.records import Phase

log = logging.getLogger(__name__)


class DeviceLoadError(StoreError):
    """A checkpoint that could not be placed on the device (out of device memory)."""


@dataclass(frozen=True)
class PhaseTiming:
    """One phase of one load, measured: ``start_s``/``end_s`` are ``time.monotonic()`` readings."""

    phase: Phase
    tier: Tier
    start_s: float
    end_s: float
    nbytes: int
    model: str
    node: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class LoadedModel:
    """A model ready to serve on a node's device."""

    model: Any
    """The ``torch.nn.Module`` in eval mode on ``device`` (None once released)."""
    tokenizer: Any
    device: str
    nbytes: int
    """Bytes of the model's weights on the device."""
    tier: Tier
    """Where the checkpoint came from for this load."""
    name: str = ""
    node: str = ""
    phases: list[PhaseTiming] = field(default_factory=list)
    released: bool = False


@dataclass
class _PendingLoad:
    estimate_s: float
    started_s: float | None = None


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    aliases = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
    dtype = getattr(torch, aliases.get(value, value), None)
    if not isinstance(dtype, torch.dtype):
        raise StoreError(f"unknown torch dtype {value!r}")
    return dtype


class CheckpointSources(Protocol):
    """What a node's storage needs of the store it belongs to (:class:`live.store.StoreRegistry`).

    A protocol rather than an import: the store builds and holds the nodes' storages, so importing it
    here would make the two modules import each other.
    """

    def attach(self, storage: NodeStorage) -> None:
        """Take ``storage`` as the storage of its node."""

    def import_path(self, model: str) -> Path:
        """The folder of ``model`` in the import area."""

    def model_bytes(self, model: str) -> int:
        """The checkpoint bytes of ``model`` as stored (0 when it is nowhere in the store)."""

    def model_layers(self, model: str) -> int | None:
        """The layers of ``model`` as its stored ``config.json`` declares (None when unknown)."""

    def network_source(self, model: str, exclude: str | None = None) -> tuple[Path, Callable[[], None]]:
        """A complete copy of ``model`` to download from, and a function to call when done with it."""


class NodeStorage:
    """The disk, host-memory cache and device of one node; thread-safe.

    ``load`` may be called from several threads at once (different or the same models): loads queue
    on the node and run one at a time. Disk copies in use by a load (here or as another node's
    download source) are pinned and never evicted.
    """

    def __init__(self, node: NodeSpec, root: Path, device: str, registry: CheckpointSources):
        if not node.node_id or "/" in node.node_id or "\\" in node.node_id or node.node_id.startswith((".", "_")):
            raise InvalidModelNameError(
                f"node id {node.node_id!r} cannot name a storage folder (no '/', not starting with '.' or '_')")
        self.node = node
        self.device = str(torch.device(device))
        self.registry = registry
        self.dir = Path(root) / node.node_id
        self.models_dir = self.dir / "models"
        self.tmp_dir = self.dir / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # partial copies of an interrupted run
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._disk: OrderedDict[str, int] = OrderedDict()  # model -> bytes, least recently used first
        self._disk_pins: dict[str, int] = {}
        self._disk_reserved_bytes = 0
        self._pending: dict[int, _PendingLoad] = {}
        self._load_ids = itertools.count()
        pin = torch.device(self.device).type == "cuda"
        self.host_cache = HostCache(node.host_size_bytes, pin=pin)
        self._scan_disk()
        registry.attach(self)

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def _scan_disk(self) -> None:
        found = []
        for manifest_path in self.models_dir.rglob(MANIFEST):
            folder = manifest_path.parent
            name = folder.relative_to(self.models_dir).as_posix()
            manifest = read_manifest(folder)
            if manifest is None or any(p.startswith(".") for p in name.split("/")):
                continue
            found.append((manifest_path.stat().st_mtime, name, manifest_bytes(manifest)))
        for _, name, nbytes in sorted(found):
            self._disk[name] = nbytes
        while self._disk and self.disk_used_bytes > self.node.disk_size_bytes:
            victim, nbytes = next(iter(self._disk.items()))
            log.warning("node %s: disk holds more than disk_size; evicting %s", self.node_id, victim)
            self._delete_locked(victim)

    # --- what is where (the scheduler's view) ----------------------------------------------------------
    def disk_models(self) -> frozenset[str]:
        """Models with a complete checkpoint on this node's disk."""
        with self._lock:
            return frozenset(self._disk)

    def host_models(self) -> frozenset[str]:
        """Models cached in this node's host memory."""
        return self.host_cache.models()

    @property
    def disk_used_bytes(self) -> int:
        return sum(self._disk.values()) + self._disk_reserved_bytes

    def tier_of(self, model: str) -> Tier:
        """The fastest tier of this node holding ``model``: HOST, DISK or NETWORK."""
        if model in self.host_cache:
            return Tier.HOST
        with self._lock:
            return Tier.DISK if model in self._disk else Tier.NETWORK

    def io_backlog_s(self) -> float:
        """Estimated seconds until the loads queued or running on this node finish."""
        now = time.monotonic()
        with self._lock:
            return sum(p.estimate_s if p.started_s is None else max(0.0, p.estimate_s - (now - p.started_s))
                       for p in self._pending.values())

    def model_dir(self, model: str) -> Path:
        return model_folder(self.models_dir, model)

    def _estimate_s(self, model: str) -> float:
        # The core's own startup estimate, so the backlog is measured in the scheduler's terms.
        view = node_view(self.node, self.node.num_gpus, self.host_models(), self.disk_models(), 0.0)
        depth = (self.registry.model_layers(model) or 0) if self.node.load_overhead_per_layer_s else 0
        return startup_estimate_s(view, ModelView(model, self.registry.model_bytes(model), num_layers=depth))[0]

    # --- disk -----------------------------------------------------------------------------------------------
    def pin_disk(self, model: str) -> bool:
        """Protect ``model``'s disk copy from eviction; False if it is not on disk."""
        with self._lock:
            if model not in self._disk:
                return False
            self._disk_pins[model] = self._disk_pins.get(model, 0) + 1
            return True

    def unpin_disk(self, model: str) -> None:
        with self._lock:
            n = self._disk_pins.get(model, 0) - 1
            if n > 0:
                self._disk_pins[model] = n
            else:
                self._disk_pins.pop(model, None)

    def _reserve_disk_locked(self, model: str, nbytes: int) -> None:
        capacity = self.node.disk_size_bytes
        if nbytes > capacity:
            raise StorageFullError(f"node {self.node_id}: checkpoint {model!r} needs {nbytes} bytes but the disk "
                                   f"holds only {capacity} (disk_size in the hardware config)")
        while self.disk_used_bytes + nbytes > capacity:
            # Evict checkpoints that are not in host memory first: those are the cheapest to lose.
            unpinned = [m for m in self._disk if m not in self._disk_pins]
            cold = [m for m in unpinned if m not in self.host_cache]
            if not unpinned:
                raise StorageFullError(
                    f"node {self.node_id}: no room for {model!r} ({nbytes} bytes) on a {capacity}-byte disk: "
                    f"{self.disk_used_bytes} bytes are in use by loads ({', '.join(self._disk_pins) or 'copies'})")
            victim = (cold or unpinned)[0]
            log.info("node %s: evicting %s from disk to make room for %s", self.node_id, victim, model)
            self._delete_locked(victim)
        self._disk_reserved_bytes += nbytes

    def _delete_locked(self, model: str) -> None:
        self._disk.pop(model, None)
        self.host_cache.evict(model)  # a host copy never outlives its disk copy
        path = self.model_dir(model)
        trash = self.tmp_dir / f"evicted-{uuid.uuid4().hex}"
        with contextlib.suppress(OSError):
            path.rename(trash)
            remove_empty_parents(path, self.models_dir)
        shutil.rmtree(trash, ignore_errors=True)

    def place_on_disk(self, model: str, bandwidth_bytes_per_s: float | None = None) -> int:
        """Copy ``model`` onto this node's disk unless it is there; returns bytes copied (0 if present)."""
        with self._io_lock:
            return self._place_locked(model, bandwidth_bytes_per_s)

    def _place_locked(self, model: str, bandwidth_bytes_per_s: float | None) -> int:
        final = self.model_dir(model)
        with self._lock:
            if model in self._disk:
                self._disk.move_to_end(model)
                return 0
        src, done_with_src = self.registry.network_source(model, exclude=self.node_id)
        try:
            source_manifest = read_manifest(src)
            nbytes = manifest_bytes(source_manifest)
            with self._lock:
                self._reserve_disk_locked(model, nbytes)
            tmp = self.tmp_dir / uuid.uuid4().hex
            try:
                # Verified against the source's manifest: a damaged source is an error, not a new copy.
                copied = copy_checkpoint(src, tmp, bandwidth_bytes_per_s, expected=source_manifest)
                install_folder(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                with self._lock:
                    self._disk_reserved_bytes -= nbytes
            with self._lock:
                self._disk[model] = nbytes
            return copied
        finally:
            done_with_src()

    def place_in_host(self, model: str) -> bool:
        """Read ``model`` from this node's disk into its host cache (registration's ``memory_pool``);
        False when it is not on the disk or is bigger than the whole cache."""
        with self._io_lock:
            if model in self.host_cache:
                return True
            if not self.pin_disk(model):
                return False
            try:
                _, cached = self._read_to_host(model)
                if cached:
                    self.host_cache.unuse(model)
                return cached
            finally:
                self.unpin_disk(model)

    def drop_if_stale(self, model: str, manifest: Mapping | None) -> None:
        """Drop this node's copy of ``model`` if its files differ from ``manifest`` (a re-import)."""
        with self._lock:
            if model not in self._disk:
                return
            mine = read_manifest(self.model_dir(model))
            if mine is not None and manifest is not None and mine["files"] == manifest["files"]:
                return
            if model in self._disk_pins:
                raise StoreError(f"node {self.node_id}: cannot replace {model!r} while it is loading; retry later")
            self._delete_locked(model)

    def remove_from_disk(self, model: str) -> None:
        """Delete ``model``'s disk copy (and host-cache entry); an error while a load uses it."""
        with self._lock:
            if model not in self._disk:
                return
            if model in self._disk_pins:
                raise StoreError(f"node {self.node_id}: cannot delete {model!r} while it is loading")
            self._delete_locked(model)

    # --- loading -------------------------------------------------------------------------------------------
    def load(self, model: str, on_phase: Callable[[PhaseTiming], None] | None = None,
             dtype: str | torch.dtype | None = None) -> LoadedModel:
        """Load ``model`` onto this node's device through the tiers, reporting each phase as it ends.

        Phases: ``queued`` (only when another load held the node), ``downloading`` (network tier),
        ``loading_to_host`` (network and disk tiers), ``loading_to_gpu``. ``dtype`` converts floating
        weights (default: the checkpoint's). Raises :class:`StoreError` subclasses (missing model,
        full disk, corrupt checkpoint, out of device memory) after undoing any partial work.
        """
        dtype = _dtype(dtype)
        load_id = next(self._load_ids)
        estimate_s = self._estimate_s(model)
        with self._lock:
            self._pending[load_id] = _PendingLoad(estimate_s)
        phases: list[PhaseTiming] = []

        def report(phase: Phase, tier: Tier, start_s: float, nbytes: int) -> None:
            timing = PhaseTiming(phase, tier, start_s, time.monotonic(), nbytes, model, self.node_id)
            phases.append(timing)
            if on_phase is not None:
                on_phase(timing)

        try:
            queued_s = time.monotonic()
            waited = not self._io_lock.acquire(blocking=False)
            if waited:
                self._io_lock.acquire()
            try:
                with self._lock:
                    self._pending[load_id].started_s = time.monotonic()
                tier = self.tier_of(model)
                if waited:
                    report(Phase.QUEUED, tier, queued_s, 0)
                try:
                    loaded = self._load_locked(model, tier, dtype, report)
                except (CheckpointError, OSError) as exc:
                    if tier is Tier.NETWORK or not self._drop_bad_copy(model, exc):
                        raise
                    # The copy from the source is verified against its manifest on the way.
                    loaded = self._load_locked(model, Tier.NETWORK, dtype, report)
            finally:
                self._io_lock.release()
        finally:
            with self._lock:
                del self._pending[load_id]
        loaded.phases = phases
        return loaded

    def _drop_bad_copy(self, model: str, exc: BaseException) -> bool:
        """Drop this node's disk (and host) copy of ``model`` that failed to load (damaged or deleted
        behind the server's back), so that the load can fall back to the source. False when the
        copy is in use elsewhere (another node downloads from it) and must stay."""
        with self._lock:
            if model in self._disk_pins:
                return False
            log.warning("node %s: its copy of %s failed to load (%s); dropping it and copying it again from "
                           "the store", self.node_id, model, exc)
            self._delete_locked(model)
            return True

    def _load_locked(self, model: str, tier: Tier, dtype: torch.dtype | None, report) -> LoadedModel:
        if tier is Tier.NETWORK:
            start = time.monotonic()
            nbytes = self._place_locked(model, self.node.network_bandwidth_bytes_per_s)
            report(Phase.DOWNLOADING, tier, start, nbytes)
        if not self.pin_disk(model):
            # Evicted between the tier check and now cannot happen under the I/O lock, but say so if it does.
            raise StoreError(f"node {self.node_id}: {model!r} vanished from disk during its load")
        try:
            ckpt = self.host_cache.acquire(model)
            if ckpt is None:
                start = time.monotonic()
                ckpt, cached = self._read_to_host(model)
                report(Phase.LOADING_TO_HOST, tier, start, ckpt.nbytes)
            else:
                cached = True
            try:
                start = time.monotonic()
                loaded = self._to_device(model, ckpt, tier, dtype)
                report(Phase.LOADING_TO_GPU, tier, start, loaded.nbytes)
                return loaded
            finally:
                if cached:
                    self.host_cache.unuse(model)
        finally:
            self.unpin_disk(model)
            with self._lock:
                if model in self._disk:
                    self._disk.move_to_end(model)

    def _read_to_host(self, model: str):
        folder = self.model_dir(model)
        reserved: list[torch.Tensor] = []

        def allocate(nbytes: int) -> torch.Tensor:
            buffer = self.host_cache.allocate(nbytes)
            if buffer is None:
                # Bigger than the whole cache: load through a buffer the cache does not keep.
                return allocate_host_buffer(nbytes, self.host_cache.pin)
            reserved.append(buffer)
            return buffer

        try:
            ckpt = read_checkpoint(folder, allocate)
        except BaseException:
            for buffer in reserved:
                self.host_cache.abandon(buffer)
            raise
        if reserved:
            self.host_cache.insert(model, ckpt, use=True)
        return ckpt, bool(reserved)

    def _to_device(self, model: str, ckpt, tier: Tier, dtype: torch.dtype | None) -> LoadedModel:
        from transformers import AutoTokenizer

        folder = self.model_dir(model)
        try:
            tensors = to_device(ckpt, self.device, dtype, copy=True)
            module = build_model(folder, tensors, self.device, dtype)
        except torch.OutOfMemoryError as exc:
            raise DeviceLoadError(f"node {self.node_id}: out of memory on {self.device} loading {model!r} "
                                  f"({ckpt.nbytes} bytes): {str(exc).splitlines()[0]}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder}: cannot load the tokenizer ({exc})") from None
        # parameters() lists a tied weight once, as it is stored once.
        nbytes = sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))
        return LoadedModel(module, tokenizer, self.device, nbytes, tier, name=model, node=self.node_id)

    def release(self, loaded: LoadedModel) -> None:
        """Free ``loaded``'s device memory; its checkpoint stays in the host cache."""
        if loaded.released:
            return
        loaded.released = True
        module, loaded.model = loaded.model, None
        if module is not None:
            # Swapping every tensor for a meta one frees the device memory even if someone still
            # holds a reference to the module.
            module.to("meta")
        if torch.device(loaded.device).type == "cuda":
            torch.cuda.empty_cache()
