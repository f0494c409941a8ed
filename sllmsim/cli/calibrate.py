"""``sllmsim calibrate``: measure this machine and write a hardware JSON that the simulator and live mode read.

The measurements live in :mod:`live.calibration` (imported only when the command runs: they need torch).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import click

from sllmsim.errors import ConfigError
from sllmsim.units import UnitError, format_bytes, parse_bandwidth_bytes_per_s, parse_size_bytes


def sidecar_path(hardware_path: Path) -> Path:
    """Where the calibration details of a hardware JSON are written: ``NAME.calibration.json`` beside it."""
    return hardware_path.with_name(hardware_path.stem + ".calibration.json")


def _parse(option: str, parse, value):
    if value is None:
        return None
    try:
        return parse(value)
    except UnitError as exc:
        raise ConfigError(option, "", str(exc)) from None


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes/s":
        return f"{format_bytes(value)}/s"
    if unit == "FLOP/s":
        return f"{value / 1e9:,.2f} GFLOP/s"
    return f"{value * 1e3:,.1f} ms" if abs(value) < 1 else f"{value:,.3f} s"


def print_calibration(cal, console=None) -> None:
    """The measurements as rich tables: median, min–max and spread of every quantity."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Calibration of {cal.device} ({cal.device_name}, {cal.torch_threads} torch threads)",
                  header_style="bold")
    for col, justify in (("measurement", "left"), ("median", "right"), ("min – max", "right"),
                         ("spread", "right"), ("n", "right")):
        table.add_column(col, justify=justify)

    def row(m) -> None:
        table.add_row(m.label, _fmt(m.median, m.unit), f"{_fmt(m.low, m.unit)} – {_fmt(m.high, m.unit)}",
                      f"{m.spread:.0%}", str(len(m.samples)))

    for m in cal.measurements.values():
        row(m)
    for p in cal.models:
        table.add_section()
        for m in (p.to_device_s, p.construct_s, p.warmup_s, p.prefill_s, p.decode_step_s):
            row(m)
    if cal.serving is not None:
        table.add_section()
        for m in (cal.serving.ttft_s, cal.serving.request_overhead_s, cal.serving.decode_step_s,
                  cal.serving.load_s, cal.serving.load_fixed_s):
            if m is not None:
                row(m)
    if cal.small_checkpoint:
        table.add_section()
        for m in cal.small_checkpoint.values():
            row(m)
    console.print(table)
    if cal.models:
        fit, load = cal.fit, cal.load_fit
        speed = Table(title=f"Forward passes: {_fmt(fit.forward_overhead_s, 's')} + layers × "
                            f"{_fmt(fit.forward_overhead_per_layer_s, 's')} + weights / "
                            f"{_fmt(fit.memory_bytes_per_s, 'bytes/s')} per decode step, prefill at "
                            f"{_fmt(fit.flops_per_s, 'FLOP/s')} ({fit.method}); construction "
                            f"{_fmt(load.load_overhead_s, 's')} + layers × {_fmt(load.load_overhead_per_layer_s, 's')}"
                            f" ({load.method})", header_style="bold")
        for col in ("model", "layers", "weights", "prefill", "modelled", "decode step", "modelled", "construction",
                    "modelled"):
            speed.add_column(col, justify="left" if col == "model" else "right")
        for p in cal.models:
            speed.add_row(p.name, str(p.num_layers), format_bytes(p.weights_bytes), _fmt(p.prefill_s.median, "s"),
                          _fmt(fit.prefill_s(p.num_params, p.prompt_tokens, p.weights_bytes, p.num_layers), "s"),
                          _fmt(p.decode_step_s.median, "s"), _fmt(fit.step_s(p.weights_bytes, p.num_layers), "s"),
                          _fmt(p.construct_s.median, "s"), _fmt(load.fixed_s(p.num_layers), "s"))
        console.print(speed)
    if cal.serving is not None:
        sv = cal.serving
        console.print(f"served {sv.name} warm: time to first token {_fmt(sv.ttft_s.median, 's')}, modelled prefill "
                      f"{_fmt(float(statistics.median(sv.modelled_prefill_s)), 's')} → request_overhead_s "
                      f"{_fmt(cal.request_overhead_s, 's')}; decode step {_fmt(sv.decode_step_s.median, 's')} "
                      f"through the server against {_fmt(sv.modelled_step_s, 's')} modelled")
        if sv.load_fixed_s is not None:
            console.print(f"served {sv.name} cold from host memory: load {_fmt(sv.load_s.median, 's')}, of which "
                          f"{_fmt(sv.load_fixed_s.median, 's')} beyond the copy → load_overhead_s "
                          f"{_fmt(cal.load_overhead_s, 's')} (construction alone fits "
                          f"{_fmt(cal.load_fit.load_overhead_s, 's')})")
    batch = cal.batch_fit
    if batch is not None:
        per_seq = _fmt(batch.decode_overhead_per_sequence_s, "s")
        per_layer = _fmt(batch.decode_overhead_per_sequence_per_layer_s, "s")
        sweep = Table(title=f"Decode step against batch size k: alone + (k − 1) × ({per_seq} + layers × {per_layer})"
                            f" ({batch.method})", header_style="bold")
        for col in ("model", "layers", "batch", "decode step", "modelled", "error"):
            sweep.add_column(col, justify="left" if col == "model" else "right")
        for pt in cal.batch_points:
            model_s = batch.step_s(pt)
            sweep.add_row(pt.model, str(pt.num_layers), str(pt.batch), _fmt(pt.step_s, "s"), _fmt(model_s, "s"),
                          f"{model_s / pt.step_s - 1:+.0%}")
        console.print(sweep)
    for note in cal.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@click.command("calibrate")
@click.option("--storage", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model store folder: the filesystem whose disk bandwidth is measured (probe files are removed).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Hardware JSON to write (the details go to NAME.calibration.json beside it).")
@click.option("--models", "models", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model folders to profile (repeatable). Default: five probe OPT models of 3 to 230 MB and "
                   "2 to 12 layers.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(2, 1000),
              help="Repeats of every measurement.")
@click.option("--device", default="cpu", show_default=True, help="Torch device live mode serves on (cpu, cuda:0).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Torch intra-op threads (CPU). Default: cores / nodes, so each node has its own share.")
@click.option("--nodes", default="0,1", show_default=True, help="Node ids of the hardware JSON (the spec's two).")
@click.option("--network-bandwidth", default="1Gbps", show_default=True,
              help="Network bandwidth live mode throttles its copies to (written to the JSON; checked here).")
@click.option("--host-size", default=None, help="host_size per node (default: 32GB capped to this machine's memory).")
@click.option("--disk-size", default=None, help="disk_size per node (default: 128GB capped to the free disk).")
@click.option("--probe-size", default="256MB", show_default=True, help="Size of the probe file and buffers.")
@click.option("--prompt-tokens", default=128, show_default=True, type=click.IntRange(1, 4096),
              help="Prompt length of the prefill measurement.")
@click.option("--num-gpus", default=1, show_default=True, type=click.IntRange(1, 64),
              help="num_gpus per node written to the JSON (on a CPU machine: instances a node runs at once, "
                   "all on the CPU).")
def calibrate(storage: Path, out: Path, models: tuple[Path, ...], repeats: int, device: str, threads: int | None,
              nodes: str, network_bandwidth: str, host_size: str | None, disk_size: str | None, probe_size: str,
              prompt_tokens: int, num_gpus: int) -> None:
    """Measure this machine's storage tiers, copies, load overheads and model speed; write a hardware JSON."""
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    if not node_ids or len(set(node_ids)) != len(node_ids):
        raise ConfigError("--nodes", "", f"expected distinct comma-separated node ids, got {nodes!r}")
    net = _parse("--network-bandwidth", parse_bandwidth_bytes_per_s, network_bandwidth)
    probe = _parse("--probe-size", parse_size_bytes, probe_size)
    if probe < 1024**2:
        raise ConfigError("--probe-size", "", f"expected at least 1MB, got {probe_size!r}")
    host = _parse("--host-size", parse_size_bytes, host_size)
    disk = _parse("--disk-size", parse_size_bytes, disk_size)

    from rich.console import Console

    from live.calibration import calibrate as run_calibration
    from live.calibration import calibration_to_json

    console = Console(stderr=True)
    with console.status("calibrating") as status:
        cal = run_calibration(storage, models, device=device, repeats=repeats, probe_bytes=probe,
                              network_bandwidth_bytes_per_s=net, threads=threads, node_ids=node_ids,
                              host_size_bytes=host, disk_size_bytes=disk, prompt_tokens=prompt_tokens,
                              num_gpus=num_gpus,
                              progress=lambda msg: status.update(f"calibrating: {msg}"))
    print_calibration(cal, Console())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cal.hardware(node_ids), indent=2) + "\n")
    sidecar = sidecar_path(out)
    sidecar.write_text(json.dumps(calibration_to_json(cal, node_ids), indent=2) + "\n")
    click.echo(f"wrote {out} (details in {sidecar})")
