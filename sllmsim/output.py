"""The run folder: what a run (simulated or live) leaves on disk, and its terminal summary.

A run folder holds ``requests.csv``, ``instances.csv`` and ``timeseries.csv`` (written by the
:mod:`sllmsim.records` writers, byte-identical for the same seed and inputs), ``summary.json`` (the
metrics of :data:`sllmsim.metrics.METRICS`, sorted keys, no wall-clock values), ``resolved_config.yaml``
(the inputs as the run saw them), ``scheduler.log`` (the scheduler's log lines) and the PNG plots of
:func:`sllmsim.run_plots.plot_run`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePath

import yaml

from sllmsim.metrics import (
    INSTANCES_CSV,
    REQUESTS_CSV,
    SUMMARY_JSON,
    TIMESERIES_CSV,
    read_run,
    summarize,
)
from sllmsim.records import RunResult, write_phases_csv, write_requests_csv, write_timeseries_csv

RESOLVED_CONFIG_YAML = "resolved_config.yaml"
SCHEDULER_LOG = "scheduler.log"
RUNS_DIR = Path("runs")


def default_run_dir(trace_name: str, runs_dir: Path = RUNS_DIR, now: datetime | None = None) -> Path:
    """``runs/<trace_name>-<YYYYmmdd-HHMMSS>/``, with ``-2``, ``-3``… appended if that folder exists.

    Only names the folder; :func:`write_run_folder` creates it.
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trace_name) or "run"
    path = Path(runs_dir) / f"{safe}-{stamp}"
    n = 2
    while path.exists():
        path = Path(runs_dir) / f"{safe}-{stamp}-{n}"
        n += 1
    return path


def plain_data(value):
    """``value`` as YAML/JSON-safe plain data: dataclasses, enums, paths, tuples and sets converted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return plain_data(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain_data(v) for v in value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def write_summary(path: Path, summary: dict) -> Path:
    """Write a summary as JSON with sorted keys (stable diffs, byte-identical for equal summaries)."""
    path.write_text(json.dumps(summary, sort_keys=True, indent=2, allow_nan=False) + "\n")
    return path


def write_run_folder(out_dir: Path, result: RunResult, plots: bool = True,
                     before_plots: Callable[[dict], None] | None = None) -> Path:
    """Write ``result`` as a run folder at ``out_dir`` (created if needed) and return the folder.

    ``plots=False`` skips the PNGs (matplotlib rendering is the slowest step on tiny runs).
    ``before_plots`` is called with the summary once summary.json is written and before the plots
    are drawn (the CLI prints the summary then, so the user need not wait for matplotlib).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_requests_csv(out_dir / REQUESTS_CSV, result.requests)
    write_phases_csv(out_dir / INSTANCES_CSV, result.phases)
    write_timeseries_csv(out_dir / TIMESERIES_CSV, result.timeseries)
    config = {"name": result.name, "mode": result.mode, **plain_data(result.resolved_config)}
    (out_dir / RESOLVED_CONFIG_YAML).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (out_dir / SCHEDULER_LOG).write_text("".join(f"{line}\n" for line in result.scheduler_log))
    # Summarise what was written, not the in-memory floats: summary.json then equals what anyone
    # recomputes from the folder, and parsing the CSVs in C is faster than walking the records.
    frames = read_run(out_dir)
    summary = summarize(*frames)
    write_summary(out_dir / SUMMARY_JSON, summary)
    if before_plots is not None:
        before_plots(summary)
    if plots:
        from sllmsim.run_plots import plot_run  # matplotlib costs ~0.5 s to import; only pay when plotting

        plot_run(frames, out_dir, label=result.name)
    return out_dir


def format_value(value, unit: str = "") -> str:
    """A metric value for a table: — for missing, thousands separators, fractions as percentages."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if unit == "fraction":
        return f"{value:.1%}"
    return f"{value:,.3f}"


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The (label, value) rows of the terminal summary, for :func:`print_summary` and tests."""
    s = summary.get
    failed = f"{format_value(s('failed'))}"
    reasons = s("failed_by_reason") or {}
    if reasons:
        failed += " (" + ", ".join(f"{k}: {v:,}" for k, v in reasons.items()) + ")"
    rows = [
        ("requests", format_value(s("requests"))),
        ("completed", format_value(s("completed"))),
        ("failed", failed),
        ("cold starts",
         f"{format_value(s('cold_starts'))} ({format_value(s('cold_start_ratio'), 'fraction')} of requests)"),
        ("  warm (already on GPU)", format_value(s("warm_starts"))),
        ("  from host memory", format_value(s("cold_starts_host"))),
        ("  from local disk", format_value(s("cold_starts_disk"))),
        ("  over the network", format_value(s("cold_starts_network"))),
        ("latency p50 / p90 / p99 (s)",
         " / ".join(format_value(s(f"latency_p{p}_s")) for p in (50, 90, 99))),
        ("TTFT p50 / p99 (s)", " / ".join(format_value(s(f"ttft_p{p}_s")) for p in (50, 99))),
        ("queueing delay mean / p99 (s)",
         f"{format_value(s('queueing_delay_mean_s'))} / {format_value(s('queueing_delay_p99_s'))}"),
    ]
    # Making room (live migration, preemption) only shows when it happened.
    if s("migrations"):
        rows.append(("live migrations",
                     f"{format_value(s('migrations'))} ({format_value(s('migrated_requests'))} requests moved)"))
        rows.append(("  migrated requests' latency mean / p99 (s)",
                     f"{format_value(s('migrated_latency_mean_s'))} / {format_value(s('migrated_latency_p99_s'))}"))
    if s("preemptions"):
        rows.append(("preemptions",
                     f"{format_value(s('preemptions'))} ({format_value(s('preempted_requests'))} requests stopped and "
                     f"re-queued, {format_value(s('preempted_tokens'))} computed tokens lost)"))
    rows += [
        ("GPU-seconds", format_value(s("gpu_seconds"))),
        ("run duration (s)", format_value(s("duration_s"))),
    ]
    return rows


def print_summary(summary: dict, console=None, title: str = "Run summary") -> None:
    """Print the headline metrics of a summary as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(summary):
        table.add_row(label, value)
    console.print(table)
