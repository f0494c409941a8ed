"""One table over several fresh calibrate + validate pairs: does a fidelity target hold on a fresh run?

Each pair's validation report folder (``errors.csv``, ``summary.json``, ``requests.csv``) gives one row:
the median APE and the median signed error (``sim / live − 1``) of cold-start load time and of
end-to-end latency, the share of cold starts placed on the same node, whether the report's targets
held, and how busy the machine was (the 1-minute load average the report states and the median of
other processes' CPU use sampled during the live run).

The verdict follows the fidelity issue: the targets must hold in at least ``need`` of ``runs``
consecutive pairs, and the median over the pairs of each pair's median signed error must lie within
``±signed_limit`` (a simulator that is right on average, not systematically optimistic).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: Columns of the table, in order.
COLUMNS = ["run", "load_median_ape", "load_median_signed", "latency_median_ape", "latency_median_signed",
           "same_node_share", "targets_met", "load_average", "other_cores_median"]

#: (column prefix, quantity, group) of the error table rows the table reads.
_QUANTITIES = (("load", "cold-start load time", "all tiers"), ("latency", "end-to-end latency", "all"))


class RepeatTableError(ValueError):
    """A report folder lacks what the table needs."""


def run_row(run: str, report_dir: Path) -> dict:
    """The table's row for the validation report in ``report_dir``."""
    errors_path, summary_path = report_dir / "errors.csv", report_dir / "summary.json"
    for path in (errors_path, summary_path):
        if not path.is_file():
            raise RepeatTableError(f"{path}: not found (is {report_dir} a `sllmsim validate` report folder?)")
    errors = pd.read_csv(errors_path)
    summary = json.loads(summary_path.read_text())
    row: dict = {"run": run}
    for prefix, quantity, group in _QUANTITIES:
        sel = errors[(errors["quantity"] == quantity) & (errors["group"] == group)]
        if sel.empty:
            raise RepeatTableError(f"{errors_path}: no row for quantity {quantity!r}, group {group!r}")
        row[f"{prefix}_median_ape"] = float(sel["median_ape"].iloc[0])
        row[f"{prefix}_median_signed"] = float(sel["median_signed_error"].iloc[0])
    row["same_node_share"] = summary.get("placement_same_node_share")
    targets = summary.get("targets") or {}
    row["targets_met"] = bool(targets) and all(v is True for v in targets.values())
    row["load_average"] = (summary.get("context") or {}).get("load_average", "")
    row["other_cores_median"] = _other_cores_median(report_dir / "requests.csv")
    return row


def _other_cores_median(path: Path) -> float | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if "other_cores_live" not in frame or frame["other_cores_live"].dropna().empty:
        return None
    return float(frame["other_cores_live"].dropna().median())


@dataclass(frozen=True)
class Verdict:
    """Whether the repeated pairs meet the issue's bar."""

    runs: int
    met: int
    need: int
    load_signed_median: float | None
    latency_signed_median: float | None
    signed_limit: float

    @property
    def targets_hold(self) -> bool:
        return self.met >= self.need

    @property
    def unbiased(self) -> bool:
        values = (self.load_signed_median, self.latency_signed_median)
        return all(v is not None and abs(v) <= self.signed_limit for v in values)

    @property
    def passed(self) -> bool:
        return self.targets_hold and self.unbiased


def verdict(rows: list[dict], need: int = 4, signed_limit: float = 0.05) -> Verdict:
    """The verdict over ``rows`` (one per pair, in the order they ran)."""

    def median(col: str) -> float | None:
        values = [r[col] for r in rows if r.get(col) is not None and math.isfinite(r[col])]
        return statistics.median(values) if values else None

    return Verdict(runs=len(rows), met=sum(bool(r["targets_met"]) for r in rows), need=need,
                   load_signed_median=median("load_median_signed"),
                   latency_signed_median=median("latency_median_signed"), signed_limit=signed_limit)


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def markdown(rows: list[dict], v: Verdict) -> str:
    """The table and its verdict as Markdown."""
    lines = ["| run | load median APE | load median signed | latency median APE | latency median signed "
             "| same node | targets met | load average | other processes' cores (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        other = "–" if r["other_cores_median"] is None else f"{r['other_cores_median']:.2f}"
        lines.append(f"| {r['run']} | {_pct(r['load_median_ape'])} | {_pct(r['load_median_signed'], True)} "
                     f"| {_pct(r['latency_median_ape'])} | {_pct(r['latency_median_signed'], True)} "
                     f"| {_pct(r['same_node_share'])} | {'yes' if r['targets_met'] else 'no'} "
                     f"| {r['load_average']} | {other} |")
    lines += ["", f"Targets held in {v.met} of {v.runs} pairs (needed: {v.need}): "
                  f"{'yes' if v.targets_hold else 'no'}.",
              f"Median over the pairs of the median signed error: load {_pct(v.load_signed_median, True)}, "
              f"latency {_pct(v.latency_signed_median, True)} (limit ±{v.signed_limit:.0%}): "
              f"{'yes' if v.unbiased else 'no'}."]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out_dir: Path, v: Verdict) -> None:
    """``table.csv`` and ``table.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out_dir / "table.csv", index=False, float_format="%.6f")
    (out_dir / "table.md").write_text(markdown(rows, v))
