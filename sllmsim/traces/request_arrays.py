"""The canonical request stream in memory: parallel arrays, the form the simulator consumes.

Same columns as the canonical CSV (:mod:`sllmsim.traces.canonical`); a trace YAML's explicit
requests, ``requests_csv`` rows and generated workloads all become one :class:`RequestArrays`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class RequestArrays:
    """A request stream as parallel arrays, sorted by time (the canonical columns)."""

    time_s: np.ndarray
    """float64 arrival times in seconds."""
    model: np.ndarray
    """object array of model names."""
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.time_s)

    @classmethod
    def empty(cls) -> RequestArrays:
        return cls(np.empty(0), np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> RequestArrays:
        """From a canonical DataFrame (columns time, model, input_tokens, output_tokens)."""
        return cls(
            df["time"].to_numpy(dtype=np.float64),
            df["model"].to_numpy(dtype=object),
            df["input_tokens"].to_numpy(dtype=np.int64),
            df["output_tokens"].to_numpy(dtype=np.int64),
        )

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"time": self.time_s, "model": self.model, "input_tokens": self.input_tokens,
                             "output_tokens": self.output_tokens})

    @staticmethod
    def concat(parts: list[RequestArrays]) -> RequestArrays:
        """Merge streams into one sorted by time; ties keep the order of ``parts`` (a stable sort)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return RequestArrays.empty()
        if len(parts) == 1:
            return parts[0]
        time_s = np.concatenate([p.time_s for p in parts])
        order = np.argsort(time_s, kind="stable")
        return RequestArrays(
            time_s[order],
            np.concatenate([p.model for p in parts])[order],
            np.concatenate([p.input_tokens for p in parts])[order],
            np.concatenate([p.output_tokens for p in parts])[order],
        )
