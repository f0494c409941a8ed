"""Other processes' CPU use during a live run: the sampler and the arithmetic on its samples."""

from __future__ import annotations

import math
import sys

import pytest

from cpu_samples import cpu_samples

from sllmsim.fidelity.cpu_load import CpuSampler, machine_busy_s, other_cores


def test_other_cores_is_machine_minus_own_over_the_covering_samples():
    samples = cpu_samples([0.0, 0.0, 1.0, 1.0])  # quiet for 1 s, then a whole other core busy
    assert other_cores(samples, 0.0, 1.0) == pytest.approx(0.0)
    assert other_cores(samples, 1.0, 2.0) == pytest.approx(1.0)
    assert other_cores(samples, 0.0, 2.0) == pytest.approx(0.5)
    # An interval inside one sampling step is widened to the samples around it.
    assert other_cores(samples, 1.1, 1.2) == pytest.approx(1.0)
    assert other_cores(samples, 0.7, 1.2) == pytest.approx(0.5)
    assert math.isnan(other_cores(samples, 1.0, 5.0))  # not covered
    assert math.isnan(other_cores([], 0.0, 1.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_sampler_records_monotonic_samples():
    assert machine_busy_s() is not None
    with CpuSampler(interval_s=0.01) as cpu:
        sum(i * i for i in range(300_000))  # some CPU of our own
    assert len(cpu.samples) >= 2
    times, busy, own = zip(*cpu.samples)
    assert list(times) == sorted(times) and list(busy) == sorted(busy) and list(own) == sorted(own)
