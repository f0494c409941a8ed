"""The live side of a validation: build the trace's models, serve them for real, replay the requests.

The server is live mode's own (:func:`live.server.create_app`), started in this process on a free
localhost port; the requests go over HTTP (:mod:`live.replay`). The server (torch, transformers) is
imported only when :func:`run_live` runs, so that reading recipes and saved runs stays light. The
analysis of the run (joins, errors, the report) is :mod:`sllmsim.fidelity`'s.

Live mode reads checkpoints through the operating system's page cache, so a checkpoint read or
written a minute ago loads at memory speed from the "disk" — a tier neither the simulator nor the
system it models has: ServerlessLLM's checkpoint store reads with ``O_DIRECT``, bypassing the page
cache (``sllm_store/README.md`` of ServerlessLLM/ServerlessLLM). By default (``page_cache="drop"``)
the run therefore drops the store's checkpoint files from the page cache after the deploys and again
whenever a request is sent, so that a disk load reads the disk; ``"keep"`` leaves the cache alone
(what live mode does by itself). A checkpoint just downloaded is still read back from the cache.

Models that exist only as a recipe (a ``models.yaml`` beside the trace: name → width, depth, seed)
are built with :func:`live.calibration.build_model_folder` before the run, once per models folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from live.pagecache import drop_tree
from live.replay import Outcome, deploy, fetch_records, replay
from sllmsim.catalog import config_num_layers
from sllmsim.config.deploy import deploy_config_to_dict
from sllmsim.config.hardware import ClusterSpec
from sllmsim.config.trace import TraceConfig
from sllmsim.core.registry import DEFAULT_AUTOSCALE
from sllmsim.errors import ConfigError, check_keys
from sllmsim.fidelity.cpu_load import CpuSampler, Sample
from sllmsim.records import RunResult

_RECIPE_KEYS = ("hidden_size", "num_layers", "seed", "dtype", "max_positions")


def recipes_path(trace_path: str | Path) -> Path:
    """Where a trace's model recipes live: ``<trace folder>/<trace name>/models.yaml``."""
    trace_path = Path(trace_path)
    return trace_path.parent / trace_path.stem / "models.yaml"


def load_recipes(path: str | Path) -> dict[str, dict]:
    """Read a model-recipe file ``{name: {hidden_size, num_layers, seed?, dtype?, max_positions?}}``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), "", f"cannot read the model recipes: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(str(path), "", "expected a mapping of model names to recipes")
    out = {}
    for name, recipe in raw.items():
        if not isinstance(recipe, dict):
            raise ConfigError(str(path), str(name), f"expected a mapping with keys {', '.join(_RECIPE_KEYS)}")
        check_keys(recipe, _RECIPE_KEYS, str(path), f"{name}.")
        for key in ("hidden_size", "num_layers"):
            value = recipe.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(str(path), f"{name}.{key}", f"expected a positive integer, got {value!r}")
        if recipe["hidden_size"] % 64:
            raise ConfigError(str(path), f"{name}.hidden_size",
                              f"expected a multiple of 64 (heads of width 64), got {recipe['hidden_size']}")
        out[str(name)] = dict(recipe)
    return out


def build_models(recipes: dict[str, dict], models_dir: str | Path,
                 progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build every recipe's model under ``models_dir`` (reused when already there); name → folder."""
    from live.calibration import ModelRecipe, build_model_folder

    folders = {}
    for name, recipe in recipes.items():
        if progress:
            progress(f"building model {name}")
        folders[name] = build_model_folder(Path(models_dir) / name, ModelRecipe(**recipe)).resolve()
    return folders


def live_deploy_configs(trace: TraceConfig, folders: dict[str, Path]) -> list[dict]:
    """The trace's deploy configs as live mode takes them: model folders for recipe names, and the
    trace's initial ``storage.local_disk`` folded into each ``placement_config.local_disk``."""
    configs = []
    initial = trace.initial_storage()
    for cfg in trace.models:
        disk, host = initial[cfg.model]
        if host:
            raise ConfigError(trace.source, f"storage.host_memory.{cfg.model}",
                              "live mode cannot start with a checkpoint in host memory; validate a trace "
                              "that starts with checkpoints on disk only")
        raw = deploy_config_to_dict(cfg)
        raw.pop("checkpoint_size", None)  # live mode measures the stored size itself
        source = cfg.backend_config.pretrained_model_name_or_path
        if source in folders:
            raw["backend_config"]["pretrained_model_name_or_path"] = str(folders[source])
        raw["placement_config"]["local_disk"] = list(disk)
        configs.append(raw)
    return configs


#: File of a report folder holding the live run's raw records, for ``sllmsim validate --reuse-live``.
LIVE_RUN_JSON = "live-run.json"


@dataclass
class LiveRun:
    """What the live run left: its records, the stored checkpoint sizes and the client's outcomes."""

    result: RunResult
    sizes_bytes: dict[str, int]
    outcomes: list[Outcome]
    records: dict
    """The server's ``GET /records`` answer, as received."""
    settings: dict
    """How the run was made (devices, threads, page cache), for the report."""
    cpu_samples: list[Sample] = field(default_factory=list)
    """(run seconds, machine busy CPU seconds, this process's CPU seconds) during the replay
    (:mod:`sllmsim.fidelity.cpu_load`); empty where the platform has no ``/proc/stat``."""
    layers: dict[str, int] = field(default_factory=dict)
    """Each served model's number of layers, from the config.json of the folder live mode loaded."""

    def save(self, path: str | Path) -> Path:
        """Write everything needed to re-simulate and re-report this run without serving it again."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"records": self.records, "sizes_bytes": self.sizes_bytes, "settings": self.settings,
                "outcomes": [asdict(o) for o in self.outcomes],
                "cpu_samples": [list(s) for s in self.cpu_samples], "layers": self.layers}
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        return path


def load_live_run(path: str | Path, name: str) -> LiveRun:
    """A live run saved by :meth:`LiveRun.save` (a report folder's ``live-run.json``)."""
    from live.records import run_result_from_json

    path = Path(path)
    if path.is_dir():
        path = path / LIVE_RUN_JSON
    try:
        data = json.loads(path.read_text())
        records = data["records"]
        result = run_result_from_json(records, name=name)
        return LiveRun(result=result, sizes_bytes={k: int(v) for k, v in data["sizes_bytes"].items()},
                       outcomes=[Outcome(**o) for o in data.get("outcomes", [])], records=records,
                       settings=dict(data.get("settings", {})),
                       cpu_samples=[tuple(float(v) for v in s) for s in data.get("cpu_samples", [])],
                       layers={k: int(v) for k, v in data.get("layers", {}).items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(path), "", f"not a saved live run ({exc})") from None


PAGE_CACHE_MODES = ("drop", "keep")


def load_average_1min() -> float:
    """The operating system's one-minute load average (NaN where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


def checkpoint_roots(storage_dir: Path, cluster: ClusterSpec) -> list[Path]:
    """The folders of complete checkpoints in a live store: the import area and every node's disk."""
    from live.store import IMPORT_DIR

    return [storage_dir / IMPORT_DIR, *(storage_dir / n.node_id / "models" for n in cluster.nodes)]


def run_live(trace: TraceConfig, cluster: ClusterSpec, storage_dir: str | Path, folders: dict[str, Path],
             devices: dict[str, str] | None = None, threads: int | None = None, page_cache: str = "drop",
             progress: Callable[[int, int], None] | None = None,
             status: Callable[[str], None] | None = None) -> LiveRun:
    """Serve ``trace`` live on ``cluster`` with an empty store at ``storage_dir`` and replay its requests.

    The store starts empty (it is cleared first); the deploys copy checkpoints onto the nodes' disks.
    ``page_cache``: see the module docstring.
    """
    from live.calibration import torch_threads
    from live.records import run_result_from_json
    from live.server import create_app, serve_in_thread

    say = status or (lambda _msg: None)
    if trace.scheduler.autoscale != DEFAULT_AUTOSCALE:
        raise ConfigError(trace.source, "scheduler.autoscale",
                          f"live mode scales on concurrency only, got {trace.scheduler.autoscale!r}")
    if page_cache not in PAGE_CACHE_MODES:
        raise ConfigError("--page-cache", "", f"expected one of {', '.join(PAGE_CACHE_MODES)}, got {page_cache!r}")
    storage_dir = Path(storage_dir)
    shutil.rmtree(storage_dir, ignore_errors=True)
    storage_dir.mkdir(parents=True)
    configs = live_deploy_configs(trace, folders)
    with torch_threads(threads):
        app = create_app(cluster, storage_dir, devices=devices, placement=trace.scheduler.placement,
                         enable_migration=trace.scheduler.enable_migration,
                         reclaim_idle=trace.scheduler.reclaim_idle, seed=trace.seed)
        with serve_in_thread(app) as url:
            say(f"deploying {len(configs)} model(s) on {url}")
            sizes = deploy(url, configs)
            roots = checkpoint_roots(storage_dir, cluster)
            drop_tree(roots)  # in both modes: the run starts with cold disks, as the simulation does
            say(f"replaying {len(trace.requests)} requests")
            load_average: list[float] = []

            def before_send() -> None:
                # The machine's load (other processes included) explains much of a small machine's noise.
                load_average.append(load_average_1min())
                if page_cache == "drop":
                    drop_tree(roots)

            recorder = app.state.controller.recorder
            # Sampled on the server's clock, so that each request's and load's interval can be looked up.
            with CpuSampler(clock=lambda: recorder.run_time_s(time.monotonic())) as cpu:
                outcomes = replay(url, trace.requests, progress=progress, before_send=before_send)
            records = fetch_records(url)
    result = run_result_from_json(records, name=f"{trace.name}-live")
    settings = {"page_cache": page_cache, "torch_threads": threads, "load_average_1min": load_average,
                "devices": (records.get("resolved_config") or {}).get("devices")}
    layers = {c["model"]: config_num_layers(c["backend_config"]["pretrained_model_name_or_path"]) for c in configs}
    return LiveRun(result=result, sizes_bytes=sizes, outcomes=outcomes, records=records, settings=settings,
                   cpu_samples=cpu.samples, layers={k: v for k, v in layers.items() if v is not None})
