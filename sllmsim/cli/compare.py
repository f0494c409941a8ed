"""``sllmsim compare RUN_A RUN_B``: two run folders side by side, with overlaid plots."""

from __future__ import annotations

from pathlib import Path

import click


def _labels(run_a: Path, run_b: Path) -> tuple[str, str]:
    a, b = run_a.resolve().name, run_b.resolve().name
    return (f"A: {a}", f"B: {b}") if a == b else (a, b)


def _cell(value, unit: str) -> str:
    from sllmsim.output import format_value

    if value is None or value != value:  # None or NaN
        return "—"
    if unit == "count" and float(value).is_integer():
        return format_value(int(value))
    return format_value(float(value), unit)


def compare_runs(run_a: Path, run_b: Path, out_dir: Path, console=None) -> list[Path]:
    """Print the comparison table of two run folders and write its CSV and plots into ``out_dir``."""
    from rich.console import Console
    from rich.table import Table

    from sllmsim import metrics, run_plots

    run_a, run_b = metrics.check_run_folder(Path(run_a)), metrics.check_run_folder(Path(run_b))
    label_a, label_b = _labels(run_a, run_b)
    table = metrics.compare_summaries(metrics.read_summary(run_a), metrics.read_summary(run_b))

    console = console or Console()
    view = Table(title=f"{label_a} (A) vs {label_b} (B)", header_style="bold")
    view.add_column("metric", no_wrap=True)  # keys carry their unit (_s, ratio, count)
    for col in ("A", "B", "B − A", "B / A"):
        view.add_column(col, justify="right")
    for row in table.itertuples(index=False):
        diff = _cell(row.b_minus_a, row.unit)
        if diff != "—" and row.b_minus_a > 0:
            diff = "+" + diff
        ratio = "—" if row.b_over_a is None or row.b_over_a != row.b_over_a else f"×{row.b_over_a:.3f}"
        view.add_row(row.metric, _cell(row.a, row.unit), _cell(row.b, row.unit), diff, ratio)
    console.print(view)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "comparison.csv"
    table.rename(columns={"a": label_a, "b": label_b}).to_csv(csv_path, index=False, float_format="%.9g")
    frames = {label_a: metrics.read_run(run_a), label_b: metrics.read_run(run_b)}
    requests = {label: f.requests for label, f in frames.items()}
    figures = {
        run_plots.LATENCY_CDF_PNG: run_plots.plot_latency_cdf(requests, title=f"Request latency — {label_a} vs {label_b}"),
        run_plots.START_TIERS_PNG: run_plots.plot_start_tiers(requests),
        run_plots.TIMELINE_PNG: run_plots.plot_busy_gpus({label: f.timeseries for label, f in frames.items()}),
    }
    paths = [csv_path] + [run_plots.save_figure(fig, out_dir / name) for name, fig in figures.items()]
    console.print(f"wrote {', '.join(p.name for p in paths)} to {out_dir}")
    return paths


@click.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="folder for comparison.csv and the overlaid plots (default: runs/compare-A-vs-B)")
def compare(run_a: Path, run_b: Path, out_dir: Path | None) -> None:
    """Compare two run folders: a side-by-side table of their summaries (B − A and B / A) and overlaid
    latency CDF, start-tier and busy-GPU plots."""
    from sllmsim.output import RUNS_DIR

    if out_dir is None:
        out_dir = RUNS_DIR / f"compare-{run_a.resolve().name}-vs-{run_b.resolve().name}"
    compare_runs(run_a, run_b, out_dir)
