"""Converter for the Azure LLM inference trace 2023 (``AzureLLMInferenceTrace_{code,conv}.csv``).

The data is Microsoft's, CC-BY 4.0: Patel et al., "Splitwise: Efficient generative LLM inference
using phase splitting", ISCA 2024. Each file is one production service, one row per request:
``TIMESTAMP,ContextTokens,GeneratedTokens`` with wall-clock timestamps carrying 7 fractional digits
(100 ns) and CRLF line ends. ``ContextTokens`` is the prompt length, ``GeneratedTokens`` the output.

Conversion: ``time = (TIMESTAMP - origin) / time_scale`` where ``origin`` is the earliest timestamp
over all given files (``origin="common"``, keeping the files aligned in wall-clock time) or each
file's own first timestamp (``origin="each"``). Dividing time by ``time_scale = k`` multiplies the
request rate by ``k`` while keeping the burst structure. Each file becomes one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sllmsim.errors import ConfigError
from sllmsim.traces.canonical import COLUMNS, Trace, sort_stream, source_info

RAW_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
ORIGINS = ("common", "each")


def read_azure_llm(path: str | Path) -> pd.DataFrame:
    """Read one Azure LLM 2023 file into ``timestamp`` (datetime64[ns]), ``input_tokens``, ``output_tokens``.

    Raises :class:`ConfigError` naming the file and the first bad row when the header, a timestamp
    or a token count does not parse.
    """
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"not a readable CSV ({exc})") from None
    if tuple(raw.columns) != RAW_COLUMNS:
        raise ConfigError(source, "header", f"expected {','.join(RAW_COLUMNS)}, got {','.join(map(str, raw.columns))}")
    # pandas' %f accepts up to 9 fractional digits, so the trace's 7 digits parse without truncation.
    stamps = pd.to_datetime(raw["TIMESTAMP"], format=TIMESTAMP_FORMAT, errors="coerce")
    _reject(source, raw, "TIMESTAMP", stamps.isna().to_numpy(), "expected a time like 2023-11-16 18:17:03.9799600")
    out = {"timestamp": stamps}
    for raw_col, col in (("ContextTokens", "input_tokens"), ("GeneratedTokens", "output_tokens")):
        values = pd.to_numeric(raw[raw_col], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        _reject(source, raw, raw_col, bad, "expected a token count")
        bad = (values.to_numpy() < 0) | (values.to_numpy() % 1 != 0)
        _reject(source, raw, raw_col, bad, "expected a non-negative whole token count")
        out[col] = values.astype("int64")
    return pd.DataFrame(out)


def convert_azure_llm(sources: Sequence[tuple[str | Path, str]], time_scale: float = 1.0,
                      origin: str = "common", duration_s: float | None = None,
                      min_tokens: int = 1) -> Trace:
    """Convert Azure LLM 2023 files into one canonical request stream.

    ``sources`` pairs each file with the model its requests go to, e.g.
    ``[("AzureLLMInferenceTrace_code.csv", "opt-6.7b"), ("AzureLLMInferenceTrace_conv.csv", "opt-13b")]``.
    ``time_scale`` is ``k`` in ``t' = t / k`` (``k > 1`` speeds the trace up). ``duration_s`` keeps
    only arrivals with ``t' < duration_s``. Token counts below ``min_tokens`` (the canonical stream
    needs at least one token each way) are raised to it; the sidecar counts how many were.
    """
    if not sources:
        raise ConfigError("azure_llm", "sources", "give at least one (file, model) pair")
    if not (isinstance(time_scale, (int, float)) and time_scale > 0 and np.isfinite(time_scale)):
        raise ConfigError("azure_llm", "time_scale", f"expected a positive number, got {time_scale!r}")
    if origin not in ORIGINS:
        raise ConfigError("azure_llm", "origin", f"expected one of {', '.join(ORIGINS)}, got {origin!r}")
    if duration_s is not None and not duration_s > 0:
        raise ConfigError("azure_llm", "duration_s", f"expected a positive number of seconds, got {duration_s!r}")
    if min_tokens < 1:
        raise ConfigError("azure_llm", "min_tokens", f"expected at least 1, got {min_tokens!r}")
    frames = []
    for path, model in sources:
        if not isinstance(model, str) or not model:
            raise ConfigError(str(path), "model", f"expected a model name, got {model!r}")
        df = read_azure_llm(path)
        df["model"] = model
        frames.append(df)
    common = min(df["timestamp"].min() for df in frames if len(df))
    parts = []
    raised = 0
    for df in frames:
        start = common if origin == "common" else df["timestamp"].min()
        seconds = (df["timestamp"] - start).dt.total_seconds().to_numpy() / float(time_scale)
        inp = df["input_tokens"].to_numpy()
        out = df["output_tokens"].to_numpy()
        raised += int(np.count_nonzero(inp < min_tokens) + np.count_nonzero(out < min_tokens))
        parts.append(pd.DataFrame({"time": seconds, "model": df["model"].to_numpy(dtype=object),
                                   "input_tokens": np.maximum(inp, min_tokens),
                                   "output_tokens": np.maximum(out, min_tokens)}, columns=COLUMNS))
    requests = sort_stream(pd.concat(parts, ignore_index=True))
    if duration_s is not None:
        requests = requests[requests["time"] < duration_s].reset_index(drop=True)
    meta = {
        "converter": "azure_llm_2023",
        "parameters": {
            "models": {Path(p).name: m for p, m in sources},
            "time_scale": float(time_scale),
            "origin": origin,
            "duration_s": duration_s,
            "min_tokens": int(min_tokens),
        },
        "seed": None,
        "sources": [source_info(p) for p, _ in sources],
        "origin_timestamp": str(common),
        "tokens_raised_to_min": raised,
        "dataset": "Azure LLM inference trace 2023 (CC-BY 4.0; Patel et al., Splitwise, ISCA 2024)",
    }
    return Trace(requests=requests, meta=meta)


def token_pool(paths: Sequence[str | Path], max_context_tokens: int | None = None) -> np.ndarray:
    """The ``(input_tokens, output_tokens)`` rows of Azure LLM files as an ``(n, 2)`` int64 array.

    Other converters draw whole rows from this pool so that prompt and output lengths keep their
    joint distribution. ``max_context_tokens`` keeps only rows with ``input + output`` within a
    model's context window, rather than clipping long prompts.
    """
    rows = [_token_rows(p) for p in paths]
    pool = np.concatenate(rows) if rows else np.empty((0, 2), dtype=np.int64)
    pool = pool[(pool[:, 0] >= 1) & (pool[:, 1] >= 1)]
    if max_context_tokens is not None:
        pool = pool[pool.sum(axis=1) <= max_context_tokens]
    if len(pool) == 0:
        where = ", ".join(str(p) for p in paths) or "token files"
        raise ConfigError(where, "max_context_tokens", f"no rows fit within {max_context_tokens} tokens")
    return pool


def _token_rows(path: str | Path) -> np.ndarray:
    # Token columns only: skipping the timestamps makes this several times faster than read_azure_llm,
    # which still reads the file when something looks wrong, to name the bad line.
    try:
        raw = pd.read_csv(path, usecols=list(RAW_COLUMNS[1:]))
        if all(pd.api.types.is_integer_dtype(t) for t in raw.dtypes) and (raw.to_numpy() >= 0).all():
            return raw.to_numpy(dtype=np.int64)
    except (ValueError, FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        pass
    return read_azure_llm(path)[["input_tokens", "output_tokens"]].to_numpy(dtype=np.int64)


def _reject(source: str, raw: pd.DataFrame, col: str, bad: np.ndarray, message: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        # +2: the header is line 1 and rows count from 1.
        raise ConfigError(source, f"line {i + 2}: {col}", f"{message}, got {raw[col].iloc[i]!r}")
