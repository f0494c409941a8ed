"""Metrics on hand-built records whose answers are worked out by hand in the comments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _synthetic_runs import synthetic_result, tiny_result

from sllmsim import metrics
from sllmsim.errors import SllmsimError
from sllmsim.records import (
    PHASE_COLUMNS,
    REQUEST_COLUMNS,
    TIMESERIES_COLUMNS,
    RequestRecord,
    TimeseriesRecord,
    write_phases_csv,
    write_requests_csv,
    write_timeseries_csv,
)


@pytest.fixture(scope="module")
def tiny_summary() -> dict:
    return metrics.summarize_result(tiny_result())


def test_summary_keys_are_exactly_the_metric_table(tiny_summary):
    assert list(tiny_summary) == [m.key for m in metrics.METRICS]
    for per_model in tiny_summary["per_model"].values():
        assert list(per_model) == list(metrics.PER_MODEL_KEYS)


def test_metric_keys_are_unique_and_carry_units():
    keys = [m.key for m in metrics.METRICS]
    assert len(keys) == len(set(keys))
    for m in metrics.METRICS:
        if m.unit == "s":
            assert m.key.endswith("_s"), m.key
        assert m.definition


def test_frame_columns_match_the_csv_schema():
    assert list(metrics.requests_frame([]).columns) == REQUEST_COLUMNS
    assert list(metrics.phases_frame([]).columns) == PHASE_COLUMNS
    assert list(metrics.timeseries_frame([]).columns) == TIMESERIES_COLUMNS


def test_request_counts_and_start_tiers(tiny_summary):
    s = tiny_summary
    assert (s["requests"], s["completed"], s["failed"]) == (5, 4, 1)
    assert s["failed_by_reason"] == {"timeout": 1}
    assert (s["warm_starts"], s["cold_starts"]) == (2, 2)
    assert (s["cold_starts_host"], s["cold_starts_disk"], s["cold_starts_network"]) == (1, 1, 0)
    assert s["cold_start_ratio"] == pytest.approx(2 / 5)


def test_latency_percentiles_follow_numpy_linear_definition(tiny_summary):
    # Latencies 1, 2, 3, 4 s: position (n-1)·p/100 → p50 at 1.5 → 2.5; p90 at 2.7 → 3.7; p99 at 2.97 → 3.97.
    s = tiny_summary
    assert s["latency_mean_s"] == pytest.approx(2.5)
    assert s["latency_p50_s"] == pytest.approx(2.5)
    assert s["latency_p90_s"] == pytest.approx(3.7)
    assert s["latency_p99_s"] == pytest.approx(3.97)
    assert s["latency_p99_s"] == pytest.approx(float(np.percentile([1, 2, 3, 4], 99)))


def test_ttft_and_queueing_delay(tiny_summary):
    s = tiny_summary
    # TTFTs 0.6, 1.5, 0.2, 0.4 → sorted 0.2 0.4 0.6 1.5; p50 halfway between 0.4 and 0.6.
    assert s["ttft_mean_s"] == pytest.approx(0.675)
    assert s["ttft_p50_s"] == pytest.approx(0.5)
    # Queueing delays 0.5, 1.0, 0, 0; the failed request was never served and is left out.
    assert s["queueing_delay_mean_s"] == pytest.approx(0.375)
    assert s["queueing_delay_p50_s"] == pytest.approx(0.25)


def test_load_phases_and_startup_per_tier(tiny_summary):
    s = tiny_summary
    assert s["instances_started"] == 3
    # a-0 went through loading_to_host (from disk); a-1 only loading_to_gpu (from host); b-0 was preloaded.
    assert (s["loads_host"], s["loads_disk"], s["loads_network"]) == (1, 1, 0)
    assert s["startup_disk_mean_s"] == pytest.approx(0.5)  # queued at 0.0 → loaded at 0.5
    assert s["startup_host_mean_s"] == pytest.approx(1.0)  # 1.0 → 2.0
    assert s["startup_network_mean_s"] is None
    assert s["load_queue_mean_s"] == pytest.approx(0.1)
    assert s["load_to_host_mean_s"] == pytest.approx(0.3)
    assert s["load_to_gpu_mean_s"] == pytest.approx((0.1 + 1.0) / 2)
    assert s["load_download_mean_s"] is None


def test_gpu_seconds_integrates_busy_gpus_per_node(tiny_summary):
    s = tiny_summary
    # Node 1: 2 GPUs over [0, 7] = 14. Node 0: 1 GPU over [0, 1], released and re-taken at 1,
    # 1 GPU over [1, 3] = 3. Total 17 GPU·s over a 7 s run.
    assert s["duration_s"] == pytest.approx(7.0)
    assert s["gpu_seconds"] == pytest.approx(17.0)
    assert s["mean_gpus_busy"] == pytest.approx(17.0 / 7.0)
    assert s["peak_gpus_busy"] == pytest.approx(3.0)
    assert s["peak_instances"] == pytest.approx(2.0)


def test_gpu_seconds_holds_the_last_sample_until_the_end_of_the_run():
    ts = metrics.timeseries_frame([TimeseriesRecord(2.0, "gpus_busy", "0", 4)])
    req = metrics.requests_frame([RequestRecord(0, "m", 0.0, 1, 1, queued_until_s=2.0, first_token_s=3.0,
                                                finish_s=10.0)])
    assert metrics.summarize(req, None, ts)["gpu_seconds"] == pytest.approx(4 * (10.0 - 2.0))


def test_per_model_breakdown(tiny_summary):
    a, b = tiny_summary["per_model"]["a"], tiny_summary["per_model"]["b"]
    assert (a["requests"], a["completed"], a["cold_starts"]) == (2, 2, 2)
    assert a["latency_p50_s"] == pytest.approx(1.5)
    assert (b["requests"], b["completed"], b["failed"], b["cold_starts"]) == (3, 2, 1, 0)
    assert b["latency_mean_s"] == pytest.approx(3.5)
    assert b["cold_start_ratio"] == pytest.approx(0.0)


def test_empty_run_reports_nulls_not_nan():
    s = metrics.summarize(metrics.requests_frame([]), metrics.phases_frame([]), metrics.timeseries_frame([]))
    json.dumps(s, allow_nan=False)  # raises on NaN
    assert s["requests"] == 0 and s["completed"] == 0 and s["per_model"] == {}
    for key in ("latency_p50_s", "ttft_p99_s", "cold_start_ratio", "gpu_seconds", "duration_s",
                "peak_instances", "startup_disk_mean_s"):
        assert s[key] is None, key


def test_all_failed_run_reports_null_latencies():
    reqs = [RequestRecord(i, "m", float(i), 1, 1, status="failed", reason=r)
            for i, r in enumerate(["no_capacity", "no_capacity", ""])]
    s = metrics.summarize(metrics.requests_frame(reqs))
    json.dumps(s, allow_nan=False)
    assert (s["completed"], s["failed"]) == (0, 3)
    assert s["failed_by_reason"] == {"no_capacity": 2, "unspecified": 1}
    assert s["latency_p50_s"] is None and s["queueing_delay_mean_s"] is None
    assert s["cold_start_ratio"] == 0.0 and s["gpu_seconds"] is None
    assert s["per_model"]["m"]["latency_p99_s"] is None


def test_step_total_sums_keys_and_keeps_the_last_sample_at_a_time():
    ts = metrics.timeseries_frame([
        TimeseriesRecord(0.0, "gpus_busy", "0", 1), TimeseriesRecord(0.0, "gpus_busy", "1", 2),
        TimeseriesRecord(1.0, "gpus_busy", "0", 0), TimeseriesRecord(1.0, "gpus_busy", "0", 3),
        TimeseriesRecord(2.0, "gpus_busy", "1", 0), TimeseriesRecord(2.0, "instances", "m", 9),
    ])
    total = metrics.step_total(ts, "gpus_busy")
    assert total["time_s"].tolist() == [0.0, 1.0, 2.0]
    assert total["value"].tolist() == [3.0, 5.0, 3.0]
    assert metrics.step_total(ts, "gpus_busy", keys=["1"])["value"].tolist() == [2.0, 0.0]


def _write_csvs(tmp_path, result):
    write_requests_csv(tmp_path / metrics.REQUESTS_CSV, result.requests)
    write_phases_csv(tmp_path / metrics.INSTANCES_CSV, result.phases)
    write_timeseries_csv(tmp_path / metrics.TIMESERIES_CSV, result.timeseries)


def test_read_run_round_trips_the_frames(tmp_path):
    result = synthetic_result(n_requests=300)
    _write_csvs(tmp_path, result)
    loaded = metrics.read_run(tmp_path)
    memory = metrics.frames_from_result(result)
    for got, want in zip(loaded, memory):
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=0, atol=1e-8)
    a, b = metrics.summarize(*loaded), metrics.summarize(*memory)
    for key in metrics.SCALAR_KEYS:
        if b[key] is None:
            assert a[key] is None, key
        else:
            assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-6), key


def test_read_run_keeps_string_columns_as_strings(tmp_path):
    tiny = tiny_result()
    tiny.requests[0].node = "NA"  # must not turn into a missing value
    _write_csvs(tmp_path, tiny)
    frames = metrics.read_run(tmp_path)
    assert frames.requests["node"].tolist()[:3] == ["NA", "0", "1"]
    assert frames.requests["reason"].tolist()[-1] == "timeout"
    assert frames.requests["cold_start"].dtype == bool
    assert math.isnan(frames.requests["finish_s"].iloc[-1])
    assert frames.timeseries["key"].tolist()[1] == "1"


def test_read_run_names_a_bad_csv(tmp_path):
    (tmp_path / metrics.REQUESTS_CSV).write_text("request_id,model\n1,a\n")
    with pytest.raises(SllmsimError, match="missing columns"):
        metrics.read_run(tmp_path)


def test_compare_summaries_differences_and_ratios(tiny_summary):
    other = dict(tiny_summary, latency_p50_s=5.0, failed=0, cold_starts_network=3, gpu_seconds=None)
    table = metrics.compare_summaries(tiny_summary, other).set_index("metric")
    assert table.loc["latency_p50_s", "b_minus_a"] == pytest.approx(2.5)
    assert table.loc["latency_p50_s", "b_over_a"] == pytest.approx(2.0)
    assert table.loc["failed", "b_minus_a"] == -1
    assert pd.isna(table.loc["cold_starts_network", "b_over_a"])  # a is 0
    assert pd.isna(table.loc["gpu_seconds", "b_minus_a"])  # b is missing
    assert list(table.index) == list(metrics.SCALAR_KEYS)


def test_readme_metric_table_is_generated_from_the_code():
    readme = Path(__file__).resolve().parent.parent / "README.md"
    assert metrics.metrics_markdown_table() in readme.read_text()
