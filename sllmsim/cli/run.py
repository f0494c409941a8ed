"""``sllmsim run TRACE.yaml``: simulate a trace, print its scheduler log and summary, write a run folder."""

from __future__ import annotations

import dataclasses
import gc
import logging
from pathlib import Path

import click

#: Runs with at least this many requests get a progress bar (shorter ones finish in about a second).
PROGRESS_MIN_REQUESTS = 20_000


class _ConsoleLog(logging.Handler):
    """Prints the first ``limit`` scheduler log lines with their simulated time."""

    def __init__(self, console, limit: int):
        super().__init__(logging.INFO)
        self.console = console
        self.limit = limit
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        if self.seen <= self.limit:
            t = getattr(record, "sim_time_s", None)
            stamp = f"[t={t:.6f}s] " if t is not None else ""
            # markup/highlight off: the option lists look like rich markup ("[('0', ...)]").
            self.console.print(f"INFO {stamp}{record.getMessage()}", markup=False, highlight=False,
                               soft_wrap=True)


@click.command("run")
@click.argument("trace_path", metavar="TRACE.yaml", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Run folder to write (default: runs/<trace name>-<timestamp>/).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed overriding the trace's `seed:` (it drives generated workloads and random placement).")
@click.option("--scheduler", "placement", default=None, metavar="NAME",
              help="Placement policy overriding the trace's `scheduler:` (storage_aware, serverlessllm, first_fit, "
                   "random, round_robin, ... or module:Class).")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only the run folder's path: no scheduler log, progress bar or summary.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (the CSVs and summary.json are still written).")
@click.option("--log-lines", type=click.IntRange(min=0), default=40, show_default=True,
              help="Scheduler log lines printed; all of them (up to the trace's "
                   "simulation.scheduler_log_limit) are in the run folder's scheduler.log.")
def run(trace_path: Path, out_dir: Path | None, seed: int | None, placement: str | None, quiet: bool,
        no_plots: bool, log_lines: int) -> None:
    """Simulate TRACE.yaml and write its run folder.

    The trace names the hardware JSON, the deploy configs, the scheduler, where checkpoints start,
    and the requests (explicit, a CSV, or generated workloads); see traces/README.md (the format).
    The run folder holds requests.csv, instances.csv, timeseries.csv, summary.json,
    resolved_config.yaml, scheduler.log and PNG plots.
    """
    from rich.console import Console

    from sllmsim.config.trace import load_trace
    from sllmsim.core.placement import logger as scheduler_logger
    from sllmsim.core.registry import resolve
    from sllmsim.errors import ConfigError, SllmsimError
    from sllmsim.output import default_run_dir, print_summary, write_run_folder
    from sllmsim.sim import simulate

    trace = load_trace(trace_path)
    if seed is not None:
        trace = dataclasses.replace(trace, seed=seed)
    if placement is not None:
        try:
            resolve("placement", placement)
        except SllmsimError as exc:
            raise ConfigError("--scheduler", "", str(exc)) from None
        trace = dataclasses.replace(trace, scheduler=dataclasses.replace(trace.scheduler, placement=placement))

    console = Console()
    handler = None
    if not quiet and log_lines:
        handler = _ConsoleLog(console, log_lines)
        scheduler_logger.addHandler(handler)
    try:
        if not quiet and len(trace.requests) >= PROGRESS_MIN_REQUESTS:
            result = _simulate_with_progress(trace, console, simulate)
        else:
            result = simulate(trace)
    finally:
        if handler is not None:
            scheduler_logger.removeHandler(handler)

    # The run's millions of records live until the process ends: move them out of the cyclic
    # garbage collector's generations, so the allocations of writing them trigger no full rescans.
    gc.freeze()
    out_dir = out_dir or default_run_dir(trace.name)

    def show_summary(summary: dict) -> None:
        if handler is not None and handler.seen > log_lines:
            kept = trace.simulation.scheduler_log_limit
            capped = f" (the first {kept:,}: simulation.scheduler_log_limit)" if handler.seen >= kept else ""
            console.print(f"... {handler.seen - log_lines:,} more scheduler log lines in "
                          f"{out_dir / 'scheduler.log'}{capped}", markup=False, highlight=False)
        # The summary just written to summary.json: the terminal and the file always agree.
        print_summary(summary, console, title=f"{trace.name} ({trace.scheduler.placement})")
        console.print(f"run folder: {out_dir}", markup=False, highlight=False)

    write_run_folder(out_dir, result, plots=not no_plots, before_plots=None if quiet else show_summary)
    if quiet:
        click.echo(str(out_dir))


def _simulate_with_progress(trace, console, simulate):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("simulate", total=len(trace.requests))
        return simulate(trace, progress=lambda done, total: bar.update(task, completed=done))
