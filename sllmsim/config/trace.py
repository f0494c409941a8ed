"""Trace YAML: one simulated scenario (cluster, deployments, scheduler, storage at time 0, requests).

A trace file looks like::

    name: seed-example                     # optional; defaults to the file name without .yaml
    hardware: hardware_config.json         # a path relative to this file, or an inline mapping
    models: [config-opt-2.7b.json, config-opt-1.3b.json]   # deploy-config paths or inline mappings
    scheduler: storage_aware               # a placement policy name, or a mapping (see below)
    seed: 0
    storage:                               # where checkpoints sit at time 0, if not where registration put them
      local_disk: all                      # every model on every node's disk, `none`, or {model: all | none | [node ids]}
      host_memory: {opt-1.3b: ["1"]}       # likewise for the host-memory cache (implies local disk)
    requests:                              # explicit requests ...
      - {time: 0.0, model: opt-2.7b, input_tokens: 32, output_tokens: 64}
    requests_csv: arrivals.csv             # ... and/or a canonical CSV (time,model,input_tokens,output_tokens)
    workloads:                             # ... and/or generated arrivals (sllmsim.traces.synthetic)
      - {model: opt-1.3b, rate_per_s: 0.5, duration_s: 600}
    simulation:
      loading: pipelined                   # or sequential (each tier finishes before the next starts)

``scheduler`` as a mapping: ``{placement: storage_aware, autoscale: concurrency, enable_migration: false,
reclaim_idle: false}``.

Everything is validated here, once; errors name the file and the field. :func:`parse_trace` takes
the raw mapping too, so experiments can edit a dict and re-parse, or :func:`dataclasses.replace` a
parsed :class:`TraceConfig` (the request stream is materialised lazily from the fields, so replacing
``seed`` also redraws generated workloads).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sllmsim import catalog
from sllmsim.config.deploy import DeployConfig, deploy_config_to_dict, load_deploy_config, parse_deploy_config
from sllmsim.config.hardware import ClusterSpec, load_hardware, node_to_dict, parse_hardware
from sllmsim.core.registry import DEFAULT_AUTOSCALE, DEFAULT_PLACEMENT
from sllmsim.core.seeds import seed_stream
from sllmsim.errors import ConfigError, SllmsimError, check_keys
from sllmsim.traces.request_arrays import RequestArrays

_TOP_KEYS = ("name", "description", "hardware", "models", "scheduler", "seed", "storage", "requests",
             "requests_csv", "workloads", "simulation")
_SCHEDULER_KEYS = ("placement", "autoscale", "enable_migration", "reclaim_idle")
_STORAGE_KEYS = ("local_disk", "host_memory")
_SIMULATION_KEYS = ("loading", "until_s", "scheduler_log_limit")
_REQUEST_KEYS = ("time", "model", "input_tokens", "output_tokens")

LOADING_MODES = ("pipelined", "sequential")



@dataclass(frozen=True)
class SchedulerSettings:
    """Which policies run the cluster."""

    placement: str = DEFAULT_PLACEMENT
    """A registered placement policy (``sllmsim.core.placement``) or ``module:Class``."""
    autoscale: str = DEFAULT_AUTOSCALE
    """A registered autoscaling policy (``sllmsim.core.autoscale``) or ``module:Class``."""
    enable_migration: bool = False
    """Live migration of running inference (ServerlessLLM §5; the reference scheduler config's flag):
    a placement may move running instances off the node that would start a model fastest. Only
    placement policies with ``supports_migration`` (storage_aware) accept it."""
    reclaim_idle: bool = False
    """When no node has the GPUs a new instance needs, release idle instances of other models that
    are only waiting out their keep-alive (longest idle first; :mod:`sllmsim.core.reclaim`). False is
    the reference system's behaviour: an idle instance keeps its GPUs for its whole keep-alive."""


@dataclass(frozen=True)
class StorageState:
    """Where checkpoints sit at time 0 where it differs from what registration did.

    Each field maps a model name to the node ids that hold its checkpoint in that tier, replacing
    (not adding to) what deploying it put there (:mod:`sllmsim.core.registration`); an empty tuple
    means no node. Models not named keep their registration.
    """

    local_disk: tuple[tuple[str, tuple[str, ...]], ...] = ()
    host_memory: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class SimulationOptions:
    """How the engine models the cluster."""

    loading: str = "pipelined"
    """``pipelined``: a checkpoint streams through network → disk → host → GPU at the slowest link's
    share (the reference loader streams chunks); ``sequential``: each tier's copy completes before the
    next one starts."""
    until_s: float | None = None
    """Stop the simulation at this time: the run covers ``[0, until_s)``. Requests arriving at or
    after it are outside the run (no record; not counted as arrived, see :func:`arrives_in_run`);
    those that arrived earlier and are unfinished then fail with the reason. ``None`` runs to the end."""
    scheduler_log_limit: int = 1000
    """Scheduler log lines kept (and emitted) per run; placement logging stops after that many."""


@dataclass(frozen=True)
class TraceConfig:
    """A validated trace: everything :func:`sllmsim.sim.simulate` needs."""

    name: str
    cluster: ClusterSpec
    models: tuple[DeployConfig, ...]
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    seed: int = 0
    storage: StorageState = field(default_factory=StorageState)
    explicit_requests: RequestArrays = field(default_factory=RequestArrays.empty)
    """The ``requests:`` list and ``requests_csv:`` rows (in that order for equal times)."""
    workloads: tuple[Mapping, ...] = ()
    """Raw ``workloads:`` entries, drawn with the ``workloads`` seed stream when :attr:`requests` is read."""
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    source: str = "<inline trace>"
    description: str = ""

    @functools.cached_property
    def requests(self) -> RequestArrays:
        """The full request stream (explicit, CSV and generated), sorted by time."""
        parts = [self.explicit_requests]
        if self.workloads:
            parts.append(_generate(self))
        return RequestArrays.concat(parts)

    def deploy(self, model: str) -> DeployConfig:
        """The deploy config of ``model``."""
        for cfg in self.models:
            if cfg.model == model:
                return cfg
        raise KeyError(model)

    def model_size_bytes(self, model: str) -> int:
        """Checkpoint size of ``model`` (catalog parameter count × dtype bytes, or its explicit size)."""
        return catalog.model_size(self.deploy(model)).size_bytes

    def initial_storage(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """``{model: (disk node ids, host-memory node ids)}`` at time 0: where deploying the models in
        the trace's order put their checkpoints (:func:`sllmsim.core.registration.register_all`:
        ``placement_config.local_disk``, else one node round-robin; ``memory_pool``), except where the
        trace's ``storage`` says otherwise. A host-memory copy implies a disk copy."""
        from sllmsim.core.registration import register_all

        registered = register_all(((cfg.model, cfg.placement_config) for cfg in self.models), self.cluster.node_ids)
        disk_set = dict(self.storage.local_disk)
        host_set = dict(self.storage.host_memory)
        out = {}
        for cfg in self.models:
            reg = registered[cfg.model]
            host = host_set.get(cfg.model, reg.host_nodes)
            disk = tuple(dict.fromkeys(disk_set.get(cfg.model, reg.disk_nodes) + host))
            out[cfg.model] = (disk, host)
        return out

    def seed_sequence(self, stream: str) -> np.random.SeedSequence:
        """The named child of the trace seed (see :data:`sllmsim.core.seeds.SEED_STREAMS`)."""
        return seed_stream(self.seed, stream)


def arrives_in_run(time_s: np.ndarray, until_s: float | None) -> np.ndarray:
    """Which arrival times fall inside a run stopped at ``until_s`` (``simulation.until_s``): the
    half-open ``[0, until_s)``, as the engine stops before handling anything at ``until_s`` itself.
    The one definition the engine and the invariant checker share."""
    time_s = np.asarray(time_s, dtype=float)
    if until_s is None:
        return np.ones(len(time_s), dtype=bool)
    return time_s < until_s


# ---------------------------------------------------------------------------------------------- loading


def load_trace(path: str | Path) -> TraceConfig:
    """Read and validate a trace YAML file (paths inside it are relative to the file)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(source, "", "trace file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read trace file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(source, "", "the trace file is empty")
    return parse_trace(raw, path.parent, source, default_name=path.stem)


def parse_trace(raw: Any, base_dir: Path | str = ".", source: str = "<inline trace>",
                default_name: str | None = None) -> TraceConfig:
    """Validate a trace mapping; relative paths inside it are resolved against ``base_dir``."""
    base_dir = Path(base_dir)
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "", f"expected a YAML mapping with keys such as hardware, models, requests; "
                                      f"got {type(raw).__name__}")
    check_keys(raw, _TOP_KEYS, source)
    for key in ("hardware", "models"):
        if key not in raw:
            raise ConfigError(source, key, "missing required key")

    name = raw.get("name", default_name or "trace")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ConfigError(source, "name", f"expected a short name without '/', got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(source, "description", f"expected text, got {type(description).__name__}")

    cluster = _parse_hardware(raw["hardware"], base_dir, source)
    models = _parse_models(raw["models"], base_dir, source)
    model_names = [m.model for m in models]
    for cfg in models:
        catalog.model_size(cfg)  # an uncatalogued model without checkpoint_size fails here, naming its file

    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(source, "seed", f"expected a non-negative integer, got {seed!r}")

    parts = []
    if "requests" in raw:
        parts.append(_parse_request_list(raw["requests"], model_names, source))
    if "requests_csv" in raw:
        parts.append(_read_requests_csv(raw["requests_csv"], base_dir, model_names, source))
    workloads = raw.get("workloads", [])
    if not isinstance(workloads, list):
        raise ConfigError(source, "workloads", f"expected a list of workload mappings, got {type(workloads).__name__}")

    trace = TraceConfig(
        name=name.strip(),
        cluster=cluster,
        models=models,
        scheduler=_parse_scheduler(raw.get("scheduler", {}), source),  # absent: SchedulerSettings' defaults
        seed=seed,
        storage=_parse_storage(raw.get("storage", {}), model_names, cluster, source),
        explicit_requests=RequestArrays.concat(parts),
        workloads=tuple(workloads),
        simulation=_parse_simulation(raw.get("simulation", {}), source),
        source=source,
        description=description,
    )
    check_trace(trace)
    _ = trace.requests  # draw generated workloads now, so that their errors surface at load time
    return trace


def check_trace(trace: TraceConfig) -> None:
    """Cross-field checks, also run by the engine on traces built with :func:`dataclasses.replace`:
    policy names resolve, storage fits every node's disk and host memory, request models exist,
    models that may meet per-layer fixed costs have a known depth."""
    from sllmsim.core.registry import resolve

    for kind, name in (("placement", trace.scheduler.placement), ("autoscale", trace.scheduler.autoscale)):
        try:
            resolve(kind, name)
        except SllmsimError as exc:
            raise ConfigError(trace.source, f"scheduler.{kind}", str(exc)) from None
    from sllmsim.core.registration import check_fits_cluster

    node_ids = set(trace.cluster.node_ids)
    for cfg in trace.models:
        check_fits_cluster(cfg, trace.cluster)
    _check_depths(trace)
    sizes = {cfg.model: catalog.model_size(cfg).size_bytes for cfg in trace.models}
    disk_used = {n: 0 for n in node_ids}
    host_used = {n: 0 for n in node_ids}
    for model, (disk, host) in trace.initial_storage().items():
        for n in disk:
            disk_used[n] += sizes[model]
        for n in host:
            host_used[n] += sizes[model]
    for node in trace.cluster.nodes:
        for tier, used, cap, key in (("disk", disk_used, node.disk_size_bytes, "local_disk"),
                                     ("host memory", host_used, node.host_size_bytes, "host_memory")):
            if used[node.node_id] > cap:
                raise ConfigError(trace.source, f"storage.{key}",
                                  f"the checkpoints placed on node {node.node_id!r} need {used[node.node_id]} bytes "
                                  f"of {tier} but it has {cap} ({'disk_size' if tier == 'disk' else 'host_size'})")
    known = set(sizes)
    for name in set(trace.explicit_requests.model.tolist()) - known:
        raise ConfigError(trace.source, "requests", _unknown_model(name, list(sizes)))
    if trace.scheduler.enable_migration and not getattr(resolve("placement", trace.scheduler.placement),
                                                        "supports_migration", False):
        raise ConfigError(trace.source, "scheduler.enable_migration",
                          f"placement policy {trace.scheduler.placement!r} cannot migrate running inferences; "
                          "use storage_aware or set enable_migration to false")


def _check_depths(trace: TraceConfig) -> None:
    """A model that may run on a node with per-layer fixed costs needs a known depth."""
    costly = [n for n in trace.cluster.nodes if n.has_per_layer_costs]
    if not costly:
        return
    for cfg in trace.models:
        targets = cfg.placement_config.target_nodes
        node = next((n for n in costly if targets is None or n.node_id in targets), None)
        if node is not None and catalog.model_depth(cfg) is None:
            raise ConfigError(
                cfg.source, "num_layers",
                f"node {node.node_id!r} of {trace.cluster.source} has per-layer fixed costs "
                "(forward_overhead_per_layer_s / load_overhead_per_layer_s / "
                "decode_overhead_per_sequence_per_layer_s), but the depth of model "
                f"{cfg.model!r} is unknown (it is not in the catalog); add \"num_layers\": N (its number of "
                "transformer layers) to its deploy config")


def _parse_hardware(value: Any, base_dir: Path, source: str) -> ClusterSpec:
    if isinstance(value, str):
        return load_hardware(base_dir / value)
    if isinstance(value, Mapping):
        return parse_hardware(dict(value), f"{source}: hardware")
    raise ConfigError(source, "hardware", f"expected a path to a hardware JSON or an inline mapping, got {value!r}")


def _parse_models(value: Any, base_dir: Path, source: str) -> tuple[DeployConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(source, "models", "expected a non-empty list of deploy-config paths or inline mappings")
    models: list[DeployConfig] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            cfg = load_deploy_config(base_dir / item)
        elif isinstance(item, Mapping):
            cfg = parse_deploy_config(dict(item), f"{source}: models[{i}]")
        else:
            raise ConfigError(source, f"models[{i}]", f"expected a deploy-config path or mapping, got {item!r}")
        if any(m.model == cfg.model for m in models):
            raise ConfigError(source, f"models[{i}]", f"model {cfg.model!r} is deployed twice")
        models.append(cfg)
    return tuple(models)


def _parse_scheduler(value: Any, source: str) -> SchedulerSettings:
    if isinstance(value, str):
        return SchedulerSettings(placement=value)
    if not isinstance(value, Mapping):
        raise ConfigError(source, "scheduler", f"expected a placement policy name or a mapping with keys "
                                               f"{', '.join(_SCHEDULER_KEYS)}, got {value!r}")
    check_keys(value, _SCHEDULER_KEYS, source, "scheduler.")
    defaults = SchedulerSettings()
    out = {}
    for key in ("placement", "autoscale"):
        name = value.get(key, getattr(defaults, key))
        if not isinstance(name, str) or not name:
            raise ConfigError(source, f"scheduler.{key}", f"expected a policy name, got {name!r}")
        out[key] = name
    for key in ("enable_migration", "reclaim_idle"):
        flag = value.get(key, getattr(defaults, key))
        if not isinstance(flag, bool):
            raise ConfigError(source, f"scheduler.{key}", f"expected true or false, got {flag!r}")
        out[key] = flag
    return SchedulerSettings(**out)


def _parse_storage(value: Any, model_names: list[str], cluster: ClusterSpec, source: str) -> StorageState:
    if not isinstance(value, Mapping):
        raise ConfigError(source, "storage", f"expected a mapping with keys {', '.join(_STORAGE_KEYS)}")
    check_keys(value, _STORAGE_KEYS, source, "storage.")
    tiers = {}
    for key in _STORAGE_KEYS:
        spec = value.get(key, {})
        field_name = f"storage.{key}"
        if spec in ("all", "none"):
            spec = {m: spec for m in model_names}
        if not isinstance(spec, Mapping):
            raise ConfigError(source, field_name, f"expected 'all', 'none' or a mapping "
                                                  f"{{model: all | none | [node ids]}}, got {spec!r}")
        entries = []
        for model, nodes in spec.items():
            if model not in model_names:
                raise ConfigError(source, f"{field_name}.{model}", _unknown_model(model, model_names))
            entries.append((model, _nodes(nodes, cluster, source, f"{field_name}.{model}")))
        tiers[key] = tuple(entries)
    return StorageState(**tiers)


def _nodes(value: Any, cluster: ClusterSpec, source: str, field_name: str) -> tuple[str, ...]:
    if value == "all":
        return cluster.node_ids
    if value == "none":
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(source, field_name, f"expected 'all', 'none' or a list of node ids, got {value!r}")
    nodes = tuple(str(v) for v in value)
    for node in nodes:
        if node not in cluster.node_ids:
            raise ConfigError(source, field_name, f"node {node!r} is not in the hardware config "
                                                  f"(nodes: {', '.join(cluster.node_ids)})")
    return nodes


def _parse_simulation(value: Any, source: str) -> SimulationOptions:
    if not isinstance(value, Mapping):
        raise ConfigError(source, "simulation", f"expected a mapping with keys {', '.join(_SIMULATION_KEYS)}")
    check_keys(value, _SIMULATION_KEYS, source, "simulation.")
    defaults = SimulationOptions()
    loading = value.get("loading", defaults.loading)
    if loading not in LOADING_MODES:
        raise ConfigError(source, "simulation.loading", f"expected one of {', '.join(LOADING_MODES)}, got {loading!r}")
    until = value.get("until_s", defaults.until_s)
    if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))
                              or not math.isfinite(until) or until < 0):
        raise ConfigError(source, "simulation.until_s", f"expected a non-negative number of seconds, got {until!r}")
    limit = value.get("scheduler_log_limit", defaults.scheduler_log_limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(source, "simulation.scheduler_log_limit", f"expected a non-negative integer, got {limit!r}")
    return SimulationOptions(loading=loading, until_s=None if until is None else float(until),
                             scheduler_log_limit=limit)


def _unknown_model(name: Any, model_names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), model_names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown model {name!r}{hint} (deployed: {', '.join(model_names)})"


def _parse_request_list(value: Any, model_names: list[str], source: str) -> RequestArrays:
    from sllmsim.traces.canonical import validate_stream

    if not isinstance(value, list):
        raise ConfigError(source, "requests", f"expected a list of {{time, model, input_tokens, output_tokens}} "
                                              f"mappings, got {type(value).__name__}")
    rows = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(source, f"requests[{i}]", f"expected a mapping, got {item!r}")
        check_keys(item, _REQUEST_KEYS, source, f"requests[{i}].")
        for key in _REQUEST_KEYS:
            if key not in item:
                raise ConfigError(source, f"requests[{i}].{key}", "missing required key")
        if item["model"] not in model_names:
            raise ConfigError(source, f"requests[{i}].model", _unknown_model(item["model"], model_names))
        for key in ("time", "input_tokens", "output_tokens"):
            if isinstance(item[key], bool) or not isinstance(item[key], (int, float)) or not math.isfinite(item[key]):
                raise ConfigError(source, f"requests[{i}].{key}", f"expected a number, got {item[key]!r}")
        rows.append({k: item[k] for k in _REQUEST_KEYS})
    if not rows:
        return RequestArrays.empty()
    try:
        df = validate_stream(pd.DataFrame(rows, columns=list(_REQUEST_KEYS)), f"{source}: requests")
    except ConfigError as exc:
        # validate_stream names CSV rows ("row N" = line N); here the list index is what the user sees.
        raise ConfigError(source, _row_index(exc.field), exc.message) from None
    return RequestArrays.from_frame(df)


def _row_index(field_name: str) -> str:
    # validate_stream names "row N: col" with N counting a CSV header line; list entries count from 0.
    head, _, col = field_name.partition(": ")
    if head.startswith("row ") and head[4:].isdigit():
        return f"requests[{int(head[4:]) - 2}].{col}"
    return f"requests.{field_name}"


def _read_requests_csv(value: Any, base_dir: Path, model_names: list[str], source: str) -> RequestArrays:
    from sllmsim.traces.canonical import read_stream

    if not isinstance(value, str) or not value:
        raise ConfigError(source, "requests_csv", f"expected a path to a CSV file, got {value!r}")
    path = base_dir / value
    if not path.is_file():
        raise ConfigError(source, "requests_csv", f"file not found: {path}")
    df = read_stream(path)
    known = set(model_names)
    bad = ~df["model"].isin(known).to_numpy()
    if bad.any():
        # read_stream sorts by time; name the row as it appears in the file.
        row = int(np.flatnonzero(bad)[0])
        name = df["model"].iloc[row]
        raw_models = pd.read_csv(path, usecols=["model"], dtype={"model": str}, keep_default_na=False)["model"]
        line = int(np.flatnonzero((raw_models == name).to_numpy())[0]) + 2
        raise ConfigError(str(path), f"row {line}: model", _unknown_model(name, model_names))
    return RequestArrays.from_frame(df)


def _generate(trace: TraceConfig) -> RequestArrays:
    from sllmsim.traces.synthetic import generate_workloads

    rng = np.random.default_rng(trace.seed_sequence("workloads"))
    df = generate_workloads(list(trace.workloads), rng, trace.source)
    names = [m.model for m in trace.models]
    known = set(names)
    for i, spec in enumerate(trace.workloads):
        listed = [spec["model"]] if "model" in spec else list(spec.get("models", []))
        for model in listed:
            if model not in known:
                field_name = f"workloads[{i}].model" if "model" in spec else f"workloads[{i}].models"
                raise ConfigError(trace.source, field_name, _unknown_model(model, names))
    return RequestArrays.from_frame(df)


# --------------------------------------------------------------------------------------------- resolving


def trace_to_dict(trace: TraceConfig) -> dict:
    """The fully resolved trace as plain data (for ``RunResult.resolved_config``)."""
    reqs = trace.requests
    return {
        "name": trace.name,
        "source": trace.source,
        "description": trace.description,
        "seed": trace.seed,
        "hardware": {n.node_id: node_to_dict(n) for n in trace.cluster.nodes},
        "models": [{**deploy_config_to_dict(cfg), "checkpoint_size_bytes": catalog.model_size(cfg).size_bytes}
                   for cfg in trace.models],
        "scheduler": {"placement": trace.scheduler.placement, "autoscale": trace.scheduler.autoscale,
                      "enable_migration": trace.scheduler.enable_migration,
                      "reclaim_idle": trace.scheduler.reclaim_idle},
        "storage": {model: {"local_disk": list(disk), "host_memory": list(host)}
                    for model, (disk, host) in trace.initial_storage().items()},
        "simulation": {"loading": trace.simulation.loading, "until_s": trace.simulation.until_s,
                       "scheduler_log_limit": trace.simulation.scheduler_log_limit},
        "workloads": [dict(w) for w in trace.workloads],
        "requests": {
            "count": len(reqs),
            "explicit": len(trace.explicit_requests),
            "generated": len(reqs) - len(trace.explicit_requests),
            "first_time_s": float(reqs.time_s[0]) if len(reqs) else None,
            "last_time_s": float(reqs.time_s[-1]) if len(reqs) else None,
        },
    }
