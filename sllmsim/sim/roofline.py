"""Inference time from a roofline of the GPU: prefill and decode, in closed form.

A forward pass is limited either by compute (``2 × parameters`` FLOPs per token, Kaplan et al. 2020)
or by memory bandwidth (every weight is read once per pass, and a decode step also reads the KV
cache of every sequence in the batch). With ``n`` GPUs (tensor parallel) FLOP/s and bandwidth add up;
communication is not modelled.

- **prefill** of a batch of prompts with ``T`` tokens in total:
  ``max(2·P·T / FLOPs, W / B) + o`` (attention's quadratic FLOPs are ignored);
- **decode step** of a batch of ``k`` sequences holding ``C`` context tokens in total:
  ``max(W / B, 2·P·k / FLOPs) + o + (k − 1)·q + kv·C / B``, where ``kv`` is the KV-cache bytes per
  token (``2 · layers · kv_heads · head_dim · dtype bytes``).

``o`` is the fixed cost of every forward pass of a model of ``L`` layers on the node:
``forward_overhead_s + L × forward_overhead_per_layer_s`` (kernel launches, framework and sampling
work, which do not scale with the weights; the per-layer part is repeated in every transformer
block). The bounds alone miss it, and it dominates small models: on a 2-core CPU (eager PyTorch, one
thread, random-weight OPT models 128 to 768 wide with 2 to 16 layers) decode steps fitted
``1.3 ms + 0.53 ms × L + weights / 6.6 GiB/s`` within ±13 % over 11 shapes, where one constant plus
weights / bandwidth was off by up to 55 %. Both parts default to 0 (the pure roofline).

``q`` is what a decode step adds per sequence of its batch beyond the first, on the node:
``decode_overhead_per_sequence_s + L × decode_overhead_per_sequence_per_layer_s``. The roofline alone
says a batch is free until it turns compute-bound; a real batched step still does some work per
request — live mode's engine attends each request to its own KV cache in every layer and samples each
request's token on its own — and `sllmsim calibrate` fits ``q`` to decode steps it measures at batch
sizes 1 to 8 (:mod:`sllmsim.fidelity.batch_fit`). It defaults to 0; a batch of one never pays it.

Between two changes of the batch, every sequence gains one token per step, so the context grows by
``k`` per step and the time of ``n`` steps is a quadratic in ``n`` (:func:`decode_time_s`), inverted
by :func:`decode_steps`. The engine therefore computes decode per batch change, never per token,
and treats progress as continuous (a fraction of a step may be done when the batch changes).

Without ``o`` these are peak-throughput bounds: real kernels reach a fraction of them, which
`sllmsim calibrate` and the fidelity experiments quantify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sllmsim.catalog import ModelArch
from sllmsim.config.hardware import GpuType


@dataclass(frozen=True, slots=True)
class Roofline:
    """Execution-time model of one deployment on one GPU type."""

    weights_bytes: float
    flops_per_token: float
    """``2 × parameters``."""
    kv_bytes_per_token: float
    """KV-cache bytes per context token (0 when the architecture is unknown)."""
    flops_per_s: float
    mem_bytes_per_s: float
    forward_overhead_s: float = 0.0
    """Fixed seconds added to every forward pass (each prefill, each decode step): ``o`` above, the
    node's constant plus its per-layer cost times the model's layers."""
    sequence_overhead_s: float = 0.0
    """Seconds a decode step adds per sequence of its batch beyond the first: ``q`` above."""
    floor_s: float = field(init=False)
    """Time to read every weight once: the memory-bound floor of any forward pass."""
    flop_s_per_token: float = field(init=False)
    """Compute time per token of a forward pass."""
    kv_s_per_token: float = field(init=False)
    """Seconds a decode step spends reading one context token's KV cache."""

    def __post_init__(self) -> None:
        # Derived once: the engine reads these on every batch change.
        object.__setattr__(self, "floor_s", self.weights_bytes / self.mem_bytes_per_s)
        object.__setattr__(self, "flop_s_per_token", self.flops_per_token / self.flops_per_s)
        object.__setattr__(self, "kv_s_per_token", self.kv_bytes_per_token / self.mem_bytes_per_s)

    @classmethod
    def build(cls, num_params: int, dtype_bytes: int, arch: ModelArch | None, gpu: GpuType,
              num_gpus: int, forward_overhead_s: float = 0.0, sequence_overhead_s: float = 0.0) -> Roofline:
        """The roofline of a model of ``num_params`` on ``num_gpus`` GPUs of type ``gpu``, with
        ``forward_overhead_s`` fixed seconds per forward pass (the whole ``o``: see
        :meth:`~sllmsim.config.hardware.NodeSpec.forward_fixed_s`) and ``sequence_overhead_s`` per
        extra sequence of a decode step (``q``: :meth:`~sllmsim.config.hardware.NodeSpec.decode_sequence_s`)."""
        kv = 0.0
        if arch is not None and arch.num_attention_heads:
            head_dim = arch.hidden_size / arch.num_attention_heads
            kv = 2.0 * arch.num_layers * arch.num_kv_heads * head_dim * dtype_bytes
        return cls(
            weights_bytes=float(num_params * dtype_bytes),
            flops_per_token=2.0 * num_params,
            kv_bytes_per_token=kv,
            flops_per_s=gpu.fp16_flops_per_s * num_gpus,
            mem_bytes_per_s=gpu.memory_bandwidth_bytes_per_s * num_gpus,
            forward_overhead_s=forward_overhead_s,
            sequence_overhead_s=sequence_overhead_s,
        )

    def prefill_s(self, tokens: int) -> float:
        """Seconds to prefill prompts of ``tokens`` tokens in total (one forward pass)."""
        return max(self.flop_s_per_token * tokens, self.floor_s) + self.forward_overhead_s

    def step_base_s(self, batch: int) -> float:
        """Seconds of one decode step of ``batch`` sequences, without the KV-cache read."""
        return (max(self.floor_s, self.flop_s_per_token * batch) + self.forward_overhead_s
                + max(batch - 1, 0) * self.sequence_overhead_s)


def decode_time_s(steps: float, base_s: float, kv_s: float, context_tokens: float, batch: int) -> float:
    """Seconds for ``steps`` decode steps of a fixed batch of ``batch`` sequences that hold
    ``context_tokens`` tokens in total at the first step: ``Σ_{j<steps} base_s + kv_s·(C + batch·j)``."""
    return steps * (base_s + kv_s * (context_tokens + batch * (steps - 1) / 2.0))


def decode_steps(elapsed_s: float, base_s: float, kv_s: float, context_tokens: float, batch: int) -> float:
    """The inverse of :func:`decode_time_s`: how many (fractional) steps fit in ``elapsed_s``."""
    if elapsed_s <= 0.0:
        return 0.0
    alpha = kv_s * batch / 2.0
    beta = base_s + kv_s * context_tokens - alpha
    if alpha == 0.0:
        return elapsed_s / beta
    # Root of alpha·n² + beta·n - elapsed = 0, in the form that does not cancel for small alpha.
    return 2.0 * elapsed_s / (beta + math.sqrt(beta * beta + 4.0 * alpha * elapsed_s))
