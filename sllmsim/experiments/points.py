"""Running one experiment point: build its trace, simulate it, summarise it and check its invariants.

:func:`run_point` is what a worker process (or a Ray task) executes. It takes plain, picklable data
and returns plain data, so the same function serves local processes and remote Ray workers, which
need not share a filesystem with the driver (the driver writes the cache).

:func:`point_key` is the cache key: a sha256 over the point's fully resolved inputs (the trace
mapping with its hardware and deploy-config files read in, the request converter's parameters with
every input file replaced by its sha256, the seed) and over the source of the code that turns those
inputs into results (simulator, scheduler core, config, metrics), so editing the simulator never
reuses a stale result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from sllmsim.experiments.spec import PointInputs

#: Bump when the cached files change meaning.
CACHE_FORMAT = 1
#: Request columns kept per point for the report's plots (CDFs, start tiers) and its per-request
#: pairing of runs (request ids follow arrival order, so the same seed gives the same ids).
KEPT_REQUEST_COLUMNS = ["request_id", "model", "arrival_s", "status", "latency_s", "ttft_s", "queued_until_s",
                        "cold_start", "tier", "migrated"]
#: Time-series metrics kept per point for the instances / busy-GPU plot.
KEPT_TIMESERIES_METRICS = ("instances", "gpus_busy")

_PACKAGE = Path(__file__).resolve().parent.parent
#: Parts of the package that do not change a point's result (presentation, CLI, tooling).
_NOT_RESULT_CODE = ("cli/", "tools/", "bench/", "run_plots.py", "output.py", "experiments/runner.py",
                    "experiments/experiment_report.py", "experiments/plots.py", "experiments/stats.py")


@dataclass
class PointTask:
    """Everything a worker needs to run one point (picklable, no open files)."""

    index: int
    label: str
    seed: int
    inputs: PointInputs
    base_dir: str
    """Where the base trace's relative paths resolve."""
    key: str


@dataclass
class PointOutcome:
    """What one point produced: its summary, invariant violations and the frames the plots need."""

    index: int
    key: str
    summary: dict
    violations: list[str]
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    wall_s: float
    meta: dict = field(default_factory=dict)


def build_trace(inputs: PointInputs, base_dir: str | Path, draw: bool = True):
    """The validated :class:`~sllmsim.config.trace.TraceConfig` of a point.

    ``draw=False`` validates the trace without running the request converter (a quick check).
    """
    from sllmsim.config.trace import check_trace, parse_trace
    from sllmsim.traces.request_arrays import RequestArrays

    raw = dict(inputs.trace)
    if inputs.requests is not None:
        for key in ("requests", "requests_csv", "workloads"):
            raw.pop(key, None)
    trace = parse_trace(raw, Path(base_dir), inputs.source)
    explicit = trace.explicit_requests
    if inputs.requests is not None and draw:
        df = draw_requests(inputs.requests, [m.model for m in trace.models])
        explicit = RequestArrays.from_frame(df)
    if inputs.time_scale != 1.0:
        explicit = dataclasses.replace(explicit, time_s=explicit.time_s / inputs.time_scale)
    if explicit is not trace.explicit_requests:
        trace = dataclasses.replace(trace, explicit_requests=explicit)
        check_trace(trace)
    return trace


def draw_requests(conv: dict, model_names: list[str]) -> pd.DataFrame:
    """The request stream of a point from its converter parameters (see ``REQUEST_CONVERTERS``).

    ``azure_functions`` maps the most popular functions onto the trace's models in their listed
    order unless the converter names ``models`` itself.
    """
    params = {k: v for k, v in conv.items() if k not in ("converter", "seed")}
    if conv["converter"] == "azure_functions":
        from sllmsim.traces.azure_functions import convert_azure_functions

        models = params.pop("models", None) or model_names
        return convert_azure_functions(params.pop("invocations"), params.pop("tokens"), models,
                                       seed=conv["seed"], **params).requests
    from sllmsim.traces.azure_llm import convert_azure_llm

    sources = [(path, model) for model, path in params.pop("sources").items()]
    return convert_azure_llm(sources, **params).requests


def run_point(task: PointTask) -> PointOutcome:
    """Simulate one point and check the invariants of its run."""
    from sllmsim.invariants import check_invariants
    from sllmsim.metrics import frames_from_result, summarize
    from sllmsim.sim import simulate

    started = time.perf_counter()
    trace = build_trace(task.inputs, task.base_dir)
    result = simulate(trace)
    frames = frames_from_result(result)
    summary = summarize(*frames)
    violations = [str(v) for v in check_invariants(trace, frames)]
    requests = frames.requests[KEPT_REQUEST_COLUMNS].reset_index(drop=True)
    ts = frames.timeseries
    timeseries = ts[ts["metric"].isin(KEPT_TIMESERIES_METRICS)].reset_index(drop=True)
    return PointOutcome(index=task.index, key=task.key, summary=summary, violations=violations,
                        requests=requests, timeseries=timeseries, wall_s=time.perf_counter() - started,
                        meta={"label": task.label, "seed": task.seed, "requests": len(trace.requests)})


# --------------------------------------------------------------------------- cache key


@lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    from sllmsim.traces.canonical import file_sha256

    return file_sha256(path)


def file_digest(path: str | Path) -> str:
    """sha256 of a file, memoised on (path, mtime, size) so a sweep hashes each input file once."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the source files that determine a point's result (see :data:`_NOT_RESULT_CODE`)."""
    digest = hashlib.sha256()
    files = sorted(p for p in _PACKAGE.rglob("*") if p.suffix in (".py", ".json") and p.is_file())
    for path in files:
        rel = path.relative_to(_PACKAGE).as_posix()
        if "__pycache__" in rel or any(rel == x or rel.startswith(x) for x in _NOT_RESULT_CODE):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def resolved_inputs(inputs: PointInputs) -> dict:
    """The point's inputs as plain data with every referenced file replaced by its sha256."""
    trace = dict(inputs.trace)
    if isinstance(trace.get("requests_csv"), str):
        trace["requests_csv"] = {"sha256": file_digest(trace["requests_csv"])}
    conv = None
    if inputs.requests is not None:
        conv = dict(inputs.requests)
        if "invocations" in conv:
            conv["invocations"] = {"sha256": file_digest(conv["invocations"])}
        if "tokens" in conv:
            conv["tokens"] = [{"sha256": file_digest(p)} for p in conv["tokens"]]
        if "sources" in conv:
            conv["sources"] = {m: {"sha256": file_digest(p)} for m, p in conv["sources"].items()}
    return {"trace": trace, "requests": conv, "time_scale": inputs.time_scale}


def point_key(inputs: PointInputs) -> str:
    """The cache key of a point (hex sha256)."""
    payload = {"format": CACHE_FORMAT, "code": code_fingerprint(), "inputs": resolved_inputs(inputs)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
