"""The run folder, the terminal summary and ``sllmsim compare``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _synthetic_runs import synthetic_result, tiny_result
from rich.console import Console

from sllmsim import metrics, output
from sllmsim.cli import main
from sllmsim.errors import SllmsimError

CSVS = (metrics.REQUESTS_CSV, metrics.INSTANCES_CSV, metrics.TIMESERIES_CSV)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two synthetic run folders that differ in keep-alive (plots skipped: tested in test_report)."""
    root = tmp_path_factory.mktemp("runs")
    a = output.write_run_folder(root / "keep30", synthetic_result(n_requests=400, keep_alive_s=30.0), plots=False)
    b = output.write_run_folder(root / "keep5", synthetic_result(n_requests=400, keep_alive_s=5.0), plots=False)
    return a, b


def test_run_folder_holds_every_file(tmp_path):
    folder = output.write_run_folder(tmp_path / "run", tiny_result(), plots=False)
    names = {p.name for p in folder.iterdir()}
    assert names == {*CSVS, metrics.SUMMARY_JSON, output.RESOLVED_CONFIG_YAML, output.SCHEDULER_LOG}
    assert (folder / output.SCHEDULER_LOG).read_text().splitlines() == tiny_result().scheduler_log
    config = yaml.safe_load((folder / output.RESOLVED_CONFIG_YAML).read_text())
    assert config == {"name": "tiny", "mode": "sim", "seed": 0, "scheduler": "storage_aware"}
    summary = json.loads((folder / metrics.SUMMARY_JSON).read_text())
    assert summary == metrics.summarize_result(tiny_result())
    assert list(summary) == sorted(summary)


def test_same_result_gives_byte_identical_files(tmp_path):
    first = output.write_run_folder(tmp_path / "a", synthetic_result(n_requests=300, seed=3), plots=False)
    second = output.write_run_folder(tmp_path / "b", synthetic_result(n_requests=300, seed=3), plots=False)
    for name in (*CSVS, metrics.SUMMARY_JSON, output.RESOLVED_CONFIG_YAML, output.SCHEDULER_LOG):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = output.write_run_folder(tmp_path / "c", synthetic_result(n_requests=300, seed=4), plots=False)
    assert (first / metrics.REQUESTS_CSV).read_bytes() != (other / metrics.REQUESTS_CSV).read_bytes()


def test_resolved_config_is_written_as_plain_yaml(tmp_path):
    result = tiny_result()
    result.resolved_config = {"hardware": Path("hw.json"), "nodes": ("0", "1"), "tags": {"b", "a"}}
    folder = output.write_run_folder(tmp_path / "run", result, plots=False)
    config = yaml.safe_load((folder / output.RESOLVED_CONFIG_YAML).read_text())
    assert config["hardware"] == "hw.json" and config["nodes"] == ["0", "1"] and config["tags"] == ["a", "b"]


def test_default_run_dir_names_and_never_reuses(tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5)
    first = output.default_run_dir("seed example", runs_dir=tmp_path, now=now)
    assert first == tmp_path / "seed_example-20250102-030405"
    assert not first.exists()  # naming a folder does not create it
    first.mkdir()
    assert output.default_run_dir("seed example", runs_dir=tmp_path, now=now).name == "seed_example-20250102-030405-2"


def test_print_summary_shows_the_headline_numbers():
    console = Console(record=True, width=100)
    output.print_summary(metrics.summarize_result(tiny_result()), console)
    text = console.export_text()
    for expected in ("requests", "5", "failed", "1 (timeout: 1)", "cold starts", "2 (40.0% of requests)",
                     "from local disk", "2.500 / 3.700 / 3.970", "GPU-seconds", "17.000"):
        assert expected in text, expected


def test_print_summary_of_an_empty_run_shows_dashes():
    console = Console(record=True, width=100)
    empty = metrics.summarize(metrics.requests_frame([]))
    output.print_summary(empty, console)
    assert "— / — / —" in console.export_text()


def test_compare_prints_table_and_writes_plots(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "keep30 (A) vs keep5 (B)" in text and "cold_starts" in text and "B / A" in text
    table = pd.read_csv(out / "comparison.csv").set_index("metric")
    sa, sb = metrics.read_summary(a), metrics.read_summary(b)
    assert table.loc["cold_starts", "keep30"] == sa["cold_starts"]
    assert table.loc["cold_starts", "b_minus_a"] == sb["cold_starts"] - sa["cold_starts"]
    assert table.loc["gpu_seconds", "b_over_a"] == pytest.approx(sb["gpu_seconds"] / sa["gpu_seconds"])
    # A shorter keep-alive releases instances sooner: more cold starts, fewer GPU-seconds.
    assert sb["cold_starts"] > sa["cold_starts"] and sb["gpu_seconds"] < sa["gpu_seconds"]
    for name in ("latency_cdf.png", "start_tiers.png", "timeline.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_compare_rejects_a_folder_that_is_not_a_run(two_runs, tmp_path, capsys):
    a, _ = two_runs
    (tmp_path / "notes").mkdir()
    assert main(["compare", str(a), str(tmp_path / "notes"), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "notes: not a run folder (no requests.csv or summary.json)" in err
    assert "Traceback" not in err
    assert main(["compare", str(tmp_path / "missing"), str(a)]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SllmsimError):
        metrics.check_run_folder(tmp_path / "notes")


def test_print_summary_shows_migrations_and_preemptions_only_when_they_happened():
    plain = metrics.summarize_result(tiny_result())
    assert plain["migrations"] == plain["preemptions"] == 0
    labels = [label for label, _ in output.summary_rows(plain)]
    assert not any("migrat" in label or "preempt" in label for label in labels)
    moved = {**plain, "migrations": 2, "migrated_requests": 3, "migrated_latency_mean_s": 12.5,
             "migrated_latency_p99_s": 20.25, "preemptions": 1, "preempted_requests": 2, "preempted_tokens": 1234}
    rows = dict(output.summary_rows(moved))
    assert rows["live migrations"] == "2 (3 requests moved)"
    assert rows["  migrated requests' latency mean / p99 (s)"] == "12.500 / 20.250"
    assert rows["preemptions"] == "1 (2 requests stopped and re-queued, 1,234 computed tokens lost)"
    console = Console(record=True, width=120)
    output.print_summary(moved, console)
    text = console.export_text()
    assert "live migrations" in text and "1,234 computed tokens lost" in text


def test_sllmsim_run_prints_preemptions(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "traces/contention-example.yaml", "--scheduler", "shepherd", "--out", str(out),
                 "--no-plots", "--log-lines", "0"]) == 0
    summary = metrics.read_summary(out)
    assert summary["preemptions"] > 0  # this busy trace makes the shepherd policy preempt
    assert "preemptions" in capsys.readouterr().out


def test_column_writer_matches_formatting_every_value(tmp_path):
    # The CSV writers format column by column; the bytes must equal formatting each value with
    # plain_field() through csv.writer, for every value type a record column can hold (mixed ones included).
    import csv
    from operator import attrgetter

    from sllmsim import records
    from sllmsim.core.snapshot import Tier
    from sllmsim.record_csv import plain_field

    rows = [records.TimeseriesRecord(0.5, "m,etric", 'k"ey', v) for v in (1, 2.25, 3, 1e-10)]
    rows += [records.TimeseriesRecord(1.0 / 3, "x", "y\nz", 7)]
    phases = [records.PhaseRecord("i", "m", "n", p, 0.0, 1.0 / 7, t, 5)
              for p, t in (("ready", ""), ("loading_to_gpu", Tier.HOST), ("idle", Tier.DISK))]
    result = synthetic_result()
    for name, cols, items in (("ts", records.TIMESERIES_COLUMNS, rows), ("ph", records.PHASE_COLUMNS, phases),
                              ("req", records.REQUEST_COLUMNS, result.requests)):
        getter = attrgetter(*cols)
        records._write_csv(tmp_path / f"{name}.csv", cols, getter, items)
        with open(tmp_path / f"{name}-ref.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(cols)
            writer.writerows([plain_field(v) for v in getter(r)] for r in items)
        assert (tmp_path / f"{name}.csv").read_bytes() == (tmp_path / f"{name}-ref.csv").read_bytes()
