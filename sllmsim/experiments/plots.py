"""Plots that compare experiment points (means with 95% intervals across seeds).

The per-run plots (latency CDF, start tiers, instances and busy GPUs over time) come from
:mod:`sllmsim.run_plots`; this module adds the two that need several points: metrics against the
request rate, and the keep-alive trade-off. Figures are built without pyplot, as there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sllmsim.metrics import METRIC_BY_KEY

_LABELS = {
    "latency_p50_s": "p50 latency (s)",
    "latency_p99_s": "p99 latency (s)",
    "latency_mean_s": "mean latency (s)",
    "ttft_p50_s": "median time to first token (s)",
    "ttft_mean_s": "mean time to first token (s)",
    "cold_start_ratio": "cold-start ratio (of requests)",
    "gpu_seconds": "GPU-seconds (GPU·s)",
}


def metric_label(metric: str) -> str:
    """An axis label with the metric's unit."""
    if metric in _LABELS:
        return _LABELS[metric]
    unit = METRIC_BY_KEY[metric].unit if metric in METRIC_BY_KEY else ""
    return f"{metric} ({unit})" if unit else metric


def _ci(series: pd.Series) -> np.ndarray:
    return series.astype(float).fillna(0.0).to_numpy()


def plot_vs_rate(summary: pd.DataFrame, rate_key: str, policy_key: str | None, rate_label: str,
                 metrics: Sequence[str] = ("latency_p50_s", "latency_p99_s", "cold_start_ratio"),
                 title: str = "Latency and cold starts vs request rate") -> Figure:
    """One panel per metric: its mean (error bars: 95% CI over seeds) against ``rate_key``, one line per policy.

    ``summary`` is :func:`sllmsim.experiments.stats.summarize_by` over ``[policy_key, rate_key]``.
    """
    fig = Figure(figsize=(4.6 * len(metrics), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    groups = list(summary.groupby(policy_key, sort=False)) if policy_key else [("all", summary)]
    xs = summary[rate_key].astype(float)
    # Nudge each policy sideways a little so that equal means and their error bars stay visible.
    step = 0.012 * (xs.max() - xs.min() or max(abs(xs.max()), 1.0))
    for i, (policy, group) in enumerate(groups):
        group = group.sort_values(rate_key)
        shift = (i - (len(groups) - 1) / 2) * step
        for ax, metric in zip(axes, metrics):
            ax.errorbar(group[rate_key].astype(float) + shift, group[f"{metric}_mean"].astype(float),
                        yerr=_ci(group[f"{metric}_ci95"]), marker="o", capsize=3, color=f"C{i % 10}",
                        label=str(policy))
    for ax, metric in zip(axes, metrics):
        ax.set_xlabel(rate_label)
        ax.set_ylabel(metric_label(metric))
        ax.set_title(metric_label(metric).split(" (")[0])
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(title=policy_key, fontsize=8)
    fig.suptitle(f"{title} (mean, 95% CI over seeds)")
    return fig


def plot_keep_alive_tradeoff(summary: pd.DataFrame, keep_alive_key: str, policy_key: str | None,
                             y_metrics: Sequence[str] = ("latency_p99_s",), x_metric: str = "gpu_seconds",
                             title: str = "Keep-alive trade-off", legend_title: str | None = None,
                             panel_key: str | None = None) -> Figure:
    """Each of ``y_metrics`` (one row of panels each) against GPU-seconds, one point per keep-alive
    value (labelled), one line per value of ``policy_key`` (a column of ``summary``); with
    ``panel_key``, one column of panels per value of that column (same axes per row, same colour
    per line everywhere; each panel scales its own y axis, so that a column whose values are far
    smaller stays readable)."""
    panels = list(summary.groupby(panel_key, sort=False)) if panel_key else [(None, summary)]
    rows = len(y_metrics)
    fig = Figure(figsize=(7.5 if len(panels) == 1 else 6.2 * len(panels), 0.6 + 4.4 * rows), layout="constrained")
    grid = fig.subplots(rows, len(panels), squeeze=False, sharex=True)
    lines = list(dict.fromkeys(summary[policy_key])) if policy_key else ["all"]
    for axes, y_metric in zip(grid, y_metrics):
        for ax, (panel, data) in zip(axes, panels):
            ys = data[f"{y_metric}_mean"].astype(float)
            # Long keep-alives can cost orders of magnitude more latency; a log axis keeps the short ones readable.
            log_y = ys.min() > 0 and ys.max() / ys.min() > 30
            groups = data.groupby(policy_key, sort=False) if policy_key else [("all", data)]
            for policy, group in groups:
                i = lines.index(policy)
                group = group.sort_values(keep_alive_key)
                x = group[f"{x_metric}_mean"].astype(float).to_numpy()
                y = group[f"{y_metric}_mean"].astype(float).to_numpy()
                ax.errorbar(x, y, xerr=_ci(group[f"{x_metric}_ci95"]), yerr=_ci(group[f"{y_metric}_ci95"]),
                            marker="o", capsize=3, color=f"C{i % 10}", label=str(policy))
                for xi, yi, ka in zip(x, y, group[keep_alive_key]):
                    ax.annotate(f"{ka:g} s" if isinstance(ka, (int, float)) else str(ka), (xi, yi),
                                textcoords="offset points", xytext=(5, 5), fontsize=8, color=f"C{i % 10}")
            ax.grid(True, alpha=0.3, which="both")
            ax.set_xlim(left=0)
            if log_y:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.set_ylabel(metric_label(y_metric) + (" — log scale" if log_y else ""))
            if panel_key:
                ax.set_title(f"{panel_key} = {panel}")
    for ax in grid[-1]:
        ax.set_xlabel(metric_label(x_metric))
    grid[0][0].legend(title=legend_title if legend_title is not None else policy_key, fontsize=8)
    heading = f"{title}: point labels are {keep_alive_key} (mean, 95% CI over seeds)"
    if panel_key or rows > 1:
        fig.suptitle(heading)
    else:
        grid[0][0].set_title(heading)
    return fig


def plot_metric_bars(summary: pd.DataFrame, policy_key: str | None,
                     metrics: Sequence[str] = ("latency_mean_s", "latency_p99_s", "cold_start_ratio"),
                     title: str = "Latency and cold starts by policy") -> Figure:
    """One panel per metric: a bar per policy value with its 95% CI over seeds."""
    fig = Figure(figsize=(4.2 * len(metrics), 3.2 + 0.15 * len(summary)), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    labels = [str(v) for v in summary[policy_key]] if policy_key else ["all runs"]
    y = np.arange(len(labels))
    for ax, metric in zip(axes, metrics):
        means = summary[f"{metric}_mean"].astype(float).to_numpy()
        bars = ax.barh(y, means, xerr=_ci(summary[f"{metric}_ci95"]), capsize=3,
                       color=[f"C{i % 10}" for i in range(len(labels))], height=0.6)
        ax.bar_label(bars, labels=[f"{m:.3g}" for m in means], padding=4, fontsize=8)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel(metric_label(metric))
        ax.set_title(metric_label(metric).split(" (")[0])
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.2)
    fig.suptitle(f"{title} (mean, 95% CI over seeds)")
    return fig
