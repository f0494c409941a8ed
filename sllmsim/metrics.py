"""Metrics of a run: every metric is defined once here (key, unit, definition) and computed from the records.

The flow is records → DataFrames → summary. :func:`requests_frame`, :func:`phases_frame` and
:func:`timeseries_frame` turn the records of :mod:`sllmsim.records` into pandas DataFrames (one row per
record, the columns of the run folder's CSVs); :func:`read_run` loads the same frames back from a run
folder; :func:`summarize` reduces them to the ``summary.json`` dict, whose keys are exactly those of
:data:`METRICS` (a test holds the two together, and the README's metric table is generated from it).

Conventions:

* Percentiles use numpy's default ``linear`` method (Hyndman & Fan type 7): the p-th percentile of
  the sorted values ``x[0] ≤ … ≤ x[n-1]`` sits at position ``(n-1)·p/100``, interpolated linearly
  between its neighbours. For latencies 1, 2, 3, 4 s this gives p50 = 2.5 s, p90 = 3.7 s, p99 = 3.97 s.
* A metric that is undefined for a run (a percentile of no values, a ratio over zero requests,
  GPU-seconds of a run with no ``gpus_busy`` samples) is ``None`` (``null`` in JSON), never NaN.
* Everything is vectorised: a million-request run is summarised in about a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from sllmsim.errors import SllmsimError
from sllmsim.records import (
    Phase,
    PhaseRecord,
    RequestRecord,
    RunResult,
    TimeseriesRecord,
)

#: Tiers a request's instance can start from, fastest first. ``gpu`` means warm: the instance was
#: already loaded. The others name where the checkpoint was read from for a cold start.
START_TIERS = ("gpu", "host", "disk", "network")
COLD_TIERS = START_TIERS[1:]

#: Load phases, the tier their data comes from, and the short name used in metric keys.
LOAD_PHASES = {
    Phase.DOWNLOADING.value: "download",
    Phase.LOADING_TO_HOST.value: "to_host",
    Phase.LOADING_TO_GPU.value: "to_gpu",
}
_STARTUP_PHASES = (Phase.QUEUED.value, *LOAD_PHASES)

#: Files that make a folder a run folder (written by :func:`sllmsim.output.write_run_folder`).
REQUESTS_CSV = "requests.csv"
INSTANCES_CSV = "instances.csv"
TIMESERIES_CSV = "timeseries.csv"
SUMMARY_JSON = "summary.json"

_SUMMARY_DECIMALS = 9  # the precision of the CSVs' times


@dataclass(frozen=True)
class Metric:
    """One entry of ``summary.json``: its key, unit and the definition the code implements."""

    key: str
    unit: str
    definition: str
    per_model: bool = False
    """Also reported for each model under ``per_model``."""
    mapping: bool = False
    """A mapping (name → value) rather than a number."""


def _pct_metrics(stem: str, what: str, unit: str, pcts: tuple[int, ...], per_model: bool) -> list[Metric]:
    out = [Metric(f"{stem}_mean_{unit}", unit, f"mean of {what}", per_model)]
    out += [Metric(f"{stem}_p{p}_{unit}", unit, f"{p}th percentile of {what}", per_model) for p in pcts]
    return out


_LATENCY = "finish − arrival, over completed requests"
_TTFT = "first token − arrival, over completed requests"
_QUEUEING = ("queued until − arrival (time until an instance began serving it, cold-start wait included), "
             "over served requests")

#: Every metric of ``summary.json``, in the order the terminal and README tables show them.
METRICS: tuple[Metric, ...] = (
    Metric("requests", "count", "requests that arrived", per_model=True),
    Metric("completed", "count", "requests with status completed", per_model=True),
    Metric("failed", "count", "requests that did not complete (requests − completed)", per_model=True),
    Metric("failed_by_reason", "count", "failed requests per reason (an empty reason is 'unspecified')", mapping=True),
    Metric("warm_starts", "count", "served requests whose instance was already loaded on a GPU (tier gpu)"),
    Metric("cold_starts", "count", "requests that waited for an instance to load (cold_start = 1)", per_model=True),
    Metric("cold_starts_host", "count", "cold starts whose checkpoint came from host memory (tier host)"),
    Metric("cold_starts_disk", "count", "cold starts whose checkpoint came from local disk (tier disk)"),
    Metric("cold_starts_network", "count", "cold starts whose checkpoint came over the network (tier network)"),
    Metric("cold_start_ratio", "fraction", "cold_starts / requests", per_model=True),
    *_pct_metrics("latency", f"end-to-end latency: {_LATENCY}", "s", (50, 90, 99), per_model=True),
    *_pct_metrics("ttft", f"time to first token: {_TTFT}", "s", (50, 90, 99), per_model=True),
    *_pct_metrics("queueing_delay", f"queueing delay: {_QUEUEING}", "s", (50, 99), per_model=False),
    Metric("instances_started", "count", "distinct instance ids in instances.csv"),
    Metric("loads_host", "count", "instances loaded from host memory (a loading_to_gpu phase only)"),
    Metric("loads_disk", "count", "instances loaded from local disk (a loading_to_host phase, no download)"),
    Metric("loads_network", "count", "instances whose checkpoint was downloaded first (a downloading phase)"),
    Metric("startup_host_mean_s", "s",
           "mean instance start-up time of host loads: end of the last queued/loading phase − start of the first"),
    Metric("startup_disk_mean_s", "s", "mean instance start-up time of disk loads (as startup_host_mean_s)"),
    Metric("startup_network_mean_s", "s", "mean instance start-up time of network loads (as startup_host_mean_s)"),
    Metric("load_queue_mean_s", "s", "mean duration of queued phases (waiting for the node's loading queue or a GPU)"),
    Metric("load_download_mean_s", "s", "mean duration of downloading phases (network → local disk)"),
    Metric("load_to_host_mean_s", "s", "mean duration of loading_to_host phases (local disk → host memory)"),
    Metric("load_to_gpu_mean_s", "s", "mean duration of loading_to_gpu phases (host memory → GPU)"),
    Metric("duration_s", "s", "end of the run: the latest arrival, finish, phase end or time-series sample"),
    Metric("gpu_seconds", "GPU·s",
           "Σ over nodes of ∫ gpus_busy dt up to duration_s; gpus_busy is a step function that holds each "
           "sample's value until the node's next sample (0 before its first); GPUs held by an instance in any "
           "phase from load to release count as busy, whether or not they are computing"),
    Metric("mean_gpus_busy", "GPUs", "gpu_seconds / duration_s"),
    Metric("peak_gpus_busy", "GPUs", "maximum over time of the busy GPUs summed over nodes"),
    Metric("peak_instances", "count", "maximum over time of the instances (not yet released) summed over models"),
    Metric("migrations", "count", "running instances moved to another node by live migration (instances with a "
                                  "migrating phase)"),
    Metric("migrated_requests", "count", "requests that moved with a live migration (migrated = 1)"),
    Metric("migrated_latency_mean_s", "s", "mean end-to-end latency of the completed migrated requests"),
    Metric("migrated_latency_p99_s", "s", "99th percentile of end-to-end latency of the completed migrated requests"),
    Metric("preemptions", "count", "running instances stopped to free their GPUs (instances with a preempted phase)"),
    Metric("preempted_requests", "count", "times a request was stopped by a preemption and re-queued (last value of "
                                          "the preempted_requests time series, summed over models)"),
    Metric("preempted_tokens", "tokens", "prompt and generated tokens that preempted requests had computed and lost "
                                         "(last value of the preempted_tokens time series, summed over models)"),
    Metric("per_model", "—", "the metrics marked per-model, for each model", mapping=True),
)
METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
PER_MODEL_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS if m.per_model)
SCALAR_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS if not m.mapping)


class RunFrames(NamedTuple):
    """The three tables of a run; ``summarize(*frames)`` works."""

    requests: pd.DataFrame
    phases: pd.DataFrame
    timeseries: pd.DataFrame


# ---------------------------------------------------------------- frames

_REQUEST_DTYPES = {
    "request_id": "int64", "model": "str", "arrival_s": "float64", "input_tokens": "int64",
    "output_tokens": "int64", "status": "str", "reason": "str", "queued_until_s": "float64",
    "first_token_s": "float64", "finish_s": "float64", "latency_s": "float64", "ttft_s": "float64",
    "node": "str", "instance_id": "str", "cold_start": "bool", "tier": "str", "migrated": "bool",
}
_PHASE_DTYPES = {
    "instance_id": "str", "model": "str", "node": "str", "phase": "str", "start_s": "float64",
    "end_s": "float64", "tier": "str", "bytes": "int64",
}
_TIMESERIES_DTYPES = {"time_s": "float64", "metric": "str", "key": "str", "value": "float64"}


def _column(values: list, dtype: str):
    if dtype == "float64":
        return np.array(values, dtype=np.float64)  # None becomes NaN
    if dtype in ("int64", "bool"):
        return np.array(values, dtype=dtype)
    return pd.array(values, dtype="str")


def _frame(records: list, dtypes: dict[str, str], derived: dict | None = None) -> pd.DataFrame:
    data = {}
    for name, dtype in dtypes.items():
        if derived and name in derived:
            continue
        data[name] = _column([getattr(r, name) for r in records], dtype)
    for name, fn in (derived or {}).items():
        data[name] = fn(data)
    return pd.DataFrame({name: data[name] for name in dtypes})


def requests_frame(records: Iterable[RequestRecord]) -> pd.DataFrame:
    """One row per request with the columns of ``requests.csv``; missing times are NaN."""
    return _frame(list(records), _REQUEST_DTYPES, derived={
        "latency_s": lambda d: d["finish_s"] - d["arrival_s"],
        "ttft_s": lambda d: d["first_token_s"] - d["arrival_s"],
    })


def phases_frame(records: Iterable[PhaseRecord]) -> pd.DataFrame:
    """One row per instance phase with the columns of ``instances.csv``."""
    return _frame(list(records), _PHASE_DTYPES)


def timeseries_frame(records: Iterable[TimeseriesRecord]) -> pd.DataFrame:
    """One row per time-series sample with the columns of ``timeseries.csv``."""
    return _frame(list(records), _TIMESERIES_DTYPES)


def frames_from_result(result: RunResult) -> RunFrames:
    """The three frames of an in-memory run."""
    return RunFrames(requests_frame(result.requests), phases_frame(result.phases),
                     timeseries_frame(result.timeseries))


def _read_csv(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise SllmsimError(f"{path}: missing; expected a run folder written by `sllmsim run`")
    floats = [c for c, t in dtypes.items() if t == "float64"]
    read_as = {c: ("int64" if t == "bool" else t) for c, t in dtypes.items()}
    try:
        # Empty strings are missing values only in float columns; elsewhere "" is a real value
        # (no reason, no node yet) and a node named "NA" must stay a string.
        df = pd.read_csv(path, dtype=read_as, keep_default_na=False, na_values={c: [""] for c in floats})
    except (ValueError, pd.errors.ParserError) as exc:
        raise SllmsimError(f"{path}: not a valid run-folder CSV: {exc}") from None
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise SllmsimError(f"{path}: missing columns {', '.join(missing)}; expected {', '.join(dtypes)}")
    return df[list(dtypes)].astype(dtypes)


def is_run_folder(path: Path) -> bool:
    """True when ``path`` holds the requests CSV and summary of a run."""
    path = Path(path)
    return (path / REQUESTS_CSV).is_file() and (path / SUMMARY_JSON).is_file()


def check_run_folder(path: Path) -> Path:
    """Return ``path`` if it is a run folder, or raise an error saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise SllmsimError(f"{path}: no such folder; expected a run folder written by `sllmsim run`")
    missing = [n for n in (REQUESTS_CSV, SUMMARY_JSON) if not (path / n).is_file()]
    if missing:
        raise SllmsimError(f"{path}: not a run folder (no {' or '.join(missing)}); "
                           "expected a folder written by `sllmsim run`")
    return path


def read_run(run_dir: Path) -> RunFrames:
    """Load the frames of a run folder from its CSVs (instances/timeseries may be absent: empty frames)."""
    run_dir = Path(run_dir)
    requests = _read_csv(run_dir / REQUESTS_CSV, _REQUEST_DTYPES)
    phases = (_read_csv(run_dir / INSTANCES_CSV, _PHASE_DTYPES) if (run_dir / INSTANCES_CSV).is_file()
              else phases_frame([]))
    timeseries = (_read_csv(run_dir / TIMESERIES_CSV, _TIMESERIES_DTYPES) if (run_dir / TIMESERIES_CSV).is_file()
                  else timeseries_frame([]))
    return RunFrames(requests, phases, timeseries)


def read_summary(run_dir: Path) -> dict:
    """The ``summary.json`` of a run folder."""
    path = check_run_folder(Path(run_dir)) / SUMMARY_JSON
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SllmsimError(f"{path}: not valid JSON: {exc}") from None


# ---------------------------------------------------------------- time series helpers

def step_total(timeseries: pd.DataFrame, metric: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """The sum over keys of a step-function metric, as a step function: columns ``time_s``, ``value``.

    Each key's value holds from its sample until that key's next sample; the total changes only at
    sample times. Computed from per-key differences and one cumulative sum, so it costs O(n log n)
    however many keys there are. Samples at the same time keep their written order; the last wins.
    """
    df = timeseries[timeseries["metric"] == metric]
    if keys is not None:
        df = df[df["key"].isin(list(keys))]
    if df.empty:
        return pd.DataFrame({"time_s": np.array([], dtype=float), "value": np.array([], dtype=float)})
    df = df.sort_values("time_s", kind="stable")
    delta = df["value"] - df.groupby("key", sort=False)["value"].shift(1, fill_value=0.0)
    times, total = df["time_s"].to_numpy(), delta.cumsum().to_numpy()
    last_at_time = np.append(times[1:] != times[:-1], True)  # times are sorted: keep each run's last row
    return pd.DataFrame({"time_s": times[last_at_time], "value": total[last_at_time]})


def step_integral(timeseries: pd.DataFrame, metric: str, end_s: float) -> pd.Series:
    """∫ value dt per key of a step-function metric, from each key's first sample to ``end_s``."""
    df = timeseries[timeseries["metric"] == metric].sort_values("time_s", kind="stable")
    nxt = df.groupby("key", sort=False)["time_s"].shift(-1).fillna(end_s)
    width = (nxt - df["time_s"]).clip(lower=0.0)
    return (df["value"] * width).groupby(df["key"], sort=True).sum()


def step_bin_means(series: pd.DataFrame, end_s: float, bins: int,
                   start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Time-weighted means of a step function (``time_s``, ``value``, as from :func:`step_total`) over
    ``bins`` equal bins from ``start_s`` to ``end_s``: returns ``(edges, means)``.

    Exact, not sampled: the integral of a step function is piecewise linear between samples, so
    interpolating it at the bin edges gives each bin's area. Before the first sample the value is 0.
    Used to draw series with millions of changes at the resolution a figure can show.
    """
    times = series["time_s"].to_numpy(dtype=float)
    values = series["value"].to_numpy(dtype=float)
    knots = np.append(times, max(end_s, times[-1] if len(times) else end_s))
    area = np.concatenate([[0.0], np.cumsum(values * np.diff(knots))])
    edges = np.linspace(start_s, end_s, bins + 1)
    means = np.diff(np.interp(edges, knots, area)) / np.diff(edges)
    return edges, means


# ---------------------------------------------------------------- summary

def _num(value) -> float | int | None:
    """A JSON-safe number: None for NaN/None, rounded floats, plain ints."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if not np.isfinite(value):
        return None
    return round(value, _SUMMARY_DECIMALS)


def _ratio(num: float, den: float) -> float | None:
    return None if not den else _num(num / den)


def _stats(values: np.ndarray, stem: str, pcts: tuple[int, ...]) -> dict:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {f"{stem}_mean_s": None, **{f"{stem}_p{p}_s": None for p in pcts}}
    qs = np.percentile(arr, pcts)  # numpy's default 'linear' method: see the module docstring
    return {f"{stem}_mean_s": _num(arr.mean()), **{f"{stem}_p{p}_s": _num(q) for p, q in zip(pcts, qs)}}


def start_tier_counts(requests: pd.DataFrame) -> dict[str, int]:
    """Requests per start tier: ``gpu`` = warm starts, ``host``/``disk``/``network`` = cold starts from there.

    A warm start is a served request (it has a ``queued_until_s``) that did not wait for a load.
    """
    cold = requests["cold_start"].to_numpy(dtype=bool)
    served = requests["queued_until_s"].notna().to_numpy()
    counts = {"gpu": int((served & ~cold).sum())}
    tiers = requests["tier"][cold].value_counts()
    counts.update({t: int(tiers.get(t, 0)) for t in COLD_TIERS})
    return counts


def _request_metrics(done: np.ndarray, cold: np.ndarray, latency_s: np.ndarray, ttft_s: np.ndarray) -> dict:
    """Counts and latency statistics of a set of requests, given as aligned arrays (so that the
    whole run and each model's slice go through the same code)."""
    n, completed, n_cold = len(done), int(done.sum()), int(cold.sum())
    out = {"requests": n, "completed": completed, "failed": n - completed, "cold_starts": n_cold,
           "cold_start_ratio": _ratio(n_cold, n)}
    out.update(_stats(latency_s[done], "latency", (50, 90, 99)))
    out.update(_stats(ttft_s[done], "ttft", (50, 90, 99)))
    return out


def _request_arrays(requests: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return ((requests["status"] == "completed").to_numpy(dtype=bool), requests["cold_start"].to_numpy(dtype=bool),
            requests["latency_s"].to_numpy(dtype=float), requests["ttft_s"].to_numpy(dtype=float))


def _per_model_metrics(requests: pd.DataFrame, arrays: tuple[np.ndarray, ...]) -> dict[str, dict]:
    # One factorize and one stable sort, then contiguous slices: cheaper than a string groupby
    # when a million requests spread over a hundred models.
    codes, models = pd.factorize(requests["model"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(models) + 1))
    sorted_arrays = [a[order] for a in arrays]
    out = {}
    for i, model in enumerate(models):
        part = [a[bounds[i]:bounds[i + 1]] for a in sorted_arrays]
        out[str(model)] = {k: v for k, v in _request_metrics(*part).items() if k in PER_MODEL_KEYS}
    return out


def _failed_by_reason(requests: pd.DataFrame) -> dict[str, int]:
    reasons = requests.loc[requests["status"] != "completed", "reason"]
    reasons = reasons.where(reasons != "", "unspecified")
    return {str(k): int(v) for k, v in sorted(reasons.value_counts().items())}


def _phase_metrics(phases: pd.DataFrame) -> dict:
    # Factorised codes instead of string comparisons and string groupbys: a million-request run has
    # millions of phase rows.
    inst, instances = pd.factorize(phases["instance_id"])
    kind, kinds = pd.factorize(phases["phase"])
    code = {name: i for i, name in enumerate(kinds)}
    start = phases["start_s"].to_numpy(dtype=float)
    end = phases["end_s"].to_numpy(dtype=float)
    dur = end - start

    def is_phase(name: str) -> np.ndarray:
        return kind == code.get(name, -2)

    def mean(values: np.ndarray):
        return _num(values.mean()) if values.size else None

    out = {"instances_started": len(instances), "load_queue_mean_s": mean(dur[is_phase(Phase.QUEUED.value)])}
    for key, phase in (("migrations", Phase.MIGRATING.value), ("preemptions", Phase.PREEMPTED.value)):
        out[key] = int(np.unique(inst[is_phase(phase)]).size)
    for phase, short in LOAD_PHASES.items():
        out[f"load_{short}_mean_s"] = mean(dur[is_phase(phase)])

    startup = np.isin(kind, [code[p] for p in _STARTUP_PHASES if p in code])
    first = pd.Series(start[startup]).groupby(inst[startup]).min()
    last = pd.Series(end[startup]).groupby(inst[startup]).max()
    length = (last - first).to_numpy()
    has = first.index.to_numpy()
    # Where the checkpoint came from follows from which load phases the instance went through.
    went = {}
    for phase in LOAD_PHASES:
        flag = np.zeros(len(instances), dtype=bool)
        flag[inst[is_phase(phase)]] = True
        went[phase] = flag[has]
    source = np.select([went[Phase.DOWNLOADING.value], went[Phase.LOADING_TO_HOST.value],
                        went[Phase.LOADING_TO_GPU.value]], ["network", "disk", "host"], "")
    for tier in COLD_TIERS:
        mask = source == tier
        out[f"loads_{tier}"] = int(mask.sum())
        out[f"startup_{tier}_mean_s"] = mean(length[mask])
    return out


def run_end_s(requests: pd.DataFrame, phases: pd.DataFrame, timeseries: pd.DataFrame) -> float | None:
    """The end of a run: its latest arrival, finish, phase end or sample (None for an empty run)."""
    candidates = [requests["arrival_s"].max(), requests["finish_s"].max(), phases["end_s"].max(),
                  timeseries["time_s"].max()]
    candidates = [float(c) for c in candidates if pd.notna(c)]
    return max(candidates) if candidates else None


def _timeseries_metrics(timeseries: pd.DataFrame, end_s: float | None) -> dict:
    busy = timeseries[timeseries["metric"] == "gpus_busy"]
    if busy.empty or end_s is None:
        gpu_s = None
        peak_busy = None
    else:
        gpu_s = float(step_integral(busy, "gpus_busy", end_s).sum())
        peak_busy = float(step_total(busy, "gpus_busy")["value"].max())
    inst = step_total(timeseries, "instances")
    out = {
        "gpu_seconds": _num(gpu_s),
        "mean_gpus_busy": _ratio(gpu_s, end_s) if gpu_s is not None else None,
        "peak_gpus_busy": _num(peak_busy),
        "peak_instances": _num(inst["value"].max()) if len(inst) else None,
    }
    for metric in ("preempted_requests", "preempted_tokens"):  # running totals per model
        rows = timeseries[timeseries["metric"] == metric]
        out[metric] = int(rows.groupby("key", sort=False)["value"].last().sum()) if len(rows) else 0
    return out


def summarize(requests: pd.DataFrame, phases: pd.DataFrame | None = None,
              timeseries: pd.DataFrame | None = None) -> dict:
    """The summary of a run: a dict whose keys are exactly :data:`METRICS`' keys (see there for definitions).

    ``phases`` and ``timeseries`` may be omitted; the metrics that need them are then ``None``.
    """
    phases = phases_frame([]) if phases is None else phases
    timeseries = timeseries_frame([]) if timeseries is None else timeseries
    arrays = _request_arrays(requests)
    out = _request_metrics(*arrays)
    out["failed_by_reason"] = _failed_by_reason(requests)
    tiers = start_tier_counts(requests)
    out["warm_starts"] = tiers["gpu"]
    out.update({f"cold_starts_{t}": tiers[t] for t in COLD_TIERS})
    delay = (requests["queued_until_s"] - requests["arrival_s"]).to_numpy(dtype=float)  # NaN if never served
    out.update(_stats(delay, "queueing_delay", (50, 99)))
    migrated = requests["migrated"].to_numpy(dtype=bool)
    out["migrated_requests"] = int(migrated.sum())
    moved = _stats(arrays[2][arrays[0] & migrated], "latency", (99,))
    out["migrated_latency_mean_s"], out["migrated_latency_p99_s"] = moved["latency_mean_s"], moved["latency_p99_s"]
    out.update(_phase_metrics(phases))
    end_s = run_end_s(requests, phases, timeseries)
    out["duration_s"] = _num(end_s)
    out.update(_timeseries_metrics(timeseries, end_s))
    out["per_model"] = _per_model_metrics(requests, arrays)
    return {m.key: out[m.key] for m in METRICS}


def summarize_result(result: RunResult) -> dict:
    """:func:`summarize` of an in-memory run."""
    return summarize(*frames_from_result(result))


def scalar_metrics(summary: dict) -> dict:
    """Only the numeric top-level metrics of a summary (one row of a results table)."""
    return {k: summary.get(k) for k in SCALAR_KEYS}


def metrics_markdown_table() -> str:
    """The README's table of metrics, generated from :data:`METRICS`."""
    lines = ["| key | unit | definition | per model |", "|---|---|---|---|"]
    for m in METRICS:
        lines.append(f"| `{m.key}` | {m.unit} | {m.definition} | {'yes' if m.per_model else ''} |")
    return "\n".join(lines)


def compare_summaries(a: dict, b: dict) -> pd.DataFrame:
    """Scalar metrics of two summaries side by side: columns ``metric, unit, a, b, b_minus_a, b_over_a``.

    A difference or ratio is missing (NaN) where either value is missing, and the ratio where ``a`` is 0.
    """
    rows = []
    for key in SCALAR_KEYS:
        va, vb = a.get(key), b.get(key)
        diff = vb - va if va is not None and vb is not None else None
        ratio = vb / va if diff is not None and va != 0 else None
        rows.append({"metric": key, "unit": METRIC_BY_KEY[key].unit, "a": va, "b": vb,
                     "b_minus_a": diff, "b_over_a": ratio})
    return pd.DataFrame(rows, columns=["metric", "unit", "a", "b", "b_minus_a", "b_over_a"])


if __name__ == "__main__":  # `python -m sllmsim.metrics` prints the README's metric table
    print(metrics_markdown_table())
