"""The batch term of the simulator's decode step, fitted to decode steps measured at several batch sizes.

The simulator prices a decode step of ``k`` sequences of a model with ``L`` layers at
``o + max(W / B, 2·P·k / FLOPs) + (k − 1)·q + kv·C / B`` (:mod:`sllmsim.sim.roofline`), with
``q = decode_overhead_per_sequence_s + L · decode_overhead_per_sequence_per_layer_s``: what each
sequence beyond the first adds to a step, on top of the roofline's own batch term. `sllmsim calibrate`
measures each probe model's step at batch sizes 1, 2, 4 and 8 through live mode's server (one batched
forward pass per step, :mod:`live.batching`), and this module fits ``q``.

The fit. For every point (model, ``k ≥ 2``) the measured step ``s_k`` is predicted as
``ŝ_k = s_1 + r_k + (k − 1)·(a + L·b)``: the same model's measured step at batch 1 (so the fixed costs
and any error of the single-sequence fit cancel), plus ``r_k``, what the roofline with the calibrated
FLOP/s and bandwidth already adds from batch 1 to ``k`` (zero until the step turns compute-bound),
plus the per-sequence term. ``a, b ≥ 0`` minimise the squared *relative* error
``Σ ((ŝ_k − s_k) / s_k)²`` — linear least squares in ``(a, b)`` with rows weighted by ``1 / s_k``,
solved with the non-negativity bounds by :func:`scipy.optimize.nnls` (Lawson–Hanson). The probe models'
KV-cache reads are inside ``q``: they are not in the catalog, so the simulator prices them at 0.
When every model has the same depth, ``b`` cannot be told from ``a`` and is left at 0 (``method``
says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

#: Batch sizes `sllmsim calibrate` measures each probe model at.
SWEEP_BATCH_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class BatchPoint:
    """One model's mean decode step at one batch size, next to the same model's at batch 1."""

    model: str
    num_layers: int
    batch: int
    step_s: float
    """Measured mean decode step with ``batch`` sequences decoding together."""
    base_step_s: float
    """Measured mean decode step of the same model alone (batch 1), in the same sweep."""
    roofline_extra_s: float = 0.0
    """What the roofline already adds from batch 1 to ``batch`` (:func:`roofline_extra_s`)."""

    def to_json(self) -> dict:
        return {"model": self.model, "num_layers": self.num_layers, "batch": self.batch, "step_s": self.step_s,
                "base_step_s": self.base_step_s, "roofline_extra_s": self.roofline_extra_s}


def roofline_extra_s(num_params: float, weights_bytes: float, batch: int, flops_per_s: float,
                     memory_bytes_per_s: float) -> float:
    """``max(W / B, 2·P·k / FLOPs) − max(W / B, 2·P / FLOPs)``: the roofline's growth from batch 1 to ``k``."""
    floor = weights_bytes / memory_bytes_per_s
    per_token = 2.0 * num_params / flops_per_s
    return max(floor, per_token * batch) - max(floor, per_token)


@dataclass(frozen=True)
class BatchFit:
    """The per-extra-sequence cost of a decode step: ``q = a + L · b`` (see the module docstring)."""

    decode_overhead_per_sequence_s: float
    """``a``: seconds per sequence beyond the first, whatever the model."""
    decode_overhead_per_sequence_per_layer_s: float
    """``b``: further seconds per sequence beyond the first and per layer of the model."""
    method: str
    points: int
    """Points (model, batch ≥ 2) the fit used."""

    def sequence_s(self, num_layers: int) -> float:
        """``q`` for a model of ``num_layers`` layers."""
        return self.decode_overhead_per_sequence_s + num_layers * self.decode_overhead_per_sequence_per_layer_s

    def step_s(self, point: BatchPoint) -> float:
        """The step the fit predicts for ``point``: ``s_1 + r_k + (k − 1)·q``."""
        return point.base_step_s + point.roofline_extra_s + (point.batch - 1) * self.sequence_s(point.num_layers)

    def to_json(self) -> dict:
        return {"decode_overhead_per_sequence_s": self.decode_overhead_per_sequence_s,
                "decode_overhead_per_sequence_per_layer_s": self.decode_overhead_per_sequence_per_layer_s,
                "method": self.method, "points": self.points}


def fit_batch_steps(points: Sequence[BatchPoint]) -> BatchFit:
    """Fit ``q = a + L · b`` (``a, b ≥ 0``) to the points with ``batch ≥ 2`` (see the module docstring)."""
    used = [p for p in points if p.batch >= 2 and p.step_s > 0 and np.isfinite(p.step_s)]
    if not used:
        raise ValueError("no decode step measured at a batch size of 2 or more")
    extra = np.array([p.batch - 1 for p in used], dtype=float)
    layers = np.array([p.num_layers for p in used], dtype=float)
    measured = np.array([p.step_s for p in used], dtype=float)
    known = np.array([p.base_step_s + p.roofline_extra_s for p in used], dtype=float)
    weight = 1.0 / measured  # relative error: every model counts alike, whatever its step time
    y = (measured - known) * weight
    if len(set(layers.tolist())) > 1:
        a = np.column_stack([extra, extra * layers]) * weight[:, None]
        coef, _ = nnls(a, y)
        per_seq, per_layer = float(coef[0]), float(coef[1])
        method = "relative least squares (non-negative): per sequence + per sequence and layer"
    else:
        coef, _ = nnls((extra * weight)[:, None], y)
        per_seq, per_layer = float(coef[0]), 0.0
        method = "relative least squares (non-negative): per sequence (per layer: every model has one depth)"
    if per_seq == 0.0 and per_layer == 0.0:
        method += "; the steps did not grow with the batch beyond the roofline: q = 0"
    return BatchFit(per_seq, per_layer, method, len(used))
