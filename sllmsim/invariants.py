"""The numbered invariants every simulated (or live) run must satisfy, checked from its records.

1. **Every request is accounted for**: one record per request of the trace that arrives within
   the run (all of them, or those before ``simulation.until_s``: same count, and per model the same
   arrival times), unique ids, status ``completed`` or ``failed``, and every failed request carries
   a reason (one still in flight at ``until_s`` fails as unfinished then).
2. **Causality**: for every completed request, arrival ≤ queued until ≤ first token ≤ finish; a
   served request never starts before it arrives.
3. **Phases are well formed**: every instance phase has start ≤ end, and an instance's phases follow
   each other without overlapping.
4. **GPU capacity**: no node ever has more busy GPUs than it has (``gpus_busy`` ≤ ``num_gpus``), nor
   fewer than zero.
5. **Storage capacity**: host-memory and disk use never exceed ``host_size`` and ``disk_size``.
6. **Migration and preemption**: a completed migrated request finished on an instance that resumed
   migrated requests (it has a ``resuming`` phase), no earlier than that phase's end (the
   hand-over); an instance's ``migrating`` or ``preempted`` phase is its last one before its
   ``released`` marker, so a source never serves beside its destination after the hand-over and a
   victim holds no GPU after it is stopped (GPU capacity during hand-overs is invariant 4).

The checks are vectorised (a million requests take well under a second) and pure: they read the
trace and the records, and return the violations found; :func:`assert_invariants` raises on any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sllmsim.config.trace import arrives_in_run
from sllmsim.errors import SllmsimError
from sllmsim.metrics import RunFrames, frames_from_result
from sllmsim.records import RunResult

#: Slack for comparisons of simulated times (float sums of many small steps).
TIME_TOLERANCE_S = 1e-6
INVARIANTS = {
    1: "every request is accounted for",
    2: "causality: arrival <= queued until <= first token <= finish",
    3: "instance phases are ordered and do not overlap",
    4: "busy GPUs never exceed a node's GPUs",
    5: "host-memory and disk use never exceed their sizes",
    6: "migrated requests finish after their hand-over; migration sources and preemption victims stop there",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with an example that shows it."""

    number: int
    message: str

    def __str__(self) -> str:
        return f"invariant {self.number} ({INVARIANTS[self.number]}): {self.message}"


class InvariantError(SllmsimError):
    """A run broke at least one invariant; the message lists each."""

    def __init__(self, violations: list[Violation], where: str = "run"):
        self.violations = violations
        super().__init__(f"{where}: " + "; ".join(str(v) for v in violations))


def check_invariants(trace, run: RunResult | RunFrames) -> list[Violation]:
    """Check invariants 1–6 of a run of ``trace`` (a :class:`sllmsim.config.trace.TraceConfig`).

    ``trace`` supplies the expected requests (``trace.requests``; when the run was cut at
    ``trace.simulation.until_s``, those arriving before it) and the node capacities
    (``trace.cluster``). Returns the violations, empty when the run is sound.
    """
    frames = frames_from_result(run) if isinstance(run, RunResult) else run
    out: list[Violation] = []
    out += _accounted(trace, frames.requests)
    out += _causality(frames.requests)
    out += _phases(frames.phases)
    out += _capacities(trace, frames.timeseries)
    out += _migrations(frames.requests, frames.phases)
    return out


def assert_invariants(trace, run: RunResult | RunFrames, where: str = "run") -> None:
    """Raise :class:`InvariantError` when :func:`check_invariants` finds anything."""
    violations = check_invariants(trace, run)
    if violations:
        raise InvariantError(violations, where)


def _accounted(trace, req: pd.DataFrame) -> list[Violation]:
    out = []
    times = np.asarray(trace.requests.time_s, dtype=float)
    models = np.asarray(trace.requests.model, dtype=object)
    until = getattr(getattr(trace, "simulation", None), "until_s", None)
    if until is not None:  # requests from until_s on are outside the run
        keep = arrives_in_run(times, until)
        times, models = times[keep], models[keep]
    if len(req) != len(times):
        out.append(Violation(1, f"the trace has {len(times)} requests but the run recorded {len(req)}"))
    dup = req["request_id"].duplicated()
    if dup.any():
        out.append(Violation(1, f"request id {int(req['request_id'][dup].iloc[0])} is recorded twice"))
    bad_status = ~req["status"].isin(["completed", "failed"])
    if bad_status.any():
        out.append(Violation(1, f"request {int(req['request_id'][bad_status].iloc[0])} has status "
                                f"{req['status'][bad_status].iloc[0]!r}"))
    no_reason = (req["status"] == "failed") & (req["reason"].fillna("") == "")
    if no_reason.any():
        out.append(Violation(1, f"failed request {int(req['request_id'][no_reason].iloc[0])} has no reason"))
    unfinished = (req["status"] == "completed") & req["finish_s"].isna()
    if unfinished.any():
        out.append(Violation(1, f"completed request {int(req['request_id'][unfinished].iloc[0])} has no finish time"))
    if len(req) == len(times) and len(req):
        want = pd.DataFrame({"model": models.astype(str), "t": times})
        got = pd.DataFrame({"model": req["model"].astype(str).to_numpy(), "t": req["arrival_s"].to_numpy()})
        want = want.sort_values(["model", "t"], kind="stable").reset_index(drop=True)
        got = got.sort_values(["model", "t"], kind="stable").reset_index(drop=True)
        same_models = (want["model"].to_numpy() == got["model"].to_numpy())
        close = np.abs(want["t"].to_numpy() - got["t"].to_numpy()) <= TIME_TOLERANCE_S
        bad = ~(same_models & close)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            out.append(Violation(1, f"arrivals differ from the trace: expected {want['model'][i]} at "
                                    f"{want['t'][i]:.6f} s, recorded {got['model'][i]} at {got['t'][i]:.6f} s"))
    return out


def _causality(req: pd.DataFrame) -> list[Violation]:
    out = []
    tol = TIME_TOLERANCE_S
    chain = [("arrival_s", "queued_until_s"), ("queued_until_s", "first_token_s"), ("first_token_s", "finish_s")]
    done = req[req["status"] == "completed"]
    for early, late in chain:
        bad = done[early].to_numpy() > done[late].to_numpy() + tol  # NaN compares False
        missing = done[late].isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            out.append(Violation(2, f"request {int(done['request_id'].iloc[i])}: {early} "
                                    f"{done[early].iloc[i]:.6f} > {late} {done[late].iloc[i]:.6f}"))
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            out.append(Violation(2, f"completed request {int(done['request_id'].iloc[i])} has no {late}"))
    served = req["queued_until_s"].notna()
    bad = (req["queued_until_s"] < req["arrival_s"] - tol) & served
    if bad.any() and not out:
        out.append(Violation(2, f"request {int(req['request_id'][bad].iloc[0])} was served before it arrived"))
    return out


def _phases(ph: pd.DataFrame) -> list[Violation]:
    out = []
    if ph.empty:
        return out
    bad = ph["start_s"] > ph["end_s"] + TIME_TOLERANCE_S
    if bad.any():
        row = ph[bad].iloc[0]
        out.append(Violation(3, f"instance {row['instance_id']} phase {row['phase']} ends ({row['end_s']:.6f}) "
                                f"before it starts ({row['start_s']:.6f})"))
    ordered = ph.sort_values(["instance_id", "start_s", "end_s"], kind="stable")
    prev_end = ordered.groupby("instance_id", sort=False)["end_s"].shift(1)
    overlap = ordered["start_s"] < prev_end - TIME_TOLERANCE_S
    if overlap.any():
        row = ordered[overlap].iloc[0]
        out.append(Violation(3, f"instance {row['instance_id']} phase {row['phase']} starts at {row['start_s']:.6f} "
                                "before its previous phase ends"))
    return out


def _capacities(trace, ts: pd.DataFrame) -> list[Violation]:
    out = []
    nodes = {n.node_id: n for n in trace.cluster.nodes}
    limits = {
        "gpus_busy": (4, "busy GPUs", lambda n: n.num_gpus),
        "host_used_bytes": (5, "host memory used (bytes)", lambda n: n.host_size_bytes),
        "disk_used_bytes": (5, "disk used (bytes)", lambda n: n.disk_size_bytes),
    }
    for metric, (number, what, cap_of) in limits.items():
        rows = ts[ts["metric"] == metric]
        if rows.empty:
            continue
        caps = rows["key"].map({k: float(cap_of(n)) for k, n in nodes.items()})
        unknown = caps.isna()
        if unknown.any():
            out.append(Violation(number, f"{what} recorded for unknown node {rows['key'][unknown].iloc[0]!r}"))
        over = rows["value"] > caps + 1e-9 * caps.abs().fillna(0)
        if over.any():
            row = rows[over].iloc[0]
            out.append(Violation(number, f"node {row['key']} at {row['time_s']:.6f} s: {what} {row['value']:g} "
                                         f"> capacity {caps[over].iloc[0]:g}"))
        negative = rows["value"] < 0
        if negative.any():
            row = rows[negative].iloc[0]
            out.append(Violation(number, f"node {row['key']} at {row['time_s']:.6f} s: {what} is negative"))
    return out


def _migrations(req: pd.DataFrame, ph: pd.DataFrame) -> list[Violation]:
    out = []
    moved = req[(req["status"] == "completed") & req["migrated"].astype(bool)]
    if len(moved):
        resumed = ph[ph["phase"] == "resuming"].groupby("instance_id")["end_s"].max()
        handover = moved["instance_id"].map(resumed)
        missing = handover.isna()
        if missing.any():
            row = moved[missing].iloc[0]
            out.append(Violation(6, f"migrated request {int(row['request_id'])} finished on instance "
                                    f"{row['instance_id']}, which never resumed migrated requests"))
        early = moved["finish_s"] < handover - TIME_TOLERANCE_S  # NaN compares False
        if early.any():
            row = moved[early].iloc[0]
            out.append(Violation(6, f"migrated request {int(row['request_id'])} finished at {row['finish_s']:.6f}, "
                                    f"before its hand-over to {row['instance_id']} at {handover[early].iloc[0]:.6f}"))
    if ph.empty:
        return out
    ordered = ph.sort_values(["instance_id", "start_s", "end_s"], kind="stable")
    after = ordered.groupby("instance_id", sort=False)["phase"].shift(-1)
    stops = ordered["phase"].isin(["migrating", "preempted"])
    bad = stops & after.notna() & (after != "released")
    if bad.any():
        row = ordered[bad].iloc[0]
        out.append(Violation(6, f"instance {row['instance_id']} has a {after[bad].iloc[0]} phase after its "
                                f"{row['phase']} phase (expected released)"))
    return out
