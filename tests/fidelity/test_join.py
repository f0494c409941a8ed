"""The join of a live and a simulated run, and the errors computed on it, on hand-built run pairs whose
errors are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cpu_samples import cpu_samples

from sllmsim.fidelity.accuracy import ape, error_table, signed_error
from sllmsim.fidelity.join import join_loads, join_requests, loads_table
from sllmsim.fidelity.validation_report import compare_runs
from sllmsim.fidelity.sim_trace import realized_requests
from sllmsim.metrics import phases_frame, requests_frame
from sllmsim.records import PhaseRecord, RequestRecord, RunResult
from sllmsim.traces.request_arrays import RequestArrays


def _run(mode: str, scale_latency: float = 1.0, scale_load: float = 1.0, ids: str = "{m}-{k}",
         node_of_b1: str = "1", shift_s: float = 0.0, extra_unused_load: bool = False) -> RunResult:
    """Two models on two nodes. Model a: a disk load serving requests 0 and 1, then (after release) a
    host load serving request 2. Model b: a network load on ``node_of_b1`` serving request 0.

    Every request lasts ``scale_latency ×`` its base latency and every load phase ``scale_load ×``
    its base duration, so a pair of runs differing only in the scales has known errors.
    """
    def load(m: str, k: int, node: str, start: float, phases: list[tuple[str, float]], tier: str):
        iid = ids.format(m=m, k=k)
        out, t = [], start
        for phase, dur in phases:
            out.append(PhaseRecord(iid, m, node, phase, t, t + dur * scale_load, tier=tier, bytes=100))
            t += dur * scale_load
        return iid, out

    a0, pa0 = load("a", 0, "0", 0.0, [("loading_to_host", 1.0), ("loading_to_gpu", 0.5)], "disk")
    a1, pa1 = load("a", 1, "0", 20.0, [("loading_to_gpu", 0.4)], "host")
    b0, pb0 = load("b", 0, node_of_b1, 1.0, [("downloading", 3.0), ("loading_to_host", 1.0),
                                              ("loading_to_gpu", 0.5)], "network")
    phases = [*pa0, *pa1, *pb0, PhaseRecord(a0, "a", "0", "queued", 0.0, 0.0)]
    if extra_unused_load:
        _, extra = load("b", 9, "0", 30.0, [("loading_to_gpu", 0.5)], "host")
        phases += extra

    def req(rid: int, model: str, arrival: float, base_latency: float, node: str, iid: str, cold: bool, tier: str):
        lat = base_latency * scale_latency
        return RequestRecord(rid, model, arrival + shift_s, 16, 8, queued_until_s=arrival + shift_s,
                             first_token_s=arrival + shift_s + lat / 4, finish_s=arrival + shift_s + lat,
                             node=node, instance_id=iid, cold_start=cold, tier=tier)

    requests = [
        req(0, "a", 0.0, 2.0, "0", a0, True, "disk"),
        req(1, "b", 1.0, 6.0, node_of_b1, b0, True, "network"),
        req(2, "a", 3.0, 1.0, "0", a0, False, "gpu"),
        req(3, "a", 20.0, 1.5, "0", a1, True, "host"),
    ]
    if mode == "sim":
        requests = requests[::-1]  # record order must not matter, nor request ids
        for i, r in enumerate(requests):
            r.request_id = 100 + i
    return RunResult(name=mode, requests=requests, phases=phases, timeseries=[], resolved_config={}, mode=mode)


def _frames(result: RunResult):
    return requests_frame(result.requests), phases_frame(result.phases)


def test_ape_and_signed_error():
    live = pd.Series([1.0, 2.0, 4.0, 0.0])
    sim = pd.Series([1.1, 1.0, 4.0, 3.0])
    assert ape(live, sim).tolist()[:3] == pytest.approx([0.1, 0.5, 0.0])
    assert math.isnan(ape(live, sim).iloc[3])  # a zero measurement has no percentage error
    assert signed_error(live, sim).tolist()[:3] == pytest.approx([0.1, -0.5, 0.0])


def test_requests_pair_by_model_and_rank_not_by_id_or_record_order():
    live_req, _ = _frames(_run("live"))
    sim_req, _ = _frames(_run("sim", shift_s=5.0))
    joined = join_requests(live_req, sim_req)
    assert joined["paired"].all() and joined["completed"].all()
    assert list(zip(joined["model"], joined["rank"])) == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    assert joined["request_id_live"].tolist() == [0, 1, 2, 3]
    assert joined["request_id_sim"].tolist() == [103, 102, 101, 100]
    # A constant clock offset between the runs does not change latencies.
    assert (joined["latency_s_live"] == joined["latency_s_sim"]).all()


def test_loads_table_sums_load_phases_and_ignores_queueing():
    _, live_ph = _frames(_run("live"))
    loads = loads_table(live_ph).set_index("instance_id")
    assert loads.loc["a-0", "load_s"] == pytest.approx(1.5)
    assert loads.loc["a-0", "to_host_s"] == pytest.approx(1.0)
    assert loads.loc["b-0", "download_s"] == pytest.approx(3.0)
    assert loads.loc["b-0", "load_s"] == pytest.approx(4.5)
    assert loads.loc["a-1", "tier"] == "host"


def test_known_errors_come_out_exactly():
    # Simulated requests 10 % slower and loads 20 % faster than measured: every APE is 10 % / 20 %.
    live, sim = _run("live"), _run("sim", scale_latency=1.1, scale_load=0.8, ids="{m}#{k}x")
    requests, loads, errors, head = compare_runs(live, sim)
    by = errors.set_index(["quantity", "group"])
    assert by.loc[("end-to-end latency", "all"), "median_ape"] == pytest.approx(0.10)
    assert by.loc[("end-to-end latency", "all"), "p99_ape"] == pytest.approx(0.10)
    assert by.loc[("end-to-end latency", "all"), "median_signed_error"] == pytest.approx(0.10)
    assert by.loc[("time to first token", "warm (live)"), "n"] == 1
    assert by.loc[("cold-start load time", "all tiers"), "median_ape"] == pytest.approx(0.20)
    assert by.loc[("cold-start load time", "all tiers"), "median_signed_error"] == pytest.approx(-0.20)
    assert by.loc[("cold-start load time", "network"), "live_median_s"] == pytest.approx(4.5)
    assert by.loc[("cold-start load time", "network"), "sim_median_s"] == pytest.approx(3.6)
    assert head["cold_start_load_median_ape"] == pytest.approx(0.20)
    assert head["latency_median_ape"] == pytest.approx(0.10)
    assert head["placement_same_node_share"] == 1.0
    assert head["targets"] == {"cold-start load time median APE ≤ 10%": False,
                               "end-to-end latency median APE ≤ 15%": True,
                               "placement same node ≥ 95%": True}
    # Loads pair through the first request each instance served, whatever their ids.
    assert loads["paired"].all()
    assert loads["instance_id_sim"].tolist() == ["a#0x", "a#1x", "b#0x"]


def test_mixed_errors_median_and_p99():
    # Per-request latency errors of 0 %, 10 %, 20 % and 40 %: median 15 %, p99 by linear interpolation.
    live_req, _ = _frames(_run("live"))
    sim_req = live_req.copy()
    factors = np.array([1.0, 1.1, 0.8, 1.4])
    sim_req["latency_s"] = sim_req["latency_s"] * factors
    joined = join_requests(live_req, sim_req)
    errors = error_table(joined, join_loads(joined, *(_frames(_run("live"))[1:] * 2)))
    row = errors[(errors["quantity"] == "end-to-end latency") & (errors["group"] == "all")].iloc[0]
    assert row["median_ape"] == pytest.approx(0.15)
    assert row["p99_ape"] == pytest.approx(np.percentile([0.0, 0.1, 0.2, 0.4], 99))


def test_a_different_node_counts_against_placement():
    requests, loads, errors, head = compare_runs(_run("live"), _run("sim", node_of_b1="0"))
    assert head["placement_paired_loads"] == 3
    assert head["placement_same_node"] == 2
    assert head["placement_same_node_share"] == pytest.approx(2 / 3)
    assert head["targets"]["placement same node ≥ 95%"] is False
    row = loads[loads["model"] == "b"].iloc[0]
    assert (row["node_live"], row["node_sim"], row["same_node"]) == ("1", "0", False)


def test_a_load_that_served_nothing_stays_unpaired():
    requests, loads, errors, head = compare_runs(_run("live"), _run("sim", extra_unused_load=True))
    assert head["placement_paired_loads"] == 3
    assert head["placement_sim_only_loads"] == 1
    assert head["placement_live_only_loads"] == 0
    extra = loads[~loads["paired"]].iloc[0]
    assert extra["instance_id_sim"] == "b-9" and pd.isna(extra["instance_id_live"])


def test_a_request_missing_on_one_side_is_unpaired_and_left_out_of_errors():
    live, sim = _run("live"), _run("sim")
    sim.requests = [r for r in sim.requests if not (r.model == "a" and r.arrival_s == 20.0)]
    requests, loads, errors, head = compare_runs(live, sim)
    assert head["requests"] == 4 and head["requests_paired"] == 3 and head["requests_completed_both"] == 3
    row = errors[(errors["quantity"] == "end-to-end latency") & (errors["group"] == "all")].iloc[0]
    assert row["n"] == 3


def test_realized_requests_take_live_times_and_tokens():
    planned = RequestArrays(np.array([0.0, 1.0, 3.0, 20.0]), np.array(["a", "b", "a", "a"], dtype=object),
                            np.array([50, 50, 50, 50]), np.array([32, 32, 32, 32]))
    live_req, _ = _frames(_run("live", shift_s=7.25))
    live_req.loc[live_req["request_id"] == 2, "arrival_s"] += 0.05  # sent a little late
    live_req.loc[live_req["request_id"] == 1, "output_tokens"] = 0  # ended with its end token at once
    live_req.loc[live_req["request_id"] == 3, "status"] = "failed"
    out = realized_requests(planned, live_req)
    assert out["time"].tolist() == pytest.approx([0.0, 1.0, 3.05, 20.0])
    assert out["input_tokens"].tolist() == [16, 16, 16, 16]
    assert out["output_tokens"].tolist() == [8, 1, 8, 32]  # at least one token; a failed one keeps the plan


def test_report_splits_requests_and_loads_by_contention():
    live, sim = _run("live"), _run("sim", scale_latency=1.1, scale_load=0.8, ids="{m}#{k}x")
    # Other processes: quiet for the first 10 s, a whole core busy from 10 s to 30 s.
    samples = cpu_samples([0.0] * 20 + [1.0] * 40)
    requests, loads, errors, _ = compare_runs(live, sim, samples)
    by_arrival = requests.set_index("arrival_s_live")["other_cores_live"]
    assert by_arrival.loc[0.0] == pytest.approx(0.0) and by_arrival.loc[20.0] == pytest.approx(1.0)
    assert loads.set_index("instance_id_live").loc["a-1", "other_cores_live"] == pytest.approx(1.0)
    groups = errors.set_index(["quantity", "group"])["n"]
    assert groups[("end-to-end latency", "others < 0.25 cores (live)")] == 3
    assert groups[("end-to-end latency", "others ≥ 0.25 cores (live)")] == 1
    assert groups[("cold-start load time", "others ≥ 0.25 cores (live)")] == 1
    # Without samples there are no such groups (a run saved before sampling existed).
    _, _, plain, _ = compare_runs(live, sim)
    assert not plain["group"].str.startswith("others").any()
