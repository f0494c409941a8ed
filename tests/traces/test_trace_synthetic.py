"""Synthetic arrivals: rates, burstiness, Zipf shares, token specs, determinism and input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sllmsim.errors import ConfigError
from sllmsim.traces.canonical import COLUMNS
from sllmsim.traces.synthetic import (
    gamma_arrivals,
    generate_workload,
    generate_workloads,
    poisson_arrivals,
    token_counts,
    zipf_weights,
)


def test_poisson_rate_window_and_exponential_gaps():
    times = poisson_arrivals(np.random.default_rng(1), rate_per_s=50.0, duration_s=2000.0, start_s=10.0)
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= 10.0 and times[-1] < 2010.0
    # 100,000 expected arrivals: the count is within 5 standard deviations of its mean.
    assert abs(len(times) - 100_000) < 5 * np.sqrt(100_000)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_gap_cv_is_close_to_target(cv):
    times = gamma_arrivals(np.random.default_rng(7), rate_per_s=100.0, duration_s=2000.0, cv=cv)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert len(times) / 2000.0 == pytest.approx(100.0, rel=0.05 * cv)
    assert times[-1] < 2000.0


def test_gamma_with_zero_rate_is_empty():
    assert len(gamma_arrivals(np.random.default_rng(0), 0.0, 100.0, 2.0)) == 0


def test_zipf_weights_follow_rank_power():
    w = zipf_weights(4, s=1.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2.0) and w[0] / w[3] == pytest.approx(4.0)
    assert np.allclose(zipf_weights(3, s=0.0), 1 / 3)


def test_workload_with_zipf_models_splits_the_rate():
    spec = {"models": ["a", "b", "c"], "zipf_s": 1.0, "rate_per_s": 100.0, "duration_s": 500.0}
    df = generate_workload(spec, np.random.default_rng(3))
    assert list(df.columns) == COLUMNS
    shares = df["model"].value_counts(normalize=True)
    expected = zipf_weights(3, 1.0)
    for name, share in zip("abc", expected):
        assert shares[name] == pytest.approx(share, abs=0.01)
    assert (df["input_tokens"] == 128).all() and (df["output_tokens"] == 128).all()


def test_same_seed_same_rows_and_entries_are_independent():
    specs = [
        {"model": "a", "rate_per_s": 3.0, "duration_s": 100.0, "arrival": "gamma", "cv": 3.0,
         "input_tokens": [10, 20], "output_tokens": {"distribution": "lognormal", "mean": 50, "cv": 1.5}},
        {"model": "b", "rate_per_s": 1.0, "duration_s": 100.0, "start_s": 50.0},
    ]
    one = generate_workloads(specs, np.random.default_rng(np.random.SeedSequence(42)))
    two = generate_workloads(specs, np.random.default_rng(np.random.SeedSequence(42)))
    pd.testing.assert_frame_equal(one, two)
    assert np.all(np.diff(one["time"].to_numpy()) >= 0)
    assert one.loc[one.model == "b", "time"].min() >= 50.0
    a = one[one.model == "a"]
    assert a["input_tokens"].between(10, 20).all()
    # Adding a third entry leaves the first two entries' rows as they were.
    three = generate_workloads(specs + [{"model": "c", "rate_per_s": 1.0, "duration_s": 10.0}],
                               np.random.default_rng(np.random.SeedSequence(42)))
    pd.testing.assert_frame_equal(three[three.model != "c"].reset_index(drop=True), one)
    other = generate_workloads(specs, np.random.default_rng(np.random.SeedSequence(43)))
    assert not one["time"].equals(other["time"])


def test_lognormal_tokens_have_requested_mean_and_cv():
    values = token_counts(np.random.default_rng(5), 200_000, {"distribution": "lognormal", "mean": 400, "cv": 0.8})
    assert values.min() >= 1
    assert values.mean() == pytest.approx(400, rel=0.02)
    assert values.std() / values.mean() == pytest.approx(0.8, rel=0.03)


@pytest.mark.parametrize("spec, field, words", [
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "rate_per_sec": 2}, "rate_per_sec", "did you mean"),
    ({"rate_per_s": 1, "duration_s": 1}, "model", "exactly one"),
    ({"model": "a", "duration_s": 1}, "rate_per_s", "required"),
    ({"model": "a", "rate_per_s": -1, "duration_s": 1}, "rate_per_s", "non-negative"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "arrival": "weibull"}, "arrival", "poisson, gamma"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "arrival": "gamma", "cv": 0}, "cv", "positive"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "cv": 3}, "cv", "gamma"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "input_tokens": 0}, "input_tokens", "positive"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "output_tokens": [5, 2]}, "output_tokens.high", ">= low"),
    ({"model": "a", "rate_per_s": 1, "duration_s": 1, "output_tokens": {"distribution": "zipf"}},
     "output_tokens.distribution", "lognormal"),
    ({"models": [], "rate_per_s": 1, "duration_s": 1}, "models", "non-empty"),
])
def test_bad_workload_entries_name_the_field(spec, field, words):
    with pytest.raises(ConfigError) as info:
        generate_workload(spec, np.random.default_rng(0), source="t.yaml: workloads[0]")
    assert info.value.field == field
    assert info.value.source == "t.yaml: workloads[0]"
    assert words in str(info.value)
