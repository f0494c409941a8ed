"""Experiment YAML: a base trace, variations of it, and seeds; expanded into points.

An experiment file looks like::

    name: keep_alive_sweep               # optional; defaults to the file name without .yaml
    description: Latency vs GPU-seconds as keep-alive grows.
    trace: ../traces/paper-cluster.yaml  # the base trace: a path (relative to this file) or an inline mapping
    requests:                            # optional: a converter that draws the request stream per point
      converter: azure_functions         #   (replaces the base trace's requests; see REQUEST_CONVERTERS)
      invocations: ../../shared/traces-real/azure_functions_2019_sample500_invocations.csv
      tokens: [../../shared/traces-real/AzureLLMInferenceTrace_conv.csv]
      target_rps: 1.0
      duration_s: 1800
    grid:                                # every combination of these values is one point
      scheduler: [storage_aware, random]
      keep_alive_s: [0, 60, 600]
    cases:                               # optional named sets of variations, crossed with the grid
      baseline: {}
      fast disk: {disk_bandwidth: 20GB/s}
    seeds: 3                             # a count (seeds 0..n-1) or a list of seeds
    report: {...}                        # optional, see ReportOptions

Variation keys (in ``grid`` and ``cases``) are the names of :data:`VARIATIONS` (each documented
there), ``requests.<parameter>`` (a parameter of the request converter, e.g. ``requests.target_rps``)
or ``trace.<dotted.path>`` (any field of the base trace mapping, e.g. ``trace.simulation.loading``).

A point's seed becomes the trace's ``seed`` (placement randomness, generated workloads) and, through a
separate derived stream, the request converter's seed, so each seed is an independent replication of
the arrivals as well as of the policies' random choices.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sllmsim.config.trace import SchedulerSettings
from sllmsim.errors import ConfigError, check_keys
from sllmsim.metrics import SCALAR_KEYS

_TOP_KEYS = ("name", "description", "trace", "requests", "grid", "cases", "seeds", "report")
_REPORT_KEYS = ("policy_key", "rate_key", "keep_alive_key", "panel_key", "tradeoff_metrics", "reference", "compare",
                "migration_cost", "notes", "table_metrics")
_COMPARE_KEYS = ("key", "reference", "metrics")
_MIGRATION_COST_KEYS = ("key", "migrated", "baseline")

#: Request converters an experiment may call per point, with the parameters each accepts. Paths
#: (``invocations``, ``tokens``, ``sources`` values) are relative to the experiment file.
REQUEST_CONVERTERS: dict[str, tuple[str, ...]] = {
    "azure_functions": ("invocations", "tokens", "models", "selection", "triggers", "spread", "target_rps",
                        "rate_scaling", "start_minute", "duration_s", "max_context_tokens"),
    "azure_llm": ("sources", "time_scale", "origin", "duration_s"),
}
#: Spawn key of the request converter's seed stream, apart from the trace's own seed streams.
REQUEST_SEED_SPAWN_KEY = 1000

DEFAULT_TABLE_METRICS = (
    "requests", "completed", "latency_mean_s", "latency_p50_s", "latency_p99_s", "ttft_p99_s",
    "cold_start_ratio", "gpu_seconds",
)


# --------------------------------------------------------------------------- variations


@dataclass(frozen=True)
class Variation:
    """A named knob of the base trace that a grid can vary."""

    name: str
    doc: str
    apply: Callable[["PointInputs", Any], None]


@dataclass
class PointInputs:
    """The editable inputs of one point: the base trace mapping (files inlined) and the request converter."""

    trace: dict
    requests: dict | None
    source: str
    time_scale: float = 1.0
    """k in t' = t / k for the trace's own explicit requests (``requests``, ``requests_csv``)."""


def _every_node(key: str) -> Callable[[PointInputs, Any], None]:
    def apply(inputs: PointInputs, value: Any) -> None:
        for node in inputs.trace["hardware"].values():
            node[key] = value
    return apply


def _every_model(section: str, key: str) -> Callable[[PointInputs, Any], None]:
    def apply(inputs: PointInputs, value: Any) -> None:
        for model in inputs.trace["models"]:
            model.setdefault(section, {})[key] = value
    return apply


def _scheduler(inputs: PointInputs, value: Any) -> None:
    current = inputs.trace.get("scheduler", SchedulerSettings().placement)
    if isinstance(current, Mapping):
        inputs.trace["scheduler"] = {**current, "placement": value}
    else:
        inputs.trace["scheduler"] = value


def _scheduler_flag(flag: str) -> Callable[[PointInputs, Any], None]:
    def apply(inputs: PointInputs, value: Any) -> None:
        current = inputs.trace.get("scheduler", SchedulerSettings().placement)
        settings = dict(current) if isinstance(current, Mapping) else {"placement": current}
        inputs.trace["scheduler"] = {**settings, flag: value}
    return apply


def _rate_scale(inputs: PointInputs, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(inputs.source, "rate_scale", f"expected a positive factor, got {value!r}")
    if inputs.requests is not None:
        conv = inputs.requests
        if conv["converter"] == "azure_functions":
            if conv.get("target_rps") is None:
                raise ConfigError(inputs.source, "requests.target_rps",
                                  "rate_scale multiplies requests.target_rps, so set one")
            conv["target_rps"] = conv["target_rps"] * value
        else:
            conv["time_scale"] = conv.get("time_scale", 1.0) * value
        return
    for entry in inputs.trace.get("workloads", []):
        entry["rate_per_s"] = entry["rate_per_s"] * value
    if "requests" in inputs.trace or "requests_csv" in inputs.trace:
        # Explicit arrivals are compressed in time (t' = t / k), keeping their burst structure.
        inputs.time_scale *= value


#: The named variation keys. Sizes and bandwidths take the hardware JSON's strings ("256GB", "5GB/s").
VARIATIONS: dict[str, Variation] = {v.name: v for v in (
    Variation("scheduler", "placement policy name (storage_aware, random, first_fit, round_robin, ...)", _scheduler),
    Variation("reclaim_idle", "scheduler.reclaim_idle: true releases idle instances of other models when no "
              "node has the GPUs a new instance needs", _scheduler_flag("reclaim_idle")),
    Variation("keep_alive_s", "auto_scaling_config.keep_alive of every model, seconds",
              _every_model("auto_scaling_config", "keep_alive")),
    Variation("max_instances", "auto_scaling_config.max_instances of every model",
              _every_model("auto_scaling_config", "max_instances")),
    Variation("gpus_per_node", "num_gpus of every node", _every_node("num_gpus")),
    Variation("gpu", "GPU type of every node (e.g. A40, A100-80GB)", _every_node("gpu")),
    Variation("host_size", "host-memory cache size of every node (e.g. 512GB)", _every_node("host_size")),
    Variation("disk_size", "local disk size of every node", _every_node("disk_size")),
    Variation("disk_bandwidth", "local disk read bandwidth of every node (e.g. 5GB/s)", _every_node("disk_bandwidth")),
    Variation("network_bandwidth", "network bandwidth of every node (e.g. 10Gbps)", _every_node("network_bandwidth")),
    Variation("host_bandwidth", "host-memory bandwidth of every node", _every_node("host_bandwidth")),
    Variation("pcie_bandwidth", "host-to-GPU bandwidth of every node", _every_node("pcie_bandwidth")),
    Variation("rate_scale",
              "request-rate factor k: multiplies requests.target_rps (azure_functions), divides time by k "
              "(azure_llm, requests, requests_csv), multiplies every workload's rate_per_s", _rate_scale),
)}


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class CompareOptions:
    """A paired comparison of one policy against the others, written into the report."""

    key: str
    reference: Any
    metrics: tuple[str, ...] = ("latency_mean_s", "latency_p99_s")


@dataclass(frozen=True)
class MigrationCostOptions:
    """What live migration costs the requests it moves: each migrated request's latency against the
    same request (same id, same seed) in the run without migration."""

    key: str
    """The varied key that switches migration (e.g. ``case``)."""
    migrated: Any
    """Its value in the runs with migration."""
    baseline: Any
    """Its value in the runs without."""


@dataclass(frozen=True)
class ReportOptions:
    """How the report groups and plots points (each key defaults from the grid)."""

    policy_key: str | None = None
    """The variation whose values get one curve each (default: ``scheduler`` if varied, else ``case``)."""
    rate_key: str | None = None
    """x axis of the latency / cold-start vs request-rate plots (default: rate_scale or requests.target_rps)."""
    keep_alive_key: str | None = None
    """x of the keep-alive trade-off plot (default: keep_alive_s if varied)."""
    panel_key: str | None = None
    """A variation whose values get one panel each in the keep-alive trade-off plot (default: none)."""
    tradeoff_metrics: tuple[str, ...] = ("latency_p99_s",)
    """Metrics drawn against GPU-seconds in the keep-alive trade-off plot (one row of panels each)."""
    reference: Mapping[str, Any] = field(default_factory=dict)
    """Values of the other variations at which per-policy plots (CDF, tiers, timeline) are drawn."""
    compare: CompareOptions | None = None
    migration_cost: MigrationCostOptions | None = None
    notes: str = ""
    """Markdown appended to the report verbatim (context and caveats; results come from the data)."""
    table_metrics: tuple[str, ...] = DEFAULT_TABLE_METRICS


@dataclass(frozen=True)
class Point:
    """One configuration of the experiment and one seed."""

    index: int
    """Position in the expansion order (cases, then grid, then seeds)."""
    params: tuple[tuple[str, Any], ...]
    """The variation values, in the order of the spec (``case`` first when there are cases)."""
    seed: int

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params) or "base"

    def param_dict(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment file."""

    name: str
    source: str
    base_dir: Path
    """The experiment file's folder: relative paths in ``requests`` resolve against it."""
    trace: Mapping
    """The base trace mapping (hardware and deploy configs still as written)."""
    trace_base_dir: Path
    """Where the base trace's relative paths resolve."""
    requests: Mapping | None
    grid: tuple[tuple[str, tuple], ...]
    cases: tuple[tuple[str, Mapping], ...]
    seeds: tuple[int, ...]
    report: ReportOptions
    description: str = ""
    trace_path: str | None = None
    """The base trace's path as written in the experiment file (``None`` when inline)."""

    @property
    def config_keys(self) -> list[str]:
        """The keys that name a configuration: ``case`` (when there are cases) and the grid keys.
        The values that cases set follow from the case name."""
        return (["case"] if self.cases else []) + [k for k, _ in self.grid]

    @property
    def variation_keys(self) -> list[str]:
        """Every key a point sets: :attr:`config_keys` plus the keys that only cases set."""
        keys = ["case"] if self.cases else []
        keys += [k for k, _ in self.grid]
        for _, overrides in self.cases:
            keys += [k for k in overrides if k not in keys]
        return keys

    def points(self) -> list[Point]:
        """Every case × grid combination × seed, in a stable order."""
        cases = self.cases or (("", {}),)
        grid_keys = [k for k, _ in self.grid]
        combos = list(itertools.product(*(values for _, values in self.grid))) or [()]
        case_keys = [k for k in self.variation_keys if k != "case" and k not in grid_keys]
        out = []
        for case_name, overrides in cases:
            for combo in combos:
                params = [("case", case_name)] if self.cases else []
                params += list(zip(grid_keys, combo))
                params += [(k, overrides.get(k)) for k in case_keys]
                for seed in self.seeds:
                    out.append(Point(len(out), tuple(params), seed))
        return out

    def inputs(self, point: Point) -> PointInputs:
        """The base trace and request converter with the point's variations applied (fresh copies)."""
        inputs = PointInputs(trace=_inline_trace(self.trace, self.trace_base_dir, self.source),
                             requests=copy.deepcopy(dict(self.requests)) if self.requests else None,
                             source=f"{self.source}: point {point.index} ({point.label})")
        overrides: dict[str, Any] = {}
        params = point.param_dict()
        if self.cases:
            overrides.update(dict(self.cases)[params.pop("case")])
        overrides.update({k: v for k, v in params.items() if k in dict(self.grid)})
        for key, value in overrides.items():
            apply_variation(inputs, key, value)
        inputs.trace["seed"] = point.seed
        if inputs.requests is not None:
            inputs.requests["seed"] = request_seed(point.seed)
        return inputs


def request_seed(seed: int) -> int:
    """The request converter's seed for a point seed: a stream apart from the trace's own seed streams."""
    child = np.random.SeedSequence(seed, spawn_key=(REQUEST_SEED_SPAWN_KEY,))
    return int(child.generate_state(1, np.uint32)[0])


def apply_variation(inputs: PointInputs, key: str, value: Any) -> None:
    """Apply one variation (a named one, ``requests.<param>`` or ``trace.<path>``) to a point's inputs."""
    if key in VARIATIONS:
        VARIATIONS[key].apply(inputs, copy.deepcopy(value))
    elif key.startswith("requests."):
        inputs.requests[key.removeprefix("requests.")] = copy.deepcopy(value)
    elif key.startswith("trace."):
        node = inputs.trace
        parts = key.removeprefix("trace.").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(inputs.source, key, f"cannot set a field inside {part!r}, which is not a mapping")
        node[parts[-1]] = copy.deepcopy(value)
    else:  # validated at load time
        raise ConfigError(inputs.source, key, "unknown variation")


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(source, "", "experiment file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    return parse_experiment(raw, path.parent, source, default_name=path.stem)


def parse_experiment(raw: Any, base_dir: Path | str = ".", source: str = "<experiment>",
                     default_name: str = "experiment") -> ExperimentSpec:
    """Validate an experiment mapping; relative paths resolve against ``base_dir``."""
    base_dir = Path(base_dir)
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "", "expected a mapping with keys trace, grid, seeds, ...")
    check_keys(raw, _TOP_KEYS, source)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(source, "name", f"expected a short name without '/', got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(source, "description", "expected text")

    if "trace" not in raw:
        raise ConfigError(source, "trace", "required: a trace YAML path or an inline trace mapping")
    trace_value = raw["trace"]
    if isinstance(trace_value, str):
        trace_path = base_dir / trace_value
        try:
            trace = yaml.safe_load(trace_path.read_text())
        except FileNotFoundError:
            raise ConfigError(source, "trace", f"file not found: {trace_path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(str(trace_path), "", f"invalid YAML: {exc}") from None
        if not isinstance(trace, Mapping):
            raise ConfigError(str(trace_path), "", "expected a trace mapping")
        trace_base = trace_path.parent
    elif isinstance(trace_value, Mapping):
        trace, trace_base = trace_value, base_dir
    else:
        raise ConfigError(source, "trace", f"expected a path or a mapping, got {trace_value!r}")

    requests = _parse_requests(raw.get("requests"), base_dir, source)
    grid = _parse_grid(raw.get("grid", {}), requests, source)
    cases = _parse_cases(raw.get("cases"), requests, source)
    seeds = _parse_seeds(raw.get("seeds", 1), source)
    spec = ExperimentSpec(name=name, source=source, base_dir=base_dir, trace=trace, trace_base_dir=trace_base,
                          requests=requests, grid=grid, cases=cases, seeds=seeds,
                          report=ReportOptions(), description=description,
                          trace_path=trace_value if isinstance(trace_value, str) else None)
    report = _parse_report(raw.get("report", {}), spec, source)
    return dataclasses.replace(spec, report=report)


def _check_variation_key(key: Any, requests: Mapping | None, source: str, where: str) -> None:
    if not isinstance(key, str):
        raise ConfigError(source, where, f"expected a variation name, got {key!r}")
    if key in VARIATIONS:
        return
    if key.startswith("requests."):
        if requests is None:
            raise ConfigError(source, f"{where}.{key}", "varies the request converter, but there is no 'requests:'")
        param = key.removeprefix("requests.")
        allowed = REQUEST_CONVERTERS[requests["converter"]]
        if param not in allowed:
            raise ConfigError(source, f"{where}.{key}",
                              f"not a parameter of converter {requests['converter']} ({', '.join(allowed)})")
        return
    if key.startswith("trace.") and len(key) > len("trace."):
        return
    import difflib

    close = difflib.get_close_matches(key, list(VARIATIONS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(source, f"{where}.{key}", f"unknown variation{hint} (known: {', '.join(VARIATIONS)}, "
                                                 "requests.<parameter>, trace.<path>)")


def _parse_grid(value: Any, requests: Mapping | None, source: str) -> tuple[tuple[str, tuple], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(source, "grid", "expected a mapping of variation -> list of values")
    out = []
    for key, values in value.items():
        _check_variation_key(key, requests, source, "grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(source, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise ConfigError(source, f"grid.{key}", "values repeat")
        out.append((key, tuple(values)))
    return tuple(out)


def _parse_cases(value: Any, requests: Mapping | None, source: str) -> tuple[tuple[str, Mapping], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(source, "cases", "expected a mapping of case name -> {variation: value}")
    out = []
    for name, overrides in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(source, "cases", f"expected case names as text, got {name!r}")
        overrides = overrides or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(source, f"cases.{name}", "expected a mapping of variation -> value")
        for key in overrides:
            _check_variation_key(key, requests, source, f"cases.{name}")
        out.append((name, dict(overrides)))
    return tuple(out)


def _parse_seeds(value: Any, source: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(source, "seeds", f"expected at least 1 seed, got {value}")
        return tuple(range(value))
    if (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in value) and len(set(value)) == len(value)):
        return tuple(value)
    raise ConfigError(source, "seeds", f"expected a count or a list of distinct non-negative integers, got {value!r}")


def _parse_requests(value: Any, base_dir: Path, source: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(source, "requests", "expected a mapping with a 'converter' key")
    conv = value.get("converter")
    if conv not in REQUEST_CONVERTERS:
        raise ConfigError(source, "requests.converter", f"expected one of {', '.join(REQUEST_CONVERTERS)}, got {conv!r}")
    check_keys(value, ("converter", *REQUEST_CONVERTERS[conv]), source, "requests.")
    out = dict(value)

    def resolve(p: Any, field_name: str) -> str:
        if not isinstance(p, str) or not p:
            raise ConfigError(source, field_name, f"expected a file path, got {p!r}")
        path = (base_dir / p).resolve()
        if not path.is_file():
            raise ConfigError(source, field_name, f"file not found: {base_dir / p} (the raw traces are described in "
                                                  "../shared/traces-real/README.md)")
        return str(path)

    if conv == "azure_functions":
        for key in ("invocations", "tokens"):
            if key not in out:
                raise ConfigError(source, f"requests.{key}", "required")
        out["invocations"] = resolve(out["invocations"], "requests.invocations")
        tokens = out["tokens"] if isinstance(out["tokens"], list) else [out["tokens"]]
        out["tokens"] = [resolve(p, f"requests.tokens[{i}]") for i, p in enumerate(tokens)]
    else:
        sources = out.get("sources")
        if not isinstance(sources, Mapping) or not sources:
            raise ConfigError(source, "requests.sources", "expected a mapping {model: Azure LLM CSV path}")
        out["sources"] = {m: resolve(p, f"requests.sources.{m}") for m, p in sources.items()}
    return out


def _parse_report(value: Any, spec: ExperimentSpec, source: str) -> ReportOptions:
    if not isinstance(value, Mapping):
        raise ConfigError(source, "report", "expected a mapping")
    check_keys(value, _REPORT_KEYS, source, "report.")
    keys = spec.config_keys
    grid_keys = [k for k, _ in spec.grid]

    def pick(name: str, defaults: tuple[str, ...]) -> str | None:
        if name in value:
            if value[name] is not None and value[name] not in keys:
                raise ConfigError(source, f"report.{name}", f"{value[name]!r} is not varied (varied: {', '.join(keys)})")
            return value[name]
        return next((k for k in defaults if k in keys), None)

    def varied_values_section(name: str, shape: str, allowed: tuple[str, ...],
                              value_fields: tuple[str, ...]) -> Mapping:
        """A report section naming a varied ``key`` and, in ``value_fields``, values that key takes."""
        c = value[name]
        if not isinstance(c, Mapping):
            raise ConfigError(source, f"report.{name}", f"expected {shape}")
        check_keys(c, allowed, source, f"report.{name}.")
        if c.get("key") not in keys:
            raise ConfigError(source, f"report.{name}.key", f"expected a varied key ({', '.join(keys)})")
        values = dict(spec.grid).get(c["key"]) or tuple(n for n, _ in spec.cases)
        for part in value_fields:
            if c.get(part) not in values:
                raise ConfigError(source, f"report.{name}.{part}", f"expected one of {list(values)}")
        return c

    policy_key = pick("policy_key", ("scheduler", "case"))
    rate_key = pick("rate_key", ("rate_scale", "requests.target_rps", "requests.time_scale"))
    keep_alive_key = pick("keep_alive_key", ("keep_alive_s",))
    panel_key = pick("panel_key", ())
    tradeoff_metrics = value.get("tradeoff_metrics", ReportOptions.tradeoff_metrics)
    if (not isinstance(tradeoff_metrics, list | tuple) or not tradeoff_metrics
            or any(m not in SCALAR_KEYS for m in tradeoff_metrics)):
        raise ConfigError(source, "report.tradeoff_metrics",
                          f"expected a non-empty list of summary metrics (e.g. latency_p99_s), got {tradeoff_metrics!r}")
    reference = value.get("reference", {})
    if not isinstance(reference, Mapping):
        raise ConfigError(source, "report.reference", "expected a mapping {variation: value}")
    for key, ref in reference.items():
        if key not in grid_keys:
            raise ConfigError(source, f"report.reference.{key}", f"not a grid key (grid: {', '.join(grid_keys)})")
        if ref not in dict(spec.grid)[key]:
            raise ConfigError(source, f"report.reference.{key}", f"{ref!r} is not one of the grid's values")
    compare = None
    if "compare" in value:
        c = varied_values_section("compare", "{key, reference, metrics}", _COMPARE_KEYS, ("reference",))
        metrics = tuple(c.get("metrics", CompareOptions.metrics))
        compare = CompareOptions(key=c["key"], reference=c["reference"], metrics=metrics)
    migration_cost = None
    if "migration_cost" in value:
        c = varied_values_section("migration_cost", "{key, migrated, baseline}", _MIGRATION_COST_KEYS,
                                  ("migrated", "baseline"))
        migration_cost = MigrationCostOptions(key=c["key"], migrated=c["migrated"], baseline=c["baseline"])
    notes = value.get("notes", "")
    if not isinstance(notes, str):
        raise ConfigError(source, "report.notes", "expected markdown text")
    table_metrics = tuple(value.get("table_metrics", DEFAULT_TABLE_METRICS))
    return ReportOptions(policy_key=policy_key, rate_key=rate_key, keep_alive_key=keep_alive_key,
                         panel_key=panel_key, tradeoff_metrics=tuple(tradeoff_metrics),
                         reference=dict(reference), compare=compare,
                         migration_cost=migration_cost, notes=notes, table_metrics=table_metrics)


def _inline_trace(trace: Mapping, base_dir: Path, source: str) -> dict:
    """A deep copy of the trace mapping with its hardware and deploy-config files read in, so that
    variations can edit them; ``requests_csv`` becomes an absolute path."""
    out = copy.deepcopy(dict(trace))
    hw = out.get("hardware")
    if isinstance(hw, str):
        out["hardware"] = _read_json(base_dir / hw, source, "hardware")
    models = out.get("models")
    if isinstance(models, list):
        out["models"] = [_read_json(base_dir / m, source, f"models[{i}]") if isinstance(m, str) else m
                         for i, m in enumerate(models)]
    if isinstance(out.get("requests_csv"), str):
        out["requests_csv"] = str((base_dir / out["requests_csv"]).resolve())
    return out


def _read_json(path: Path, source: str, field_name: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(source, field_name, f"file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid JSON: {exc}") from None
