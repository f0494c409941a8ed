"""Does the simulator rank placement policies as the live system does?

A researcher uses a simulator to pick between policies, so what matters is not only each run's error
but whether the simulated *difference* between two policies matches the measured one. Given, for
every policy, the live run and the simulated run of the same arrivals, :func:`compare_policies`
reports per latency statistic (mean and p99 of end-to-end latency):

* the winner (lower is better) live and simulated, and whether they agree;
* the relative difference of the other policy against the baseline (the first policy),
  ``(other − baseline) / baseline``, live and simulated, and the gap between them in percentage
  points. Target: the same winner, and a gap of at most :data:`GAP_TARGET_PP` points.

The statistics are taken over the same requests in all runs: a request (paired by ``(model, rank)``,
see :mod:`sllmsim.fidelity.join`) counts only where every run completed it, so a request failed in
one run does not make that run look faster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sllmsim.core.registry import UnknownPolicyError
from sllmsim.errors import ConfigError
from sllmsim.fidelity.join import rank_requests

#: The target on the predicted relative difference: within this many percentage points of the measured.
GAP_TARGET_PP = 5.0
#: The latency statistics compared.
STATS = ("mean", "p99")
#: Relative differences smaller than this count as a tie (no winner).
TIE_TOLERANCE = 1e-9


def parse_policies(value: str) -> list[str]:
    """``"storage_aware,random"`` → ``["storage_aware", "random"]``; two or more distinct registered names."""
    from sllmsim.core.registry import resolve

    names = [p.strip() for p in value.split(",") if p.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError("--compare-policies", "", f"expected two or more distinct placement policy names "
                          f"separated by commas, got {value!r}")
    for name in names:
        try:
            resolve("placement", name)
        except UnknownPolicyError as exc:  # its message names the known policies
            raise ConfigError("--compare-policies", name, str(exc)) from None
    return names


def common_requests(runs: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """The ``(model, rank)`` keys completed in every run, with each run's latency as a column ``policy/side``.

    ``runs`` maps ``(policy, side)`` (side ``"live"`` or ``"sim"``) to a requests frame
    (:func:`sllmsim.metrics.requests_frame` columns: ``request_id``, ``model``, ``arrival_s``,
    ``status``, ``latency_s``; optionally ``node`` and ``tier``, kept as ``node:policy/side`` and
    ``tier:policy/side``).
    """
    joined = None
    for (policy, side), frame in runs.items():
        ranked = rank_requests(frame)
        cols = ["model", "rank", "latency_s", *(c for c in ("node", "tier") if c in ranked)]
        done = ranked[ranked["status"] == "completed"][cols]
        done = done.rename(columns={c: f"{policy}/{side}" if c == "latency_s" else f"{c}:{policy}/{side}"
                                    for c in cols[2:]})
        joined = done if joined is None else joined.merge(done, on=["model", "rank"], how="inner")
    if joined is None:
        return pd.DataFrame(columns=["model", "rank"])
    return joined.sort_values(["model", "rank"], kind="stable").reset_index(drop=True)


def latency_stat(latencies_s: np.ndarray, stat: str) -> float:
    """``mean`` or ``p99`` (linear interpolation, as the metrics use) of end-to-end latencies."""
    if len(latencies_s) == 0:
        return float("nan")
    return float(np.mean(latencies_s)) if stat == "mean" else float(np.percentile(latencies_s, 99))


def _winner(values: dict[str, float]) -> str | None:
    """The policy with the lowest value; None on a tie (within :data:`TIE_TOLERANCE`, relative)."""
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    best, second = ordered[0], ordered[1]
    if not np.isfinite(best[1]) or abs(second[1] - best[1]) <= TIE_TOLERANCE * max(abs(best[1]), 1e-12):
        return None
    return best[0]


def compare_policies(runs: dict[tuple[str, str], pd.DataFrame], policies: list[str],
                     gap_target_pp: float = GAP_TARGET_PP) -> dict:
    """The policy comparison of ``runs`` (see :func:`common_requests`); ``policies[0]`` is the baseline.

    Returns ``{"requests": n, "stats": {stat: {"live": {policy: s}, "sim": {...}, "winner_live",
    "winner_sim", "same_winner", "relative": {other: {"live", "sim", "gap_pp", "within_target"}}}},
    "targets": {name: bool | None}}``.
    """
    missing = [(p, s) for p in policies for s in ("live", "sim") if (p, s) not in runs]
    if missing:
        raise ValueError(f"missing runs: {missing}")
    common = common_requests({(p, s): runs[(p, s)] for p in policies for s in ("live", "sim")})
    baseline = policies[0]
    out: dict = {"requests": int(len(common)), "baseline": baseline, "policies": list(policies),
                 "gap_target_pp": gap_target_pp, "stats": {}, "targets": {}, "placement": {}}
    # A policy whose simulated placements differ from its live ones (a random policy's draws, say)
    # compares different runs: the share placed alike tells how much of a gap that explains.
    for p in policies:
        if f"node:{p}/live" in common and f"node:{p}/sim" in common:
            same = int((common[f"node:{p}/live"].astype(str) == common[f"node:{p}/sim"].astype(str)).sum())
            entry = {"same_node": same, "compared": int(len(common))}
            for side in ("live", "sim"):
                if f"tier:{p}/{side}" in common:
                    entry[f"tiers_{side}"] = {str(k): int(v) for k, v in
                                              common[f"tier:{p}/{side}"].astype(str).value_counts().sort_index().items()}
            out["placement"][p] = entry
    for stat in STATS:
        entry: dict = {}
        for side in ("live", "sim"):
            entry[side] = {p: latency_stat(common[f"{p}/{side}"].to_numpy(dtype=float), stat) for p in policies}
        entry["winner_live"] = _winner(entry["live"])
        entry["winner_sim"] = _winner(entry["sim"])
        entry["same_winner"] = entry["winner_live"] == entry["winner_sim"] if len(common) else None
        entry["relative"] = {}
        for other in policies[1:]:
            rel = {side: (entry[side][other] - entry[side][baseline]) / entry[side][baseline]
                   if entry[side][baseline] > 0 else float("nan") for side in ("live", "sim")}
            gap_pp = abs(rel["sim"] - rel["live"]) * 100.0
            rel["gap_pp"] = gap_pp
            rel["within_target"] = bool(gap_pp <= gap_target_pp) if np.isfinite(gap_pp) else None
            entry["relative"][other] = rel
        out["stats"][stat] = entry
        out["targets"][f"same winner on {stat} latency"] = entry["same_winner"]
        for other, rel in entry["relative"].items():
            out["targets"][f"{stat} latency: {other} vs {baseline} within {gap_target_pp:g} pp"] = rel["within_target"]
    return out


def _fmt_s(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:.3f}"


def _fmt_pct(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:+.1%}"


def _fmt_pp(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:.1f}"


def report_markdown(result: dict, context: dict) -> str:
    """The comparison as a Markdown report; ``context``: command, trace, hardware, notes."""
    policies, baseline = result["policies"], result["baseline"]
    lines = [f"# Policy comparison: {', '.join(policies)} on {context.get('trace', '?')}", ""]
    if context.get("command"):
        lines += ["Regenerate:", "", "```", context["command"], "```", ""]
    for key in ("hardware", "machine", "load_average"):
        if context.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {context[key]}")
    lines += [f"- requests compared: {result['requests']} (completed in every live and simulated run)", ""]
    lines += ["## End-to-end latency (s)", "",
              "| statistic | " + " | ".join(f"{p} live | {p} sim" for p in policies) + " | winner live | winner sim |",
              "|---" * (1 + 2 * len(policies) + 2) + "|"]
    for stat, e in result["stats"].items():
        cells = " | ".join(f"{_fmt_s(e['live'][p])} | {_fmt_s(e['sim'][p])}" for p in policies)
        lines.append(f"| {stat} | {cells} | {e['winner_live'] or 'tie'} | {e['winner_sim'] or 'tie'} |")
    lines += ["", f"## Relative difference against {baseline}", "",
              "(other − baseline) / baseline; positive: the other policy is slower.", "",
              "| statistic | policy | measured | predicted | gap (pp) |", "|---|---|---|---|---|"]
    for stat, e in result["stats"].items():
        for other, rel in e["relative"].items():
            lines.append(f"| {stat} | {other} | {_fmt_pct(rel['live'])} | {_fmt_pct(rel['sim'])} | "
                         f"{_fmt_pp(rel['gap_pp'])} |")
    if result.get("placement"):
        lines += ["", "## Placement, live vs simulated", "",
                  "| policy | same node | start tiers live | start tiers sim |", "|---|---|---|---|"]
        for p, e in result["placement"].items():
            tiers = [", ".join(f"{k} {v}" for k, v in e.get(f"tiers_{side}", {}).items()) for side in ("live", "sim")]
            lines.append(f"| {p} | {e['same_node']} of {e['compared']} | {tiers[0]} | {tiers[1]} |")
    lines += ["", "## Targets", ""]
    for name, met in result["targets"].items():
        lines.append(f"- {name}: {'—' if met is None else ('met' if met else 'missed')}")
    notes = context.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
