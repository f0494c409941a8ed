"""The model store of live mode: checkpoint folders per node, an import area, and how they are found.

Layout under the ``--storage`` root::

    _import/<model>/          the import area: every imported checkpoint, never evicted. It stands in
                              for the remote storage (a model hub, S3) that a node downloads from.
    <node_id>/models/<model>/ a node's local disk (:class:`live.node_storage.NodeStorage`), capped at
                              the node's ``disk_size``.
    <node_id>/tmp/            partial copies, renamed into ``models/`` only when complete.

Every folder holds one checkpoint in the format of :mod:`live.checkpoint_format` (a safetensors
folder plus its manifest).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sllmsim.catalog import config_num_layers

from live.checkpoint_format import (
    InvalidModelNameError,
    ModelNotFoundError,
    Progress,
    StoreError,
    check_checkpoint_folder,
    check_finite_weights,
    checkpoint_listing,
    copy_checkpoint,
    install_folder,
    manifest_bytes,
    model_folder,
    nested_name,
    read_manifest,
    remove_empty_parents,
    source_stamp_ns,
    validate_model_name,
)

if TYPE_CHECKING:
    from live.node_storage import NodeStorage
    from sllmsim.config.hardware import ClusterSpec

IMPORT_DIR = "_import"


@dataclass(frozen=True)
class ModelSource:
    """Where a ``pretrained_model_name_or_path`` points."""

    path: Path
    store_name: str | None
    """The name in the store, or None for a local folder outside the store (to be imported)."""

    @property
    def in_store(self) -> bool:
        return self.store_name is not None


class StoreRegistry:
    """All nodes' storages plus the import area under one root folder; thread-safe.

    Nodes attach themselves (:class:`live.node_storage.NodeStorage` takes the registry), or
    :meth:`for_cluster` builds one per node of a hardware config.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.import_root = self.root / IMPORT_DIR
        self.import_root.mkdir(parents=True, exist_ok=True)
        self._tmp_root = self.root / IMPORT_DIR / ".tmp"
        shutil.rmtree(self._tmp_root, ignore_errors=True)  # leftovers of an interrupted import
        self._nodes: dict[str, NodeStorage] = {}
        self._lock = threading.Lock()
        self._import_lock = threading.Lock()

    @classmethod
    def for_cluster(cls, root: str | Path, cluster: ClusterSpec, devices: Mapping[str, str]) -> StoreRegistry:
        """A registry with one :class:`NodeStorage` per node; ``devices`` maps node id -> torch device."""
        from live.node_storage import NodeStorage

        registry = cls(root)
        for node in cluster.nodes:
            NodeStorage(node, registry.root, devices.get(node.node_id, "cpu"), registry)
        return registry

    # --- nodes -----------------------------------------------------------------------------------------------
    def attach(self, storage: NodeStorage) -> None:
        """Register a node's storage (called by its constructor)."""
        with self._lock:
            if storage.node_id in self._nodes:
                raise StoreError(f"node {storage.node_id!r} is already attached to the store at {self.root}")
            self._nodes[storage.node_id] = storage

    def node(self, node_id: str) -> NodeStorage:
        with self._lock:
            try:
                return self._nodes[node_id]
            except KeyError:
                raise StoreError(f"unknown node {node_id!r}; nodes: {', '.join(self._nodes)}") from None

    @property
    def nodes(self) -> tuple[NodeStorage, ...]:
        with self._lock:
            return tuple(self._nodes.values())

    # --- names and sources -----------------------------------------------------------------------------------
    def import_path(self, model: str) -> Path:
        """Folder of ``model`` in the import area (validated name)."""
        return model_folder(self.import_root, model)

    def is_imported(self, model: str) -> bool:
        return read_manifest(self.import_path(model)) is not None

    def resolve(self, pretrained_model_name_or_path: str) -> ModelSource:
        """Find what a deploy config's ``pretrained_model_name_or_path`` names.

        An existing local folder wins (it will be imported); otherwise the name must be in the store
        (import area, else some node's disk). There is no hub access: a missing hub name is an error
        that says how to import the model.
        """
        value = pretrained_model_name_or_path
        if not isinstance(value, str) or not value:
            raise InvalidModelNameError(f"pretrained_model_name_or_path must be a non-empty string, got {value!r}")
        local = Path(value).expanduser()
        if local.is_dir():
            return ModelSource(local.absolute(), None)
        if value.startswith(("/", "./", "../", "~")) or local.exists():
            raise ModelNotFoundError(f"pretrained_model_name_or_path {value!r}: no such folder")
        name = validate_model_name(value)
        path = self.import_path(name)
        if read_manifest(path) is not None:
            return ModelSource(path, name)
        for node in self.nodes:
            if name in node.disk_models():
                return ModelSource(node.model_dir(name), name)
        raise ModelNotFoundError(
            f"model {value!r} is not in the store at {self.root} and there is no model hub access. Import it: "
            f"download it elsewhere (e.g. `huggingface-cli download {value} --local-dir DIR`), then run "
            f"`sllmsim import {value} DIR --storage {self.root}` (or set pretrained_model_name_or_path to DIR "
            "in the deploy config)")

    def model_bytes(self, model: str) -> int:
        """Checkpoint bytes of ``model`` as stored (0 when it is nowhere in the store)."""
        manifest = read_manifest(self.import_path(model))
        if manifest is None:
            for node in self.nodes:
                if model in node.disk_models():
                    manifest = read_manifest(node.model_dir(model))
                    break
        return 0 if manifest is None else manifest_bytes(manifest)

    def model_layers(self, model: str) -> int | None:
        """Layers of ``model`` as its stored ``config.json`` declares (None when unknown or not stored)."""
        for folder in (self.import_path(model), *(n.model_dir(model) for n in self.nodes if model in n.disk_models())):
            if read_manifest(folder) is not None:
                return config_num_layers(folder)
        return None

    # --- importing ---------------------------------------------------------------------------------------
    def import_model(self, model: str, source: str | Path | ModelSource, node_ids: Iterable[str] = (),
                     progress: Progress | None = None) -> int:
        """Copy a checkpoint into the import area as ``model`` and onto the disks of ``node_ids``.

        ``source`` is a local folder, a :class:`ModelSource`, or a name already in the store. Importing
        the same unchanged folder again copies nothing. Re-importing a changed folder replaces the
        stored copy and drops the stale copies from node disks and host caches. Returns the bytes.
        """
        validate_model_name(model)
        if not isinstance(source, ModelSource):
            source = self.resolve(str(source))
        src = source.path
        dst = self.import_path(model)
        with self._import_lock:
            for root in (self.import_root, *(node.models_dir for node in self.nodes)):
                other = nested_name(root, model)
                if other is not None:
                    raise InvalidModelNameError(
                        f"model name {model!r} nests with {other!r}, which is in the store: one name may not "
                        "be a folder prefix of another (their files would share folders)")
            if src.absolute() != dst.absolute():
                check_checkpoint_folder(src)
                if not self._import_is_current(src, dst, source):
                    if not source.in_store:  # a store copy was checked when it was imported
                        check_finite_weights(src)
                    self._tmp_root.mkdir(parents=True, exist_ok=True)
                    tmp = self._tmp_root / uuid.uuid4().hex
                    try:
                        disks = [n.node.disk_size_bytes for n in self.nodes if getattr(n, "node", None)]
                        copy_checkpoint(src, tmp, progress=progress, source_stamp=not source.in_store,
                                        expected=read_manifest(src) if source.in_store else None,
                                        max_bytes=max(disks) if disks else None)
                        install_folder(tmp, dst)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    for node in self.nodes:
                        node.drop_if_stale(model, read_manifest(dst))
        nbytes = manifest_bytes(read_manifest(dst))
        for node_id in dict.fromkeys(node_ids):
            self.node(node_id).place_on_disk(model)
        return nbytes

    @staticmethod
    def _import_is_current(src: Path, dst: Path, source: ModelSource) -> bool:
        manifest = read_manifest(dst)
        if manifest is None:
            return False
        listing = checkpoint_listing(src)
        if manifest["files"] != listing:
            return False
        if source.in_store:
            return True
        return manifest.get("source_mtime_ns") == source_stamp_ns(src, listing)

    def network_source(self, model: str, exclude: str | None = None) -> tuple[Path, Callable[[], None]]:
        """A complete copy of ``model`` to download from, and a function to call when done with it.

        The import area is preferred; otherwise another node's disk copy is pinned (not evicted)
        until the returned function is called.
        """
        path = self.import_path(model)
        if read_manifest(path) is not None:
            return path, lambda: None
        for node in self.nodes:
            if node.node_id != exclude and node.pin_disk(model):
                return node.model_dir(model), lambda node=node: node.unpin_disk(model)
        raise ModelNotFoundError(
            f"model {model!r} is neither in the import area ({path}) nor on any node's disk; deploy it with "
            "pretrained_model_name_or_path set to a local folder to import it")

    def remove_model(self, model: str) -> None:
        """Delete ``model`` from the import area and every node (it must not be loading)."""
        for node in self.nodes:
            node.remove_from_disk(model)
        with self._import_lock:
            path = self.import_path(model)
            if path.exists():
                shutil.rmtree(path)
                remove_empty_parents(path, self.import_root)
