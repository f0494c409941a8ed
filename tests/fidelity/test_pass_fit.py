"""The fits of `sllmsim calibrate` on synthetic model profiles with known constants."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from sllmsim.fidelity.pass_fit import (FULL_FIT, fit_construction, fit_forward_passes,
                                       nonnegative_relative_fit)

_MiB = 1024**2


@dataclass(frozen=True)
class _M:
    median: float


@dataclass(frozen=True)
class _Model:
    """A profiled model as the fits read it (``live.calibration.ModelProfile`` has these fields)."""

    weights_bytes: int
    num_layers: int
    prefill_s: _M
    decode_step_s: _M
    construct_s: _M
    prompt_tokens: int = 128

    @property
    def num_params(self) -> float:
        return self.weights_bytes / 4


#: (MiB of weights, layers): widths and depths that vary independently, like the probe models.
_SHAPES = ((3, 2), (10, 12), (42, 6), (39, 2), (230, 8))


def _exact(overhead_s: float, per_layer_s: float, bytes_per_s: float, flops: float, shapes=_SHAPES,
           construct=(0.02, 0.004)) -> list[_Model]:
    out = []
    for mib, layers in shapes:
        w = mib * _MiB
        fixed = overhead_s + layers * per_layer_s
        out.append(_Model(w, layers, _M(fixed + max(2 * (w / 4) * 128 / flops, w / bytes_per_s)),
                          _M(fixed + w / bytes_per_s), _M(construct[0] + layers * construct[1])))
    return out


def test_fit_recovers_both_fixed_costs_bandwidth_and_flops():
    fit = fit_forward_passes(_exact(0.0013, 0.0005, 7e9, 4e10))
    assert fit.method == FULL_FIT
    assert fit.forward_overhead_s == pytest.approx(0.0013, rel=1e-6)
    assert fit.forward_overhead_per_layer_s == pytest.approx(0.0005, rel=1e-6)
    assert fit.memory_bytes_per_s == pytest.approx(7e9, rel=1e-6)
    assert fit.flops_per_s == pytest.approx(4e10, rel=1e-6)
    w = 50 * _MiB
    assert fit.step_s(w, 4) == pytest.approx(0.0013 + 4 * 0.0005 + w / 7e9)
    assert fit.prefill_s(w / 4, 64, w, 4) == pytest.approx(0.0013 + 4 * 0.0005 + 2 * (w / 4) * 64 / 4e10)


def test_a_per_node_constant_alone_cannot_describe_deep_and_wide_models():
    # What the per-layer term buys: with steps made by 1.3 ms + 0.5 ms/layer, a fit without the layer
    # term (all models of one depth as far as it can tell) is off by tens of percent on some model.
    models = _exact(0.0013, 0.0005, 7e9, 4e10)
    flat = fit_forward_passes([_Model(m.weights_bytes, 0, m.prefill_s, m.decode_step_s, m.construct_s)
                               for m in models])
    assert flat.forward_overhead_per_layer_s == 0.0
    worst = max(abs(flat.step_s(m.weights_bytes, 0) / m.decode_step_s.median - 1) for m in models)
    assert worst > 0.2
    assert "per layer: not separable" in flat.method


def test_fit_weighs_relative_errors():
    # The smallest model's step is 20 % above the surface through the others; the relative fit keeps
    # every model within a few percent rather than following the large steps.
    models = _exact(0.0013, 0.0005, 7e9, 4e10)
    m = models[0]
    models[0] = _Model(m.weights_bytes, m.num_layers, m.prefill_s, _M(m.decode_step_s.median * 1.2), m.construct_s)
    fit = fit_forward_passes(models)
    errors = [fit.step_s(p.weights_bytes, p.num_layers) / p.decode_step_s.median - 1 for p in models]
    assert max(abs(e) for e in errors) < 0.12
    absolute = np.polyfit([p.weights_bytes for p in models], [p.decode_step_s.median for p in models], 1)
    assert abs(np.polyval(absolute, models[0].weights_bytes) / models[0].decode_step_s.median - 1) > abs(errors[0])


def test_a_negative_per_layer_cost_is_dropped_not_written():
    # Deeper models measured faster than shallow ones of the same weight: noise, not a negative cost.
    models = _exact(0.003, 0.0, 7e9, 4e10)
    models = [_Model(m.weights_bytes, m.num_layers, m.prefill_s,
                     _M(m.decode_step_s.median * (1 - 0.01 * m.num_layers)), m.construct_s) for m in models]
    fit = fit_forward_passes(models)
    assert fit.forward_overhead_per_layer_s == 0.0
    assert fit.forward_overhead_s > 0
    assert "per layer: would be negative" in fit.method


@pytest.mark.parametrize("case", ["one size", "negative fixed cost", "flat"])
def test_fit_falls_back_to_a_single_bandwidth(case):
    if case == "one size":
        w, t = [10 * _MiB, 10 * _MiB], [0.01, 0.012]
    elif case == "negative fixed cost":
        w, t = [10 * _MiB, 100 * _MiB], [0.001, 0.02]
    else:
        w, t = [10 * _MiB, 100 * _MiB], [0.02, 0.01]
    models = [_Model(wi, 4, _M(0.05), _M(ti), _M(0.05)) for wi, ti in zip(w, t)]
    fit = fit_forward_passes(models)
    assert fit.forward_overhead_s == 0.0 and fit.forward_overhead_per_layer_s == 0.0
    assert fit.method.startswith("weights / bandwidth only")
    expected = math.exp(sum(math.log(wi / ti) for wi, ti in zip(w, t)) / len(w))
    assert fit.memory_bytes_per_s == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(40))
def test_nonnegative_fit_is_the_constrained_optimum(seed):
    # Karush-Kuhn-Tucker conditions of min ||A c - 1||² subject to c >= 0: zero gradient on the
    # coefficients in use, a non-negative one (no descent into c > 0) on those left at zero.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 9))
    cols = {"fixed": np.ones(n), "per layer": rng.integers(1, 16, n).astype(float),
            "weights": rng.uniform(1e6, 3e8, n)}
    truth = np.array([rng.uniform(-2e-3, 3e-3), rng.uniform(-5e-4, 8e-4), 1 / rng.uniform(3e9, 1e10)])
    target = np.column_stack(list(cols.values())) @ truth
    target = np.abs(target) * rng.uniform(0.8, 1.25, n) + 1e-4
    found = nonnegative_relative_fit(cols, target, required=("weights",))
    assert found is not None
    coef = np.array([found[0].get(k, 0.0) for k in cols])
    a = np.column_stack(list(cols.values())) / target[:, None]
    gradient = a.T @ (a @ coef - 1.0)
    scale = np.linalg.norm(a, axis=0)
    assert np.all(coef >= 0) and coef[2] > 0
    for k in range(3):
        if coef[k] > 0:
            assert abs(gradient[k]) / scale[k] < 1e-6
        else:
            assert gradient[k] / scale[k] > -1e-6


def test_construction_fit_recovers_fixed_and_per_layer_costs():
    load = fit_construction(_exact(0.0013, 0.0005, 7e9, 4e10, construct=(0.018, 0.0036)))
    assert load.load_overhead_s == pytest.approx(0.018, rel=1e-6)
    assert load.load_overhead_per_layer_s == pytest.approx(0.0036, rel=1e-6)
    assert load.fixed_s(6) == pytest.approx(0.018 + 6 * 0.0036)


def test_construction_fit_of_one_depth_is_the_median():
    models = [_Model(w * _MiB, 4, _M(0.05), _M(0.01), _M(c)) for w, c in ((10, 0.03), (50, 0.05), (90, 0.04))]
    load = fit_construction(models)
    assert load.load_overhead_s == pytest.approx(0.04)
    assert load.load_overhead_per_layer_s == 0.0
    assert load.method.startswith("median")
