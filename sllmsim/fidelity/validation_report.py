"""The validation report folder: both runs, the joined tables, the error table, plots and ``report.md``.

Layout of ``OUT/``::

    live/  sim/              the two runs as ordinary run folders (``sllmsim compare OUT/live OUT/sim`` works)
    requests.csv             the joined requests (columns suffixed _live / _sim, see sllmsim.fidelity.join)
    loads.csv                the joined loads, with load time and each load phase's duration
    errors.csv               median / p99 absolute percentage error per quantity and group
    summary.json             the headline numbers and whether each target is met
    scatter.png              simulated vs measured: load time, time to first token, end-to-end latency
    cdf.png                  latency and TTFT CDFs of both runs overlaid
    load_phases.png          median duration of each load phase per tier, measured vs simulated
    contention.png           signed error against other processes' CPU use (when the live run sampled it)
    hardware.json            the calibrated hardware the simulator used (and its calibration sidecar)
    report.md                all of the above in words and tables
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sllmsim.fidelity.accuracy import (CONCURRENT_REQUESTS, QUIET_OTHER_CORES, TARGETS, error_table, headline,
                                       peak_in_flight, signed_error)
from sllmsim.fidelity.cpu_load import Sample, other_cores
from sllmsim.fidelity.join import join_loads, join_requests
from sllmsim.metrics import COLD_TIERS, LOAD_PHASES, frames_from_result
from sllmsim.records import RunResult

_TIER_COLORS = {"gpu": "#4c9a2a", "host": "#2b7bb9", "disk": "#f0a30a", "network": "#c0392b"}
_FILES = ("report.md", "summary.json", "requests.csv", "loads.csv", "errors.csv", "scatter.png", "cdf.png",
          "load_phases.png")


def _pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.1%}"


def _sec(value) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _nan_none(value):
    if value is None:
        return None
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- plots


def _scatter_panel(ax, live: pd.Series, sim: pd.Series, tiers: pd.Series, title: str, band: float | None) -> None:
    keep = live.notna() & sim.notna() & (live > 0) & (sim > 0)
    live, sim, tiers = live[keep].astype(float), sim[keep].astype(float), tiers[keep].astype(str)
    if live.empty:
        ax.text(0.5, 0.5, "nothing to compare", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(title)
        return
    lo = min(live.min(), sim.min()) / 1.5
    hi = max(live.max(), sim.max()) * 1.5
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, color="0.3", linewidth=1.0, label="simulated = measured")
    if band:
        ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="0.85", label=f"±{band:.0%}")
    for tier in ("gpu", *COLD_TIERS):
        sel = tiers == tier
        if sel.any():
            ax.scatter(live[sel], sim[sel], s=18, color=_TIER_COLORS[tier], label=f"{tier} (n={int(sel.sum())})",
                       alpha=0.85, edgecolors="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured live (s)")
    ax.set_ylabel("simulated (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")


def plot_scatter(requests: pd.DataFrame, loads: pd.DataFrame) -> Figure:
    """Simulated against measured, log-log, one point per paired load or completed request, by live tier."""
    fig = Figure(figsize=(16.0, 5.2), layout="constrained")
    axes = fig.subplots(1, 3)
    paired = loads[loads["paired"]]
    done = requests[requests["completed"]]
    _scatter_panel(axes[0], paired["load_s_live"], paired["load_s_sim"], paired["tier_live"],
                   "Cold-start load time (per load)", TARGETS[0].limit)
    _scatter_panel(axes[1], done["ttft_s_live"], done["ttft_s_sim"], done["tier_live"],
                   "Time to first token (per request)", None)
    _scatter_panel(axes[2], done["latency_s_live"], done["latency_s_sim"], done["tier_live"],
                   "End-to-end latency (per request)", TARGETS[1].limit)
    fig.suptitle("Simulated vs measured (colour: the tier the live request or load started from)")
    return fig


def plot_cdfs(live: RunResult, sim: RunResult) -> Figure:
    """Latency and TTFT CDFs of the live and simulated runs, overlaid."""
    from sllmsim.run_plots import plot_latency_cdf

    runs = {"live (measured)": frames_from_result(live).requests, "simulated": frames_from_result(sim).requests}
    return plot_latency_cdf(runs, title="Live vs simulated: request latency")


def phase_medians(loads: pd.DataFrame) -> pd.DataFrame:
    """Median duration of each load phase per live tier, for the paired loads, measured and simulated."""
    paired = loads[loads["paired"]]
    rows = []
    for tier in COLD_TIERS:
        sel = paired[paired["tier_live"] == tier]
        if sel.empty:
            continue
        row = {"tier": tier, "n": len(sel)}
        for short in (*LOAD_PHASES.values(), "load"):
            for side in ("live", "sim"):
                row[f"{short}_s_{side}"] = float(sel[f"{short}_s_{side}"].median())
        rows.append(row)
    return pd.DataFrame(rows)


def plot_load_phases(medians: pd.DataFrame) -> Figure:
    """Stacked median phase durations per tier: measured next to simulated."""
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    if medians.empty:
        ax.text(0.5, 0.5, "no paired loads", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return fig
    colors = {"download": "#c0392b", "to_host": "#f0a30a", "to_gpu": "#2b7bb9"}
    names = {"download": "downloading", "to_host": "loading to host", "to_gpu": "loading to device"}
    x = np.arange(len(medians))
    for offset, side, hatch in ((-0.2, "live", ""), (0.2, "sim", "//")):
        bottom = np.zeros(len(medians))
        for short in LOAD_PHASES.values():
            heights = medians[f"{short}_s_{side}"].to_numpy()
            ax.bar(x + offset, heights, width=0.38, bottom=bottom, color=colors[short], hatch=hatch,
                   edgecolor="white", label=f"{names[short]} ({'measured' if side == 'live' else 'simulated'})")
            bottom += heights
    ax.set_xticks(x, [f"{t}\n(n={n})" for t, n in zip(medians["tier"], medians["n"])])
    ax.set_ylabel("median seconds")
    ax.set_title("Load phases per tier: measured (left, plain) vs simulated (right, hatched)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    return fig


def plot_contention(requests: pd.DataFrame, loads: pd.DataFrame) -> Figure:
    """Signed error (simulated / measured − 1) of each load and request against the cores other
    processes kept busy meanwhile: whether the simulator's error grows with the machine's load."""
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = ((axes[0], loads[loads["paired"]], "load_s", "Cold-start load time"),
              (axes[1], requests[requests["completed"]], "latency_s", "End-to-end latency"))
    for ax, frame, col, title in panels:
        err = signed_error(frame[f"{col}_live"], frame[f"{col}_sim"])
        for tier in ("gpu", *COLD_TIERS):
            sel = (frame["tier_live"] == tier) & err.notna() & frame["other_cores_live"].notna()
            if sel.any():
                ax.scatter(frame.loc[sel, "other_cores_live"], err[sel] * 100, s=18, color=_TIER_COLORS[tier],
                           label=f"{tier} (n={int(sel.sum())})", alpha=0.85, edgecolors="none")
        ax.axhline(0, color="0.3", linewidth=1.0)
        ax.axvline(QUIET_OTHER_CORES, color="0.6", linewidth=1.0, linestyle="--")
        ax.set_xlabel("cores busy with other processes (live)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("signed error, simulated / measured − 1 (%)")
    fig.suptitle("Simulator error against the machine's other load (negative: the simulator is faster)")
    return fig


def _median_signed(frame: pd.DataFrame, col: str) -> float | None:
    err = signed_error(frame[f"{col}_live"], frame[f"{col}_sim"]).dropna()
    return float(err.median()) if len(err) else None


# --------------------------------------------------------------------------- report


def add_contention(requests: pd.DataFrame, loads: pd.DataFrame, live_phases: pd.DataFrame,
                   cpu_samples: Sequence[Sample]) -> None:
    """Add ``other_cores_live``: the cores other processes kept busy while each live request ran
    (arrival to finish) and while each live load ran (first to last load phase); in place."""
    requests["other_cores_live"] = [
        other_cores(cpu_samples, a, a + lat) if pd.notna(a) and pd.notna(lat) else math.nan
        for a, lat in zip(requests["arrival_s_live"], requests["latency_s_live"])]
    load = live_phases[live_phases["phase"].isin(list(LOAD_PHASES))]
    spans = load.groupby("instance_id").agg(start=("start_s", "min"), end=("end_s", "max"))
    loads["other_cores_live"] = [
        other_cores(cpu_samples, spans.at[i, "start"], spans.at[i, "end"]) if i in spans.index else math.nan
        for i in loads["instance_id_live"]]


def compare_runs(live: RunResult, sim: RunResult, cpu_samples: Sequence[Sample] = ()
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(joined requests, joined loads, error table, headline) of a live and a simulated run.

    With the live run's ``cpu_samples`` (:mod:`sllmsim.fidelity.cpu_load`), requests and loads get
    ``other_cores_live`` and the error table splits them by it.
    """
    live_frames, sim_frames = frames_from_result(live), frames_from_result(sim)
    requests = join_requests(live_frames.requests, sim_frames.requests)
    loads = join_loads(requests, live_frames.phases, sim_frames.phases)
    if cpu_samples:
        add_contention(requests, loads, live_frames.phases, cpu_samples)
    requests["in_flight_live"] = peak_in_flight(requests)
    errors = error_table(requests, loads)
    return requests, loads, errors, headline(requests, loads, errors)


def write_report(out_dir: str | Path, live: RunResult, sim: RunResult, context: dict | None = None,
                 hardware_files: tuple[Path, ...] = (), run_folders: bool = True,
                 cpu_samples: Sequence[Sample] = ()) -> dict:
    """Write the report folder (see the module docstring); returns the summary written to ``summary.json``.

    ``context`` (command, trace, machine, notes) goes into ``summary.json`` and ``report.md`` as is.
    ``cpu_samples``: the live run's, for the contention columns, error groups and ``contention.png``.
    """
    from sllmsim.output import write_run_folder
    from sllmsim.run_plots import save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = dict(context or {})
    requests, loads, errors, head = compare_runs(live, sim, cpu_samples)
    if run_folders:
        # The runs' own plots would repeat the report's; `sllmsim compare live sim` draws them on demand.
        write_run_folder(out / "live", live, plots=False)
        write_run_folder(out / "sim", sim, plots=False)
    for path in hardware_files:
        if Path(path).is_file():
            shutil.copyfile(path, out / Path(path).name)
    requests.to_csv(out / "requests.csv", index=False, float_format="%.6f", lineterminator="\n")
    loads.to_csv(out / "loads.csv", index=False, float_format="%.6f", lineterminator="\n")
    errors.to_csv(out / "errors.csv", index=False, float_format="%.6f", lineterminator="\n")
    medians = phase_medians(loads)
    save_figure(plot_scatter(requests, loads), out / "scatter.png")
    save_figure(plot_cdfs(live, sim), out / "cdf.png")
    save_figure(plot_load_phases(medians), out / "load_phases.png")
    contention = "other_cores_live" in requests and requests["other_cores_live"].notna().any()
    if contention:
        save_figure(plot_contention(requests, loads), out / "contention.png")
    summary = {**{k: _nan_none(v) for k, v in head.items() if k != "targets"}, "targets": head["targets"],
               "context": context}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    (out / "report.md").write_text(_markdown(requests, loads, errors, head, medians, context, contention))
    return summary


def _markdown(requests: pd.DataFrame, loads: pd.DataFrame, errors: pd.DataFrame, head: dict,
              medians: pd.DataFrame, context: dict, contention: bool = False) -> str:
    title = context.get("trace_name", "trace")
    out = [f"# Fidelity: `{title}` live vs simulated", ""]
    if context.get("command"):
        out += [f"Regenerate with `{context['command']}`.", ""]
    out += ["## Set-up", ""]
    for key, label in (("trace", "Trace"), ("hardware", "Calibrated hardware"), ("machine", "Machine"),
                       ("device", "Device"), ("torch_threads", "Torch threads"),
                       ("load_average", "Machine load (1-minute load average, all processes)"), ("models", "Models")):
        if context.get(key) not in (None, "", []):
            value = context[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items())
            out.append(f"- {label}: {value}")
    cache = {"drop": "the store's checkpoints dropped from the OS page cache after the deploys and whenever a "
                     "request is sent (disk loads read the disk)",
             "keep": "the store's checkpoints dropped from the OS page cache after the deploys only (later disk "
                     "loads may read the page cache)"}.get(context.get("page_cache", ""), "")
    out += ["- Live: the real server (`sllmsim live`'s app) in this process, requests sent over HTTP at their "
            f"trace times{'; ' + cache if cache else ''}.",
            "- Simulated: the same requests at the arrival times and token counts the live server recorded, "
            "the calibrated hardware, the stored checkpoint sizes, `loading: sequential`.", ""]

    out += ["## Targets", ""]
    placement = head.get("placement_same_node_share")
    values = (head.get("cold_start_load_median_ape"), head.get("latency_median_ape"), placement)
    rows = []
    for target, value in zip(TARGETS, values):
        met = target.met(value)
        rows.append([target.quantity, target.statistic, target.text, _pct(value),
                     "—" if met is None else ("met" if met else "**missed**")])
    out += [_md_table(["quantity", "statistic", "target", "measured", ""], rows), ""]

    out += ["## Errors", "",
            "APE = |simulated − measured| / measured; signed = simulated / measured − 1 (negative: the "
            "simulator is optimistic). Loads are grouped by the tier the live load came from; requests by "
            "whether the live request waited for a load, by model, and — where the trace sends requests "
            f"together — those that had at least {CONCURRENT_REQUESTS} requests (themselves included) in flight "
            "at once on their live instance, which decode in one batch (column `in_flight_live` of "
            "`requests.csv`).", ""]
    rows = [[r.quantity, r.group, str(r.n), _pct(_nan_none(r.median_ape)), _pct(_nan_none(r.p99_ape)),
             _pct(_nan_none(r.median_signed_error)), _sec(_nan_none(r.live_median_s)), _sec(_nan_none(r.sim_median_s))]
            for r in errors.itertuples(index=False)]
    out += [_md_table(["quantity", "group", "n", "median APE", "p99 APE", "median signed", "measured median (s)",
                       "simulated median (s)"], rows), ""]

    out += ["## Placement", ""]
    out += [f"- Paired loads: {head['placement_paired_loads']}; on the same node: {head['placement_same_node']} "
            f"({_pct(head['placement_same_node_share'])}); from the same tier: {head['placement_same_tier']} "
            f"({_pct(head['placement_same_tier_share'])}).",
            f"- Loads only live: {head['placement_live_only_loads']}; only simulated: {head['placement_sim_only_loads']}.",
            f"- Requests: {head['requests']} ({head['requests_completed_both']} completed on both sides).", ""]
    mismatched = loads[loads["paired"] & ~(loads["same_node"] & loads["same_tier"])]
    if len(mismatched):
        out += ["Loads placed differently:", ""]
        rows = [[str(r.model), str(int(r.first_rank)), f"{r.node_live} / {r.tier_live}", f"{r.node_sim} / {r.tier_sim}"]
                for r in mismatched.itertuples(index=False)]
        out += [_md_table(["model", "first request (rank)", "live node / tier", "simulated node / tier"], rows), ""]

    if not medians.empty:
        out += ["## Load phases", "", "Median seconds per phase of the paired loads, by the live load's tier.", ""]
        rows = []
        for r in medians.to_dict("records"):
            rows.append([r["tier"], str(r["n"])] + [f"{_sec(r[f'{s}_s_live'])} / {_sec(r[f'{s}_s_sim'])}"
                                                    for s in (*LOAD_PHASES.values(), "load")])
        out += [_md_table(["tier", "n", "downloading", "loading to host", "loading to device", "whole load"], rows),
                "", "(measured / simulated)", ""]

    if contention:
        out += ["## Machine contention", "",
                "CPU time other processes used while each live request and load ran (`/proc/stat` minus this "
                "process, sampled every 0.1 s), in cores: the simulator models the machine alone. Error groups "
                f"\"others < {QUIET_OTHER_CORES:g} cores\" and \"others ≥ {QUIET_OTHER_CORES:g} cores\" above split "
                "by it.", ""]
        rows = []
        for name, frame, col in (("cold-start loads", loads[loads["paired"]], "load_s"),
                                 ("requests (latency)", requests[requests["completed"]], "latency_s")):
            other = frame["other_cores_live"].dropna()
            quiet = frame[frame["other_cores_live"] < QUIET_OTHER_CORES]
            busy = frame[frame["other_cores_live"] >= QUIET_OTHER_CORES]
            rows.append([name, str(len(other)), f"{other.median():.2f}" if len(other) else "—",
                         f"{other.max():.2f}" if len(other) else "—", str(len(quiet)),
                         _pct(_median_signed(quiet, col)), str(len(busy)), _pct(_median_signed(busy, col))])
        out += [_md_table(["", "n", "others' cores, median", "max", f"n < {QUIET_OTHER_CORES:g}",
                           "median signed error", f"n ≥ {QUIET_OTHER_CORES:g}", "median signed error"], rows),
                "", "![error against contention](contention.png)", ""]

    out += ["## Plots", "",
            "![simulated vs measured](scatter.png)", "", "![CDFs](cdf.png)", "", "![load phases](load_phases.png)", ""]
    notes = context.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["Files: `requests.csv` and `loads.csv` (joined, `_live`/`_sim` columns), `errors.csv`, `summary.json`, "
            "and the two run folders `live/` and `sim/` (`sllmsim compare live sim`).", ""]
    return "\n".join(out)
