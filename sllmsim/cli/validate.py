"""``sllmsim validate TRACE --hardware HW``: run a trace live and simulated, and report how far apart they are.

Live mode (torch, FastAPI) is imported only when the live run starts.
"""

from __future__ import annotations

import json
import shlex
import shutil
from datetime import datetime
from pathlib import Path

import click

from sllmsim.errors import ConfigError


def _read_sidecar(hardware: Path) -> dict:
    from sllmsim.cli.calibrate import sidecar_path

    path = sidecar_path(hardware)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read the calibration details: {exc}") from None


def _default_out(trace_name: str) -> Path:
    return Path("runs") / f"validate-{trace_name}-{datetime.now():%Y%m%d-%H%M%S}"


def print_headline(summary: dict, console=None) -> None:
    """The targets and headline errors as a rich table."""
    from rich.console import Console
    from rich.table import Table

    def pct(v) -> str:
        return "—" if v is None else f"{v:.1%}"

    console = console or Console()
    table = Table(title="Live vs simulated", header_style="bold")
    for col in ("quantity", "median APE", "p99 APE"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    table.add_row("cold-start load time", pct(summary.get("cold_start_load_median_ape")),
                  pct(summary.get("cold_start_load_p99_ape")))
    table.add_row("time to first token", pct(summary.get("ttft_median_ape")), pct(summary.get("ttft_p99_ape")))
    table.add_row("end-to-end latency", pct(summary.get("latency_median_ape")), pct(summary.get("latency_p99_ape")))
    if summary.get("concurrent_requests"):
        table.add_row(f"latency, batched ({summary['concurrent_requests']:.0f} requests)",
                      pct(summary.get("concurrent_latency_median_ape")), "")
    console.print(table)
    console.print(f"placement: {summary.get('placement_same_node')} of {summary.get('placement_paired_loads')} paired "
                  f"loads on the same node ({pct(summary.get('placement_same_node_share'))})")
    for name, met in summary.get("targets", {}).items():
        mark = "—" if met is None else ("[green]met[/green]" if met else "[red]missed[/red]")
        console.print(f"  {name}: {mark}")


@click.command("validate")
@click.argument("trace_path", metavar="TRACE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--hardware", "hardware", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Calibrated hardware JSON (from `sllmsim calibrate`); replaces the trace's hardware.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder (default runs/validate-<trace>-<time>/).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/validation-models"),
              show_default=True, help="Where models built from the trace's recipes are kept between runs.")
@click.option("--recipes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model recipes (default: TRACE's folder/<trace name>/models.yaml, if present).")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store folder of the live run, emptied first (default: OUT/store, removed afterwards).")
@click.option("--devices", default=None, help="Node-to-device map for live mode, e.g. '0=cuda:0,1=cuda:0'.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Torch intra-op threads of the live run (default: as calibrated).")
@click.option("--page-cache", type=click.Choice(["drop", "keep"]), default="drop", show_default=True,
              help="drop: clear the store's checkpoints from the OS page cache whenever a request is sent, so disk "
                   "loads read the disk (as the O_DIRECT reads of ServerlessLLM's store do); keep: leave it.")
@click.option("--reuse-live", type=click.Path(exists=True, path_type=Path), default=None,
              help="Skip the live run: take it from an earlier report folder (its live-run.json) and only "
                   "re-simulate and re-report, e.g. after changing the simulator or the calibration.")
@click.option("--compare-policies", "compare_policies", default=None, metavar="A,B",
              help="Run the arrivals live and simulated under each placement policy (e.g. storage_aware,random) "
                   "and report whether the simulator predicts the same winner and difference.")
def validate(trace_path: Path, hardware: Path, out: Path | None, models_dir: Path, recipes: Path | None,
             storage: Path | None, devices: str | None, threads: int | None, page_cache: str,
             reuse_live: Path | None, compare_policies: str | None) -> None:
    """Run TRACE live (real server, real loads) and simulated with HW, then report the errors."""
    from rich.console import Console

    from live import live_run
    from sllmsim.config.hardware import load_hardware
    from sllmsim.config.trace import load_trace
    from sllmsim.fidelity import sim_trace
    from sllmsim.fidelity.validation_report import write_report
    from sllmsim.sim import simulate

    trace = load_trace(trace_path)
    cluster = load_hardware(hardware)
    # Fail on a hardware/trace mismatch now, not after minutes of live traffic.
    planned = trace.requests.to_frame().rename(columns={"time": "arrival_s"})
    recipes = recipes or (live_run.recipes_path(trace_path) if live_run.recipes_path(trace_path).is_file() else None)
    recipe_map = live_run.load_recipes(recipes) if recipes is not None else None
    sim_trace.simulated_trace(trace_path, trace, hardware, {}, planned.rename(columns={"arrival_s": "time"}),
                              sim_trace.model_depths(trace, recipe_map))
    sidecar = _read_sidecar(hardware)
    threads = threads or sidecar.get("torch_threads")
    out = out or _default_out(trace.name)
    console = Console(stderr=True)
    if compare_policies is not None:
        from sllmsim.cli.compare_policies import run_comparison
        from sllmsim.fidelity.policy_compare import parse_policies

        run_comparison(parse_policies(compare_policies), trace_path, trace, hardware, out, recipe_map,
                       lambda t, folder: _run_live(t, cluster, folder, storage, models_dir, recipes, devices,
                                                   threads, page_cache, console),
                       reuse_live, sidecar, ("--page-cache", page_cache) if page_cache != "drop" else ())
        return

    if reuse_live is not None:
        live = live_run.load_live_run(reuse_live, name=f"{trace.name}-live")
        page_cache = live.settings.get("page_cache", page_cache)
        threads = live.settings.get("torch_threads", threads)
    else:
        live = _run_live(trace, cluster, out, storage, models_dir, recipes, devices, threads, page_cache, console)
        live.save(out / live_run.LIVE_RUN_JSON)  # kept before simulating: a failure later loses no measurement
    failed = [o for o in live.outcomes if o.status_code != 200]
    realized = sim_trace.realized_requests(trace.requests, _requests_frame(live.result))
    depths = sim_trace.model_depths(trace, recipe_map, live.layers)
    simulated = simulate(sim_trace.simulated_trace(trace_path, trace, hardware, live.sizes_bytes, realized, depths))
    notes = list(sidecar.get("notes", []))
    if failed:
        notes.append(f"{len(failed)} live request(s) failed, e.g. #{failed[0].index}: "
                     f"{failed[0].status_code} {failed[0].error}")
    machine = sidecar.get("machine", {})
    context = {
        "command": " ".join(shlex.quote(str(a)) for a in
                            ("sllmsim", "validate", trace_path, "--hardware", hardware, "--out", out,
                             *(("--page-cache", page_cache) if page_cache != "drop" else ()))),
        "trace_name": trace.name, "trace": str(trace_path), "hardware": str(hardware),
        "machine": {k: machine[k] for k in ("platform", "cpu_count", "device_name", "torch") if k in machine},
        "device": ", ".join(f"node {k}: {v}" for k, v in (live.result.resolved_config.get("devices") or {}).items()),
        "load_average": _load_text(machine.get("load_average_1min"), live.settings.get("load_average_1min")),
        "torch_threads": threads, "page_cache": page_cache, "models": {m: f"{b / 1024**2:.1f} MiB" for m, b in live.sizes_bytes.items()},
        "notes": notes,
    }
    from sllmsim.cli.calibrate import sidecar_path

    summary = write_report(out, live.result, simulated, context, hardware_files=(hardware, sidecar_path(hardware)),
                           cpu_samples=live.cpu_samples)
    print_headline(summary, Console())
    click.echo(f"wrote {out}/report.md")


def _run_live(trace, cluster, out: Path, storage: Path | None, models_dir: Path, recipes: Path | None,
              devices: str | None, threads: int | None, page_cache: str, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from live import live_run

    node_devices = None
    if devices:
        from live.worker import parse_devices

        node_devices = parse_devices(devices, cluster)
    folders = {}
    if recipes is not None:
        with console.status("building models") as status:
            folders = live_run.build_models(live_run.load_recipes(recipes), models_dir,
                                            progress=lambda msg: status.update(msg))
    keep_store = storage is not None
    storage = storage or out / "store"
    with Progress(TextColumn("live run"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("live", total=len(trace.requests))
        try:
            return live_run.run_live(trace, cluster, storage, folders, devices=node_devices, threads=threads,
                                     page_cache=page_cache,
                                     progress=lambda done, total: bar.update(task, completed=done),
                                     status=lambda msg: bar.console.print(msg))
        finally:
            if not keep_store:
                shutil.rmtree(storage, ignore_errors=True)


def _load_text(calibration: list | None, live: list | None) -> str:
    """The one-minute load average during calibration and during the live run, for the report."""
    import math

    parts = []
    if calibration:
        parts.append("calibration " + " → ".join(f"{v:.1f}" for v in calibration))
    values = sorted(v for v in (live or []) if not math.isnan(v))
    if values:
        parts.append(f"live run median {values[len(values) // 2]:.1f} (min {values[0]:.1f}, max {values[-1]:.1f})")
    return "; ".join(parts)


def _requests_frame(result):
    from sllmsim.metrics import requests_frame

    return requests_frame(result.requests)
