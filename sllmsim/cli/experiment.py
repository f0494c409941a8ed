"""``sllmsim experiment``: run every point of an experiment YAML and write its report folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("experiment_file", type=click.Path(path_type=Path))
@click.option("--jobs", "-j", type=int, default=None,
              help="local worker processes (default: the CPU count; 1 runs in this process)")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="run the points as Ray tasks on an existing cluster (e.g. auto or ray://head:10001); "
                   "needs the 'ray' extra")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="report folder (default: a folder named after the experiment file, beside it)")
@click.option("--no-cache", is_flag=True, help="re-run every point even when its cached result is current")
@click.option("--prune-cache", is_flag=True, help="delete cached results of points no longer in the experiment")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar or summary table")
def experiment(experiment_file: Path, jobs: int | None, ray_address: str | None, out: Path | None,
               no_cache: bool, prune_cache: bool, quiet: bool) -> None:
    """Run an experiment (a base trace × a grid of variations × seeds) and write its report.

    The report folder gets results.csv/.parquet (one row per run), summary.csv, report.md (means
    and 95% confidence intervals across seeds) and PNG plots. Each run's result is cached under
    <report folder>/cache/ by a hash of its resolved configuration and of the simulator's code, so
    re-running an unchanged experiment only redraws the report.
    """
    import time

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from sllmsim.errors import ConfigError, SllmsimError
    from sllmsim.experiments.experiment_report import REPORT_MD, fmt, write_report
    from sllmsim.experiments.runner import CACHE_DIR, prune_cache as prune, run_experiment
    from sllmsim.experiments.spec import load_experiment

    if jobs is not None and jobs < 1:
        raise ConfigError("--jobs", "", f"expected at least 1, got {jobs}")
    if ray_address is not None and jobs is not None:
        raise ConfigError("--jobs", "", "--jobs sets local processes; with --ray the cluster decides")
    spec = load_experiment(experiment_file)
    out_dir = out or experiment_file.with_suffix("")
    console = Console(quiet=quiet)
    started = time.perf_counter()
    run = run_experiment(spec, out_dir, jobs=jobs, ray_address=ray_address, use_cache=not no_cache,
                         progress=not quiet)
    sim_s = time.perf_counter() - started
    command = f"sllmsim experiment {experiment_file.as_posix()}"
    written = write_report(run, out_dir, command)
    if prune_cache:
        removed = prune(out_dir / CACHE_DIR, {o.key for o in run.outcomes})
        console.print(f"pruned {removed} stale cached results")
    console.print(f"{len(run.points)} runs: {run.ran} simulated, {len(run.points) - run.ran} from the cache; "
                  f"{sim_s:.1f} s (runs took {sum(run.wall_s):.1f} s of worker time)")

    table = Table(title=f"{spec.name}: means over {len(spec.seeds)} seeds")
    keys = spec.config_keys
    metrics = ("latency_mean_s", "latency_p99_s", "cold_start_ratio", "gpu_seconds")
    for col in (*keys, *metrics):
        table.add_column(col, justify="left" if col in keys else "right")
    summary = pd.read_csv(out_dir / "summary.csv", keep_default_na=False)
    for _, row in summary.iterrows():
        table.add_row(*[str(row[k]) for k in keys],
                      *[fmt(row[f"{m}_mean"] if row[f"{m}_mean"] != "" else None) for m in metrics])
    console.print(table)
    console.print(f"report: {out_dir / REPORT_MD} ({len(written)} files)")
    if run.violations:
        raise SllmsimError(f"{len(run.violations)} invariant violations (listed in {out_dir / REPORT_MD})")
