"""Checks on simulator results shared by several test files."""

from __future__ import annotations

from pathlib import Path

from sllmsim.records import RunResult, write_phases_csv, write_requests_csv, write_timeseries_csv


def assert_identical_csvs(tmp_path: Path, first: RunResult, second: RunResult) -> None:
    """Both runs write byte-identical requests, instances and timeseries CSVs."""
    for label, result in (("a", first), ("b", second)):
        folder = tmp_path / label
        folder.mkdir()
        write_requests_csv(folder / "requests.csv", result.requests)
        write_phases_csv(folder / "instances.csv", result.phases)
        write_timeseries_csv(folder / "timeseries.csv", result.timeseries)
    for name in ("requests.csv", "instances.csv", "timeseries.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
