"""Fits of `sllmsim calibrate`: the simulator's execution and load constants from per-model medians.

The simulator prices a forward pass of a model with ``L`` layers and ``W`` weight bytes at
``forward_overhead_s + L · forward_overhead_per_layer_s + max(2·P·T / FLOPs, W / B)``
(:mod:`sllmsim.sim.roofline`) and a load's fixed part at ``load_overhead_s + L ·
load_overhead_per_layer_s``. The fixed costs are the framework's work: eager PyTorch runs a dozen
operators per layer, each with microseconds of dispatch, whatever their size, so a deep narrow model
pays more per pass than a shallow wide one of the same weight. On the 2-core VM this project was written
on, eleven random OPT models (128–768 wide, 2–16 layers) gave decode steps of
``1.3 ms + 0.53 ms · L + W / 6.6 GiB/s`` within ±13 %, where one constant plus ``W / B`` was off by up
to 55 %; constructions of ``15.8 ms + 4.2 ms · L`` (build around the tensors, load the tokenizer).

Every fit minimises the squared *relative* error over the models (the validation's targets are
relative), with every coefficient non-negative: the best of the least-squares solutions over the
subsets of terms whose coefficients all come out non-negative, which is the non-negative least-squares
optimum. Terms the models cannot separate (all of one depth, one size) are left out, and ``method``
says which terms were fitted and why any was dropped.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class _Timed(Protocol):
    @property
    def median(self) -> float: ...


class ModelSample(Protocol):
    """What the fits read of one profiled model (``live.calibration.ModelProfile`` is one)."""

    weights_bytes: int
    num_layers: int
    prompt_tokens: int
    prefill_s: _Timed
    decode_step_s: _Timed
    construct_s: _Timed

    @property
    def num_params(self) -> float: ...


def nonnegative_relative_fit(columns: dict[str, np.ndarray], target: np.ndarray,
                             required: Sequence[str] = ()) -> tuple[dict[str, float], str] | None:
    """Coefficients ``c ≥ 0`` minimising ``Σ (Σ_k c_k · column_k / target − 1)²``.

    Tries every subset of the optional columns together with the ``required`` ones, keeps those the
    models determine (full rank, at least as many models as terms) whose solution is non-negative
    (required terms strictly positive) and returns the one with the least residual, with a note on the
    terms left out; None when no subset qualifies.
    """
    names = list(columns)
    optional = [n for n in names if n not in required]
    n = len(target)
    best: tuple[float, dict[str, float]] | None = None
    for k in range(len(optional), -1, -1):
        for subset in itertools.combinations(optional, k):
            used = [c for c in names if c in subset or c in required]
            if not used:
                continue
            a = np.column_stack([columns[c] for c in used]) / target[:, None]
            if n < len(used) or np.linalg.matrix_rank(a) < len(used):
                continue
            coef, *_ = np.linalg.lstsq(a, np.ones(n), rcond=None)
            if any(v < 0 or (c in required and v == 0) for c, v in zip(used, coef)):
                continue
            residual = float(np.sum((a @ coef - 1.0) ** 2))
            if best is None or residual < best[0] - 1e-12:
                best = (residual, {c: float(v) for c, v in zip(used, coef)})
    if best is None:
        return None
    fitted = best[1]
    notes = [f"{c}: {_why_dropped(c, list(fitted), columns, target)}" for c in optional if c not in fitted]
    return fitted, "; ".join(notes)


def _why_dropped(name: str, used: list[str], columns: dict[str, np.ndarray], target: np.ndarray) -> str:
    """Why the term ``name`` is not in the fit of ``used``: the models cannot determine it next to the
    others, its coefficient would come out negative, or it does not lower the error."""
    cols = [c for c in columns if c in used or c == name]
    a = np.column_stack([columns[c] for c in cols]) / target[:, None]
    if len(target) < len(cols) or np.linalg.matrix_rank(a) < len(cols):
        return "not separable by these models"
    coef, *_ = np.linalg.lstsq(a, np.ones(len(target)), rcond=None)
    return "would be negative" if np.any(coef < 0) else "does not lower the error"


def _geomean(values: Sequence[float]) -> float:
    return float(math.exp(statistics.fmean(math.log(v) for v in values)))


@dataclass(frozen=True)
class PassFit:
    """The execution constants fitted to the models' forward passes (the roofline's inputs).

    A forward pass is priced ``forward_overhead_s + L · forward_overhead_per_layer_s + max(2·P·T / flops,
    W / bandwidth)``: a decode step is memory-bound (``W / bandwidth``), a prefill of ``T`` tokens
    compute-bound.
    """

    forward_overhead_s: float
    """Fixed seconds of every forward pass, whatever the model."""
    forward_overhead_per_layer_s: float
    """Further fixed seconds of every forward pass per layer of the model."""
    memory_bytes_per_s: float
    """Memory bandwidth: one over the weights' coefficient of the decode-step fit."""
    flops_per_s: float
    """Geometric mean over the models of ``2·P·T / (prefill − fixed cost)``."""
    method: str
    """Which terms were fitted, and why any was dropped (or the fallback and its reason)."""

    def fixed_s(self, num_layers: int) -> float:
        """The fixed cost of one forward pass of a model with ``num_layers`` layers."""
        return self.forward_overhead_s + num_layers * self.forward_overhead_per_layer_s

    def step_s(self, weights_bytes: float, num_layers: int) -> float:
        """A decode step of one sequence (the KV-cache read left out) as the fit prices it."""
        return self.fixed_s(num_layers) + weights_bytes / self.memory_bytes_per_s

    def prefill_s(self, num_params: float, prompt_tokens: int, weights_bytes: float, num_layers: int) -> float:
        """A prefill of ``prompt_tokens`` tokens as the fit prices it."""
        compute = 2.0 * num_params * prompt_tokens / self.flops_per_s
        return self.fixed_s(num_layers) + max(compute, weights_bytes / self.memory_bytes_per_s)

    def to_json(self) -> dict:
        return {"forward_overhead_s": self.forward_overhead_s,
                "forward_overhead_per_layer_s": self.forward_overhead_per_layer_s,
                "memory_bytes_per_s": self.memory_bytes_per_s, "flops_per_s": self.flops_per_s,
                "method": self.method}


#: ``method`` of a decode-step fit that kept every term.
FULL_FIT = "relative least squares: fixed + per layer + weights / bandwidth"


def fit_forward_passes(models: Sequence[ModelSample]) -> PassFit:
    """Fit ``step = forward_overhead_s + L · forward_overhead_per_layer_s + W / bandwidth`` to the models'
    decode steps, then the FLOP/s that prices each model's prefill on top of the same fixed cost.

    Falls back to no fixed cost and the geometric mean of ``W / step`` (the best single bandwidth in log
    error) when no fit with a positive bandwidth exists or only the bandwidth term survives (one model
    size, steps that do not grow with the weights), and says so in ``method``.
    """
    if not models:
        raise ValueError("no model profiles to fit")
    w = np.array([m.weights_bytes for m in models], dtype=float)
    layers = np.array([m.num_layers for m in models], dtype=float)
    t = np.array([m.decode_step_s.median for m in models], dtype=float)
    found = nonnegative_relative_fit({"fixed": np.ones_like(w), "per layer": layers, "weights": w}, t,
                                     required=("weights",))
    overhead = per_layer = 0.0
    bandwidth = None
    if found is None or set(found[0]) == {"weights"}:
        why = found[1] if found else "no fit with a positive bandwidth"
        method = f"weights / bandwidth only ({why}); geometric mean of weights / step"
    else:
        coef, why = found
        overhead, per_layer = coef.get("fixed", 0.0), coef.get("per layer", 0.0)
        bandwidth = 1.0 / coef["weights"]
        terms = " + ".join(k for k in ("fixed", "per layer") if k in coef)
        method = "relative least squares: " + terms + " + weights / bandwidth" + (f" ({why})" if why else "")
    if bandwidth is None:
        bandwidth = _geomean((w / t).tolist())
    flops = []
    for m, n_layers in zip(models, layers):
        compute_s = m.prefill_s.median - overhead - n_layers * per_layer
        if compute_s > 0:
            flops.append(2.0 * m.num_params * m.prompt_tokens / compute_s)
    if not flops:  # every prefill within the fixed cost: price the compute with the raw prefills
        flops = [2.0 * m.num_params * m.prompt_tokens / m.prefill_s.median for m in models]
    return PassFit(forward_overhead_s=overhead, forward_overhead_per_layer_s=per_layer,
                   memory_bytes_per_s=bandwidth, flops_per_s=_geomean(flops), method=method)


@dataclass(frozen=True)
class LoadFit:
    """The fixed part of a load: ``load_overhead_s + L · load_overhead_per_layer_s``."""

    load_overhead_s: float
    load_overhead_per_layer_s: float
    method: str

    def fixed_s(self, num_layers: int) -> float:
        """The fixed load cost of a model with ``num_layers`` layers."""
        return self.load_overhead_s + num_layers * self.load_overhead_per_layer_s

    def to_json(self) -> dict:
        return {"load_overhead_s": self.load_overhead_s, "load_overhead_per_layer_s": self.load_overhead_per_layer_s,
                "method": self.method}


def fit_construction(models: Sequence[ModelSample]) -> LoadFit:
    """Fit each model's construction time (build around the tensors, load the tokenizer) with
    ``load_overhead_s + L · load_overhead_per_layer_s``; the median over the models when the
    depths do not separate a per-layer term."""
    if not models:
        raise ValueError("no model profiles to fit")
    layers = np.array([m.num_layers for m in models], dtype=float)
    t = np.array([m.construct_s.median for m in models], dtype=float)
    found = nonnegative_relative_fit({"fixed": np.ones_like(t), "per layer": layers}, t)
    if found is None or set(found[0]) == {"fixed"}:
        why = found[1] if found else "no non-negative fit"
        return LoadFit(float(np.median(t)), 0.0, f"median over the models ({why})")
    coef, why = found
    terms = " + ".join(k for k in ("fixed", "per layer") if k in coef)
    return LoadFit(coef.get("fixed", 0.0), coef.get("per layer", 0.0),
                   "relative least squares: " + terms + (f" ({why})" if why else ""))
