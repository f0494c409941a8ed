"""The roofline's closed forms: decode time of n steps and its inverse."""

from __future__ import annotations

import pytest

from sllmsim.catalog import lookup
from sllmsim.config.hardware import GPU_TYPES
from sllmsim.sim.roofline import Roofline, decode_steps, decode_time_s


def test_decode_time_sums_the_growing_steps():
    base, kv, ctx, batch = 0.01, 1e-6, 500, 4
    by_step = sum(base + kv * (ctx + batch * j) for j in range(37))
    assert decode_time_s(37, base, kv, ctx, batch) == pytest.approx(by_step, rel=1e-12)


@pytest.mark.parametrize("kv", [0.0, 1e-7, 1e-4])
def test_decode_steps_inverts_decode_time(kv):
    for steps in (0.0, 0.5, 1.0, 12.25, 800.0):
        elapsed = decode_time_s(steps, 0.02, kv, 300, 3)
        assert decode_steps(elapsed, 0.02, kv, 300, 3) == pytest.approx(steps, rel=1e-9, abs=1e-12)


def test_prefill_is_compute_bound_for_long_prompts_and_memory_bound_for_short():
    arch = lookup("meta-llama/Llama-2-7b-hf")
    roof = Roofline.build(arch.num_params, 2, arch, GPU_TYPES["A100-80GB"], 1)
    assert roof.prefill_s(1) == roof.weights_bytes / roof.mem_bytes_per_s
    assert roof.prefill_s(4096) == pytest.approx(2 * arch.num_params * 4096 / 312e12)
    # Decode steps are memory-bound until the batch is large.
    assert roof.step_base_s(8) == roof.floor_s
    assert roof.step_base_s(4096) > roof.floor_s


def test_tensor_parallel_gpus_add_flops_and_bandwidth():
    one = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 1)
    two = Roofline.build(10**9, 2, None, GPU_TYPES["A100-80GB"], 2)
    assert two.floor_s == pytest.approx(one.floor_s / 2) and two.prefill_s(10**5) == pytest.approx(one.prefill_s(10**5) / 2)
