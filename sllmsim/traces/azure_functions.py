"""Converter for Azure Functions 2019 per-minute invocation counts, mapped onto LLM models.

The data is Microsoft's Azure Functions Dataset 2019, CC-BY 4.0: Shahrad et al., "Serverless in
the Wild", USENIX ATC 2020 (the 500-function sample used here was drawn by the vHive project). The
file has the header ``HashOwner,HashApp,HashFunction,Trigger`` followed by one column per minute of
the day (labelled e.g. ``480`` … ``959``), each holding that function's invocation count.

The mapping is explicit, seeded and recorded in the sidecar:

1. **Select functions.** Keep those whose ``Trigger`` is in ``triggers`` (all when omitted) and that
   were invoked at least once; rank them by total invocations over the whole file (ties broken by
   the function hash, so the order is stable). ``selection="top"`` takes the K most popular,
   ``"random"`` K drawn at random (then ranked by popularity). Rank r (0 = most popular) serves
   ``models[r]``.
2. **Window.** Minutes from ``start_minute`` (a column label; the first column by default).
3. **Rescale the rate** to ``target_rps`` (optional), averaged over the whole window from
   ``start_minute`` to the end of the file. ``rate_scaling="thin"`` scales every per-minute count
   by ``p = target / raw`` with stochastic rounding (``floor(n·p)`` plus one with probability
   ``frac(n·p)``), keeping the real time scale of idle gaps (what keep-alive acts on);
   ``"time"`` keeps every invocation and compresses time, ``t' = t / k`` with ``k = target / raw``.
4. **Expand counts into arrivals within each minute**: ``uniform`` (times uniform in the minute, i.e.
   a Poisson process conditioned on the recorded count), ``even`` (``n`` arrivals equally spaced at
   ``(j + 0.5)·60/n``, as vHive's loader spreads them), or ``poisson`` (the count itself redrawn
   as Poisson(n), times uniform: an inhomogeneous Poisson process whose rate is the recorded count).
5. **Cut** to ``[0, duration_s)`` after scaling.
6. **Token counts**: each arrival takes one whole row (prompt and output length together) drawn
   uniformly with replacement from the Azure LLM 2023 files given as the token pool.

Random streams (selection, rescaling, expansion, tokens) are spawned from ``SeedSequence(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from sllmsim.errors import ConfigError
from sllmsim.traces.azure_llm import token_pool
from sllmsim.traces.canonical import COLUMNS, Trace, sort_stream, source_info

ID_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
SELECTIONS = ("top", "random")
SPREADS = ("uniform", "even", "poisson")
RATE_SCALINGS = ("thin", "time")
MINUTE_S = 60.0


@dataclass(frozen=True)
class FunctionInvocations:
    """The per-minute invocation table: one row per function."""

    functions: pd.DataFrame
    """``HashOwner, HashApp, HashFunction, Trigger``."""
    counts: np.ndarray
    """``(functions, minutes)`` int64 invocation counts."""
    minutes: np.ndarray
    """The minute labels of the count columns (minute of the day, as in the source file)."""


def read_function_invocations(path: str | Path) -> FunctionInvocations:
    """Read an Azure Functions 2019 ``invocations_per_function`` file (or a sample of one)."""
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype={c: str for c in ID_COLUMNS})
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"not a readable CSV ({exc})") from None
    if tuple(raw.columns[:4]) != ID_COLUMNS or len(raw.columns) < 5:
        raise ConfigError(source, "header", f"expected {','.join(ID_COLUMNS)} followed by minute columns")
    minute_cols = list(raw.columns[4:])
    try:
        minutes = np.array([int(c) for c in minute_cols], dtype=np.int64)
    except ValueError:
        bad = next(c for c in minute_cols if not str(c).lstrip("-").isdigit())
        raise ConfigError(source, "header", f"expected minute numbers after Trigger, got {bad!r}") from None
    if np.any(np.diff(minutes) != 1):
        raise ConfigError(source, "header", "expected consecutive minute columns")
    block = raw[minute_cols]
    if all(pd.api.types.is_integer_dtype(t) for t in block.dtypes):
        counts = block.to_numpy(dtype=np.int64)  # the common case: pandas already parsed whole numbers
        bad = counts < 0
    else:
        values = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(values) | (values < 0) | (values % 1 != 0)
        counts = None if bad.any() else values.astype(np.int64)
    if bad.any():
        row, col = (int(x[0]) for x in np.nonzero(bad))
        raise ConfigError(source, f"line {row + 2}: minute {minute_cols[col]}",
                          f"expected a non-negative whole count, got {raw[minute_cols[col]].iloc[row]!r}")
    return FunctionInvocations(functions=raw[list(ID_COLUMNS)].reset_index(drop=True),
                               counts=counts, minutes=minutes)


def _read_memoised(path: str | Path) -> FunctionInvocations:
    # Sweeps convert the same file for every point; re-reading it only when it changed saves ~0.3 s each.
    st = Path(path).stat() if Path(path).is_file() else None
    if st is None:
        return read_function_invocations(path)
    return _read_by_version(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _read_by_version(path: str, mtime_ns: int, size: int) -> FunctionInvocations:
    inv = read_function_invocations(path)
    inv.counts.setflags(write=False)  # shared between calls
    return inv


def rank_functions(inv: FunctionInvocations, triggers: Sequence[str] | None = None) -> np.ndarray:
    """Row indices of the invoked functions (optionally only those with a trigger in ``triggers``),
    most invoked first, ties broken by the function hash."""
    totals = inv.counts.sum(axis=1)
    eligible = totals > 0
    if triggers is not None:
        eligible &= inv.functions["Trigger"].isin(list(triggers)).to_numpy()
    idx = np.flatnonzero(eligible)
    hashes = inv.functions["HashFunction"].to_numpy()[idx]
    order = np.lexsort((hashes, -totals[idx]))
    return idx[order]


def expand_counts(rng: np.random.Generator, counts: np.ndarray, spread: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrivals from a ``(functions, minutes)`` count table.

    Returns ``(times_s, function_row)``: seconds from the start of the first minute column, and the
    row of the function each arrival belongs to. Unsorted.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS}")
    if spread == "poisson":
        counts = rng.poisson(counts)
    counts = np.asarray(counts, dtype=np.int64)
    flat = counts.ravel()
    cells = np.flatnonzero(flat)
    n_per_cell = flat[cells]
    rows, minute = np.divmod(cells, counts.shape[1])
    func_row = np.repeat(rows, n_per_cell)
    minute_start = np.repeat(minute * MINUTE_S, n_per_cell)
    if spread == "even":
        first = np.repeat(np.cumsum(n_per_cell) - n_per_cell, n_per_cell)
        j = np.arange(len(func_row)) - first
        offset = (j + 0.5) * MINUTE_S / np.repeat(n_per_cell, n_per_cell)
    else:
        offset = rng.uniform(0.0, MINUTE_S, size=len(func_row))
    return minute_start + offset, func_row


def stochastic_round(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """Round each value down or up at random so that the expectation is the value itself."""
    base = np.floor(values)
    return (base + (rng.random(values.shape) < values - base)).astype(np.int64)


def convert_azure_functions(invocations_path: str | Path, token_paths: Sequence[str | Path],
                            models: Sequence[str], *, selection: str = "top",
                            triggers: Sequence[str] | None = None, spread: str = "uniform",
                            target_rps: float | None = None, rate_scaling: str = "thin",
                            start_minute: int | None = None, duration_s: float | None = None,
                            max_context_tokens: int | None = None, seed: int = 0) -> Trace:
    """Map Azure Functions 2019 invocations onto ``models`` (see the module docstring for each step).

    ``token_paths`` are Azure LLM 2023 files whose rows give the token counts.
    """
    src = str(invocations_path)
    models = list(models)
    if not models or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(src, "models", f"expected a non-empty list of model names, got {models!r}")
    if len(set(models)) != len(models):
        raise ConfigError(src, "models", "model names must be distinct (each one stands for one function)")
    if selection not in SELECTIONS:
        raise ConfigError(src, "selection", f"expected one of {', '.join(SELECTIONS)}, got {selection!r}")
    if spread not in SPREADS:
        raise ConfigError(src, "spread", f"expected one of {', '.join(SPREADS)}, got {spread!r}")
    if rate_scaling not in RATE_SCALINGS:
        raise ConfigError(src, "rate_scaling", f"expected one of {', '.join(RATE_SCALINGS)}, got {rate_scaling!r}")
    if target_rps is not None and not (target_rps > 0 and np.isfinite(target_rps)):
        raise ConfigError(src, "target_rps", f"expected a positive request rate, got {target_rps!r}")
    if duration_s is not None and not duration_s > 0:
        raise ConfigError(src, "duration_s", f"expected a positive number of seconds, got {duration_s!r}")
    if not token_paths:
        raise ConfigError(src, "token_paths", "give at least one Azure LLM 2023 file to draw token counts from")

    inv = _read_memoised(invocations_path)
    ss = np.random.SeedSequence(seed)
    r_select, r_scale, r_expand, r_tokens = (np.random.default_rng(s) for s in ss.spawn(4))

    ranked = rank_functions(inv, triggers)
    k = len(models)
    if len(ranked) < k:
        which = f" with trigger in {list(triggers)}" if triggers is not None else ""
        raise ConfigError(src, "models", f"{k} models but only {len(ranked)} invoked functions{which}")
    if selection == "top":
        chosen = ranked[:k]
    else:
        picked = np.sort(r_select.choice(len(ranked), size=k, replace=False))
        chosen = ranked[picked]  # ranked is popularity order, so sorted positions keep that order

    first_minute = int(inv.minutes[0])
    if start_minute is None:
        start_minute = first_minute
    if not first_minute <= start_minute <= int(inv.minutes[-1]):
        raise ConfigError(src, "start_minute",
                          f"expected a minute label between {first_minute} and {int(inv.minutes[-1])}, got {start_minute!r}")
    counts = inv.counts[chosen, start_minute - first_minute:]
    window_s = counts.shape[1] * MINUTE_S
    raw_rps = counts.sum() / window_s
    factor = 1.0 if target_rps is None else target_rps / raw_rps

    if rate_scaling == "thin" and factor != 1.0:
        if duration_s is not None:
            counts = counts[:, : int(np.ceil(duration_s / MINUTE_S))]
        counts = stochastic_round(r_scale, counts * factor)
        time_divisor = 1.0
    else:
        time_divisor = factor
        if duration_s is not None:
            counts = counts[:, : int(np.ceil(duration_s * time_divisor / MINUTE_S))]
    times, row = expand_counts(r_expand, counts, spread)
    times = times / time_divisor
    keep = times < duration_s if duration_s is not None else slice(None)
    times, row = times[keep], row[keep]

    pool = token_pool(token_paths, max_context_tokens)
    draws = pool[r_tokens.integers(0, len(pool), size=len(times))]
    requests = sort_stream(pd.DataFrame({
        "time": times, "model": np.asarray(models, dtype=object)[row],
        "input_tokens": draws[:, 0], "output_tokens": draws[:, 1]}, columns=COLUMNS))

    totals = inv.counts.sum(axis=1)
    meta = {
        "converter": "azure_functions_2019",
        "parameters": {
            "models": models, "selection": selection,
            "triggers": list(triggers) if triggers is not None else None,
            "spread": spread, "target_rps": target_rps, "rate_scaling": rate_scaling,
            "start_minute": int(start_minute), "duration_s": duration_s,
            "max_context_tokens": max_context_tokens,
        },
        "seed": int(seed),
        "sources": [source_info(invocations_path)] + [source_info(p) for p in token_paths],
        "raw_rps_of_selected": float(raw_rps),
        "rate_factor": float(factor),
        "token_pool_rows": int(len(pool)),
        "mapping": [
            {"model": m, "rank": r, "function": str(inv.functions["HashFunction"].iloc[i]),
             "trigger": str(inv.functions["Trigger"].iloc[i]), "invocations_in_file": int(totals[i])}
            for r, (m, i) in enumerate(zip(models, chosen))
        ],
        "dataset": ("Azure Functions 2019 (CC-BY 4.0; Shahrad et al., Serverless in the Wild, USENIX ATC 2020); "
                    "token counts from the Azure LLM inference trace 2023 (CC-BY 4.0; Patel et al., Splitwise, ISCA 2024)"),
    }
    return Trace(requests=requests, meta=meta)
