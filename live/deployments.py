"""Deployments as live mode accepts and keeps them: what a deploy config must satisfy to be served
live, and ``deployments.json``, the file in the storage folder that carries them across restarts.

The file is written atomically with its previous version kept (:mod:`live.state_file`); a change
that cannot be saved is rolled back by the caller, so that what is served is always what a restart
would restore.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from sllmsim.config.deploy import DeployConfig
from sllmsim.config.hardware import ClusterSpec
from sllmsim.core.registration import check_fits_cluster
from sllmsim.errors import ConfigError

from live.state import Deployment
from live.state_file import StateWriteError, read_state, write_state
from live.store import StoreError, validate_model_name

logger = logging.getLogger("sllmsim.live")

#: File under the storage folder where deployments are kept across restarts.
DEPLOYMENTS_FILE = "deployments.json"
_DEPLOYMENTS_VERSION = 1
#: Largest ``backend_config.max_batch_size``: each running request holds a thread and a KV cache.
MAX_BATCH_SIZE = 256
#: Largest ``auto_scaling_config.max_instances`` (more than any cluster here can hold; a bound so that
#: a mistyped number is an error rather than an unbounded plan).
MAX_INSTANCES = 1024


def check_model_name(name: str, source: str, field: str = "model") -> None:
    """Reject names that could escape the store folder (``../x``, absolute paths), naming the field."""
    try:
        validate_model_name(name)
    except StoreError as exc:
        raise ConfigError(source, field, str(exc)) from None


def check_for_live(cfg: DeployConfig, cluster: ClusterSpec) -> None:
    """Raise :class:`~sllmsim.errors.ConfigError` (naming the field) when live mode cannot serve
    ``cfg`` on ``cluster``: another backend or dtype, more GPUs or instances than the allowed nodes
    hold, a batch size or instance count beyond the bounds above."""
    src = cfg.source
    check_model_name(cfg.model, src)
    if cfg.backend != "transformers":
        raise ConfigError(src, "backend", f"live mode serves only 'transformers' models, got {cfg.backend!r}")
    if cfg.backend_config.torch_dtype in ("int8", "uint8", "float64"):
        raise ConfigError(src, "backend_config.torch_dtype",
                          f"live mode loads float16, bfloat16 or float32 weights (or 'auto'), got "
                          f"{cfg.backend_config.torch_dtype!r}")
    check_fits_cluster(cfg, cluster)
    pc = cfg.placement_config
    allowed = [n for n in cluster.nodes if pc.target_nodes is None or n.node_id in pc.target_nodes]
    most = max((n.num_gpus for n in allowed), default=0)
    if cfg.num_gpus > most:
        raise ConfigError(src, "num_gpus", f"{cfg.num_gpus} GPUs per instance, but the allowed nodes have at most {most}")
    if cfg.backend_config.max_batch_size > MAX_BATCH_SIZE:
        raise ConfigError(src, "backend_config.max_batch_size",
                          f"at most {MAX_BATCH_SIZE} requests per instance, got {cfg.backend_config.max_batch_size}")
    asc = cfg.auto_scaling_config
    if asc.max_instances > MAX_INSTANCES:
        raise ConfigError(src, "auto_scaling_config.max_instances",
                          f"at most {MAX_INSTANCES} instances per model, got {asc.max_instances}")
    room = sum(n.num_gpus // cfg.num_gpus for n in allowed)
    if asc.min_instances > room:
        raise ConfigError(src, "auto_scaling_config.min_instances",
                          f"{asc.min_instances} instances of {cfg.num_gpus} GPU(s) each must always run, but the "
                          f"allowed nodes hold at most {room}")


def check_update(old: DeployConfig, new: DeployConfig, source: str) -> None:
    """An update may change autoscaling and placement only: the checkpoint and backend stay."""
    for field_name, before, after in (
        ("backend", old.backend, new.backend),
        ("num_gpus", old.num_gpus, new.num_gpus),
        ("backend_config.pretrained_model_name_or_path", old.backend_config.pretrained_model_name_or_path,
         new.backend_config.pretrained_model_name_or_path),
        ("backend_config.torch_dtype", old.backend_config.torch_dtype, new.backend_config.torch_dtype),
    ):
        if before != after:
            raise ConfigError(source, field_name, f"cannot change from {before!r} to {after!r} on a deployed "
                              "model; delete it and deploy again")


def saved_deployments(storage_dir: Path) -> tuple[Path, list[tuple[object, str | None]]]:
    """The deployments saved in ``storage_dir`` as (deploy config as sent, store key) pairs, in deploy
    order, with the file's path (for messages); none when there is no file or it holds no list (logged).
    An entry that is not an object comes back as ``(None, None)``: deploying it fails with the reason."""
    path = storage_dir / DEPLOYMENTS_FILE
    state = read_state(path)
    saved = state.get("deployments") if state is not None else None
    if not isinstance(saved, list):
        if state is not None:
            logger.error("%s holds no list of deployments; starting with none", path)
        return path, []
    return path, [(entry.get("config"), entry.get("store_key")) if isinstance(entry, dict) else (None, None)
                  for entry in saved]


def save_deployments(storage_dir: Path, deployments: Iterable[Deployment], undo: Callable[[], None]) -> None:
    """Write the deployments (not those being deleted) durably to ``storage_dir`` (the previous state
    is kept). When that fails, ``undo()`` rolls the caller's change back before
    :class:`~live.state_file.StateWriteError` is raised: what is served stays what is saved."""
    data = {"version": _DEPLOYMENTS_VERSION,
            "deployments": [{"config": dep.raw, "store_key": dep.store_key}
                            for dep in deployments if not dep.draining]}
    try:
        write_state(storage_dir / DEPLOYMENTS_FILE, data)
    except StateWriteError:
        undo()
        raise
