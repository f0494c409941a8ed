"""The validation report's batched group: requests that had at least CONCURRENT_REQUESTS requests in
flight at once on their live instance get their own error rows (and headline numbers), on synthetic
run pairs whose errors are known."""

from __future__ import annotations

import pandas as pd
import pytest

from sllmsim.fidelity.accuracy import CONCURRENT_GROUP, CONCURRENT_REQUESTS, peak_in_flight
from sllmsim.fidelity.validation_report import compare_runs, write_report
from sllmsim.records import PhaseRecord, RequestRecord, RunResult


def _run(mode: str, burst_scale: float = 1.0, alone_scale: float = 1.0, burst: int = CONCURRENT_REQUESTS) -> RunResult:
    """Model m on one instance: two requests alone (at 0 s and 10 s), then ``burst`` requests sent
    within 0.1 s at 20 s that overlap; latencies scaled by ``alone_scale`` / ``burst_scale``."""
    iid = f"m-{mode}"
    phases = [PhaseRecord(iid, "m", "0", "loading_to_gpu", 0.0, 0.5, tier="host", bytes=100)]
    requests = []

    def add(arrival: float, latency: float, cold: bool) -> None:
        requests.append(RequestRecord(len(requests), "m", arrival, 16, 8, queued_until_s=arrival,
                                      first_token_s=arrival + latency / 4, finish_s=arrival + latency, node="0",
                                      instance_id=iid, cold_start=cold, tier="host" if cold else "gpu"))

    add(0.0, 2.0 * alone_scale, True)
    add(10.0, 1.0 * alone_scale, False)
    for i in range(burst):
        add(20.0 + 0.01 * i, 3.0 * burst_scale, False)
    return RunResult(name=mode, requests=requests, phases=phases, timeseries=[], resolved_config={}, mode=mode)


def test_peak_in_flight_counts_overlaps_on_the_same_instance_only():
    frame = pd.DataFrame({"instance_id_live": ["x", "x", "x", "y", None],
                          "arrival_s_live": [0.0, 1.0, 5.0, 1.5, 2.0],
                          "latency_s_live": [2.0, 2.0, 1.0, 9.0, 1.0]})
    # x: [0, 2) and [1, 3) overlap, [5, 6) is alone; y is on another instance; no instance: unknown.
    assert peak_in_flight(frame).tolist()[:4] == [2, 2, 1, 1]
    assert pd.isna(peak_in_flight(frame).iloc[4])


def test_the_burst_has_its_own_rows_with_its_own_error():
    live, sim = _run("live"), _run("sim", burst_scale=1.3, alone_scale=1.1)
    requests, _, errors, head = compare_runs(live, sim)
    assert sorted(requests["in_flight_live"].tolist()) == [1, 1] + [CONCURRENT_REQUESTS] * CONCURRENT_REQUESTS
    rows = errors[errors["group"] == CONCURRENT_GROUP].set_index("quantity")
    assert rows.loc["end-to-end latency", "n"] == CONCURRENT_REQUESTS
    assert rows.loc["end-to-end latency", "median_ape"] == pytest.approx(0.30)
    assert rows.loc["end-to-end latency", "median_signed_error"] == pytest.approx(0.30)
    assert rows.loc["time to first token", "median_ape"] == pytest.approx(0.30)
    assert head["concurrent_requests"] == CONCURRENT_REQUESTS
    assert head["concurrent_latency_median_ape"] == pytest.approx(0.30)
    assert head["concurrent_latency_median_signed_error"] == pytest.approx(0.30)
    # The whole run mixes both: 8 requests at 30 % and 2 at 10 %.
    overall = errors[(errors["group"] == "all") & (errors["quantity"] == "end-to-end latency")].iloc[0]
    assert overall["median_ape"] == pytest.approx(0.30)


def test_a_smaller_burst_gets_no_batched_rows():
    _, _, errors, head = compare_runs(_run("live", burst=CONCURRENT_REQUESTS - 1),
                                      _run("sim", burst=CONCURRENT_REQUESTS - 1))
    assert not (errors["group"] == CONCURRENT_GROUP).any()
    assert head["concurrent_requests"] is None and head["concurrent_latency_median_ape"] is None


def test_the_report_shows_the_batched_row(tmp_path):
    summary = write_report(tmp_path, _run("live"), _run("sim", burst_scale=0.8), run_folders=False)
    assert summary["concurrent_latency_median_ape"] == pytest.approx(0.20)
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if CONCURRENT_GROUP in line and "end-to-end" in line)
    assert f"| {CONCURRENT_REQUESTS} | 20.0% |" in row and "-20.0%" in row
    assert "in_flight_live" in (tmp_path / "requests.csv").read_text().splitlines()[0]
