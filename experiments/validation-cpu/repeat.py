"""N fresh calibrate + validate pairs back to back, and one table of how each went.

    python experiments/validation-cpu/repeat.py --runs 5 --out runs/repeat
    python experiments/validation-cpu/repeat.py --runs 5 --out runs/repeat-disk --trace traces/validation-disk.yaml \
        --host-size 3GB --num-gpus 2

Each pair is what a new user runs: ``sllmsim calibrate --storage OUT/store --out OUT/run-i/machine.json
--host-size 128MB``, then ``sllmsim validate TRACE --hardware OUT/run-i/machine.json --out
OUT/run-i/report``. Before each pair the script waits (up to ``--quiet-wait-s``) for the 1-minute load
average to drop below ``--quiet-load``, and records it either way. ``OUT/table.md`` and
``OUT/table.csv`` are rewritten after every pair, so an interrupted series keeps what it measured; the
verdict (targets in at least 4 of 5 pairs, median signed error within ±5 %) is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sllmsim.fidelity.repeat_table import run_row, verdict, write_table


def _sllmsim() -> list[str]:
    exe = shutil.which("sllmsim")
    return [exe] if exe else [sys.executable, "-c", "from sllmsim.cli import main; main()"]


def _wait_quiet(limit: float, wait_s: float) -> float:
    deadline = time.monotonic() + wait_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="calibrate + validate pairs (default 5)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the pairs and the table")
    parser.add_argument("--trace", default="traces/validation-small.yaml", help="validation trace")
    parser.add_argument("--host-size", default="128MB", help="calibrate's --host-size (default 128MB)")
    parser.add_argument("--num-gpus", type=int, default=None,
                        help="calibrate's --num-gpus (traces/validation-disk.yaml needs 2)")
    parser.add_argument("--quiet-load", type=float, default=0.7, help="load average to wait for (default 0.7)")
    parser.add_argument("--quiet-wait-s", type=float, default=120.0, help="longest wait for it (default 120)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs: expected a positive number of pairs")
    if args.num_gpus is not None and args.num_gpus < 1:
        parser.error("--num-gpus: expected a positive number of GPUs per node")
    if not Path(args.trace).is_file():
        parser.error(f"--trace: {args.trace}: file not found")
    cli, rows = _sllmsim(), []
    for i in range(1, args.runs + 1):
        run_dir = args.out / f"run-{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        load = _wait_quiet(args.quiet_load, args.quiet_wait_s)
        print(f"pair {i}/{args.runs}: 1-minute load average {load:.2f} at the start", flush=True)
        gpus = [] if args.num_gpus is None else ["--num-gpus", str(args.num_gpus)]
        with open(run_dir / "calibrate.txt", "w") as log:
            subprocess.run(cli + ["calibrate", "--storage", str(args.out / "store"), "--out",
                                  str(run_dir / "machine.json"), "--host-size", args.host_size, *gpus],
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        subprocess.run(cli + ["validate", args.trace, "--hardware", str(run_dir / "machine.json"),
                              "--out", str(run_dir / "report")], check=True)
        rows.append(run_row(f"run-{i}", run_dir / "report"))
        write_table(rows, args.out, verdict(rows))
    v = verdict(rows)
    print((args.out / "table.md").read_text())
    return 0 if v.passed else 1


if __name__ == "__main__":
    sys.exit(main())
