"""Where a validation series' latency optimism lies: per-token decode time, live against simulated.

    python experiments/validation-cpu/decode_gap.py experiments/validation-cpu/repeat-quiet-2026-12-02

Reads every ``run-*/report/requests.csv`` under the folder (the joined live/simulated requests a
``sllmsim validate`` report writes) and prints, for the requests that decoded alone on their live
instance (fewer than two in flight) and produced at least two tokens, the median decode time per
token — ``(latency − time to first token) / (tokens − 1)`` — live and simulated, and their median
signed ratio, by model and by whether the request was the first one its live instance served (the
request that waited for the load) or a later one. The same table for time to first token and
end-to-end latency closes it. Nothing is fitted: it splits the report's own columns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def decode_table(folder: Path) -> pd.DataFrame:
    """One row per (model, first request on its instance or not) of the series in ``folder``."""
    frames = []
    for path in sorted(folder.glob("run-*/report/requests.csv")):
        frame = pd.read_csv(path)
        frame["run"] = path.parts[-3]
        frames.append(frame)
    if not frames:
        raise SystemExit(f"{folder}: no run-*/report/requests.csv found")
    d = pd.concat(frames, ignore_index=True)
    d = d[(d.status_live == "completed") & (d.status_sim == "completed") & (d.output_tokens_live >= 2)
          & (d.in_flight_live.fillna(1) < 2)].copy()
    steps = d.output_tokens_live - 1
    d["live_ms_per_token"] = 1e3 * (d.latency_s_live - d.ttft_s_live) / steps
    d["sim_ms_per_token"] = 1e3 * (d.latency_s_sim - d.ttft_s_sim) / steps
    d["decode_signed"] = d.sim_ms_per_token / d.live_ms_per_token - 1
    d["ttft_signed"] = d.ttft_s_sim / d.ttft_s_live - 1
    d["latency_signed"] = d.latency_s_sim / d.latency_s_live - 1
    d = d.sort_values(["run", "arrival_s_live"])
    d["first_on_instance"] = ~d.duplicated(["run", "instance_id_live"])
    return (d.groupby(["model", "first_on_instance"])
             .agg(n=("run", "size"), live_ms_per_token=("live_ms_per_token", "median"),
                  sim_ms_per_token=("sim_ms_per_token", "median"), decode_signed=("decode_signed", "median"),
                  ttft_signed=("ttft_signed", "median"), latency_signed=("latency_signed", "median"))
             .reset_index())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a repeat.py series folder (run-*/report/requests.csv)")
    args = parser.parse_args(argv)
    table = decode_table(args.folder)
    pct = {c: "{:+.1%}".format for c in ("decode_signed", "ttft_signed", "latency_signed")}
    print(table.to_string(index=False, formatters={**pct, "live_ms_per_token": "{:.2f}".format,
                                                   "sim_ms_per_token": "{:.2f}".format}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
