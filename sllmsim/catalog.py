"""Model catalog: architecture facts that give checkpoint sizes and roofline inputs.

Reads ``sllmsim/data/catalog.json``, written by ``sllmsim catalog build`` (which counts parameters
with transformers on the meta device). The simulator imports only this module, never torch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sllmsim.config.deploy import DeployConfig
from sllmsim.errors import ConfigError


@dataclass(frozen=True)
class ModelArch:
    """Architecture facts of one catalogued model."""

    name: str
    architecture: str
    num_params: int
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    vocab_size: int


@functools.cache
def _data() -> dict:
    return json.loads(resources.files("sllmsim").joinpath("data/catalog.json").read_text())


def known_models() -> list[str]:
    """Catalogued model names."""
    return sorted(_data()["models"])


def lookup(name: str) -> ModelArch | None:
    """The catalogued model for a hub name (``facebook/opt-2.7b``) or alias (``opt-2.7b``), if any."""
    data = _data()
    key = name if name in data["models"] else data["aliases"].get(name.split("/")[-1].lower())
    if key is None:
        return None
    return ModelArch(name=key, **data["models"][key])


@dataclass(frozen=True)
class ModelSize:
    """A deployed model's checkpoint size and parameter count."""

    size_bytes: int
    num_params: int
    arch: ModelArch | None
    num_layers: int | None = None
    """The model's depth (see :func:`model_depth`); ``None`` when unknown."""


def _arch(cfg: DeployConfig) -> ModelArch | None:
    return lookup(cfg.backend_config.pretrained_model_name_or_path) or lookup(cfg.model)


def model_depth(cfg: DeployConfig) -> int | None:
    """Transformer layers of a deployment: its deploy config's ``num_layers``, else the catalog's,
    else ``None`` (unknown). Never raises, so live mode can ask about any model."""
    return _depth(cfg, _arch(cfg))


def _depth(cfg: DeployConfig, arch: ModelArch | None) -> int | None:
    if cfg.num_layers is not None:
        return cfg.num_layers
    return None if arch is None else arch.num_layers


#: Keys under which transformers configs give the number of transformer layers, by architecture.
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def config_num_layers(folder: str | Path) -> int | None:
    """The number of layers a model folder's ``config.json`` declares; None when there is none."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    for key in _DEPTH_KEYS:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def model_size(cfg: DeployConfig) -> ModelSize:
    """Checkpoint size of a deployment: catalog parameter count × dtype bytes, or its explicit size."""
    dtype_bytes = cfg.backend_config.dtype_bytes
    arch = _arch(cfg)
    depth = _depth(cfg, arch)
    if cfg.checkpoint_size_bytes is not None:
        return ModelSize(cfg.checkpoint_size_bytes, cfg.checkpoint_size_bytes // dtype_bytes, arch, depth)
    if arch is None:
        raise ConfigError(
            cfg.source, "backend_config.pretrained_model_name_or_path",
            f"model {cfg.backend_config.pretrained_model_name_or_path!r} is not in the catalog; give its size "
            "with a top-level \"checkpoint_size\" (e.g. \"13GB\") or use a catalogued model "
            "(`sllmsim catalog list`)",
        )
    return ModelSize(arch.num_params * dtype_bytes, arch.num_params, arch, depth)
