"""Where a series' load-time error is: each cold load of a validation, stage by stage, over the runs.

    python experiments/validation-cpu/load_stages.py SERIES_FOLDER [SERIES_FOLDER ...]

Reads ``run-*/report/loads.csv`` of each folder (what ``repeat.py`` writes) and prints one Markdown
table: per load (model and its rank among the model's loads), its tier, and per stage (``download``,
``to_host``, ``to_gpu`` and the whole ``load``) the median over the runs of the live and the simulated
seconds and of the signed error (simulated − live) / live. A stage that took no time live in every run
(a host load has no disk stage) is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

STAGES = ("download", "to_host", "to_gpu", "load")


def stage_rows(loads: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, first_rank, stage) of paired loads: the medians over runs of the live and
    simulated seconds and of the signed error. ``loads`` stacks loads.csv of several runs with a
    ``run`` column."""
    paired = loads[loads["paired"].astype(bool)]
    rows = []
    for (model, rank), group in paired.groupby(["model", "first_rank"], sort=True):
        for stage in STAGES:
            live, sim = group[f"{stage}_s_live"], group[f"{stage}_s_sim"]
            if not (live > 0).any():
                continue
            signed = ((sim - live) / live).where(live > 0)
            rows.append({"model": model, "rank": int(rank), "tier": group["tier_live"].mode().iat[0],
                         "stage": stage, "runs": int(group["run"].nunique()),
                         "live_s": float(live.median()), "sim_s": float(sim.median()),
                         "signed_error": float(signed.median())})
    return pd.DataFrame(rows)


def read_series(folders: list[Path]) -> pd.DataFrame:
    """loads.csv of every ``run-*`` of the folders, with a ``run`` column naming its folder."""
    frames = []
    for folder in folders:
        for path in sorted(folder.glob("run-*/report/loads.csv")):
            frame = pd.read_csv(path)
            frame["run"] = f"{folder.name}/{path.parts[-3]}"
            frames.append(frame)
    if not frames:
        raise SystemExit(f"no run-*/report/loads.csv under {', '.join(map(str, folders))}")
    return pd.concat(frames, ignore_index=True)


def markdown(rows: pd.DataFrame) -> str:
    lines = ["| load | tier | stage | runs | live s (median) | simulated s (median) | signed error (median) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        lines.append(f"| {r.model} #{r.rank} | {r.tier} | {r.stage} | {r.runs} | {r.live_s:.2f} | {r.sim_s:.2f} | "
                     f"{r.signed_error * 100:+.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="series folders holding run-*/report/loads.csv")
    args = parser.parse_args(argv)
    print(markdown(stage_rows(read_series(args.folders))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
