"""Does the validation's live harness slow decoding down? Warm decode steps, plain against harnessed.

    python experiments/validation-cpu/harness_ab.py --model val-tiny --rounds 4

Serves one validation model (built from `traces/validation-small/models.yaml`'s recipe) with the
calibration's in-process server and sends warm requests of 64 prompt words and 33 tokens, alternating
in rounds of three: *plain*, one after the other from a blocking client, as `sllmsim calibrate`
times decode steps; and *harnessed*, as `sllmsim validate`'s live run sends them: the store's
checkpoints dropped from the page cache before each request, the CPU sampler running, an async
client. Prints the median and the fastest decode step, (finish − first token) / (tokens − 1) from the
server's records, of each condition.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

_TRACE = Path(__file__).resolve().parents[2] / "traces" / "validation-small.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="val-small", help="a model of traces/validation-small/models.yaml")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    import httpx

    from live.calibration import torch_threads
    from live.calibration.recipes import ModelRecipe, build_model_folder
    from live.live_run import load_recipes, recipes_path
    from live.calibration.serving import calibration_server
    from live.pagecache import drop_tree
    from live.replay import fetch_records, prompt_text
    from sllmsim.fidelity.cpu_load import CpuSampler

    recipes = load_recipes(recipes_path(_TRACE))
    if args.model not in recipes:
        parser.error(f"--model: expected one of {', '.join(recipes)}, got {args.model!r}")
    work = Path(tempfile.mkdtemp(prefix="harness-ab-"))
    folder = build_model_folder(work / "models" / args.model, ModelRecipe(**recipes[args.model]))
    body = {"model": "m", "prompt": prompt_text(64), "max_tokens": 33, "temperature": 1.0}
    condition: dict[int, str] = {}
    with torch_threads(1), calibration_server({"m": (str(folder), 3600.0)}, "cpu", work, "CPU",
                                              4 * 200_000_000) as url:
        with httpx.Client(base_url=url, timeout=600) as client:

            async def send_async(seed: int) -> None:
                async with httpx.AsyncClient(base_url=url, timeout=600) as aclient:
                    (await aclient.post("/v1/completions", json={**body, "seed": seed})).raise_for_status()

            client.post("/v1/completions", json={**body, "seed": 0}).raise_for_status()  # loads it
            seed = 0
            for _ in range(args.rounds):
                for name in ("plain", "harnessed"):
                    for _ in range(3):
                        seed += 1
                        condition[seed] = name
                        if name == "plain":
                            client.post("/v1/completions", json={**body, "seed": seed}).raise_for_status()
                        else:
                            drop_tree([work / "serving-store"])
                            with CpuSampler():
                                asyncio.run(send_async(seed))
            records = fetch_records(url)
    done = sorted((r for r in records["requests"] if r["status"] == "completed"), key=lambda r: r["arrival_s"])
    steps: dict[str, list[float]] = {}
    for i, r in enumerate(done):
        if i in condition:
            steps.setdefault(condition[i], []).append((r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1))
    for name, values in steps.items():
        print(f"{args.model} {name}: {len(values)} requests, decode step median {1e3 * statistics.median(values):.2f} ms, "
              f"fastest {1e3 * min(values):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
