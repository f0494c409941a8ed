"""The batch-term fit of `sllmsim calibrate` (:mod:`sllmsim.fidelity.batch_fit`) on synthetic points
whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sllmsim.fidelity.batch_fit import BatchPoint, fit_batch_steps, roofline_extra_s

A, B = 0.0004, 0.00015  # seconds per extra sequence, and per extra sequence and layer
MODELS = {"shallow": (2, 0.003), "deep": (12, 0.009), "middle": (6, 0.030)}  # layers, step alone


def _points(a=A, b=B, noise=0.0, extra=lambda name, k: 0.0, seed=0):
    rng = np.random.default_rng(seed)
    points = []
    for name, (layers, alone) in MODELS.items():
        for k in (1, 2, 4, 8):
            roof = extra(name, k)
            step = (alone + roof + (k - 1) * (a + layers * b)) * (1.0 + noise * rng.standard_normal())
            points.append(BatchPoint(name, layers, k, step, alone, roof))
    return points


def test_exact_points_give_back_both_coefficients():
    fit = fit_batch_steps(_points())
    assert fit.decode_overhead_per_sequence_s == pytest.approx(A, rel=1e-9)
    assert fit.decode_overhead_per_sequence_per_layer_s == pytest.approx(B, rel=1e-9)
    assert fit.points == 9  # batch 1 is the reference, not a point of the fit
    assert all(fit.step_s(p) == pytest.approx(p.step_s, rel=1e-9) for p in _points())


def test_the_roofline_growth_is_not_counted_twice():
    grow = {"middle": 0.002}  # the roofline already adds 2 ms per extra sequence to this model
    points = _points(extra=lambda name, k: grow.get(name, 0.0) * (k - 1))
    fit = fit_batch_steps(points)
    assert (fit.decode_overhead_per_sequence_s, fit.decode_overhead_per_sequence_per_layer_s) == (
        pytest.approx(A, rel=1e-9), pytest.approx(B, rel=1e-9))


def test_noisy_points_land_near_the_answer():
    fit = fit_batch_steps(_points(noise=0.01, seed=3))
    assert fit.sequence_s(2) == pytest.approx(A + 2 * B, rel=0.25)
    assert fit.sequence_s(12) == pytest.approx(A + 12 * B, rel=0.15)


def test_one_depth_fits_the_per_sequence_term_only():
    points = [p for p in _points(b=0.0) if p.model == "shallow"]
    fit = fit_batch_steps(points)
    assert fit.decode_overhead_per_sequence_s == pytest.approx(A, rel=1e-9)
    assert fit.decode_overhead_per_sequence_per_layer_s == 0.0
    assert "one depth" in fit.method


def test_steps_that_shrink_with_the_batch_give_zero_not_a_negative_cost():
    fit = fit_batch_steps(_points(a=-0.0005, b=0.0))
    assert fit.decode_overhead_per_sequence_s == 0.0 and fit.decode_overhead_per_sequence_per_layer_s == 0.0
    assert "q = 0" in fit.method


def test_no_point_beyond_batch_one_is_an_error():
    with pytest.raises(ValueError, match="batch size of 2 or more"):
        fit_batch_steps([p for p in _points() if p.batch == 1])


def test_roofline_extra_is_zero_while_memory_bound_then_grows_with_compute():
    # 1e9 parameters, 2 GB of weights; at 2 TB/s a pass reads them in 1 ms; 2e9 FLOP per token at 1e12
    # FLOP/s is 2 ms per token: compute-bound from the first sequence, growing 2 ms per sequence.
    assert roofline_extra_s(1e9, 2e9, 4, 1e12, 2e12) == pytest.approx(3 * 0.002)
    assert roofline_extra_s(1e9, 2e9, 4, 1e15, 2e12) == 0.0  # memory-bound at every batch size
