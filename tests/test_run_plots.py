"""Plots: written, non-empty, labelled, and drawing the numbers the metrics compute."""

from __future__ import annotations

import numpy as np
import pytest
from _synthetic_runs import synthetic_result, tiny_result

from sllmsim import metrics, run_plots
from sllmsim.output import write_run_folder
from sllmsim.records import RunResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def frames() -> metrics.RunFrames:
    return metrics.frames_from_result(synthetic_result(n_requests=600, n_models=12))


def _legend(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_run_folder_plots_are_written(tmp_path):
    folder = write_run_folder(tmp_path / "run", synthetic_result(n_requests=300))
    for name in (run_plots.LATENCY_CDF_PNG, run_plots.TIMELINE_PNG, run_plots.START_TIERS_PNG):
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_latency_cdf_overlays_labelled_runs_through_their_percentiles(frames):
    other = metrics.frames_from_result(synthetic_result(n_requests=600, seed=1, keep_alive_s=5.0))
    fig = run_plots.plot_latency_cdf({"keep 30 s": frames.requests, "keep 5 s": other.requests})
    latency_ax, ttft_ax = fig.axes
    assert latency_ax.get_xlabel().startswith("end-to-end latency (s)")
    assert latency_ax.get_ylabel() == "fraction of completed requests"
    assert [lab.split(" (")[0] for lab in _legend(latency_ax)] == ["keep 30 s", "keep 5 s"]
    assert fig.get_suptitle() and ttft_ax.get_title() == "CDF of time to first token"
    # Every corner of the curve lies on the empirical CDF: y = fraction of latencies ≤ x.
    values = frames.requests["latency_s"].to_numpy()
    line = latency_ax.get_lines()[0]
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert y[0] == 0.0 and y[-1] == 1.0
    assert y[1:] == pytest.approx([np.mean(values <= v) for v in x[1:]])


def test_cdf_of_few_values_is_a_staircase():
    xs, ys = run_plots.ecdf_points(np.array([3.0, 1.0, 2.0]))
    assert xs.tolist() == [1.0, 1.0, 2.0, 3.0] and ys.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    xs, ys = run_plots.ecdf_points(np.arange(10_000.0), max_points=101)
    assert len(xs) == 102 and ys[-1] == 1.0 and ys[1:] == pytest.approx((xs[1:] + 1) / 10_000)


def test_latency_cdf_uses_log_scale_only_for_wide_ranges(frames):
    assert run_plots.plot_latency_cdf(frames.requests).axes[0].get_xscale() == "log"  # 0.05 s … 20 s
    tiny = metrics.frames_from_result(tiny_result()).requests  # 1 s … 4 s
    assert run_plots.plot_latency_cdf(tiny).axes[0].get_xscale() == "linear"


def test_timeline_stacks_top_models_and_groups_the_rest(frames):
    fig = run_plots.plot_timeline(frames.timeseries, top_models=4)
    inst_ax, gpu_ax, mem_ax = fig.axes
    labels = _legend(inst_ax)
    assert len(labels) == 5 and labels[-1] == "other (8 models)"
    assert gpu_ax.get_ylabel() == "GPUs" and mem_ax.get_ylabel() == "used (GiB)"
    assert mem_ax.get_xlabel() == "time since start of run (s)"
    # The top of the stack is the total instance count, whose peak the summary reports.
    top = max(np.max(c.get_paths()[0].vertices[:, 1]) for c in inst_ax.collections)
    assert top == pytest.approx(metrics.summarize(*frames)["peak_instances"])


def test_start_tiers_bars_match_the_tier_counts(frames):
    fig = run_plots.plot_start_tiers({"run": frames.requests})
    share_ax, cold_ax = fig.axes
    counts = metrics.start_tier_counts(frames.requests)
    served = sum(counts.values())
    widths = [p.get_width() for p in share_ax.patches]
    assert widths == pytest.approx([100.0 * counts[t] for t in ("gpu", "host", "disk", "network")] / np.float64(served))
    assert [p.get_width() for p in cold_ax.patches] == [counts[t] for t in metrics.COLD_TIERS]
    assert share_ax.get_xlabel() == "share of served requests (%)"


def test_busy_gpus_plot_has_one_line_per_run(frames):
    other = metrics.frames_from_result(synthetic_result(n_requests=200, seed=2)).timeseries
    fig = run_plots.plot_busy_gpus({"A": frames.timeseries, "B": other})
    assert [_legend(ax) for ax in fig.axes] == [["A", "B"], ["A", "B"]]


def test_plot_run_redraws_an_empty_run_folder(tmp_path):
    empty = RunResult(name="empty", requests=[], phases=[], timeseries=[], resolved_config={})
    folder = write_run_folder(tmp_path / "run", empty, plots=False)
    paths = run_plots.plot_run(folder)
    assert sorted(p.name for p in paths) == sorted([run_plots.LATENCY_CDF_PNG, run_plots.TIMELINE_PNG,
                                                    run_plots.START_TIERS_PNG])
    assert all(p.parent == folder and p.read_bytes().startswith(PNG_MAGIC) for p in paths)
    with pytest.raises(ValueError, match="out_dir"):
        run_plots.plot_run(metrics.read_run(folder))
