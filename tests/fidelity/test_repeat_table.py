"""The repeated-pairs table: rows read from report folders, and the verdict's two conditions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sllmsim.fidelity.repeat_table import RepeatTableError, markdown, run_row, verdict, write_table


def _report(folder, load_ape, load_signed, lat_ape, lat_signed, met=True, other=(0.1, 0.3, 0.2)):
    folder.mkdir(parents=True)
    pd.DataFrame([
        {"quantity": "cold-start load time", "group": "all tiers", "median_ape": load_ape,
         "median_signed_error": load_signed},
        {"quantity": "cold-start load time", "group": "disk", "median_ape": 0.9, "median_signed_error": 0.9},
        {"quantity": "end-to-end latency", "group": "all", "median_ape": lat_ape, "median_signed_error": lat_signed},
        {"quantity": "end-to-end latency", "group": "warm (live)", "median_ape": 0.8, "median_signed_error": -0.8},
    ]).to_csv(folder / "errors.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({
        "placement_same_node_share": 1.0, "context": {"load_average": "live run median 0.4"},
        "targets": {"load": met, "latency": True, "placement": True}}))
    pd.DataFrame({"other_cores_live": list(other)}).to_csv(folder / "requests.csv", index=False)
    return folder


def test_a_row_reads_the_all_groups_and_the_machine_load(tmp_path):
    row = run_row("run-1", _report(tmp_path / "r", 0.07, -0.03, 0.12, -0.06))
    assert row["load_median_ape"] == 0.07 and row["load_median_signed"] == -0.03
    assert row["latency_median_ape"] == 0.12 and row["latency_median_signed"] == -0.06
    assert row["targets_met"] is True and row["same_node_share"] == 1.0
    assert row["other_cores_median"] == pytest.approx(0.2)
    assert row["load_average"] == "live run median 0.4"


def test_a_missed_target_marks_the_row(tmp_path):
    assert run_row("r", _report(tmp_path / "r", 0.17, -0.15, 0.12, -0.06, met=False))["targets_met"] is False


def test_a_folder_that_is_no_report_is_named(tmp_path):
    with pytest.raises(RepeatTableError, match="errors.csv: not found"):
        run_row("r", tmp_path)


def test_four_of_five_with_a_centred_error_pass(tmp_path):
    rows = [run_row(f"run-{i}", _report(tmp_path / str(i), 0.05, s, 0.1, -s, met=i != 3))
            for i, s in enumerate((-0.04, 0.02, 0.08, -0.01, 0.03), 1)]
    v = verdict(rows)
    assert (v.met, v.targets_hold) == (4, True)
    assert v.load_signed_median == pytest.approx(0.02) and v.latency_signed_median == pytest.approx(-0.02)
    assert v.passed


def test_systematic_optimism_fails_even_when_every_target_holds(tmp_path):
    rows = [run_row(f"run-{i}", _report(tmp_path / str(i), 0.08, -0.07, 0.1, -0.09)) for i in range(5)]
    v = verdict(rows)
    assert v.targets_hold and not v.unbiased and not v.passed


def test_three_of_five_fail(tmp_path):
    rows = [run_row(f"run-{i}", _report(tmp_path / str(i), 0.05, 0.0, 0.1, 0.0, met=i < 3)) for i in range(5)]
    assert not verdict(rows).passed


def test_the_table_files(tmp_path):
    rows = [run_row("run-1", _report(tmp_path / "r", 0.07, -0.03, 0.12, -0.06))]
    write_table(rows, tmp_path / "out", verdict(rows))
    assert pd.read_csv(tmp_path / "out" / "table.csv")["run"].tolist() == ["run-1"]
    text = (tmp_path / "out" / "table.md").read_text()
    assert "| run-1 | 7.0% | -3.0% | 12.0% | -6.0% | 100.0% | yes |" in text
    assert "Targets held in 1 of 1 pairs (needed: 4): no." in markdown(rows, verdict(rows))
