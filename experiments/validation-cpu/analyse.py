"""The analyses behind this folder's README, from the committed calibrations and live runs.

    python experiments/validation-cpu/analyse.py ablate RUN_FOLDER        # hardware files of the ablation
    python experiments/validation-cpu/analyse.py pool OUT.json FOLDER...  # one calibration from several
    python experiments/validation-cpu/analyse.py floor FOLDER...          # live run against live run

``ablate`` writes ``RUN_FOLDER/ablation/machine-*.json``: the run's calibration refitted (b) without the
per-layer forward term, (c) with the fixed load cost from the construction fit instead of the served
loads, (d) with one constant each (the earlier model). Re-simulate with ``sllmsim validate
traces/validation-small.yaml --hardware RUN_FOLDER/ablation/machine-X.json --reuse-live RUN_FOLDER``.
``pool`` pools the samples of several calibrations (``machine.calibration.json`` in each folder) into
one hardware file. ``floor`` pairs the live runs (``requests.csv`` and ``loads.csv`` of each report)
request by request and load by load, and prints the median APE of each ordered pair.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from sllmsim.fidelity.pass_fit import fit_construction, fit_forward_passes
from sllmsim.units import rate_text


def _models(side: dict, samples: dict[str, dict[str, list[float]]] | None = None, zero_layers: bool = False):
    out = []
    for m in side["models"]:
        s = (samples or {}).get(m["name"])
        med = (lambda key: float(np.median(s[key]))) if s else (lambda key: m[key]["median"])
        out.append(SimpleNamespace(
            weights_bytes=m["weights_bytes"], num_layers=0 if zero_layers else m["num_layers"],
            prompt_tokens=m["prompt_tokens"], num_params=m["weights_bytes"] / m["dtype_bytes"],
            decode_step_s=SimpleNamespace(median=med("decode_step_s")),
            prefill_s=SimpleNamespace(median=med("prefill_s")), construct_s=SimpleNamespace(median=med("construct_s"))))
    return out


def _forward(fit) -> dict:
    return {"forward_overhead_s": round(fit.forward_overhead_s, 6),
            "forward_overhead_per_layer_s": round(fit.forward_overhead_per_layer_s, 7),
            "gpu_memory_bandwidth": rate_text(fit.memory_bytes_per_s), "gpu_flops": float(f"{fit.flops_per_s:.4g}")}


def _write(path: Path, hardware: dict, change: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: dict(v, **change) for k, v in hardware.items()}, indent=2) + "\n")


def ablate(run: Path) -> None:
    side = json.loads((run / "machine.calibration.json").read_text())
    hardware = json.loads((run / "machine.json").read_text())
    flat = _forward(fit_forward_passes(_models(side, zero_layers=True)))
    _write(run / "ablation" / "machine-no-per-layer-forward.json", hardware, flat)
    construction = fit_construction(_models(side))
    _write(run / "ablation" / "machine-construction-load.json", hardware,
           {"load_overhead_s": round(construction.load_overhead_s, 5)})
    median_construct = statistics.median(m["construct_s"]["median"] for m in side["models"])
    _write(run / "ablation" / "machine-one-constant.json", hardware,
           dict(flat, load_overhead_s=round(median_construct, 5), load_overhead_per_layer_s=0.0))


def pool(out: Path, folders: list[Path]) -> None:
    sides = [json.loads((f / "machine.calibration.json").read_text()) for f in folders]
    samples: dict[str, dict[str, list[float]]] = {}
    for side in sides:
        for m in side["models"]:
            s = samples.setdefault(m["name"], {"decode_step_s": [], "prefill_s": [], "construct_s": []})
            for key in s:
                s[key] += m[key]["samples"]
    models = _models(sides[0], samples)
    fit, load = fit_forward_passes(models), fit_construction(models)

    def pooled(key: str) -> float:
        return float(np.median([x for side in sides for m in side["measurements"] if m["key"] == key
                                for x in m["samples"]]))

    served = [(x, side["serving"]["num_layers"]) for side in sides
              if (side.get("serving") or {}).get("load_fixed_s") for x in side["serving"]["load_fixed_s"]["samples"]]
    load_s = (max(0.0, float(np.median([x - load.load_overhead_per_layer_s * n for x, n in served])))
              if served else load.load_overhead_s)
    request = float(np.median([x for side in sides for x in side["serving"]["request_overhead_s"]["samples"]]))
    change = dict(_forward(fit), load_overhead_s=round(load_s, 5),
                  load_overhead_per_layer_s=round(load.load_overhead_per_layer_s, 6),
                  disk_bandwidth=rate_text(pooled("disk_read_bytes_per_s")),
                  host_bandwidth=rate_text(pooled("host_to_device_bytes_per_s")), request_overhead_s=round(max(0.0, request), 5))
    _write(out, json.loads((folders[0] / "machine.json").read_text()), change)
    print(json.dumps(change, indent=1), f"\n{fit.method}; {load.method}; samples per probe: "
          f"{sorted({len(s['decode_step_s']) for s in samples.values()})}")


def floor(folders: list[Path]) -> pd.DataFrame:
    req = {f: pd.read_csv(f / "requests.csv")[["model", "rank", "latency_s_live"]] for f in folders}
    loads = {f: pd.read_csv(f / "loads.csv")[["model", "first_rank", "tier_live", "load_s_live"]] for f in folders}
    rows = []
    for a, b in itertools.permutations(folders, 2):
        r = req[a].merge(req[b], on=["model", "rank"], suffixes=("_m", "_o"))
        ld = loads[a].merge(loads[b], on=["model", "first_rank"], suffixes=("_m", "_o"))
        ld = ld[ld["tier_live_m"] == ld["tier_live_o"]]
        rows.append({"measured": a.name, "other_live_run": b.name,
                     "load_median_ape": float(np.median(np.abs(ld["load_s_live_o"] / ld["load_s_live_m"] - 1))),
                     "latency_median_ape": float(np.median(np.abs(r["latency_s_live_o"] / r["latency_s_live_m"] - 1)))})
    table = pd.DataFrame(rows)
    print(table.round(4).to_string(index=False))
    print(f"median over {len(table)} ordered pairs: load {table['load_median_ape'].median():.1%}, latency "
          f"{table['latency_median_ape'].median():.1%}; within 10 % / 15 %: "
          f"{(table['load_median_ape'] <= 0.10).sum()} / {(table['latency_median_ape'] <= 0.15).sum()}")
    return table


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "ablate" and len(args) == 1:
        ablate(Path(args[0]))
    elif command == "pool" and len(args) >= 2:
        pool(Path(args[0]), [Path(a) for a in args[1:]])
    elif command == "floor" and len(args) >= 2:
        floor([Path(a) for a in args])
    else:
        sys.exit(__doc__)
