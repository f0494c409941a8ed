"""How far the simulation is from the live run: errors over the joined tables of :mod:`sllmsim.fidelity.join`.

For a quantity measured live as ``m`` and simulated as ``s``:

* **absolute percentage error** (APE) = ``|s − m| / m``, reported as its median and 99th percentile
  (numpy's linear percentile, as everywhere in sllmsim) over the paired rows;
* **signed error** = ``s / m − 1``: its median says whether the simulator is optimistic (< 0) or
  pessimistic (> 0).

Quantities: cold-start load time (per load, grouped by the tier the live load came from), time to
first token and end-to-end latency (per request completed on both sides, also split into warm and
cold starts as seen live, and for requests that shared their live instance with at least
:data:`CONCURRENT_REQUESTS - 1` others at once, which checks the batching model), and placement
agreement: the share of paired loads placed on the same node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sllmsim.metrics import COLD_TIERS


@dataclass(frozen=True)
class Target:
    """An accuracy target of the fidelity issue: ``statistic`` of ``quantity`` must stay within ``limit``."""

    quantity: str
    statistic: str
    limit: float
    at_most: bool = True

    def met(self, value: float | None) -> bool | None:
        if value is None or not np.isfinite(value):
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:.0%}"


#: Targets: median APE of cold-start load time ≤ 10 %, of end-to-end latency ≤ 15 %; ≥ 95 % of cold
#: starts on the same node.
TARGETS = (
    Target("cold-start load time", "median APE", 0.10),
    Target("end-to-end latency", "median APE", 0.15),
    Target("placement", "same node", 0.95, at_most=False),
)

#: Other processes' mean CPU use (cores) below which a request or load counts as served on a quiet
#: machine: a quarter of a core, chosen before looking at any run (on the 2-core machine the reports
#: come from, live mode keeps one core busy and the other is free for anything else).
QUIET_OTHER_CORES = 0.25

#: Requests in flight at once on one live instance (itself included) from which a request counts as
#: served in a batch: the validation trace's concurrent window sends this many to one model at once.
CONCURRENT_REQUESTS = 8

ERROR_COLUMNS = ["quantity", "group", "n", "median_ape", "p99_ape", "median_signed_error", "live_median_s",
                 "sim_median_s", "target", "met"]


def ape(live: pd.Series, sim: pd.Series) -> pd.Series:
    """Absolute percentage error ``|sim − live| / live`` (NaN where the live value is not positive)."""
    live = live.astype(float)
    return (sim.astype(float) - live).abs() / live.where(live > 0)


def signed_error(live: pd.Series, sim: pd.Series) -> pd.Series:
    """``sim / live − 1``: negative where the simulator is faster than reality."""
    live = live.astype(float)
    return sim.astype(float) / live.where(live > 0) - 1.0


def peak_in_flight(requests: pd.DataFrame) -> pd.Series:
    """For each request, the most requests in flight at once (arrival to finish, itself included) on its
    live instance while it was: NaN where it has no live instance or finish.

    Reads the joined table's ``instance_id_live``, ``arrival_s_live`` and ``latency_s_live``. The count
    can only rise at an arrival, so it is taken at the request's own arrival and at every later arrival
    on the instance before the request finished.
    """
    out = pd.Series(np.nan, index=requests.index)
    start = requests["arrival_s_live"].astype(float)
    end = start + requests["latency_s_live"].astype(float)
    known = requests["instance_id_live"].notna() & (requests["instance_id_live"] != "") & end.notna()
    for _, rows in requests[known].groupby("instance_id_live"):
        a, f = start[rows.index].to_numpy(), end[rows.index].to_numpy()
        for i, idx in enumerate(rows.index):
            points = a[(a >= a[i]) & (a < f[i])]
            out[idx] = max(int(((a <= t) & (t < f)).sum()) for t in points)
    return out


def _pct(values: pd.Series, q: float) -> float | None:
    values = values.dropna().to_numpy(dtype=float)
    return float(np.percentile(values, q)) if values.size else None


def error_row(quantity: str, group: str, live: pd.Series, sim: pd.Series, target: Target | None = None) -> dict:
    """One line of the error table for paired values ``live`` and ``sim``."""
    keep = live.notna() & sim.notna()
    live, sim = live[keep], sim[keep]
    errors = ape(live, sim)
    median = _pct(errors, 50)
    return {
        "quantity": quantity, "group": group, "n": int(errors.notna().sum()), "median_ape": median,
        "p99_ape": _pct(errors, 99), "median_signed_error": _pct(signed_error(live, sim), 50),
        "live_median_s": _pct(live, 50), "sim_median_s": _pct(sim, 50),
        "target": target.text if target else "", "met": target.met(median) if target else None,
    }


def error_table(requests: pd.DataFrame, loads: pd.DataFrame) -> pd.DataFrame:
    """The error table: load time per live tier; TTFT and latency overall, for warm / cold starts and per model."""
    load_target, latency_target = TARGETS[0], TARGETS[1]
    rows = []
    paired = loads[loads["paired"]]
    rows.append(error_row("cold-start load time", "all tiers", paired["load_s_live"], paired["load_s_sim"],
                          load_target))
    load_groups = [(tier, paired[paired["tier_live"] == tier]) for tier in COLD_TIERS]
    for group, sel in load_groups + _contention_groups(paired):
        rows.append(error_row("cold-start load time", group, sel["load_s_live"], sel["load_s_sim"]))
    done = requests[requests["completed"]]
    cold = done["cold_start_live"].astype(bool)
    in_flight = done["in_flight_live"] if "in_flight_live" in done else peak_in_flight(done)
    batched = done[in_flight >= CONCURRENT_REQUESTS]
    for quantity, col, target in (("time to first token", "ttft_s", None),
                                  ("end-to-end latency", "latency_s", latency_target)):
        groups = [("all", done), ("warm (live)", done[~cold]), ("cold start (live)", done[cold])]
        groups += [(f"model {m}", done[done["model"] == m]) for m in sorted(done["model"].unique())]
        if len(batched):  # only where the trace has a concurrent window: other reports keep their rows
            groups.append((CONCURRENT_GROUP, batched))
        groups += _contention_groups(done)
        for group, sel in groups:
            rows.append(error_row(quantity, group, sel[f"{col}_live"], sel[f"{col}_sim"],
                                  target if group == "all" else None))
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


#: The error-table group of requests served in a batch (see :data:`CONCURRENT_REQUESTS`).
CONCURRENT_GROUP = f"≥ {CONCURRENT_REQUESTS} in flight on its instance (live)"


def _contention_groups(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Rows served while other processes used less / at least :data:`QUIET_OTHER_CORES` cores (live);
    none when the live run has no CPU samples (column ``other_cores_live`` absent or all NaN)."""
    if "other_cores_live" not in rows or rows["other_cores_live"].isna().all():
        return []
    other = rows["other_cores_live"]
    return [(f"others < {QUIET_OTHER_CORES:g} cores (live)", rows[other < QUIET_OTHER_CORES]),
            (f"others ≥ {QUIET_OTHER_CORES:g} cores (live)", rows[other >= QUIET_OTHER_CORES])]


def placement_summary(loads: pd.DataFrame) -> dict:
    """Placement and tier agreement over paired loads, and how many loads either side had alone."""
    paired = loads[loads["paired"]]
    n = len(paired)
    same = int(paired["same_node"].sum())
    return {
        "paired_loads": n,
        "same_node": same,
        "same_node_share": same / n if n else None,
        "same_tier": int(paired["same_tier"].sum()),
        "same_tier_share": float(paired["same_tier"].mean()) if n else None,
        "live_only_loads": int((~loads["paired"] & loads["instance_id_live"].notna()).sum()),
        "sim_only_loads": int((~loads["paired"] & loads["instance_id_sim"].notna()).sum()),
    }


def headline(requests: pd.DataFrame, loads: pd.DataFrame, errors: pd.DataFrame) -> dict:
    """The numbers the targets speak of, with whether each is met (None when there was nothing to measure)."""
    def pick(quantity: str, group: str, stat: str):
        row = errors[(errors["quantity"] == quantity) & (errors["group"] == group)]
        value = row[stat].iloc[0] if len(row) else None
        return None if value is None or pd.isna(value) else float(value)

    placement = placement_summary(loads)
    load_med = pick("cold-start load time", "all tiers", "median_ape")
    lat_med = pick("end-to-end latency", "all", "median_ape")
    share = placement["same_node_share"]
    return {
        "requests": int(len(requests)),
        "requests_paired": int(requests["paired"].sum()),
        "requests_completed_both": int(requests["completed"].sum()),
        "cold_start_load_median_ape": load_med,
        "cold_start_load_p99_ape": pick("cold-start load time", "all tiers", "p99_ape"),
        "ttft_median_ape": pick("time to first token", "all", "median_ape"),
        "ttft_p99_ape": pick("time to first token", "all", "p99_ape"),
        "latency_median_ape": lat_med,
        "latency_p99_ape": pick("end-to-end latency", "all", "p99_ape"),
        "concurrent_requests": pick("end-to-end latency", CONCURRENT_GROUP, "n"),
        "concurrent_ttft_median_ape": pick("time to first token", CONCURRENT_GROUP, "median_ape"),
        "concurrent_latency_median_ape": pick("end-to-end latency", CONCURRENT_GROUP, "median_ape"),
        "concurrent_latency_median_signed_error": pick("end-to-end latency", CONCURRENT_GROUP,
                                                       "median_signed_error"),
        **{f"placement_{k}": v for k, v in placement.items()},
        "targets": {f"{t.quantity} {t.statistic} {t.text}": t.met(v)
                    for t, v in zip(TARGETS, (load_med, lat_med, share))},
    }
