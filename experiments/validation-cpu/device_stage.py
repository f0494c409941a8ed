"""The device stage of a GB-scale load, timed alone: first copy into fresh memory against repeats.

    python experiments/validation-cpu/device_stage.py

Builds two of `traces/validation-disk/models.yaml`'s models (disk-small 0.36 GB, disk-big 1.25 GB)
into a temporary folder, reads each checkpoint into host memory once with live mode's loader, then
three times copies it to the device (`live.loader.to_device`, allocation included, as a live load
does) and builds the model around the tensors (`live.loader.build_model`). Prints each round's
seconds and rate, and the process's user and system CPU time.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

_TRACE = Path(__file__).resolve().parents[2] / "traces" / "validation-disk.yaml"


def main() -> int:
    import torch

    from live.calibration.recipes import ModelRecipe, build_model_folder
    from live.live_run import load_recipes, recipes_path
    from live.loader import build_model, read_checkpoint, to_device

    torch.set_num_threads(1)
    recipes = load_recipes(recipes_path(_TRACE))
    work = Path(tempfile.mkdtemp(prefix="device-stage-"))
    for name in ("disk-small", "disk-big"):
        folder = build_model_folder(work / name, ModelRecipe(**recipes[name]))
        ckpt = read_checkpoint(folder)
        for round_ in range(1, 4):
            t0 = time.perf_counter()
            tensors = to_device(ckpt, "cpu", torch.float32, copy=True)
            t1 = time.perf_counter()
            model = build_model(folder, tensors, "cpu", torch.float32)
            t2 = time.perf_counter()
            print(f"{name} ({ckpt.nbytes / 1e9:.2f} GB) round {round_}: to_device {t1 - t0:.3f} s "
                  f"({ckpt.nbytes / 1e9 / (t1 - t0):.2f} GB/s), build_model {t2 - t1:.3f} s", flush=True)
            del model, tensors
        del ckpt
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU time: user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
