"""Serving measurements: the probe models served by live mode's own server (in this process, over
HTTP) — warm requests' time to first token, decode steps as the server delivers them, loads from
host memory."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from live.calibration.results import Measurement, ModelProfile, ServingProfile, sample
from sllmsim.fidelity.pass_fit import PassFit
from sllmsim.units import size_text

_GiB = 1024**3

#: Name under which the calibration's own server deploys the model it measures.
SERVING_MODEL = "calibrate-serving"
#: The same model deployed with no keep-alive, so that every request loads it (from host memory).
LOADING_MODEL = "calibrate-loads"


@contextlib.contextmanager
def calibration_server(models: dict[str, tuple[str, float]], device: str, work: Path, gpu: str, room_bytes: int,
                       max_batch_size: int = 1) -> Iterator[str]:
    """Live mode's server on one node (in this process, over HTTP) with ``models`` deployed (name → model
    folder, keep-alive seconds), one GPU each and ``max_batch_size`` requests per instance; yields its URL."""
    from live.replay import deploy
    from live.server import create_app, serve_in_thread
    from sllmsim.config.hardware import parse_hardware

    room = size_text(room_bytes + _GiB)
    node = {"host_size": room, "host_bandwidth": "1GB/s", "disk_size": room, "disk_bandwidth": "1GB/s",
            "network_bandwidth": "1Gbps", "num_gpus": len(models), "gpu": gpu}
    store = work / "serving-store"
    app = create_app(parse_hardware({"0": node}, source="calibration server"), store, devices={"0": device},
                     plots=False)
    configs = [{"model": name, "backend": "transformers", "num_gpus": 1,
                "auto_scaling_config": {"metric": "concurrency", "target": 1, "min_instances": 0, "max_instances": 1,
                                        "keep_alive": keep_alive_s},
                "placement_config": {"local_disk": ["0"]},
                # "auto": the checkpoint's own dtype, as profiled.
                "backend_config": {"pretrained_model_name_or_path": str(Path(path).resolve()), "torch_dtype": "auto",
                                   "max_batch_size": max_batch_size}} for name, (path, keep_alive_s) in models.items()]
    try:
        with serve_in_thread(app) as url:
            deploy(url, configs)
            yield url
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _serve(models: dict[str, tuple[str, float]], rounds: Sequence[Sequence[str]], device: str, work: Path,
           prompt_tokens: int, decode_tokens: int, gpu: str, room_bytes: int, pause_s: float = 0.0) -> dict:
    """:func:`calibration_server` with ``models``; send one completion per name of each round, one after
    the other (``pause_s`` after each), and return the server's records."""
    import httpx

    from live.replay import fetch_records, prompt_text

    with calibration_server(models, device, work, gpu, room_bytes) as url:
        with httpx.Client(base_url=url, timeout=600.0) as client:
            for i, names in enumerate(rounds):
                for name in names:
                    body = {"model": name, "prompt": prompt_text(prompt_tokens), "max_tokens": decode_tokens,
                            "temperature": 1.0, "seed": i}
                    resp = client.post("/v1/completions", json=body)
                    if resp.status_code != 200:
                        raise RuntimeError(f"the calibration server refused request {i} to {name}: "
                                           f"{resp.status_code} {resp.text[:300]}")
                    time.sleep(pause_s)
        return fetch_records(url)


def _warm_requests(records: dict, name: str) -> list[dict]:
    """The completed requests to ``name`` in arrival order, the first (which loaded the model) left out."""
    return sorted((r for r in records["requests"] if r["model"] == name and r["status"] == "completed"),
                  key=lambda r: r["arrival_s"])[1:]


def _steps(requests: list[dict]) -> list[float]:
    """Each request's mean gap between tokens: (finish − first token) / (tokens − 1)."""
    return [(r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1) for r in requests if r["output_tokens"] > 1]


def measure_serving(profile: ModelProfile, fit: PassFit, device: str, work: Path, repeats: int,
                    prompt_tokens: int, decode_tokens: int, gpu: str,
                    host_bytes_per_s: float | None = None) -> ServingProfile:
    """Serve ``profile``'s model with live mode's server (in this process, over HTTP) and time warm
    requests and loads.

    One node on ``device`` with the model on its disk; a first request loads it (not counted), then
    ``repeats`` requests one after the other find it warm. Each one's time to first token is read from
    the server's records (arrival at the server to first token, as the validation measures it), and the
    prefill the fitted pass model prices for its prompt is subtracted: what remains is the per-request
    serving cost (HTTP handling, hand-offs between the event loop and the worker thread, tokenising)
    that the simulator adds as ``request_overhead_s``.

    With ``host_bytes_per_s``, the same model is also deployed with no keep-alive and requested
    ``repeats + 1`` times: the first request loads it from disk, the others from host memory. Each host
    load as the server records it, minus ``bytes / host_bytes_per_s``, is the fixed part of a load as
    live mode pays it — construction plus the server's own hand-offs and bookkeeping, which timing
    the construction alone misses.
    """
    models = {SERVING_MODEL: (profile.path, 3600.0)}
    rounds = [[SERVING_MODEL]] * (repeats + 1)
    records = _serve(models, rounds, device, work, prompt_tokens, decode_tokens, gpu, 4 * profile.weights_bytes)
    load_s = load_fixed_s = None
    if host_bytes_per_s:
        # The released instance unloads off the request path: a pause lets it go before the next load.
        loads = _serve({LOADING_MODEL: (profile.path, 0.0)}, [[LOADING_MODEL]] * (repeats + 1), device, work,
                       prompt_tokens, decode_tokens, gpu, 4 * profile.weights_bytes, pause_s=0.2)
        load_s, load_fixed_s = _served_loads(loads, profile.name, host_bytes_per_s)
    warm = _warm_requests(records, SERVING_MODEL)
    if len(warm) < 2:
        raise RuntimeError(f"the calibration server completed only {len(warm)} warm request(s)")
    ttft = [r["first_token_s"] - r["arrival_s"] for r in warm]
    modelled = [fit.prefill_s(profile.num_params, int(r["input_tokens"]), profile.weights_bytes, profile.num_layers)
                for r in warm]
    steps = _steps(warm)
    name = profile.name
    return ServingProfile(
        name=name, weights_bytes=profile.weights_bytes,
        ttft_s=sample("serving_ttft_s", f"{name}: served warm, time to first token", "s", ttft),
        modelled_prefill_s=tuple(modelled),
        request_overhead_s=sample("request_overhead_s", f"{name}: served warm, TTFT − modelled prefill", "s",
                                   [a - b for a, b in zip(ttft, modelled)],
                                   "live.server over HTTP; arrival to first token from the server's records"),
        decode_step_s=sample("serving_decode_step_s", f"{name}: served warm, decode step", "s", steps or [math.nan]),
        modelled_step_s=fit.step_s(profile.weights_bytes, profile.num_layers),
        num_layers=profile.num_layers, load_s=load_s, load_fixed_s=load_fixed_s,
    )


def measure_served_steps(profiles: Sequence[ModelProfile], device: str, work: Path, repeats: int,
                         prompt_tokens: int, decode_tokens: int, gpu: str) -> dict[str, Measurement]:
    """Each model's decode steps as live mode's server delivers them (in this process, over HTTP).

    Every model is deployed on one node with a GPU each, so all stay loaded; the requests go round the
    models ``repeats + 1`` times and the first round, which loads them, is not counted. Serving costs
    more per token than the generation loop alone — the worker thread hands every token to the event
    loop, and the server's threads share the interpreter — by up to 27 % on the 2-core VM this was
    written on (val-tiny 4.0 → 4.9 ms, val-small 12.0 → 13.3 ms), and the live runs pay it.
    """
    names = {f"calibrate-steps-{i}": p for i, p in enumerate(profiles)}
    records = _serve({name: (p.path, 3600.0) for name, p in names.items()}, [list(names)] * (repeats + 1), device,
                     work, prompt_tokens, decode_tokens, gpu, 2 * sum(p.weights_bytes for p in profiles))
    out = {}
    for name, p in names.items():
        steps = _steps(_warm_requests(records, name))
        if not steps:
            raise RuntimeError(f"{p.name}: no served request decoded more than one token")
        out[p.name] = sample("decode_step_s", f"{p.name}: decode step, served", "s", steps,
                              "live.server over HTTP, warm; (finish − first token) / (tokens − 1) from its records")
    return out


def _served_loads(records: dict, name: str, host_bytes_per_s: float) -> tuple[Measurement, Measurement]:
    """The host-memory loads of :data:`LOADING_MODEL` in the server's records, whole and less the copy."""
    from live.records import run_result_from_json
    from sllmsim.fidelity.join import loads_table
    from sllmsim.metrics import phases_frame

    loads = loads_table(phases_frame(run_result_from_json(records, name="calibration").phases))
    host = loads[(loads["model"] == LOADING_MODEL) & (loads["tier"] == "host")] if len(loads) else loads
    if len(host) < 2:
        raise RuntimeError(f"the calibration server made only {len(host)} load(s) from host memory")
    whole = host["load_s"].astype(float).tolist()
    fixed = (host["load_s"] - host["bytes"] / host_bytes_per_s).astype(float).tolist()
    return (sample("served_load_s", f"{name}: served load from host memory", "s", whole,
                    "live.server over HTTP, deployed with keep_alive 0; the load phases of its records"),
            sample("served_load_fixed_s", f"{name}: served load − bytes / host bandwidth", "s", fixed))
