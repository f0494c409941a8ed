"""Means and 95% confidence intervals across seeds, and paired comparisons between policies.

Each seed is an independent replication (its own arrivals and random choices), so a metric's mean
over ``n`` seeds gets the Student-t interval ``mean ± t(0.975, n − 1) · s / √n`` with ``s`` the
sample standard deviation. Comparisons pair seeds: policy A and policy B see the same arrivals under
the same seed, so the interval is computed on the per-seed differences, which removes the variation
the two share. With one seed there is no interval (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None, int]:
    """``(mean, half_width, n)`` over the finite values; half-width is ``None`` for fewer than 2 values."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return None, None, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, None, n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * arr.std(ddof=1) / np.sqrt(n))
    return mean, half, n


def summarize_by(table: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per combination of ``keys``: for each metric its ``<metric>_mean``, ``<metric>_ci95``
    (the half-width) and the number of seeds ``n``. Groups keep the order they first appear in."""
    rows = []
    grouped = table.groupby(list(keys), sort=False, dropna=False) if keys else [((), table)]
    for values, group in grouped:
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values))
        row["n"] = len(group)
        for metric in metrics:
            mean, half, _ = mean_ci(group[metric].tolist()) if metric in group else (None, None, 0)
            row[f"{metric}_mean"] = mean
            row[f"{metric}_ci95"] = half
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, key: str, reference, other, metric: str,
                      match: Sequence[str]) -> pd.DataFrame:
    """Per configuration of ``match``: mean and 95% CI of ``metric(other) − metric(reference)`` over
    the seeds both have, plus both means. Columns: the ``match`` keys, ``n``, ``reference_mean``,
    ``other_mean``, ``diff_mean``, ``diff_ci95``, ``relative`` (other / reference − 1)."""
    ref = table[table[key] == reference]
    oth = table[table[key] == other]
    on = [*match, "seed"]
    both = ref[on + [metric]].merge(oth[on + [metric]], on=on, suffixes=("_ref", "_oth"))
    rows = []
    grouped = both.groupby(list(match), sort=False, dropna=False) if match else [((), both)]
    for values, group in grouped:
        values = values if isinstance(values, tuple) else (values,)
        pair = group[[f"{metric}_ref", f"{metric}_oth"]].dropna()
        diff_mean, diff_half, n = mean_ci((pair[f"{metric}_oth"] - pair[f"{metric}_ref"]).tolist())
        ref_mean = float(pair[f"{metric}_ref"].mean()) if n else None
        oth_mean = float(pair[f"{metric}_oth"].mean()) if n else None
        rel = (oth_mean / ref_mean - 1.0) if n and ref_mean else None
        rows.append({**dict(zip(match, values)), "n": n, "reference_mean": ref_mean, "other_mean": oth_mean,
                     "diff_mean": diff_mean, "diff_ci95": diff_half, "relative": rel})
    return pd.DataFrame(rows)


def significance(diff_mean: float | None, diff_ci95: float | None) -> str:
    """``higher``/``lower`` when the 95% interval of other − reference excludes 0, else ``unclear``."""
    if diff_mean is None or diff_ci95 is None or not np.isfinite(diff_ci95):
        return "unclear"
    if diff_mean - diff_ci95 > 0:
        return "higher"
    if diff_mean + diff_ci95 < 0:
        return "lower"
    return "unclear"
