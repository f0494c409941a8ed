"""Decode steps against batch size: the probe models served by live mode's server with requests sent
together, so that its engine (:class:`live.batching.BatchEngine`) runs one forward pass per step for
all of them.

Every model is deployed on one node with a GPU each and ``max_batch_size`` the largest batch size;
a first request loads each model (not counted). Then, ``rounds`` times, for each batch size ``k`` and
each model, ``k`` requests go at once (the same prompt, different seeds) and the next burst waits
until they have all answered. A request's mean step is ``(finish − first token) / (tokens − 1)`` from
the server's records, a burst's the mean over its requests, and each (model, ``k``) is the median over
the rounds. The rounds go round the batch sizes and the models so that a change in the machine's load
touches every point alike. The prompts are short (``prompt_tokens``) so that a whole burst's prefill
fits in one step's prompt budget and the requests decode together from their first step on.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from live.calibration.results import Measurement, ModelProfile, sample
from live.calibration.serving import calibration_server
from sllmsim.fidelity.batch_fit import SWEEP_BATCH_SIZES, BatchPoint, roofline_extra_s
from sllmsim.fidelity.pass_fit import PassFit


async def _burst(url: str, name: str, k: int, prompt: str, max_tokens: int, seed0: int) -> None:
    """Send ``k`` completions to ``name`` at once and wait for every answer."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, limits=limits) as client:
        bodies = [{"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "seed": seed0 + i}
                  for i in range(k)]
        answers = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
    for resp in answers:
        if resp.status_code != 200:
            raise RuntimeError(f"the calibration server refused a batch-sweep request to {name}: "
                               f"{resp.status_code} {resp.text[:300]}")


def burst_steps(records: dict, name: str, sizes: Sequence[int]) -> list[float]:
    """Each burst's mean decode step, from the server's records of model ``name``: its completed requests
    in arrival order, the first (which loaded the model) left out, cut into bursts of ``sizes``."""
    done = sorted((r for r in records["requests"] if r["model"] == name and r["status"] == "completed"),
                  key=lambda r: r["arrival_s"])[1:]
    if len(done) != sum(sizes):
        raise RuntimeError(f"the calibration server completed {len(done)} batch-sweep requests to {name}, "
                           f"expected {sum(sizes)}")
    out, start = [], 0
    for k in sizes:
        burst, start = done[start:start + k], start + k
        gaps = [(r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1) for r in burst
                if r["output_tokens"] > 1]
        out.append(statistics.fmean(gaps) if gaps else float("nan"))
    return out


def measure_batch_steps(profiles: Sequence[ModelProfile], fit: PassFit, device: str, work: Path, rounds: int,
                        gpu: str, prompt_tokens: int = 32, decode_tokens: int = 16,
                        batch_sizes: Sequence[int] = SWEEP_BATCH_SIZES,
                        progress: Callable[[str], None] | None = None) -> tuple[list[BatchPoint], list[Measurement]]:
    """Each model's mean decode step at each of ``batch_sizes`` through live mode's server (see the module
    docstring): the fit's points (with the roofline's own growth from ``fit``) and the samples behind them."""
    from live.replay import fetch_records, prompt_text

    if 1 not in batch_sizes:
        raise ValueError("the batch sizes must include 1 (the points are relative to it)")
    names = {f"calibrate-batch-{i}": p for i, p in enumerate(profiles)}
    prompt = prompt_text(prompt_tokens)
    sent: dict[str, list[int]] = {name: [] for name in names}
    with calibration_server({name: (p.path, 3600.0) for name, p in names.items()}, device, work, gpu,
                            2 * sum(p.weights_bytes for p in profiles), max_batch_size=max(batch_sizes)) as url:
        for name in names:
            asyncio.run(_burst(url, name, 1, prompt, decode_tokens, 0))  # loads it: not counted
        for rnd in range(rounds):
            if progress:
                progress(f"decode steps against batch size ({rnd + 1}/{rounds})")
            for k in batch_sizes:
                for name in names:
                    asyncio.run(_burst(url, name, k, prompt, decode_tokens, 1000 * rnd + 10 * k))
                    sent[name].append(k)
        records = fetch_records(url)
    points: list[BatchPoint] = []
    samples: list[Measurement] = []
    for name, p in names.items():
        steps = burst_steps(records, name, sent[name])
        per_k = {}
        for k in batch_sizes:
            measured = [s for s, kk in zip(steps, sent[name]) if kk == k and math.isfinite(s)]
            if not measured:
                raise RuntimeError(f"{p.name}: no request of a burst of {k} decoded more than one token")
            per_k[k] = sample(f"batch_{k}_step_s", f"{p.name}: decode step, {k} together", "s", measured,
                              "live.server over HTTP, requests sent at once; mean over the burst of "
                              "(finish − first token) / (tokens − 1)")
        samples.extend(per_k.values())
        base = per_k[1].median
        for k in batch_sizes:
            extra = roofline_extra_s(p.num_params, p.weights_bytes, k, fit.flops_per_s, fit.memory_bytes_per_s)
            points.append(BatchPoint(p.name, p.num_layers, k, per_k[k].median, base, extra))
    return points, samples
