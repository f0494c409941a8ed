"""``sllmsim validate TRACE --hardware HW --compare-policies A,B``: the same arrivals live and simulated
under each placement policy, and whether the simulator ranks the policies as the live system does.

Each policy gets its own live run (a fresh store, the trace's requests replayed on time) and its own
simulation of the arrivals as that run replayed them; :mod:`sllmsim.fidelity.policy_compare` joins
the four (or more) runs and judges them. Each policy's live records are kept in
``OUT/<policy>/live-run.json``, so ``--reuse-live`` of an earlier comparison folder re-simulates only.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import click

from sllmsim.config.trace import TraceConfig


def with_placement(trace: TraceConfig, policy: str) -> TraceConfig:
    """``trace`` with its placement policy replaced by ``policy`` (everything else unchanged)."""
    return dataclasses.replace(trace, scheduler=dataclasses.replace(trace.scheduler, placement=policy))


def run_comparison(policies: list[str], trace_path: Path, trace: TraceConfig, hardware: Path, out: Path,
                   recipe_map: dict | None, run_live, reuse_live: Path | None, sidecar: dict,
                   command_extra: tuple = ()) -> dict:
    """Run (or reuse) each policy's live run, simulate each, compare and write ``OUT/report.md``.

    ``run_live(trace, folder)`` serves one trace live and returns a :class:`~live.live_run.LiveRun`.
    """
    from live import live_run
    from sllmsim.fidelity import sim_trace
    from sllmsim.fidelity.policy_compare import compare_policies, report_markdown
    from sllmsim.metrics import requests_frame
    from sllmsim.sim import simulate

    runs, notes, load_texts = {}, [], []
    for policy in policies:
        policy_trace = with_placement(trace, policy)
        folder = out / policy
        if reuse_live is not None:
            live = live_run.load_live_run(reuse_live / policy, name=f"{trace.name}-{policy}-live")
        else:
            live = run_live(policy_trace, folder)
            live.save(folder / live_run.LIVE_RUN_JSON)
        live_requests = requests_frame(live.result.requests)
        realized = sim_trace.realized_requests(trace.requests, live_requests)
        depths = sim_trace.model_depths(trace, recipe_map, live.layers)
        sim_input = with_placement(
            sim_trace.simulated_trace(trace_path, trace, hardware, live.sizes_bytes, realized, depths), policy)
        simulated = simulate(sim_input)
        runs[(policy, "live")] = live_requests
        runs[(policy, "sim")] = requests_frame(simulated.requests)
        failed = [o for o in live.outcomes if o.status_code != 200]
        if failed:
            notes.append(f"{policy}: {len(failed)} live request(s) failed, e.g. #{failed[0].index}: "
                         f"{failed[0].status_code} {failed[0].error}")
        loads = sorted(v for v in live.settings.get("load_average_1min", []) if v == v)
        if loads:
            load_texts.append(f"{policy} live run median {loads[len(loads) // 2]:.1f} (max {loads[-1]:.1f})")
    result = compare_policies(runs, policies)
    machine = sidecar.get("machine", {})
    command = " ".join(shlex.quote(str(a)) for a in ("sllmsim", "validate", trace_path, "--hardware", hardware,
                                                       "--compare-policies", ",".join(policies), "--out", out,
                                                       *command_extra))
    context = {"command": command, "trace": str(trace_path), "hardware": str(hardware),
               "machine": ", ".join(f"{k} {machine[k]}" for k in ("platform", "cpu_count", "torch") if k in machine),
               "load_average": "; ".join(load_texts), "notes": list(sidecar.get("notes", [])) + notes}
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=float) + "\n")
    (out / "report.md").write_text(report_markdown(result, context))
    for stat, e in result["stats"].items():
        rel = "; ".join(f"{o} vs {result['baseline']}: measured {r['live']:+.1%}, predicted {r['sim']:+.1%}"
                        for o, r in e["relative"].items())
        click.echo(f"{stat} latency: winner live {e['winner_live'] or 'tie'}, simulated {e['winner_sim'] or 'tie'}; "
                   f"{rel}")
    click.echo(f"wrote {out}/report.md")
    return result
