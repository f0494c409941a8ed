"""Disk reads of two checkpoints one at a time against both at once, as window 1 of the disk trace has them.

    python experiments/validation-cpu/disk_streams.py [--models-dir runs/validation-models] [--rounds 3]

`traces/validation-disk.yaml` starts disk-big (1.26 GB) and disk-mid (0.68 GB) together on node 0's
disk. The simulator shares the calibrated `disk_bandwidth` between the two reads; this script measures
what the machine does instead. Each round drops both files from the page cache and reads them with
live mode's loader (`live.loader.read_checkpoint`, its own read threads) three ways: each alone, and
both at once from two threads (as two loads on one node run). Each way reads into a fresh host buffer
(as a live load does) and into a buffer touched beforehand (the disk alone, without first-touch page
faults). Prints seconds and rates per read and the two-at-once aggregate against the one-at-a-time
rate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_TRACE = _ROOT / "traces" / "validation-disk.yaml"
_MODELS = ("disk-big", "disk-mid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=str(_ROOT / "runs" / "validation-models"),
                        help="where validate builds (or already built) the trace's models")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from live.live_run import build_models, load_recipes, recipes_path
    from live.loader import plan_checkpoint, read_checkpoint
    from live.pagecache import drop_tree

    recipes = load_recipes(recipes_path(_TRACE))
    folders = build_models({name: recipes[name] for name in _MODELS}, args.models_dir)
    sizes = {name: plan_checkpoint(folder)[2] for name, folder in folders.items()}

    def read(name: str, touched: dict[str, torch.Tensor] | None, out: dict[str, float]) -> None:
        allocate = (lambda n: touched[name]) if touched else None
        t0 = time.perf_counter()
        read_checkpoint(folders[name], allocate=allocate)
        out[name] = time.perf_counter() - t0

    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        for memory in ("fresh", "touched"):
            touched = ({name: torch.ones(sizes[name], dtype=torch.uint8) for name in _MODELS}
                       if memory == "touched" else None)
            for name in _MODELS:
                drop_tree([folders[name]])
                out: dict[str, float] = {}
                read(name, touched, out)
                results.setdefault((memory, f"{name} alone"), []).append(out[name])
            drop_tree(folders.values())
            out = {}
            t0 = time.perf_counter()
            threads = [threading.Thread(target=read, args=(name, touched, out)) for name in _MODELS]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            both_s = time.perf_counter() - t0
            for name in _MODELS:
                results.setdefault((memory, f"{name} beside the other"), []).append(out[name])
            results.setdefault((memory, "both at once (wall)"), []).append(both_s)
            del touched
        print(f"round {round_} done", file=sys.stderr)

    total = sum(sizes.values())
    print("sizes: " + ", ".join(f"{n} {sizes[n] / 1e9:.2f} GB" for n in _MODELS))
    print(f"{'memory':8} {'read':28} {'seconds (each round)':28} {'median GB/s':>11}")
    for (memory, label), secs in results.items():
        nbytes = total if label.startswith("both") else sizes[label.split()[0]]
        rate = nbytes / statistics.median(secs) / 1e9
        print(f"{memory:8} {label:28} {', '.join(f'{s:.3f}' for s in secs):28} {rate:11.2f}")
    for memory in ("fresh", "touched"):
        alone_s = sum(statistics.median(results[(memory, f"{n} alone")]) for n in _MODELS)
        both_s = statistics.median(results[(memory, "both at once (wall)")])
        print(f"{memory}: one after the other {alone_s:.3f} s, both at once {both_s:.3f} s: "
              f"aggregate {alone_s / both_s:.2f}x the one-at-a-time rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
