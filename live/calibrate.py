"""`sllmsim calibrate`: measure this machine so that the simulator can stand in for it.

Every quantity the simulator's load and execution models need is measured here through the code
paths live mode itself uses (:mod:`live.loader`, :func:`live.store.copy_checkpoint`,
:func:`live.generation.generate`), each repeated ``repeats`` times and kept as its samples so that
the spread is reported next to the median:

* **disk read** — a probe checkpoint on the store's filesystem, dropped from the page cache
  (``posix_fadvise DONTNEED``) before every read, read by :func:`live.loader.read_checkpoint` into a
  fresh host buffer → ``disk_bandwidth``. A read of the same file from the page cache is reported too.
* **host memory copy** — a bulk copy between two host buffers that are already touched: the machine's
  plain memory bandwidth (reported, not written: the spec has no key for it).
* **host → device** — :func:`live.loader.to_device` of a host buffer (pinned when the device is CUDA)
  to the device, allocation included as in a live load → ``host_bandwidth`` (the spec's host-memory →
  GPU link). On a CPU-only machine the "device" is the CPU and this is the copy live mode makes.
* **network** — live mode has no network between its nodes: a download is a local copy throttled
  to the hardware config's ``network_bandwidth``. Calibration therefore *chooses* that value
  (``network_bandwidth``, default 1 Gbps) and measures that a throttled copy achieves it; the
  configured value is written unless the machine cannot copy that fast, in which case the achieved
  rate is written instead (and said so).
* **per-load overhead** — per model: building it around its tensors (on the meta device, then
  ``load_state_dict(assign=True)``) and loading its tokenizer, fitted over the models with
  ``load_overhead_s + layers · load_overhead_per_layer_s`` (:func:`fit_construction`); and the
  first-request warm-up (the first prefill of a freshly built model minus a later one), reported
  separately because the simulator has no place for it yet.
* **execution speed** — per model: prefill of a prompt of ``prompt_tokens`` tokens timed inside
  :func:`live.generation.generate`, and the decode steps after it (the mean gap between tokens) as
  live mode's server delivers them (:func:`measure_served_steps`; the steps timed in the generation
  loop alone are kept as ``direct_decode_step_s``). The simulator prices a forward pass at
  ``forward_overhead_s + L · forward_overhead_per_layer_s + max(2·P·T / FLOPs, W / B)``
  (:mod:`sllmsim.sim.roofline` plus the node's fixed per-pass costs), so the decode steps of models of
  different widths and depths are fitted with ``forward_overhead_s + L · forward_overhead_per_layer_s
  + W / B`` (:func:`fit_forward_passes`:
  the fixed cost is the framework's work per pass — Python, one dispatch per operator and a dozen
  operators per layer — which dominates small models), and ``gpu_flops`` prices each prefill on top of
  the same fixed cost. The probe models vary width and depth independently so that the two fixed terms
  and the bandwidth can be told apart.
* **per-request serving cost** — the smallest model served by live mode's own server
  (:func:`live.server.create_app`, over HTTP, in this process): warm requests' time to first token
  as the server records it, minus the prefill the fit prices → ``request_overhead_s`` (median).
  The decode steps seen through the server are reported next to the fit's.
* **small checkpoints** — a whole model folder's disk read and throttled download beyond
  ``size / bandwidth`` (file opens and creations; reported only).

The result is a hardware JSON in the spec's format (plus the optional keys the simulator reads) with
the same values for every node — live mode's nodes all share this machine — and a sidecar with every
sample, written by :func:`calibration_to_json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from live.generation import GenerationRequest, SamplingParams, generate
from live.loader import HostCheckpoint, allocate_host_buffer, build_model, read_checkpoint, to_device
from live.store import copy_checkpoint
from sllmsim.config.hardware import GPU_TYPES
from sllmsim.errors import ConfigError
from sllmsim.fidelity.pagecache import drop_file, drop_tree
from sllmsim.fidelity.pass_fit import FULL_FIT, LoadFit, PassFit, fit_construction, fit_forward_passes
from sllmsim.units import rate_text, size_text

__all__ = ["Calibration", "LoadFit", "Measurement", "ModelProfile", "PassFit", "calibrate", "fit_construction",
           "fit_forward_passes", "rate_text", "size_text"]

_MiB = 1024**2
_GiB = 1024**3

#: Folder made under ``--storage`` for the probe files, removed afterwards.
PROBE_DIR = ".sllmsim-calibrate"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Measurement:
    """One measured quantity: its samples (one per repeat) and what it means."""

    key: str
    label: str
    unit: str
    """``bytes/s``, ``s`` or ``FLOP/s``."""
    samples: tuple[float, ...]
    note: str = ""

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def low(self) -> float:
        return float(min(self.samples))

    @property
    def high(self) -> float:
        return float(max(self.samples))

    @property
    def spread(self) -> float:
        """(max − min) / median: how much the repeats disagree."""
        med = self.median
        return (self.high - self.low) / med if med else math.nan

    def to_json(self) -> dict:
        return {"key": self.key, "label": self.label, "unit": self.unit, "median": self.median,
                "min": self.low, "max": self.high, "spread": self.spread, "samples": list(self.samples),
                "note": self.note}


@dataclass(frozen=True)
class ModelProfile:
    """One model's measured load overheads and execution speed."""

    name: str
    path: str
    weights_bytes: int
    """Bytes of the model's parameters and buffers on the device."""
    dtype_bytes: int
    prompt_tokens: int
    num_layers: int
    """Transformer layers (the config's ``num_hidden_layers``): the per-pass fixed cost follows them."""
    to_device_s: Measurement
    construct_s: Measurement
    """Building the model around its tensors plus loading the tokenizer."""
    warmup_s: Measurement
    """First prefill of a freshly built model minus the steady prefill."""
    prefill_s: Measurement
    decode_step_s: Measurement
    """Mean gap between consecutive tokens of one request, per repeat (served through live mode's
    server when :func:`measure_served_steps` ran, else timed in the generation loop directly)."""
    direct_decode_step_s: Measurement | None = None
    """The decode steps timed in the generation loop directly, when ``decode_step_s`` is the served one."""

    @property
    def num_params(self) -> float:
        return self.weights_bytes / self.dtype_bytes

    @property
    def flops_per_s(self) -> float:
        """Effective FLOP/s of the prefill: ``2 · params · prompt tokens / prefill time``."""
        return 2.0 * self.num_params * self.prompt_tokens / self.prefill_s.median

    @property
    def memory_bytes_per_s(self) -> float:
        """Effective memory bandwidth of a decode step: ``weights bytes / step time``."""
        return self.weights_bytes / self.decode_step_s.median

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "weights_bytes": self.weights_bytes,
                "dtype_bytes": self.dtype_bytes, "prompt_tokens": self.prompt_tokens, "num_layers": self.num_layers,
                "effective_flops_per_s": self.flops_per_s, "effective_memory_bytes_per_s": self.memory_bytes_per_s,
                "to_device_s": self.to_device_s.to_json(), "construct_s": self.construct_s.to_json(),
                "warmup_s": self.warmup_s.to_json(), "prefill_s": self.prefill_s.to_json(),
                "decode_step_s": self.decode_step_s.to_json(),
                "direct_decode_step_s": self.direct_decode_step_s.to_json() if self.direct_decode_step_s else None}


@dataclass
class Calibration:
    """Everything one `sllmsim calibrate` measured, and the hardware values derived from it."""

    device: str
    device_name: str
    torch_threads: int
    measurements: dict[str, Measurement]
    models: list[ModelProfile]
    network_bandwidth_bytes_per_s: float
    """The network bandwidth written (configured, or achieved when the machine is slower)."""
    host_size_bytes: int
    disk_size_bytes: int
    notes: list[str] = field(default_factory=list)
    load_average_1min: list[float] = field(default_factory=list)
    """The machine's one-minute load average when the calibration started and ended."""
    serving: ServingProfile | None = None
    """Warm requests through the real server (the source of ``request_overhead_s``)."""
    small_checkpoint: dict[str, Measurement] = field(default_factory=dict)
    """Fixed costs of reading and downloading a whole (small) model folder, reported only."""

    @property
    def fit(self) -> PassFit:
        """The forward-pass constants fitted to the models (see :func:`fit_forward_passes`)."""
        return fit_forward_passes(self.models)

    @property
    def request_overhead_s(self) -> float | None:
        """Median over warm served requests of TTFT minus the modelled prefill (0 when negative:
        the server then costs less than the fit's own error); None when serving was not measured."""
        if self.serving is None:
            return None
        return max(0.0, self.serving.request_overhead_s.median)

    @property
    def load_fit(self) -> LoadFit:
        """The fixed load cost fitted to the models' constructions (see :func:`fit_construction`)."""
        return fit_construction(self.models)

    @property
    def load_overhead_s(self) -> float:
        """Fixed seconds of every load beyond the per-layer part: measured through the server where it
        was (the served loads' fixed part less the per-layer cost of the model's layers), else the
        intercept of the construction fit."""
        fit, sv = self.load_fit, self.serving
        if sv is not None and sv.load_fixed_s is not None:
            return max(0.0, sv.load_fixed_s.median - fit.load_overhead_per_layer_s * sv.num_layers)
        return fit.load_overhead_s

    @property
    def warmup_s(self) -> float:
        return float(np.median([m.warmup_s.median for m in self.models]))

    def gpu_type(self) -> str:
        return gpu_type_for(self.device, self.device_name)

    def hardware(self, node_ids: Sequence[str] = ("0", "1")) -> dict:
        """The hardware JSON (spec keys plus the simulator's optional ones), one entry per node."""
        m = self.measurements
        node = {
            "host_size": size_text(self.host_size_bytes),
            "host_bandwidth": rate_text(m["host_to_device_bytes_per_s"].median),
            "disk_size": size_text(self.disk_size_bytes),
            "disk_bandwidth": rate_text(m["disk_read_bytes_per_s"].median),
            "network_bandwidth": rate_text(self.network_bandwidth_bytes_per_s),
            "num_gpus": 1,
            "gpu": self.gpu_type(),
        }
        if self.models:
            load, fit = self.load_fit, self.fit
            node["load_overhead_s"] = round(self.load_overhead_s, 5)
            node["load_overhead_per_layer_s"] = round(load.load_overhead_per_layer_s, 6)
            node["gpu_memory_bandwidth"] = rate_text(fit.memory_bytes_per_s)
            node["gpu_flops"] = float(f"{fit.flops_per_s:.4g}")
            node["forward_overhead_s"] = round(fit.forward_overhead_s, 6)
            node["forward_overhead_per_layer_s"] = round(fit.forward_overhead_per_layer_s, 7)
        if self.request_overhead_s is not None:
            node["request_overhead_s"] = round(self.request_overhead_s, 5)
        return {str(n): dict(node) for n in node_ids}


def gpu_type_for(device: str, device_name: str) -> str:
    """The GPU table entry closest to the device: ``CPU`` for the CPU, else by name (H100, A100…)."""
    if torch.device(device).type != "cuda":
        return "CPU"
    name = device_name.upper()
    for key in ("H100", "A100", "A40", "A5000", "L4"):
        if key in name:
            matches = [g for g in GPU_TYPES if g.startswith(key)]
            if key == "A100" and len(matches) > 1:
                total = torch.cuda.get_device_properties(torch.device(device)).total_memory
                return "A100-80GB" if total > 48 * _GiB else "A100-40GB"
            return matches[0]
    return "H100-80GB"  # an unknown CUDA GPU: the calibrated bandwidth and FLOP/s replace the table's anyway


# --------------------------------------------------------------------------- model builder


@dataclass(frozen=True)
class ModelRecipe:
    """A random-weight OPT model of a chosen width and depth, with the tiny models' tokenizer.

    Parameters ≈ 12·hidden²·layers plus the embeddings (vocabulary 1024 and ``max_positions``).
    """

    hidden_size: int
    num_layers: int
    seed: int = 0
    dtype: str = "float32"
    max_positions: int = 1024

    @property
    def name(self) -> str:
        return f"opt-{self.hidden_size}x{self.num_layers}-s{self.seed}"


#: Probe models of ``sllmsim calibrate`` when no ``--models`` are given: 3 to 230 MB of float32 weights,
#: the tiny-to-small models a 2-core CPU serves in seconds. Width and depth vary independently (two
#: 2-layer models of different widths, two 128-wide ones of different depths) so that the fits can
#: tell the per-layer fixed cost from the fixed cost and the bandwidth.
PROBE_MODELS = (ModelRecipe(128, 2), ModelRecipe(128, 12), ModelRecipe(384, 6), ModelRecipe(640, 2),
                ModelRecipe(768, 8))


def build_model_folder(out_dir: str | Path, recipe: ModelRecipe, overwrite: bool = False) -> Path:
    """Write ``recipe``'s model (safetensors, config, tokenizer) to ``out_dir``; reuse it if present.

    The same recipe gives byte-identical weights. Written next to its place and renamed into it, so
    an interrupted build leaves nothing half-written.
    """
    from transformers import OPTConfig

    from live.tiny_model import random_weight_model, save_model_folder, train_tokenizer

    out = Path(out_dir)
    if (out / "config.json").is_file() and not overwrite:
        return out
    if recipe.hidden_size % 64 or recipe.hidden_size <= 0 or recipe.num_layers <= 0:
        raise ConfigError("model recipe", "hidden_size", f"expected a positive multiple of 64 and at least one "
                          f"layer, got {recipe.hidden_size}x{recipe.num_layers}")
    tokenizer = train_tokenizer(recipe.seed)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                       num_hidden_layers=recipe.num_layers, ffn_dim=4 * recipe.hidden_size,
                       num_attention_heads=recipe.hidden_size // 64, max_position_embeddings=recipe.max_positions,
                       word_embed_proj_dim=recipe.hidden_size, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return save_model_folder(random_weight_model(config, recipe.seed, recipe.dtype), tokenizer, out)


# --------------------------------------------------------------------------- storage and copies


def _sample(key: str, label: str, unit: str, samples: list[float], note: str = "") -> Measurement:
    return Measurement(key, label, unit, tuple(float(s) for s in samples), note)


def write_probe_checkpoint(folder: Path, nbytes: int, seed: int = 0) -> Path:
    """A one-tensor safetensors checkpoint of ``nbytes`` random bytes (incompressible), synced to disk."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    path = folder / "model.safetensors"
    save_file({"probe": data}, str(path))
    drop_file(path)  # also syncs it: what follows reads from the disk, not from dirty pages
    return folder


def disk_read_once(folder: Path) -> tuple[float, float]:
    """(cold, page-cache) read of ``folder``'s checkpoint through the live loader into a fresh buffer, bytes/s."""
    drop_tree([folder])
    start = time.perf_counter()
    ckpt = read_checkpoint(folder)
    cold = ckpt.nbytes / (time.perf_counter() - start)
    del ckpt
    start = time.perf_counter()
    ckpt = read_checkpoint(folder)
    return cold, ckpt.nbytes / (time.perf_counter() - start)


def host_copy_once(src: torch.Tensor, dst: torch.Tensor) -> float:
    """A bulk copy between two already-touched host buffers (plain memory bandwidth), bytes/s."""
    start = time.perf_counter()
    dst.copy_(src)
    return src.numel() / (time.perf_counter() - start)


def host_to_device_once(ckpt: HostCheckpoint, device: torch.device) -> float:
    """live.loader.to_device of a host buffer, allocation on the device included, bytes/s."""
    start = time.perf_counter()
    on_device = to_device(ckpt, device, None, copy=True)
    rate = ckpt.nbytes / (time.perf_counter() - start)
    del on_device
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def copy_once(src: Path, work: Path, bandwidth_bytes_per_s: float | None) -> float:
    """A copy of ``src`` as live mode downloads it (throttled to the bandwidth unless None), bytes/s."""
    dst = work / f"copy-{uuid.uuid4().hex}"
    start = time.perf_counter()
    nbytes = copy_checkpoint(src, dst, bandwidth_bytes_per_s)
    rate = nbytes / (time.perf_counter() - start)
    shutil.rmtree(dst, ignore_errors=True)
    return rate


def measure_bandwidths(probe: Path, net_probe: Path, work: Path, device: str, network_bandwidth_bytes_per_s: float,
                       repeats: int, progress: Callable[[str], None] | None = None) -> dict[str, Measurement]:
    """Disk, page-cache, host-copy, host → device and copy bandwidths: ``repeats`` samples of the
    (throttled, seconds-long) copies and twice as many of the others, which take a fraction of a
    second each and vary most (a virtual disk's reads spread by ±30 % from one read to the next).

    Interleaving the quantities (rather than repeating one, then the next) spreads a change in the
    machine's load over all of them.
    """
    dev = torch.device(device)
    nbytes = sum(f.stat().st_size for f in probe.iterdir())
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    dst.copy_(src)  # touch every page first: the copies below measure copying, not page faults
    pinned = allocate_host_buffer(nbytes, pin=dev.type == "cuda")
    pinned.fill_(1)
    host = HostCheckpoint(buffer=pinned, entries={}, tensors={}, nbytes=nbytes)
    keys = ("disk_read_bytes_per_s", "page_cache_read_bytes_per_s", "host_copy_bytes_per_s",
            "host_to_device_bytes_per_s", "network_copy_bytes_per_s", "unthrottled_copy_bytes_per_s")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    rounds = 2 * repeats
    for rep in range(rounds):
        if progress:
            progress(f"bandwidths ({rep + 1}/{rounds})")
        cold, warm = disk_read_once(probe)
        samples["disk_read_bytes_per_s"].append(cold)
        samples["page_cache_read_bytes_per_s"].append(warm)
        samples["host_copy_bytes_per_s"].append(host_copy_once(src, dst))
        samples["host_to_device_bytes_per_s"].append(host_to_device_once(host, dev))
        if rep % 2 == 0:
            samples["network_copy_bytes_per_s"].append(copy_once(net_probe, work, network_bandwidth_bytes_per_s))
            samples["unthrottled_copy_bytes_per_s"].append(copy_once(net_probe, work, None))
    path = "pinned host buffer → CUDA" if dev.type == "cuda" else "host buffer → fresh host buffer (the CPU 'device')"
    labels = {
        "disk_read_bytes_per_s": ("disk read (page cache dropped)",
                                  "live.loader.read_checkpoint into a fresh host buffer, after posix_fadvise DONTNEED"),
        "page_cache_read_bytes_per_s": ("disk read from the page cache",
                                        "the same read again without dropping: what a load of a just-written file sees"),
        "host_copy_bytes_per_s": ("host memory copy", "torch copy between two already-touched host buffers"),
        "host_to_device_bytes_per_s": ("host → device", f"live.loader.to_device, {path}, allocation included"),
        "network_copy_bytes_per_s": ("network copy (throttled)", "live.store.copy_checkpoint throttled to the "
                                     f"configured {rate_text(network_bandwidth_bytes_per_s)}"),
        "unthrottled_copy_bytes_per_s": ("local copy (unthrottled)",
                                         "the fastest a live 'download' can go on this machine"),
    }
    return {k: _sample(k, labels[k][0], "bytes/s", samples[k], labels[k][1]) for k in keys}


# --------------------------------------------------------------------------- models

_PROMPT_WORDS = ("the model server request token memory disk network load cache node cluster latency storage "
                 "schedule answer question hello what is your name").split()


def prompt_of_length(tokenizer, n_tokens: int) -> str:
    """A plain-text prompt that the tokenizer encodes to (about) ``n_tokens`` tokens."""
    words = " ".join(_PROMPT_WORDS[i % len(_PROMPT_WORDS)] for i in range(2 * n_tokens))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


def _timed_generation(model, tokenizer, prompt: str, max_tokens: int, seed: int) -> tuple[int, float, list[float]]:
    """Run one request like live mode: (prompt tokens, prefill seconds, gaps between tokens)."""
    marks: dict[str, float] = {}
    tokens: list[float] = []

    def on_prompt(n: int) -> None:
        marks["n"] = n
        marks["start"] = time.perf_counter()

    def on_text(_delta: str) -> None:
        tokens.append(time.perf_counter())

    request = GenerationRequest(SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed), prompt=prompt)
    generate(model, tokenizer, request, on_text=on_text, on_prompt=on_prompt)
    if not tokens:
        raise RuntimeError("the model produced no token")
    gaps = [b - a for a, b in zip(tokens, tokens[1:])]
    return int(marks["n"]), tokens[0] - marks["start"], gaps


class _ModelSampler:
    """One model under measurement: its host copy and the samples of each quantity so far."""

    def __init__(self, folder: Path, device: torch.device, prompt_tokens: int, decode_tokens: int,
                 dtype: torch.dtype | None):
        self.folder = Path(folder)
        self.device = device
        self.prompt_tokens = prompt_tokens
        self.decode_tokens = decode_tokens
        self.dtype = dtype
        self.ckpt = read_checkpoint(self.folder, lambda n: allocate_host_buffer(n, pin=device.type == "cuda"))
        self.samples: dict[str, list[float]] = {k: [] for k in ("to_dev", "construct", "warmup", "prefill", "steps")}
        self.weights_bytes, self.dtype_bytes, self.n_prompt, self.num_layers = 0, 4, prompt_tokens, 0

    def measure_once(self, rep: int) -> None:
        """Load the model as live mode does, then serve two requests on it; one sample of each quantity."""
        from transformers import AutoTokenizer

        dev, out = self.device, self.samples
        start = time.perf_counter()
        tensors = to_device(self.ckpt, dev, self.dtype, copy=True)
        out["to_dev"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model = build_model(self.folder, tensors, dev, self.dtype)
        tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        out["construct"].append(time.perf_counter() - start)
        del tensors
        self.weights_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        self.dtype_bytes = next(p.element_size() for p in model.parameters() if p.is_floating_point())
        # transformers maps each architecture's own name for it (n_layer, num_layers) onto this one.
        self.num_layers = int(model.config.num_hidden_layers)
        prompt = prompt_of_length(tokenizer, self.prompt_tokens)
        # Two requests on the fresh model: the first carries the warm-up, the second is steady.
        self.n_prompt, first, _ = _timed_generation(model, tokenizer, prompt, self.decode_tokens, seed=2 * rep)
        self.n_prompt, steady, gaps = _timed_generation(model, tokenizer, prompt, self.decode_tokens, seed=2 * rep + 1)
        out["warmup"].append(first - steady)
        out["prefill"].append(steady)
        if gaps:
            # The mean, not the median: a request's latency sums every step, the slower ones included
            # (a completed block of the KV cache is re-computed in one pass, see live.generation).
            out["steps"].append(float(np.mean(gaps)))
        model.to("meta")
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    def profile(self) -> ModelProfile:
        name, s = self.folder.name, self.samples
        if not s["steps"]:
            raise RuntimeError(f"{self.folder}: every request ended after its first token; cannot time decode steps")
        return ModelProfile(
            name=name, path=str(self.folder), weights_bytes=self.weights_bytes, dtype_bytes=self.dtype_bytes,
            prompt_tokens=self.n_prompt, num_layers=self.num_layers,
            to_device_s=_sample("to_device_s", f"{name}: to device", "s", s["to_dev"]),
            construct_s=_sample("construct_s", f"{name}: build model + tokenizer", "s", s["construct"]),
            warmup_s=_sample("warmup_s", f"{name}: first-request warm-up", "s", s["warmup"]),
            prefill_s=_sample("prefill_s", f"{name}: prefill of {self.n_prompt} tokens", "s", s["prefill"]),
            decode_step_s=_sample("decode_step_s", f"{name}: decode step", "s", s["steps"]),
        )


def profile_models(folders: Sequence[Path], device: str, repeats: int, prompt_tokens: int = 128,
                   decode_tokens: int = 32, dtype: torch.dtype | None = None,
                   progress: Callable[[str], None] | None = None) -> list[ModelProfile]:
    """Measure each model's load overheads and execution speed on ``device`` (see the module docstring).

    The repeats go round the models (model 1, 2, 3, then 1, 2, 3 again …) so that a change in the
    machine's load during the measurement touches every model alike instead of biasing one.
    """
    samplers = [_ModelSampler(f, torch.device(device), prompt_tokens, decode_tokens, dtype) for f in folders]
    # The process's first construction and generation import and initialise code paths (seconds, once):
    # one round on the smallest model, thrown away, keeps that out of every sample.
    warm = min(samplers, key=lambda s: s.ckpt.nbytes)
    if progress:
        progress(f"warming up on {warm.folder.name}")
    warm.measure_once(repeats)
    for samples in warm.samples.values():
        samples.clear()
    for rep in range(repeats):
        for sampler in samplers:
            if progress:
                progress(f"profiling {sampler.folder.name} ({rep + 1}/{repeats})")
            sampler.measure_once(rep)
    return [s.profile() for s in samplers]


def profile_model(folder: Path, device: str, repeats: int, prompt_tokens: int = 128, decode_tokens: int = 32,
                  dtype: torch.dtype | None = None) -> ModelProfile:
    """:func:`profile_models` of one model."""
    return profile_models([folder], device, repeats, prompt_tokens, decode_tokens, dtype)[0]


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServingProfile:
    """Warm requests to one model through live mode's real server, against the fitted pass model."""

    name: str
    weights_bytes: int
    ttft_s: Measurement
    """Time to first token of each warm request as the server records it (arrival to first token)."""
    modelled_prefill_s: tuple[float, ...]
    """Each request's prefill as the fit prices it (its recorded prompt tokens)."""
    request_overhead_s: Measurement
    """``ttft_s − modelled_prefill_s`` per request: serving time the pass model does not price."""
    decode_step_s: Measurement
    """Mean gap between tokens of each request, through the server."""
    modelled_step_s: float
    num_layers: int = 0
    load_s: Measurement | None = None
    """Loads of the model from host memory through the server (its records' load phases)."""
    load_fixed_s: Measurement | None = None
    """``load_s − bytes / host_bandwidth`` per load: the fixed part of a load as the server pays it."""

    def to_json(self) -> dict:
        return {"name": self.name, "weights_bytes": self.weights_bytes, "num_layers": self.num_layers,
                "ttft_s": self.ttft_s.to_json(), "modelled_prefill_s": list(self.modelled_prefill_s),
                "request_overhead_s": self.request_overhead_s.to_json(),
                "decode_step_s": self.decode_step_s.to_json(), "modelled_step_s": self.modelled_step_s,
                "load_s": self.load_s.to_json() if self.load_s else None,
                "load_fixed_s": self.load_fixed_s.to_json() if self.load_fixed_s else None}


#: Name under which the calibration's own server deploys the model it measures.
SERVING_MODEL = "calibrate-serving"
#: The same model deployed with no keep-alive, so that every request loads it (from host memory).
LOADING_MODEL = "calibrate-loads"


def _serve(models: dict[str, tuple[str, float]], rounds: Sequence[Sequence[str]], device: str, work: Path,
           prompt_tokens: int, decode_tokens: int, gpu: str, room_bytes: int, pause_s: float = 0.0) -> dict:
    """Live mode's server on one node (in this process, over HTTP) with ``models`` deployed (name → model
    folder, keep-alive seconds), one GPU each; send one completion per name of each round, one after
    the other (``pause_s`` after each), and return the server's records."""
    import httpx

    from live.server import create_app, serve_in_thread
    from sllmsim.config.hardware import parse_hardware
    from sllmsim.fidelity.replay import deploy, fetch_records, prompt_text

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
                                   "max_batch_size": 1}} for name, (path, keep_alive_s) in models.items()]
    try:
        with serve_in_thread(app) as url:
            deploy(url, configs)
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
    finally:
        shutil.rmtree(store, ignore_errors=True)


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
        ttft_s=_sample("serving_ttft_s", f"{name}: served warm, time to first token", "s", ttft),
        modelled_prefill_s=tuple(modelled),
        request_overhead_s=_sample("request_overhead_s", f"{name}: served warm, TTFT − modelled prefill", "s",
                                   [a - b for a, b in zip(ttft, modelled)],
                                   "live.server over HTTP; arrival to first token from the server's records"),
        decode_step_s=_sample("serving_decode_step_s", f"{name}: served warm, decode step", "s", steps or [math.nan]),
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
        out[p.name] = _sample("decode_step_s", f"{p.name}: decode step, served", "s", steps,
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
    return (_sample("served_load_s", f"{name}: served load from host memory", "s", whole,
                    "live.server over HTTP, deployed with keep_alive 0; the load phases of its records"),
            _sample("served_load_fixed_s", f"{name}: served load − bytes / host bandwidth", "s", fixed))


def small_checkpoint_costs(profile: ModelProfile, work: Path, disk_bytes_per_s: float,
                           network_bytes_per_s: float, repeats: int) -> dict[str, Measurement]:
    """Time spent by a whole model folder's disk read and throttled download beyond ``size / bandwidth``.

    The bandwidths are measured on one large probe file; a model folder adds a handful of small files
    (config, tokenizer), their opens and creations. Reported, not written: no hardware key takes it,
    and on the machine these were written for it is a few milliseconds.
    """
    folder = Path(profile.path)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    read, download = [], []
    for _ in range(repeats):
        drop_tree([folder])
        start = time.perf_counter()
        ckpt = read_checkpoint(folder)
        read.append(time.perf_counter() - start - ckpt.nbytes / disk_bytes_per_s)
        del ckpt
        drop_tree([folder])
        dst = work / f"download-{uuid.uuid4().hex}"
        start = time.perf_counter()
        nbytes = copy_checkpoint(folder, dst, network_bytes_per_s)
        download.append(time.perf_counter() - start - nbytes / network_bytes_per_s)
        shutil.rmtree(dst, ignore_errors=True)
    name = profile.name
    return {
        "disk_read_fixed_s": _sample("disk_read_fixed_s", f"{name} ({size / _MiB:.1f} MiB): disk read − size / disk "
                                     "bandwidth", "s", read, "live.loader.read_checkpoint of the folder, page cache "
                                     "dropped"),
        "download_fixed_s": _sample("download_fixed_s", f"{name}: throttled download − size / network bandwidth", "s",
                                    download, "live.store.copy_checkpoint of the folder, source dropped from the "
                                    "page cache"),
    }


# --------------------------------------------------------------------------- the whole calibration


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (the current number when None); yields the number."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def default_threads(num_nodes: int) -> int:
    """Intra-op threads per process so that every node's compute gets its own share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(num_nodes, 1))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 32 * _GiB


def default_sizes(storage: Path, num_nodes: int) -> tuple[int, int]:
    """(host_size, disk_size) per node: the spec's 32 GB / 128 GB, capped so that all nodes together
    use at most half of this machine's memory and of the storage filesystem's free space."""
    share = 2 * max(num_nodes, 1)
    host = min(32 * _GiB, _memory_bytes() // share)
    disk = min(128 * _GiB, shutil.disk_usage(storage).free // share)
    return max(host // _GiB, 1) * _GiB, max(disk // _GiB, 1) * _GiB


def calibrate(storage: str | Path, models: Sequence[str | Path] = (), device: str = "cpu", repeats: int = 10,
              probe_bytes: int = 256 * _MiB, network_bandwidth_bytes_per_s: float = _GiB / 8,
              threads: int | None = None, node_ids: Sequence[str] = ("0", "1"),
              host_size_bytes: int | None = None, disk_size_bytes: int | None = None,
              prompt_tokens: int = 128, decode_tokens: int = 32,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure this machine (see the module docstring). Without ``models``, the :data:`PROBE_MODELS`
    are built under the storage folder and removed afterwards."""
    say = progress or (lambda _msg: None)
    if repeats < 2:
        raise ConfigError("--repeats", "", f"expected at least 2 repeats (a spread needs two samples), got {repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "", f"{device}: this machine has no CUDA device")
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    work = storage / PROBE_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    threads = default_threads(len(node_ids)) if threads is None and dev.type == "cpu" else threads
    host_default, disk_default = default_sizes(storage, len(node_ids))
    notes: list[str] = []
    load_average = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    try:
        with torch_threads(threads) as n_threads:
            say(f"probe checkpoint of {probe_bytes / _MiB:.0f} MiB on {storage}")
            probe = write_probe_checkpoint(work / "probe", probe_bytes)
            # Two seconds' worth at the configured rate keeps the throttled copies short.
            net_bytes = int(min(probe_bytes, max(8 * _MiB, 2 * network_bandwidth_bytes_per_s)))
            net_src = probe if net_bytes == probe_bytes else write_probe_checkpoint(work / "net-probe", net_bytes, 1)
            measured = measure_bandwidths(probe, net_src, work, device, network_bandwidth_bytes_per_s, repeats,
                                          say)
            achieved = measured["network_copy_bytes_per_s"].median
            network = network_bandwidth_bytes_per_s
            if achieved < 0.9 * network_bandwidth_bytes_per_s:
                network = achieved
                notes.append(f"a throttled copy reached only {rate_text(achieved)} of the configured "
                             f"{rate_text(network_bandwidth_bytes_per_s)}: the achieved rate is written")
            folders = [Path(p) for p in models]
            if not folders:
                for recipe in PROBE_MODELS:
                    say(f"building probe model {recipe.name}")
                    folders.append(build_model_folder(work / "models" / recipe.name, recipe))
            profiles = profile_models(folders, device, repeats, prompt_tokens, decode_tokens, progress=say)
            say("decode steps through the live server")
            served = measure_served_steps(profiles, device, work, repeats, prompt_tokens, decode_tokens,
                                          gpu_type_for(device, _device_name(dev)))
            profiles = [dataclasses.replace(p, decode_step_s=served[p.name], direct_decode_step_s=p.decode_step_s)
                        for p in profiles]
            # The smallest model: its requests are mostly fixed costs, the serving overhead stands out.
            smallest = min(profiles, key=lambda p: p.weights_bytes)
            say(f"serving {smallest.name} through the live server")
            fit = fit_forward_passes(profiles)
            if fit.method != FULL_FIT:
                notes.append(f"forward passes: {fit.method}")
            load_fit = fit_construction(profiles)
            if load_fit.load_overhead_per_layer_s == 0.0 or load_fit.load_overhead_s == 0.0:
                notes.append(f"model construction: {load_fit.method}")
            serving = measure_serving(smallest, fit, device, work, repeats, prompt_tokens, decode_tokens,
                                      gpu_type_for(device, _device_name(dev)),
                                      host_bytes_per_s=measured["host_to_device_bytes_per_s"].median)
            if serving.request_overhead_s.median < 0:
                notes.append(f"served requests reached their first token {-serving.request_overhead_s.median * 1e3:.1f}"
                             " ms before the modelled prefill: request_overhead_s is written as 0")
            say(f"small-checkpoint costs of {smallest.name}")
            small = small_checkpoint_costs(smallest, work, measured["disk_read_bytes_per_s"].median, network, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if load_average:
        load_average.append(os.getloadavg()[0])
    return Calibration(device=str(dev), device_name=_device_name(dev), torch_threads=n_threads, measurements=measured,
                       models=profiles, network_bandwidth_bytes_per_s=network,
                       host_size_bytes=host_size_bytes or host_default, disk_size_bytes=disk_size_bytes or disk_default,
                       notes=notes, load_average_1min=load_average, serving=serving, small_checkpoint=small)


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())


def roofline_check(cal: Calibration) -> dict:
    """Each model's prefill, decode step and construction as the simulator prices them with the written
    constants, next to the measurement: how well the fixed costs, one FLOP/s and one bandwidth describe
    every model."""
    fit, load = cal.fit, cal.load_fit
    out = {}
    for p in cal.models:
        prefill = fit.prefill_s(p.num_params, p.prompt_tokens, p.weights_bytes, p.num_layers)
        step = fit.step_s(p.weights_bytes, p.num_layers)
        construct = load.fixed_s(p.num_layers)
        out[p.name] = {"num_layers": p.num_layers,
                       "prefill_measured_s": p.prefill_s.median, "prefill_model_s": prefill,
                       "prefill_error": prefill / p.prefill_s.median - 1.0,
                       "decode_step_measured_s": p.decode_step_s.median, "decode_step_model_s": step,
                       "decode_step_error": step / p.decode_step_s.median - 1.0,
                       "construct_measured_s": p.construct_s.median, "construct_model_s": construct,
                       "construct_error": construct / p.construct_s.median - 1.0}
    return out


def calibration_to_json(cal: Calibration, node_ids: Sequence[str] = ("0", "1")) -> dict:
    """The sidecar: every sample, the derived hardware values and where each came from."""
    fit = cal.fit if cal.models else None
    serving = cal.serving
    return {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": cal.device,
                    "device_name": cal.device_name, "torch": torch.__version__, "torch_threads": cal.torch_threads,
                    "load_average_1min": list(cal.load_average_1min)},
        "torch_threads": cal.torch_threads,
        "device": cal.device,
        "hardware": cal.hardware(node_ids),
        "derived": {
            "host_bandwidth": "median of host_to_device_bytes_per_s",
            "disk_bandwidth": "median of disk_read_bytes_per_s",
            "network_bandwidth": "configured value (live mode throttles its copies to it), checked by "
                                 "network_copy_bytes_per_s",
            "load_overhead_s": "median over the smallest model's loads from host memory through live mode's server "
                               "(serving.load_fixed_s: load − bytes / host_bandwidth) less load_overhead_per_layer_s "
                               "× its layers; without serving, the intercept of the construction fit (load_fit)",
            "load_overhead_per_layer_s": "fit construct_s = fixed + layers · load_overhead_per_layer_s over the models "
                                         "(non-negative relative least squares; see load_fit.method)",
            "forward_overhead_s": "fit decode_step_s = forward_overhead_s + layers · forward_overhead_per_layer_s + "
                                  "weights bytes / gpu_memory_bandwidth over the models (non-negative relative least "
                                  "squares; see pass_fit.method)",
            "forward_overhead_per_layer_s": "the same fit's per-layer coefficient",
            "gpu_memory_bandwidth": "one over the same fit's weights coefficient",
            "gpu_flops": "geometric mean over the models of 2 · params · prompt tokens / (prefill_s − the fit's "
                         "fixed cost for the model's layers)",
            "request_overhead_s": "median over warm requests served by live mode's server (serving) of time to "
                                  "first token minus the prefill the written constants price",
            "warmup_s_not_modelled": cal.warmup_s if cal.models else None,
        },
        "measurements": [m.to_json() for m in cal.measurements.values()],
        "models": [p.to_json() for p in cal.models],
        "pass_fit": fit.to_json() if fit else None,
        "load_fit": cal.load_fit.to_json() if fit else None,
        "roofline_check": roofline_check(cal) if fit else {},
        "serving": serving.to_json() if serving else None,
        "small_checkpoint": {k: m.to_json() for k, m in cal.small_checkpoint.items()},
        "notes": list(cal.notes),
    }
