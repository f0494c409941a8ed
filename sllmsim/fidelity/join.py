"""Joining a live run and a simulated run of the same requests: request by request and load by load.

Requests are paired by ``(model, rank)``: the k-th request for a model, in arrival order, in one run
with the k-th in the other. Both runs replay the same request list in the same order, so this pairs
each request with itself without relying on ids, which each runtime numbers its own way.

Loads (instances that went through at least one load phase) are paired through the requests they
served: an instance is identified by the paired request it served first. So an extra or missing load
on one side leaves that load unpaired instead of shifting every later pair. A load's time is the
sum of its ``downloading``, ``loading_to_host`` and ``loading_to_gpu`` phases; waiting for a GPU or
the node's loading queue (``queued``) is not part of it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sllmsim.metrics import LOAD_PHASES

#: Columns taken from each side's requests, suffixed ``_live`` / ``_sim`` in the joined table.
REQUEST_FIELDS = ("request_id", "arrival_s", "input_tokens", "output_tokens", "status", "ttft_s", "latency_s",
                  "node", "instance_id", "cold_start", "tier")
#: Columns of each side's per-load table, suffixed likewise.
LOAD_FIELDS = ("instance_id", "node", "tier", "load_s", "download_s", "to_host_s", "to_gpu_s", "bytes")
_SIDES = ("live", "sim")


def rank_requests(requests: pd.DataFrame) -> pd.DataFrame:
    """``requests`` with ``rank``: the request's position among its model's requests by arrival (then id)."""
    df = requests.sort_values(["arrival_s", "request_id"], kind="stable").copy()
    df["rank"] = df.groupby("model", sort=False).cumcount()
    return df


def join_requests(live: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    """One row per ``(model, rank)`` present on either side, with each side's fields suffixed.

    ``paired`` is True where both sides have the request; ``completed`` where both completed it.
    """
    cols = ["model", "rank", *REQUEST_FIELDS]
    left = rank_requests(live)[cols]
    right = rank_requests(sim)[cols]
    joined = left.merge(right, on=["model", "rank"], how="outer", suffixes=("_live", "_sim"), indicator=True)
    joined["paired"] = joined.pop("_merge").astype(str) == "both"
    joined["completed"] = (joined["paired"] & (joined["status_live"] == "completed")
                           & (joined["status_sim"] == "completed"))
    first_arrival = joined.groupby("model")["arrival_s_live"].transform("min")
    joined = joined.assign(_order=joined["arrival_s_live"].fillna(first_arrival)).sort_values(
        ["_order", "model", "rank"], kind="stable").drop(columns="_order")
    return joined.reset_index(drop=True)


def loads_table(phases: pd.DataFrame) -> pd.DataFrame:
    """One row per instance with a load phase: node, tier, load time and each phase's duration."""
    load = phases[phases["phase"].isin(list(LOAD_PHASES))].copy()
    if load.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("instance_id", "str"), ("model", "str"), ("node", "str"), ("tier", "str"), ("load_start_s", "float64"),
            ("load_s", "float64"), ("download_s", "float64"), ("to_host_s", "float64"), ("to_gpu_s", "float64"),
            ("bytes", "int64"))})
    load["duration_s"] = load["end_s"] - load["start_s"]
    per_phase = load.pivot_table(index="instance_id", columns="phase", values="duration_s", aggfunc="sum")
    first = load.sort_values("start_s", kind="stable").groupby("instance_id", sort=False).first()
    out = pd.DataFrame({
        "instance_id": first.index.astype(str),
        "model": first["model"].to_numpy(),
        "node": first["node"].to_numpy(),
        "tier": first["tier"].to_numpy(),
        "load_start_s": first["start_s"].to_numpy(),
        "bytes": load.groupby("instance_id")["bytes"].max().reindex(first.index).to_numpy(),
    })
    for phase, short in LOAD_PHASES.items():
        col = per_phase[phase] if phase in per_phase else pd.Series(np.nan, index=per_phase.index)
        out[f"{short}_s"] = col.reindex(first.index).fillna(0.0).to_numpy()
    out["load_s"] = out["download_s"] + out["to_host_s"] + out["to_gpu_s"]
    return out.sort_values("load_start_s", kind="stable").reset_index(drop=True)


def join_loads(requests: pd.DataFrame, live_phases: pd.DataFrame, sim_phases: pd.DataFrame) -> pd.DataFrame:
    """Pair each side's loads through the joined ``requests`` (from :func:`join_requests`).

    Rows: every load of either side; ``paired`` where both sides' instances first served the same
    request. ``first_rank`` is that request's rank within ``model``.
    """
    sides = {}
    for side, phases in zip(_SIDES, (live_phases, sim_phases)):
        loads = loads_table(phases)
        served = requests[requests[f"instance_id_{side}"].notna() & (requests[f"instance_id_{side}"] != "")]
        first = served.sort_values(f"arrival_s_{side}", kind="stable").groupby(f"instance_id_{side}").first()
        loads["first_rank"] = loads["instance_id"].map(first["rank"])
        sides[side] = loads
    cols = ["model", "first_rank", *LOAD_FIELDS]
    live, sim = sides["live"], sides["sim"]
    keyed = [df[df["first_rank"].notna()][cols] for df in (live, sim)]
    joined = keyed[0].merge(keyed[1], on=["model", "first_rank"], how="outer", suffixes=("_live", "_sim"),
                            indicator=True)
    joined["paired"] = joined.pop("_merge").astype(str) == "both"
    # Loads that served no request (loaded, then released unused) stay in the table, unpaired.
    for side, df in sides.items():
        other = "sim" if side == "live" else "live"
        idle = df[df["first_rank"].isna()]
        if len(idle):
            extra = pd.DataFrame({"model": idle["model"], "first_rank": np.nan, "paired": False,
                                  **{f"{c}_{side}": idle[c] for c in LOAD_FIELDS},
                                  **{f"{c}_{other}": np.nan for c in LOAD_FIELDS}})
            joined = pd.concat([joined, extra[joined.columns]], ignore_index=True)
    joined["same_node"] = joined["paired"] & (joined["node_live"] == joined["node_sim"])
    joined["same_tier"] = joined["paired"] & (joined["tier_live"] == joined["tier_sim"])
    return joined.sort_values(["model", "first_rank"], kind="stable", na_position="last").reset_index(drop=True)
