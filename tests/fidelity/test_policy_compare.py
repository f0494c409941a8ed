"""The policy comparison's join and verdict, on hand-built live/simulated run pairs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sllmsim.errors import ConfigError
from sllmsim.fidelity.policy_compare import common_requests, compare_policies, parse_policies, report_markdown


def _frame(latencies_s: list[float], failed: tuple[int, ...] = (), models: str = "ab") -> pd.DataFrame:
    """Requests alternating between ``models``, one a second, with the given latencies."""
    n = len(latencies_s)
    ids = np.arange(n)
    return pd.DataFrame({
        "request_id": ids[::-1],  # numbered differently from arrival order: the join must not use ids
        "model": [models[i % len(models)] for i in range(n)],
        "arrival_s": ids.astype(float),
        "status": ["failed" if i in failed else "completed" for i in range(n)],
        "latency_s": [math.nan if i in failed else v for i, v in enumerate(latencies_s)],
    })


BASE = [1.0, 2.0, 3.0, 4.0]


def test_same_winner_and_relative_difference_known_by_construction():
    # live: random is 50 % slower; sim: random 40 % slower, same winner, 10 pp gap (missed at 5 pp).
    runs = {("storage_aware", "live"): _frame(BASE), ("random", "live"): _frame([v * 1.5 for v in BASE]),
            ("storage_aware", "sim"): _frame([v * 2 for v in BASE]), ("random", "sim"): _frame([v * 2.8 for v in BASE])}
    out = compare_policies(runs, ["storage_aware", "random"])
    assert out["requests"] == 4
    for stat in ("mean", "p99"):
        e = out["stats"][stat]
        assert e["winner_live"] == e["winner_sim"] == "storage_aware" and e["same_winner"] is True
        rel = e["relative"]["random"]
        assert rel["live"] == pytest.approx(0.5) and rel["sim"] == pytest.approx(0.4)
        assert rel["gap_pp"] == pytest.approx(10.0) and rel["within_target"] is False
    assert out["stats"]["mean"]["live"]["storage_aware"] == pytest.approx(2.5)
    assert out["stats"]["p99"]["live"]["storage_aware"] == pytest.approx(np.percentile(BASE, 99))
    assert out["targets"]["same winner on mean latency"] is True
    assert out["targets"]["mean latency: random vs storage_aware within 5 pp"] is False
    # A looser target passes the same runs.
    assert compare_policies(runs, ["storage_aware", "random"], gap_target_pp=10.5)["stats"]["mean"][
        "relative"]["random"]["within_target"] is True


def test_wrong_winner_is_reported():
    runs = {("storage_aware", "live"): _frame(BASE), ("random", "live"): _frame([v * 1.1 for v in BASE]),
            ("storage_aware", "sim"): _frame(BASE), ("random", "sim"): _frame([v * 0.9 for v in BASE])}
    out = compare_policies(runs, ["storage_aware", "random"])
    e = out["stats"]["mean"]
    assert (e["winner_live"], e["winner_sim"], e["same_winner"]) == ("storage_aware", "random", False)
    assert e["relative"]["random"]["gap_pp"] == pytest.approx(20.0)
    assert out["targets"]["same winner on p99 latency"] is False


def test_tie_has_no_winner():
    runs = {(p, s): _frame(BASE) for p in ("storage_aware", "random") for s in ("live", "sim")}
    e = compare_policies(runs, ["storage_aware", "random"])["stats"]["mean"]
    assert e["winner_live"] is None and e["winner_sim"] is None and e["same_winner"] is True
    assert e["relative"]["random"]["gap_pp"] == pytest.approx(0.0)


def test_join_keeps_only_requests_completed_in_every_run():
    # Request 3 (model b's second) fails in random's live run: it drops from all four runs, so the
    # slow 40 s request of storage_aware's live run is not compared either.
    lat = [1.0, 2.0, 3.0, 40.0]
    runs = {("storage_aware", "live"): _frame(lat), ("random", "live"): _frame(lat, failed=(3,)),
            ("storage_aware", "sim"): _frame(lat), ("random", "sim"): _frame(lat)}
    common = common_requests(runs)
    assert list(zip(common["model"], common["rank"])) == [("a", 0), ("a", 1), ("b", 0)]
    assert common["storage_aware/live"].tolist() == [1.0, 3.0, 2.0]
    out = compare_policies(runs, ["storage_aware", "random"])
    assert out["requests"] == 3
    assert out["stats"]["mean"]["live"]["storage_aware"] == pytest.approx(2.0)


def test_join_pairs_by_model_and_arrival_rank_not_row_order():
    shuffled = _frame([1.0, 2.0, 3.0, 4.0]).sample(frac=1.0, random_state=3)
    runs = {("x", "live"): shuffled, ("y", "live"): _frame([1.0, 2.0, 3.0, 4.0]),
            ("x", "sim"): _frame(BASE), ("y", "sim"): _frame(BASE)}
    common = common_requests(runs)
    assert common["x/live"].tolist() == common["y/live"].tolist()


def test_missing_run_is_an_error_and_report_renders():
    with pytest.raises(ValueError, match="missing runs"):
        compare_policies({("a", "live"): _frame(BASE)}, ["a", "b"])
    runs = {(p, s): _frame([v * (1.2 if p == "random" else 1.0) for v in BASE])
            for p in ("storage_aware", "random") for s in ("live", "sim")}
    text = report_markdown(compare_policies(runs, ["storage_aware", "random"]), {"trace": "t.yaml", "command": "x"})
    assert "| mean | random | +20.0% | +20.0% | 0.0 |" in text
    assert "same winner on mean latency: met" in text


@pytest.mark.parametrize("value", ["storage_aware", "storage_aware,storage_aware", "storage_aware,nope", ","])
def test_bad_policy_lists_are_rejected(value):
    with pytest.raises(ConfigError, match="--compare-policies"):
        parse_policies(value)


def test_cli_rejects_a_bad_policy_list_before_any_live_run(tmp_path, capsys):
    from sllmsim.cli import main

    code = main(["validate", "traces/validation-policies.yaml", "--hardware",
                 "traces/validation-small/hardware.json", "--compare-policies", "storage_aware",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--compare-policies" in err and "two or more distinct" in err
    assert not (tmp_path / "out").exists()


def test_placement_agreement_counts_requests_placed_alike():
    def with_nodes(frame: pd.DataFrame, nodes: str, tiers: list[str]) -> pd.DataFrame:
        return frame.assign(node=list(nodes), tier=tiers)

    runs = {("storage_aware", "live"): with_nodes(_frame(BASE), "0101", ["disk"] * 4),
            ("storage_aware", "sim"): with_nodes(_frame(BASE), "0101", ["disk"] * 4),
            ("random", "live"): with_nodes(_frame(BASE), "0111", ["disk", "disk", "network", "disk"]),
            ("random", "sim"): with_nodes(_frame(BASE), "1100", ["network", "disk", "network", "network"])}
    out = compare_policies(runs, ["storage_aware", "random"])
    assert out["placement"]["storage_aware"] == {"same_node": 4, "compared": 4, "tiers_live": {"disk": 4},
                                                 "tiers_sim": {"disk": 4}}
    assert out["placement"]["random"]["same_node"] == 1  # only the second request (node 1 on both sides)
    assert out["placement"]["random"]["tiers_sim"] == {"disk": 1, "network": 3}
    assert "| random | 1 of 4 | disk 3, network 1 | disk 1, network 3 |" in report_markdown(out, {})
