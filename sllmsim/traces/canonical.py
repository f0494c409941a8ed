"""The canonical request stream that every converter writes and every runner reads.

A request stream is a CSV with exactly the header ``time,model,input_tokens,output_tokens``:

- ``time``: arrival in seconds from the start of the trace (float, written with 6 decimals, i.e.
  microseconds), rows sorted by time (ties keep their generation order);
- ``model``: the model name a deploy config serves;
- ``input_tokens``, ``output_tokens``: positive integers (prompt length and generated length).

Provenance lives in a sidecar JSON next to the CSV, named ``<csv file name>.meta.json`` (for
``arrivals.csv`` that is ``arrivals.csv.meta.json``), so the CSV stays plain for pandas, ``csv`` and
spreadsheets. The sidecar records the converter, its parameters, the seed, and the name, size and
sha256 of every source file, plus the row count and time span of the output. It has no wall-clock
timestamp, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sllmsim.errors import ConfigError

COLUMNS = ["time", "model", "input_tokens", "output_tokens"]
#: Version tag of the sidecar layout.
META_FORMAT = "sllmsim-requests/1"
TIME_DECIMALS = 6


@dataclass
class Trace:
    """A converted or generated request stream and the provenance to write beside it."""

    requests: pd.DataFrame
    """Canonical columns :data:`COLUMNS`, sorted by time."""
    meta: dict = field(default_factory=dict)
    """``converter``, ``parameters``, ``seed``, ``sources`` (see :func:`source_info`)."""


def meta_path(csv_path: str | Path) -> Path:
    """The sidecar path of a request CSV: ``<csv path>.meta.json``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + ".meta.json")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_info(path: str | Path) -> dict:
    """What the sidecar records about one input file: its name, size and sha256 (not its absolute path)."""
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def sort_stream(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by time (stable, so equal times keep their order), index reset, canonical dtypes."""
    df = df.loc[:, COLUMNS]
    order = np.argsort(df["time"].to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    return df.astype({"time": "float64", "input_tokens": "int64", "output_tokens": "int64"})


def write_stream(path: str | Path, trace: Trace) -> tuple[Path, Path]:
    """Write the request CSV and its sidecar; returns both paths. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = sort_stream(trace.requests)
    df.to_csv(path, index=False, float_format=f"%.{TIME_DECIMALS}f", lineterminator="\n")
    meta = {"format": META_FORMAT, **trace.meta, "rows": int(len(df))}
    if len(df):
        meta["first_time_s"] = round(float(df["time"].iloc[0]), TIME_DECIMALS)
        meta["last_time_s"] = round(float(df["time"].iloc[-1]), TIME_DECIMALS)
        meta["models"] = {str(k): int(v) for k, v in df["model"].value_counts(sort=False).sort_index().items()}
    side = meta_path(path)
    side.write_text(json.dumps(meta, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path, side


def read_stream(path: str | Path) -> pd.DataFrame:
    """Read and validate a canonical request CSV; errors name the file, the row and what was expected."""
    path = Path(path)
    source = str(path)
    try:
        df = pd.read_csv(path, dtype={"model": str}, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"not a readable CSV ({exc})") from None
    return validate_stream(df, source)


def validate_stream(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a request table has the canonical columns with valid values; returns it sorted."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(source, "header", f"expected columns {','.join(COLUMNS)}; missing {', '.join(missing)}")
    df = df.copy()
    for col in ("time", "input_tokens", "output_tokens"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(source, f"row {row + 2}: {col}", f"expected a number, got {df[col].iloc[row]!r}")
        df[col] = values
    checks = (
        ("time", df["time"].to_numpy() < 0, "expected a non-negative time in seconds"),
        ("input_tokens", (df["input_tokens"] < 1) | (df["input_tokens"] % 1 != 0), "expected a positive integer"),
        ("output_tokens", (df["output_tokens"] < 1) | (df["output_tokens"] % 1 != 0), "expected a positive integer"),
        ("model", df["model"].astype(str).str.len().to_numpy() == 0, "expected a model name"),
    )
    for col, bad, message in checks:
        bad = np.asarray(bad)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(source, f"row {row + 2}: {col}", f"{message}, got {df[col].iloc[row]!r}")
    return sort_stream(df)


def read_meta(path: str | Path) -> dict | None:
    """The sidecar of a request CSV as a dict, or ``None`` when there is none."""
    side = meta_path(path)
    if not side.exists():
        return None
    return json.loads(side.read_text())


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (Path,)):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, set, np.ndarray)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
