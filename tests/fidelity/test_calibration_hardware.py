"""The hardware JSON `sllmsim calibrate` writes carries the fitted constants and the simulator reads them."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from live.calibration import Calibration, Measurement, ModelProfile  # noqa: E402
from sllmsim.config.hardware import parse_hardware  # noqa: E402

_MiB = 1024**2


def _m(value: float) -> Measurement:
    return Measurement("k", "label", "s", (value, value))


def _profile(mib: int, layers: int) -> ModelProfile:
    w = mib * _MiB
    fixed = 0.0013 + 0.0005 * layers
    return ModelProfile(name=f"m{mib}x{layers}", path="-", weights_bytes=w, dtype_bytes=4, prompt_tokens=128,
                        num_layers=layers, to_device_s=_m(0.01), construct_s=_m(0.018 + 0.0036 * layers),
                        warmup_s=_m(0.0), prefill_s=_m(fixed + 2 * (w / 4) * 128 / 4e10), decode_step_s=_m(fixed + w / 7e9))


def test_hardware_json_carries_the_fitted_constants():
    cal = Calibration(device="cpu", device_name="x86_64", torch_threads=1, measurements={
        "host_to_device_bytes_per_s": Measurement("host_to_device_bytes_per_s", "", "bytes/s", (1e9, 1e9)),
        "disk_read_bytes_per_s": Measurement("disk_read_bytes_per_s", "", "bytes/s", (5e8, 5e8)),
    }, models=[_profile(3, 2), _profile(10, 12), _profile(42, 6), _profile(39, 2), _profile(230, 8)],
        network_bandwidth_bytes_per_s=1024**3 / 8, host_size_bytes=128 * _MiB, disk_size_bytes=1024**3)
    node = cal.hardware(["0"])["0"]
    assert node["forward_overhead_s"] == pytest.approx(0.0013)
    assert node["forward_overhead_per_layer_s"] == pytest.approx(0.0005)
    assert node["load_overhead_s"] == pytest.approx(0.018)
    assert node["load_overhead_per_layer_s"] == pytest.approx(0.0036)
    assert "request_overhead_s" not in node  # serving was not measured
    spec = parse_hardware({"0": node}).node("0")
    assert spec.forward_overhead_s == pytest.approx(0.0013)
    assert spec.forward_overhead_per_layer_s == pytest.approx(0.0005)
    assert spec.load_overhead_s == pytest.approx(0.018)
    assert spec.load_overhead_per_layer_s == pytest.approx(0.0036)
    assert spec.gpu.memory_bandwidth_bytes_per_s == pytest.approx(7e9, rel=1e-3)  # four significant digits
    assert spec.gpu.fp16_flops_per_s == pytest.approx(4e10, rel=1e-3)


def test_served_loads_set_the_fixed_load_cost():
    # Construction alone fits 18 ms + 3.6 ms per layer; loads through the server of a 2-layer model cost
    # 30 ms beyond the copy, so the written fixed cost is 30 − 2 × 3.6 ms and the per-layer part stays.
    from live.calibration import ServingProfile

    models = [_profile(3, 2), _profile(10, 12), _profile(42, 6), _profile(39, 2), _profile(230, 8)]
    serving = ServingProfile(name="m3x2", weights_bytes=3 * _MiB, ttft_s=_m(0.01), modelled_prefill_s=(0.008,),
                             request_overhead_s=_m(0.002), decode_step_s=_m(0.003), modelled_step_s=0.003,
                             num_layers=2, load_s=_m(0.033), load_fixed_s=Measurement("k", "l", "s", (0.029, 0.031)))
    cal = Calibration(device="cpu", device_name="x86_64", torch_threads=1, measurements={
        "host_to_device_bytes_per_s": Measurement("host_to_device_bytes_per_s", "", "bytes/s", (1e9, 1e9)),
        "disk_read_bytes_per_s": Measurement("disk_read_bytes_per_s", "", "bytes/s", (5e8, 5e8)),
    }, models=models, network_bandwidth_bytes_per_s=1024**3 / 8, host_size_bytes=128 * _MiB,
        disk_size_bytes=1024**3, serving=serving)
    node = cal.hardware(["0"])["0"]
    assert node["load_overhead_s"] == pytest.approx(0.030 - 2 * 0.0036)
    assert node["load_overhead_per_layer_s"] == pytest.approx(0.0036)
    assert node["request_overhead_s"] == pytest.approx(0.002)


def test_the_batch_sweep_sets_the_per_sequence_decode_cost():
    # Steps that grow by 0.4 ms + 0.1 ms per layer for every sequence beyond the first, on two depths.
    from sllmsim.fidelity.batch_fit import BatchPoint

    points = [BatchPoint(f"m{layers}", layers, k, alone + (k - 1) * (0.0004 + 0.0001 * layers), alone)
              for layers, alone in ((2, 0.003), (12, 0.009)) for k in (1, 2, 4, 8)]
    cal = Calibration(device="cpu", device_name="x86_64", torch_threads=1, measurements={
        "host_to_device_bytes_per_s": Measurement("host_to_device_bytes_per_s", "", "bytes/s", (1e9, 1e9)),
        "disk_read_bytes_per_s": Measurement("disk_read_bytes_per_s", "", "bytes/s", (5e8, 5e8)),
    }, models=[_profile(3, 2), _profile(10, 12), _profile(42, 6)], network_bandwidth_bytes_per_s=1024**3 / 8,
        host_size_bytes=128 * _MiB, disk_size_bytes=1024**3, batch_points=points)
    node = cal.hardware(["0"])["0"]
    assert node["decode_overhead_per_sequence_s"] == pytest.approx(0.0004)
    assert node["decode_overhead_per_sequence_per_layer_s"] == pytest.approx(0.0001)
    spec = parse_hardware({"0": node}).node("0")
    assert spec.decode_sequence_s(6) == pytest.approx(0.0004 + 6 * 0.0001)
    without = Calibration(device="cpu", device_name="x86_64", torch_threads=1, measurements=cal.measurements,
                          models=cal.models, network_bandwidth_bytes_per_s=cal.network_bandwidth_bytes_per_s,
                          host_size_bytes=cal.host_size_bytes, disk_size_bytes=cal.disk_size_bytes)
    assert "decode_overhead_per_sequence_s" not in without.hardware(["0"])["0"]  # no sweep, no key


def test_num_gpus_is_written_as_chosen():
    cal = Calibration(device="cpu", device_name="x86_64", torch_threads=1, measurements={
        "host_to_device_bytes_per_s": Measurement("host_to_device_bytes_per_s", "", "bytes/s", (1e9, 1e9)),
        "disk_read_bytes_per_s": Measurement("disk_read_bytes_per_s", "", "bytes/s", (5e8, 5e8)),
    }, models=[], network_bandwidth_bytes_per_s=1024**3 / 8, host_size_bytes=128 * _MiB, disk_size_bytes=1024**3,
        num_gpus=2)
    assert [n["num_gpus"] for n in cal.hardware(["0", "1"]).values()] == [2, 2]
    assert parse_hardware(cal.hardware(["0"])).node("0").num_gpus == 2
