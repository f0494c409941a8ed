"""Plots of one run or of several labelled runs (PNG, matplotlib).

Every function takes DataFrames (the frames of :mod:`sllmsim.metrics`) and labels, and returns a
:class:`matplotlib.figure.Figure`, so experiments can compare policies with the same plots a single run
gets. Figures are built without ``pyplot``: no global state and no GUI backend, so plotting works in
worker processes and on headless machines (``savefig`` renders with Agg). :func:`plot_run` draws the
standard plots of a run folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sllmsim.metrics import (
    COLD_TIERS,
    RunFrames,
    read_run,
    run_end_s,
    start_tier_counts,
    step_bin_means,
    step_integral,
    step_total,
)

#: File names of the standard plots of a run folder.
LATENCY_CDF_PNG = "latency_cdf.png"
TIMELINE_PNG = "timeline.png"
START_TIERS_PNG = "start_tiers.png"

#: How many models the timeline draws one line each for; the rest are summed into one "other" line.
TOP_MODELS = 8
#: Above this many time-series rows, time plots draw time-weighted means over STEP_BINS bins.
MAX_STEP_POINTS = 20_000
STEP_BINS = 1_000
#: Points drawn per CDF curve: enough to look smooth, few enough for a million requests.
_CDF_POINTS = 2001
_TIER_LABELS = {"gpu": "warm (GPU)", "host": "host memory", "disk": "local disk", "network": "network"}
_TIER_COLORS = {"gpu": "#4c9a2a", "host": "#2b7bb9", "disk": "#f0a30a", "network": "#c0392b"}
_GIB = 1024**3
_OUTSIDE_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False}
#: The default colour cycle without its grey, which marks the "other" band.
_MODEL_COLORS = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]

Runs = Mapping[str, pd.DataFrame]
"""Labelled runs: label → the run's requests (or timeseries) frame, drawn in the mapping's order."""


def _as_runs(runs: Runs | pd.DataFrame, label: str = "run") -> dict[str, pd.DataFrame]:
    return {label: runs} if isinstance(runs, pd.DataFrame) else dict(runs)


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def ecdf_points(values: np.ndarray, max_points: int = _CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the empirical CDF (fraction of values ≤ x) for a ``steps-post`` line, starting at 0.

    Beyond ``max_points`` values, an evenly spaced subset of the order statistics is kept: every
    point drawn still lies exactly on the empirical CDF.
    """
    xs = np.sort(np.asarray(values, dtype=float))
    n = xs.size
    idx = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return np.append(xs[0], xs[idx]), np.append(0.0, (idx + 1) / n)


def draw_cdf(ax, runs: Runs, column: str = "latency_s", xlabel: str = "latency (s)") -> None:
    """Draw the empirical CDF of ``column`` over completed requests, one curve per labelled run.

    The x axis turns logarithmic when values span more than two decades (warm requests take
    fractions of a second, cold starts tens of seconds). Dotted lines mark the 50th and 99th percentiles.
    """
    lo, hi, drawn = np.inf, 0.0, 0
    for label, requests in runs.items():
        values = requests.loc[requests["status"] == "completed", column].dropna().to_numpy(dtype=float)
        if values.size == 0:
            ax.plot([], [], label=f"{label} (no completed requests)")
            continue
        xs, ys = ecdf_points(values)
        ax.plot(xs, ys, drawstyle="steps-post", linewidth=1.8, label=f"{label} (n={values.size:,})")
        lo, hi, drawn = min(lo, values[values > 0].min(initial=np.inf)), max(hi, values.max()), drawn + 1
    if drawn == 0:
        _empty_note(ax, "no completed requests")
    elif np.isfinite(lo) and hi / lo > 100:
        ax.set_xscale("log")
        xlabel += " — log scale"
    for p in (0.5, 0.99):
        ax.axhline(p, color="0.6", linestyle=":", linewidth=0.8)
        ax.annotate(f"p{int(p * 100)}", xy=(0.0, p), xycoords=("axes fraction", "data"), xytext=(2, 2),
                    textcoords="offset points", fontsize=7, color="0.4")
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of completed requests")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def plot_latency_cdf(runs: Runs | pd.DataFrame, title: str = "Request latency",
                     columns: Sequence[str] = ("latency_s", "ttft_s")) -> Figure:
    """CDFs of end-to-end latency and time to first token, one panel each, one curve per labelled run."""
    runs = _as_runs(runs)
    names = {"latency_s": "end-to-end latency (s)", "ttft_s": "time to first token (s)",
             "queueing_delay_s": "queueing delay (s)"}
    fig = Figure(figsize=(6.0 * len(columns), 4.5), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        draw_cdf(ax, runs, column, names.get(column, column))
        ax.set_title(f"CDF of {names.get(column, column).rsplit(' (', 1)[0]}")
    fig.suptitle(title)
    return fig


def _step_xy(series: pd.DataFrame, end_s: float, bins: int | None) -> tuple[np.ndarray, np.ndarray]:
    """x, y to draw a step series with ``steps-post``, extended to ``end_s``; binned means if ``bins``."""
    if bins:
        edges, means = step_bin_means(series, end_s, bins)
        return edges, np.append(means, means[-1])
    values = series["value"].to_numpy()
    return np.append(series["time_s"].to_numpy(), end_s), np.append(values, values[-1])


def _bins_for(timeseries: pd.DataFrame, end_s: float) -> int | None:
    # A figure is ~1000 px wide: beyond a few thousand changes, exact steps only cost rendering time.
    return STEP_BINS if len(timeseries) > MAX_STEP_POINTS and end_s > 0 else None


def _time_label(end_s: float, bins: int | None) -> str:
    label = "time since start of run (s)"
    if bins:
        label += f" — each point is the time-weighted mean over a {end_s / bins:.3g} s bin"
    return label


def _end_s(timeseries: pd.DataFrame) -> float:
    return float(timeseries["time_s"].max()) if len(timeseries) else 0.0


def draw_instances_stacked(ax, timeseries: pd.DataFrame, end_s: float, top_models: int = TOP_MODELS,
                           bins: int | None = None) -> None:
    """Stacked step areas of instances per model; models past the ``top_models`` with the most
    instance-seconds are summed into one grey "other" band. ``bins``: draw binned means instead."""
    weight = step_integral(timeseries, "instances", end_s)
    order = sorted(weight.index, key=lambda m: (-weight[m], m))
    top, rest = order[:top_models], order[top_models:]
    groups = [(m, [m]) for m in top] + ([(f"other ({len(rest)} models)", rest)] if rest else [])
    if not groups:
        _empty_note(ax, "no instance samples")
        return
    series = [step_total(timeseries, "instances", keys) for _, keys in groups]
    if bins:
        times = np.linspace(0.0, end_s, bins + 1)
        layers = [_step_xy(s, end_s, bins)[1] for s in series]
    else:
        # Put every layer on the union of all change times so the bands stack point by point.
        grid = pd.concat([s.set_index("time_s")["value"] for s in series], axis=1, keys=range(len(series)))
        grid = grid.sort_index().ffill().fillna(0.0)
        times = np.append(grid.index.to_numpy(), max(end_s, float(grid.index.max())))
        layers = [np.append(grid[i].to_numpy(), grid[i].to_numpy()[-1]) for i in range(len(series))]
    bottom = np.zeros(len(times))
    colors = [_MODEL_COLORS[i % len(_MODEL_COLORS)] for i in range(len(top))] + ["0.6"] * bool(rest)
    for (label, _), values, color in zip(groups, layers, colors):
        ax.fill_between(times, bottom, bottom + values, step="post", color=color, label=label, linewidth=0)
        bottom = bottom + values
    handles, labels = ax.get_legend_handles_labels()
    # Listed top to bottom as the bands are stacked.
    ax.legend(handles[::-1], labels[::-1], **_OUTSIDE_LEGEND)


def plot_timeline(timeseries: pd.DataFrame, title: str = "Cluster over time", end_s: float | None = None,
                  top_models: int = TOP_MODELS) -> Figure:
    """One run's instances per model, busy GPUs and memory use over time (three stacked panels).

    Models beyond the ``top_models`` with the most instance-seconds are summed into one "other" band
    so that a 100-model run stays readable. Runs with more than ``MAX_STEP_POINTS`` samples are drawn
    as time-weighted means over ``STEP_BINS`` bins (the x label says so).
    """
    end_s = _end_s(timeseries) if end_s is None else end_s
    bins = _bins_for(timeseries, end_s)
    fig = Figure(figsize=(10.0, 8.0), layout="constrained")
    ax_inst, ax_gpu, ax_mem = fig.subplots(3, 1, sharex=True)

    draw_instances_stacked(ax_inst, timeseries, end_s, top_models, bins)
    ax_inst.set_ylabel("instances")
    ax_inst.set_title("Instances per model (loading or loaded), stacked")

    busy = step_total(timeseries, "gpus_busy")
    if len(busy):
        ax_gpu.plot(*_step_xy(busy, end_s, bins), drawstyle="steps-post", color="#c0392b", linewidth=1.4,
                    label="busy GPUs (all nodes)")
        ax_gpu.legend(**_OUTSIDE_LEGEND)
    else:
        _empty_note(ax_gpu, "no GPU samples")
    ax_gpu.set_ylabel("GPUs")
    ax_gpu.set_title("Busy GPUs, summed over nodes")

    drew = False
    for metric, label, color in (("host_used_bytes", "host-memory cache", "#2b7bb9"),
                                 ("disk_used_bytes", "local disk", "#f0a30a")):
        used = step_total(timeseries, metric)
        if len(used):
            xs, ys = _step_xy(used, end_s, bins)
            ax_mem.plot(xs, ys / _GIB, drawstyle="steps-post", color=color, linewidth=1.4, label=label)
            drew = True
    if drew:
        ax_mem.legend(**_OUTSIDE_LEGEND)
    else:
        _empty_note(ax_mem, "no memory samples")
    ax_mem.set_ylabel("used (GiB)")
    ax_mem.set_title("Checkpoint storage used, summed over nodes")
    ax_mem.set_xlabel(_time_label(end_s, bins))
    for ax in (ax_inst, ax_gpu, ax_mem):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in (ax_inst, ax_gpu):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    return fig


def plot_busy_gpus(runs: Runs, title: str = "Instances and busy GPUs over time") -> Figure:
    """Total instances and busy GPUs over time, one line per labelled run (label → timeseries frame)."""
    fig = Figure(figsize=(10.0, 6.0), layout="constrained")
    ax_inst, ax_gpu = fig.subplots(2, 1, sharex=True)
    end_s = max((_end_s(ts) for ts in runs.values()), default=0.0)
    bins = max((_bins_for(ts, end_s) or 0 for ts in runs.values()), default=0) or None
    for i, (label, ts) in enumerate(runs.items()):
        for ax, metric in ((ax_inst, "instances"), (ax_gpu, "gpus_busy")):
            total = step_total(ts, metric)
            if len(total):
                ax.plot(*_step_xy(total, end_s, bins), drawstyle="steps-post", color=f"C{i % 10}",
                        linewidth=1.4, label=label)
    ax_inst.set_ylabel("instances")
    ax_inst.set_title("Instances (loading or loaded), summed over models")
    ax_gpu.set_ylabel("GPUs")
    ax_gpu.set_title("Busy GPUs, summed over nodes")
    ax_gpu.set_xlabel(_time_label(end_s, bins))
    for ax in (ax_inst, ax_gpu):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**_OUTSIDE_LEGEND)
        else:
            _empty_note(ax, "no samples")
    fig.suptitle(title)
    return fig


def plot_start_tiers(runs: Runs | pd.DataFrame, title: str = "Cold-start breakdown by tier") -> Figure:
    """Where requests' instances started from, one row of bars per labelled run.

    Left: share of served requests per start tier (warm GPU, host memory, local disk, network), stacked
    to 100 %. Right: the cold starts alone, counted per tier, so that a few cold starts among many warm
    requests stay visible.
    """
    runs = _as_runs(runs)
    labels = list(runs)
    counts = pd.DataFrame([start_tier_counts(req) for req in runs.values()], index=labels,
                          columns=["gpu", *COLD_TIERS]).fillna(0).astype(int)
    totals = counts.sum(axis=1)
    share = counts.div(totals.replace(0, np.nan), axis=0).fillna(0.0) * 100.0
    fig = Figure(figsize=(12.0, 2.2 + 0.55 * len(labels)), layout="constrained")
    ax_share, ax_cold = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(labels))

    left = np.zeros(len(labels))
    for tier in counts.columns:
        widths = share[tier].to_numpy()
        bars = ax_share.barh(y, widths, left=left, color=_TIER_COLORS[tier], label=_TIER_LABELS[tier], height=0.6)
        for bar, w in zip(bars, widths):
            if w >= 8:  # label only segments wide enough to hold the number
                ax_share.text(bar.get_x() + w / 2, bar.get_y() + bar.get_height() / 2, f"{w:.0f}%",
                              ha="center", va="center", fontsize=8, color="white")
        left += widths
    ax_share.set_yticks(y, [f"{lab}\n(n={t:,})" for lab, t in zip(labels, totals)])
    ax_share.invert_yaxis()
    ax_share.set_xlim(0, 100)
    ax_share.set_xlabel("share of served requests (%)")
    ax_share.set_title("Start tier of each served request")
    if totals.sum() == 0:
        _empty_note(ax_share, "no served requests")

    height = 0.8 / len(COLD_TIERS)
    for j, tier in enumerate(COLD_TIERS):
        offsets = y - 0.4 + height * (j + 0.5)
        bars = ax_cold.barh(offsets, counts[tier].to_numpy(), height=height, color=_TIER_COLORS[tier])
        ax_cold.bar_label(bars, labels=[f"{n:,}" for n in counts[tier]], padding=2, fontsize=7)
    ax_cold.set_xlabel("cold starts (requests)")
    ax_cold.set_title("Cold starts by tier the checkpoint came from")
    ax_cold.margins(x=0.15)
    ax_cold.set_xlim(left=0, right=None if counts[list(COLD_TIERS)].to_numpy().any() else 1)
    ax_cold.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_share, ax_cold):
        ax.grid(True, axis="x", alpha=0.3)
    fig.legend(*ax_share.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_run(source: Path | RunFrames, out_dir: Path | None = None, label: str | None = None) -> list[Path]:
    """Draw the standard plots of a run (a run folder or its frames) into ``out_dir`` (default: the run folder).

    Writes ``latency_cdf.png``, ``timeline.png`` and ``start_tiers.png``; returns their paths.
    """
    if isinstance(source, RunFrames):
        if out_dir is None:
            raise ValueError("plot_run needs out_dir when given frames rather than a run folder")
        frames, name = source, label or "run"
    else:
        frames, name = read_run(Path(source)), label or Path(source).name
        out_dir = Path(source) if out_dir is None else out_dir
    out_dir = Path(out_dir)
    end_s = run_end_s(*frames) or 0.0
    figures = {
        LATENCY_CDF_PNG: plot_latency_cdf({name: frames.requests}, title=f"Request latency — {name}"),
        TIMELINE_PNG: plot_timeline(frames.timeseries, title=f"Cluster over time — {name}", end_s=end_s),
        START_TIERS_PNG: plot_start_tiers({name: frames.requests}),
    }
    return [save_figure(fig, out_dir / fname) for fname, fig in figures.items()]
