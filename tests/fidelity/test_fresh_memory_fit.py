"""Calibration's fit of the fresh-device-memory term to kept allocations' rates (known answers)."""

from __future__ import annotations

import pytest

from live.calibration.fresh_memory import fit_fresh_memory, kept_allocation_rates
from live.calibration.results import Calibration

MB = 2**20


def test_warm_part_ends_at_the_first_slow_chunk_and_the_fresh_rate_excludes_the_copy():
    # 1.2 GB/s copies; a slow chunk at 0.3 GB/s spends 1/0.3 - 1/1.2 = 2.5 s per GB on memory.
    rates = [1.2e9, 1.1e9, 0.3e9, 0.3e9, 1.0e9, 0.2e9, 0.4e9]
    fit = fit_fresh_memory(256 * MB, rates, 1.2e9)
    assert fit.warm_bytes == 2 * 256 * MB
    assert fit.fresh_bytes_per_s == pytest.approx(1 / (1 / 0.3e9 - 1 / 1.2e9))  # median of the slow four
    assert fit.rates_bytes_per_s == tuple(rates)
    assert fit_fresh_memory(256 * MB, [0.25e9] + rates, 1.2e9).warm_bytes == 0


def test_no_slow_chunk_means_no_term():
    assert fit_fresh_memory(64 * MB, [1.2e9, 0.7e9, 1.4e9], 1.2e9) is None
    with pytest.raises(ValueError):
        fit_fresh_memory(0, [1e9], 1e9)


def test_the_probe_times_every_chunk():
    rates = kept_allocation_rates(MB, 5 * MB, pause_s=0.0)
    assert len(rates) == 5 and all(r > 0 for r in rates)


def test_calibrate_writes_the_keys_only_when_fitted():
    fit = fit_fresh_memory(256 * MB, [1.2e9, 0.3e9, 0.3e9], 1.2e9)
    base = dict(device="cpu", device_name="x", torch_threads=1, measurements={}, models=[],
                network_bandwidth_bytes_per_s=1e8, host_size_bytes=2**30, disk_size_bytes=2**34)
    # hardware() needs the bandwidth measurements; build them from a real sample.
    from live.calibration.results import sample
    m = {k: sample(k, k, "bytes/s", [1.2e9, 1.2e9]) for k in ("host_to_device_bytes_per_s", "disk_read_bytes_per_s")}
    with_fit = Calibration(**{**base, "measurements": m}, fresh_memory=fit).hardware(("0",))["0"]
    without = Calibration(**{**base, "measurements": m}).hardware(("0",))["0"]
    assert with_fit["warm_memory_size"] == "256MB" and with_fit["fresh_memory_bandwidth"].endswith("/s")
    assert "fresh_memory_bandwidth" not in without and "warm_memory_size" not in without


def test_calibrate_writes_the_disk_aggregate_only_above_one_reader():
    from live.calibration.results import disk_aggregate_text, sample

    def measured(single, pair):
        m = {"disk_read_bytes_per_s": sample("disk_read_bytes_per_s", "", "bytes/s", single)}
        if pair is not None:
            m["disk_pair_read_bytes_per_s"] = sample("disk_pair_read_bytes_per_s", "", "bytes/s", pair)
        return m

    MiB = 1024**2
    assert disk_aggregate_text(measured([500 * MiB, 520 * MiB], [700 * MiB, 900 * MiB])) == "800MB/s"
    assert disk_aggregate_text(measured([500 * MiB, 520 * MiB], [400 * MiB, 500 * MiB])) is None  # no gain
    assert disk_aggregate_text(measured([510 * MiB], [510.01 * MiB])) is None  # equal once written
    assert disk_aggregate_text(measured([500 * MiB], None)) is None  # not measured
    base = dict(device="cpu", device_name="x", torch_threads=1, models=[], network_bandwidth_bytes_per_s=1e8,
                host_size_bytes=2**30, disk_size_bytes=2**34)
    m = {**measured([500 * MiB, 520 * MiB], [700 * MiB, 900 * MiB]),
         "host_to_device_bytes_per_s": sample("host_to_device_bytes_per_s", "", "bytes/s", [1e9])}
    node = Calibration(**base, measurements=m).hardware(("0",))["0"]
    assert (node["disk_bandwidth"], node["disk_aggregate_bandwidth"]) == ("510MB/s", "800MB/s")
