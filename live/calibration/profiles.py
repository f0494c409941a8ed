"""Model profiles: each model loaded as live mode loads it and timed on two requests (construction,
warm-up, prefill, decode steps), the repeats going round the models."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from live.calibration.results import ModelProfile, sample
from live.generation import GenerationRequest, SamplingParams, generate
from live.loader import allocate_host_buffer, build_model, read_checkpoint, to_device


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
            to_device_s=sample("to_device_s", f"{name}: to device", "s", s["to_dev"]),
            construct_s=sample("construct_s", f"{name}: build model + tokenizer", "s", s["construct"]),
            warmup_s=sample("warmup_s", f"{name}: first-request warm-up", "s", s["warmup"]),
            prefill_s=sample("prefill_s", f"{name}: prefill of {self.n_prompt} tokens", "s", s["prefill"]),
            decode_step_s=sample("decode_step_s", f"{name}: decode step", "s", s["steps"]),
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
