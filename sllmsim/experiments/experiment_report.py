"""The report folder of an experiment: results table (CSV + Parquet), ``report.md`` and PNG plots.

Everything here is regenerated from the points' outcomes; nothing is typed in by hand except the
experiment's own ``report.notes``. Files:

- ``results.csv`` / ``results.parquet``: one row per point × seed: ``point``, the varied values,
  ``seed``, every scalar metric of :data:`sllmsim.metrics.METRICS`, and ``invariant_violations``;
- ``summary.csv``: one row per configuration: mean and 95% CI half-width of each metric over seeds;
- ``report.md``: set-up, the summary table (mean ± 95% CI, Student t), the paired comparison,
  invariant checks, plots, notes and data credits;
- plots: ``latency_cdf.png``, ``by_policy.png``, ``start_tiers.png``, ``busy_gpus.png``, and when the
  grid varies them ``vs_rate.png`` and ``keep_alive_tradeoff.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sllmsim.core.registry import DEFAULT_PLACEMENT
from sllmsim.experiments import plots
from sllmsim.experiments.runner import ExperimentRun
from sllmsim.experiments.spec import ExperimentSpec
from sllmsim.experiments.stats import CONFIDENCE, mean_ci, paired_difference, significance, summarize_by
from sllmsim.invariants import INVARIANTS
from sllmsim.metrics import METRIC_BY_KEY, SCALAR_KEYS
from sllmsim.run_plots import plot_busy_gpus, plot_latency_cdf, plot_start_tiers, save_figure

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
SUMMARY_CSV = "summary.csv"
REPORT_MD = "report.md"

_DATASETS = {
    "azure_functions": ("Azure Functions 2019 invocation counts (CC-BY 4.0): M. Shahrad et al., \"Serverless in "
                        "the Wild: Characterizing and Optimizing the Serverless Workload at a Large Cloud "
                        "Provider\", USENIX ATC 2020 (500-function sample drawn by the vHive project)"),
    "azure_llm": ("Azure LLM inference trace 2023 (CC-BY 4.0): P. Patel et al., \"Splitwise: Efficient "
                  "generative LLM inference using phase splitting\", ISCA 2024"),
}


def results_table(run: ExperimentRun) -> pd.DataFrame:
    """One row per point × seed with the varied values and every scalar metric."""
    keys = run.spec.variation_keys
    rows = []
    for point, outcome in zip(run.points, run.outcomes):
        params = point.param_dict()
        row = {"point": point.index}
        row.update({k: params.get(k) for k in keys})
        row["seed"] = point.seed
        row.update({k: outcome.summary.get(k) for k in SCALAR_KEYS})
        row["invariant_violations"] = len(outcome.violations)
        rows.append(row)
    table = pd.DataFrame(rows)
    for key in keys:
        table[key] = _tidy_column(table[key])
    for key in SCALAR_KEYS:
        table[key] = pd.to_numeric(table[key], errors="coerce")
    return table


def _tidy_column(col: pd.Series) -> pd.Series:
    # A column of varied values is numeric when every value is a number, else text ("" for unset),
    # so that Parquet gets one type per column.
    values = col.tolist()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype=float if any(isinstance(v, float) for v in values) else "int64")
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    return pd.Series(["" if m else str(v) for v, m in zip(values, missing)], dtype=object)


def write_report(run: ExperimentRun, out_dir: Path, command: str) -> list[Path]:
    """Write the whole report folder; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = run.spec
    table = results_table(run)
    keys = spec.config_keys
    opts = spec.report
    metrics = [m for m in opts.table_metrics if m in SCALAR_KEYS]
    summary = summarize_by(table, keys, list(SCALAR_KEYS))

    written = []
    table.to_csv(out_dir / RESULTS_CSV, index=False, float_format="%.9g", lineterminator="\n")
    table.to_parquet(out_dir / RESULTS_PARQUET, index=False)
    summary.to_csv(out_dir / SUMMARY_CSV, index=False, float_format="%.9g", lineterminator="\n")
    written += [out_dir / RESULTS_CSV, out_dir / RESULTS_PARQUET, out_dir / SUMMARY_CSV]

    policy = opts.policy_key
    reference = _reference(spec, policy)
    at_ref = _at_reference(run, table, reference)
    figures: list[tuple[str, str, object]] = []

    pooled = {}
    first_seed_ts = {}
    for label in _policy_values(table, policy):
        idx = [i for i in at_ref if policy is None or table.loc[i, policy] == label]
        if not idx:
            continue
        pooled[str(label)] = pd.concat([run.outcomes[i].requests for i in idx], ignore_index=True)
        first_seed_ts[str(label)] = run.outcomes[idx[0]].timeseries
    ref_text = _describe(reference)
    figures.append(("latency_cdf.png", "Latency CDF per " + (policy or "run"),
                    plot_latency_cdf(pooled, title=f"Request latency by {policy or 'run'} — {ref_text}, seeds pooled")))
    bars_table = table.loc[at_ref]
    figures.append(("by_policy.png", f"Mean and p99 latency per {policy or 'run'}",
                    plots.plot_metric_bars(summarize_by(bars_table, [policy] if policy else [],
                                                        ["latency_mean_s", "latency_p99_s", "cold_start_ratio"]),
                                           policy, title=f"Latency and cold starts by {policy or 'run'} — {ref_text}")))
    if opts.rate_key and opts.rate_key != policy:
        rate_ref = {k: v for k, v in reference.items() if k != opts.rate_key}
        idx = _at_reference(run, table, rate_ref)
        rate_summary = summarize_by(table.loc[idx], [k for k in (policy, opts.rate_key) if k],
                                    ["latency_p50_s", "latency_p99_s", "cold_start_ratio"])
        figures.append(("vs_rate.png", "p50/p99 latency and cold-start ratio vs request rate",
                        plots.plot_vs_rate(rate_summary, opts.rate_key, policy, _rate_label(spec, opts.rate_key),
                                           title=f"Latency and cold starts vs request rate — {_describe(rate_ref)}")))
    figures.append(("start_tiers.png", "Cold-start breakdown by tier",
                    plot_start_tiers(pooled, title=f"Where each request's instance started — {ref_text}, seeds pooled")))
    if opts.keep_alive_key and opts.keep_alive_key != policy:
        others = [k for k in keys if k != opts.keep_alive_key]
        panel = opts.panel_key if opts.panel_key in others else None
        ka_summary = summarize_by(table, others + [opts.keep_alive_key], [*opts.tradeoff_metrics, "gpu_seconds"])
        curve_keys = [k for k in others if k != panel]
        ka_summary["curve"] = _curve_labels(ka_summary, curve_keys)
        what = ", ".join(plots.metric_label(m).split(" (")[0] for m in opts.tradeoff_metrics)
        figures.append(("keep_alive_tradeoff.png", f"Keep-alive trade-off: {what} vs GPU-seconds",
                        plots.plot_keep_alive_tradeoff(ka_summary, opts.keep_alive_key, "curve",
                                                       y_metrics=opts.tradeoff_metrics,
                                                       legend_title=", ".join(curve_keys) or None,
                                                       panel_key=panel)))
    figures.append(("busy_gpus.png", "Instances and busy GPUs over time",
                    plot_busy_gpus(first_seed_ts, title=f"Instances and busy GPUs over time — {ref_text}, "
                                                        f"seed {spec.seeds[0]}")))
    for name, _, fig in figures:
        written.append(save_figure(fig, out_dir / name))

    text = _markdown(run, table, summary, metrics, figures, reference, command)
    (out_dir / REPORT_MD).write_text(text)
    written.append(out_dir / REPORT_MD)
    return written


# --------------------------------------------------------------------------- helpers


def _policy_values(table: pd.DataFrame, policy: str | None) -> list:
    return [None] if policy is None else list(dict.fromkeys(table[policy].tolist()))


def _reference(spec: ExperimentSpec, policy: str | None) -> dict:
    """Values of every varied key but the policy key at which the per-policy plots are drawn."""
    ref = {}
    if spec.cases and policy != "case":
        ref["case"] = spec.report.reference.get("case", spec.cases[0][0])
    for key, values in spec.grid:
        if key != policy:
            ref[key] = spec.report.reference.get(key, values[0])
    return ref


def _at_reference(run: ExperimentRun, table: pd.DataFrame, reference: dict) -> list[int]:
    mask = np.ones(len(table), dtype=bool)
    for key, value in reference.items():
        mask &= (table[key] == _tidy_value(table[key], value)).to_numpy()
    return list(np.flatnonzero(mask))


def _tidy_value(col: pd.Series, value):
    return value if pd.api.types.is_numeric_dtype(col) else ("" if value is None else str(value))


def _describe(reference: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in reference.items()) or "all points"


def _rate_label(spec: ExperimentSpec, key: str) -> str:
    if key == "rate_scale":
        base = (spec.requests or {}).get("target_rps")
        return f"request-rate factor (× {base:g} requests/s)" if base else "request-rate factor (× base rate)"
    if key == "requests.target_rps":
        return "request rate (requests/s)"
    return key


def fmt(value, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, thousands separators for large ones."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    value = float(value)
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def _pm(mean, half) -> str:
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "—"
    if half is None or (isinstance(half, float) and not math.isfinite(half)):
        return fmt(mean)
    # Show the mean to the precision of its interval.
    if half > 0:
        decimals = max(0, 1 - math.floor(math.log10(half)))
        if abs(mean) >= 1000 and decimals == 0:
            return f"{mean:,.0f} ± {half:,.0f}"
        return f"{mean:,.{decimals}f} ± {half:,.{decimals}f}"
    return f"{fmt(mean)} ± 0"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _metric_head(metric: str) -> str:
    unit = METRIC_BY_KEY[metric].unit if metric in METRIC_BY_KEY else ""
    if not unit or unit == "count" or metric.endswith(f"_{unit}"):
        return metric  # the key already carries its unit
    return f"{metric} ({unit})"


def _markdown(run: ExperimentRun, table: pd.DataFrame, summary: pd.DataFrame, metrics: list[str],
              figures: list, reference: dict, command: str) -> str:
    spec = run.spec
    keys = spec.config_keys
    n_configs = len(summary)
    out = [f"# Experiment: {spec.name}", ""]
    if spec.description:
        out += [spec.description.strip(), ""]
    out += [f"Regenerate with `{command}` — {len(run.points)} runs ({n_configs} configurations × "
            f"{len(spec.seeds)} seeds); results are cached by configuration, so an unchanged point is not re-run.",
            ""]

    comparison, verdicts = _comparison(spec, table) if spec.report.compare else ([], [])
    if verdicts:
        comp = spec.report.compare
        out += ["## Verdict", "",
                f"`{comp.key} = {comp.reference}` against the others, from the seed-paired comparison below "
                "(recomputed on every regeneration; \"significantly\" = the 95% CI of the paired difference "
                "excludes 0):", ""] + verdicts + [""]

    out += ["## Set-up", ""]
    where = f"`{spec.trace_path}`" if spec.trace_path else "inline in the experiment file"
    out.append(f"- Base trace: {where}, scheduler `{spec.trace.get('scheduler', DEFAULT_PLACEMENT)}` "
               "unless varied.")
    if spec.requests:
        params = {k: v for k, v in spec.requests.items() if k not in ("invocations", "tokens", "sources")}
        files = [spec.requests.get("invocations"), *(spec.requests.get("tokens") or []),
                 *(spec.requests.get("sources") or {}).values()]
        out.append(f"- Requests drawn per run by converter `{params.pop('converter')}` with "
                   + ", ".join(f"`{k}={v}`" for k, v in params.items())
                   + "; from " + ", ".join(f"`{Path(f).name}`" for f in files if f) + ".")
    for key, values in spec.grid:
        out.append(f"- Varied `{key}`: " + ", ".join(f"`{v}`" for v in values) + ".")
    for name, overrides in spec.cases:
        desc = ", ".join(f"`{k} = {v}`" for k, v in overrides.items()) or "the base trace unchanged"
        out.append(f"- Case **{name}**: {desc}.")
    out.append(f"- Seeds: {', '.join(map(str, spec.seeds))} (each seed redraws the arrivals and the policies' "
               "random choices; the same seed gives every configuration the same arrivals).")
    out.append("")

    out += [f"## Results (mean ± {int(CONFIDENCE * 100)}% CI over {len(spec.seeds)} seeds, Student t)", ""]
    header = keys + [_metric_head(m) for m in metrics]
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row[k]) if row[k] != "" else "—" for k in keys]
        cells += [_pm(row[f"{m}_mean"], row[f"{m}_ci95"]) for m in metrics]
        rows.append(cells)
    out += [_md_table(header, rows), ""]
    out.append("Metric definitions: see the README's metric table (`sllmsim.metrics.METRICS`). Every run's "
               f"full metrics are in `{RESULTS_CSV}` / `{RESULTS_PARQUET}`; means and intervals of all "
               f"metrics in `{SUMMARY_CSV}`.")
    out.append("")

    if spec.report.compare:
        out += comparison
    if spec.report.keep_alive_key and spec.report.keep_alive_key != spec.report.policy_key:
        out += _keep_alive_summary(spec, summary)
    if spec.report.migration_cost:
        out += _migration_cost(spec, run, table)

    out += ["## Invariants", ""]
    violations = run.violations
    if not violations:
        listed = "; ".join(f"{n}. {text}" for n, text in INVARIANTS.items())
        out.append(f"All {len(INVARIANTS)} invariants of `sllmsim.invariants` ({listed}) held on all "
                   f"{len(run.points)} runs.")
    else:
        out.append(f"**{len(violations)} invariant violations** in "
                   f"{len({p.index for p, _ in violations})} of {len(run.points)} runs:")
        out.append("")
        out += [f"- point {p.index} ({p.label}, seed {p.seed}): {v}" for p, v in violations[:20]]
        if len(violations) > 20:
            out.append(f"- … and {len(violations) - 20} more")
    out.append("")

    out += ["## Plots", ""]
    out.append(f"Per-{spec.report.policy_key or 'run'} plots are drawn at {_describe(reference)}.")
    out.append("")
    for name, caption, _ in figures:
        out += [f"### {caption}", "", f"![{caption}]({name})", ""]

    if spec.report.notes:
        out += ["## Notes", "", spec.report.notes.strip(), ""]

    credits = []
    if spec.requests:
        credits.append(_DATASETS[spec.requests["converter"]])
        if spec.requests["converter"] == "azure_functions":
            credits.append(_DATASETS["azure_llm"] + " (token counts)")
    if credits:
        out += ["## Data", ""] + [f"- {c}" for c in credits] + [""]
    return "\n".join(out)


def _curve_labels(summary: pd.DataFrame, keys: list[str]) -> list[str]:
    """One label per row naming its values of ``keys`` (the first bare, the rest as key=value)."""
    labels = []
    for _, row in summary.iterrows():
        parts = [str(row[k]) if i == 0 else f"{k}={row[k]}" for i, k in enumerate(keys)]
        labels.append(", ".join(parts) or "all runs")
    return labels


def _keep_alive_summary(spec: ExperimentSpec, summary: pd.DataFrame) -> list[str]:
    ka = spec.report.keep_alive_key
    others = [k for k in spec.config_keys if k != ka]
    out = ["## Keep-alive trade-off", "",
           f"For each {', '.join(others) or 'run'}: the `{ka}` with the lowest mean and the lowest p99 latency, "
           f"and the GPU-seconds spent at the shortest `{ka}` and at the one with the lowest p99 latency.", ""]
    header = others + [f"best {ka} for mean latency", "mean latency (s)", f"best {ka} for p99 latency",
                       "p99 latency (s)", f"GPU·s: shortest {ka} → best for p99"]
    rows = []
    groups = summary.groupby(others, sort=False) if others else [((), summary)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        group = group.sort_values(ka)
        best_mean = group.loc[group["latency_mean_s_mean"].astype(float).idxmin()]
        best_p99 = group.loc[group["latency_p99_s_mean"].astype(float).idxmin()]
        rows.append([str(v) for v in values] + [
            str(best_mean[ka]), _pm(best_mean["latency_mean_s_mean"], best_mean["latency_mean_s_ci95"]),
            str(best_p99[ka]), _pm(best_p99["latency_p99_s_mean"], best_p99["latency_p99_s_ci95"]),
            f"{fmt(group.iloc[0]['gpu_seconds_mean'])} → {fmt(best_p99['gpu_seconds_mean'])}"])
    return out + [_md_table(header, rows), ""]


def _migration_cost(spec: ExperimentSpec, run: ExperimentRun, table: pd.DataFrame) -> list[str]:
    """Each migrated request's latency against the same request in the run without migration."""
    opt = spec.report.migration_cost
    key = opt.key
    with_value, base_value = _tidy_value(table[key], opt.migrated), _tidy_value(table[key], opt.baseline)
    match = [k for k in spec.config_keys if k != key]
    out = ["## What migration costs the migrated requests", "",
           f"Each request that live migration moved (completed, `migrated = 1`) in a `{key} = {opt.migrated}` run, "
           f"against the same request (same id: same seed, same arrivals) in the `{key} = {opt.baseline}` run: "
           "Δ = its latency with migration − without. Δ also carries every other difference between the two "
           "schedules (when the request started, what else shared its batch), not only the move itself; "
           "the part after the first token (Δ of finish − first token) is where a move can act. "
           "Quantiles are over the migrated requests of all seeds; the mean's 95% CI is over the seeds' "
           "per-seed means (Student t).", ""]
    header = match + ["migrated requests", "latency without (mean s)", "latency with (mean s)", "median Δ (s)",
                      "mean Δ (s)", "p99 Δ (s)", "slower with migration", "mean Δ after first token (s)"]
    rows = []
    groups = table.groupby(match, sort=False) if match else [((), table)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        deltas, seed_means, with_lat, base_lat, after = [], [], [], [], []
        for _, by_seed in group.groupby("seed", sort=False):
            moved_at = by_seed.index[by_seed[key] == with_value]
            base_at = by_seed.index[by_seed[key] == base_value]
            if len(moved_at) != 1 or len(base_at) != 1:
                continue
            moved = run.outcomes[moved_at[0]].requests
            base = run.outcomes[base_at[0]].requests
            moved = moved[moved["migrated"].astype(bool) & (moved["status"] == "completed")]
            base = base[base["status"] == "completed"]
            cols = ["request_id", "latency_s", "ttft_s"]
            pairs = moved[cols].merge(base[cols], on="request_id", suffixes=("_with", "_without"))
            if pairs.empty:
                continue
            d = (pairs["latency_s_with"] - pairs["latency_s_without"]).to_numpy(dtype=float)
            deltas.append(d)
            seed_means.append(float(d.mean()))
            with_lat.append(pairs["latency_s_with"].to_numpy(dtype=float))
            base_lat.append(pairs["latency_s_without"].to_numpy(dtype=float))
            after.append((pairs["latency_s_with"] - pairs["ttft_s_with"]
                          - (pairs["latency_s_without"] - pairs["ttft_s_without"])).to_numpy(dtype=float))
        if not deltas:
            rows.append([str(v) for v in values] + ["0", "—", "—", "—", "—", "—", "—", "—"])
            continue
        d = np.concatenate(deltas)
        mean, half, _ = mean_ci(seed_means)
        rows.append([str(v) for v in values] + [
            str(len(d)), fmt(np.concatenate(base_lat).mean()), fmt(np.concatenate(with_lat).mean()),
            fmt(np.median(d)), _pm(mean, half), fmt(np.percentile(d, 99)), f"{(d > 0).mean():.0%}",
            fmt(np.concatenate(after).mean())])
    return out + [_md_table(header, rows), ""]


def _comparison(spec: ExperimentSpec, table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The comparison section and its one-line verdicts (which the report puts at the top)."""
    comp = spec.report.compare
    key, ref = comp.key, comp.reference
    col_ref = _tidy_value(table[key], ref)
    others = [v for v in dict.fromkeys(table[key].tolist()) if v != col_ref]
    match = [k for k in spec.config_keys if k != key]
    where = f" (one row per {', '.join(match)})" if match else ""
    out = [f"## Comparison: `{key} = {ref}` against the others", "",
           f"Paired by seed (each pair saw the same arrivals): the difference other − {ref} and its 95% CI"
           f"{where}. A difference whose interval excludes 0 is marked *higher* or *lower* (the other "
           f"{key} against {ref}); otherwise *unclear*.", ""]
    verdicts = []
    for metric in comp.metrics:
        header = match + [f"other {key}", f"{ref}", "other", "other − ref", "relative", "verdict"]
        rows = []
        for other in others:
            diff = paired_difference(table, key, col_ref, other, metric, match)
            lower = sig_lower = sig_higher = 0
            for _, row in diff.iterrows():
                verdict = significance(row["diff_mean"], row["diff_ci95"])
                lower += bool(row["diff_mean"] is not None and row["diff_mean"] > 0)
                sig_lower += verdict == "higher"
                sig_higher += verdict == "lower"
                rows.append([str(row[k]) for k in match] + [
                    str(other), fmt(row["reference_mean"]), fmt(row["other_mean"]),
                    _pm(row["diff_mean"], row["diff_ci95"]),
                    "—" if row["relative"] is None or pd.isna(row["relative"]) else f"{row['relative']:+.0%}",
                    verdict])
            if len(diff) == 1:
                row = diff.iloc[0]
                verdict = significance(row["diff_mean"], row["diff_ci95"])
                rel = "" if row["relative"] is None or pd.isna(row["relative"]) else f"{row['relative']:+.0%}, "
                words = {"higher": "significantly higher", "lower": "significantly lower",
                         "unclear": "not significant"}[verdict]
                verdicts.append(f"- **{metric}** with `{other}` against `{ref}`: {rel}{words}.")
            else:
                verdicts.append(f"- **{metric}**: `{ref}` is lower than `{other}` in {lower} of {len(diff)} "
                                f"configurations (significantly in {sig_lower}); significantly higher in "
                                f"{sig_higher}.")
        out += [f"### {metric}", "", _md_table(header, rows), ""]
    return out, verdicts
