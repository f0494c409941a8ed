"""The fresh-device-memory term (``fresh_memory_bandwidth``, ``warm_memory_size`` per node): a load
of ``S`` bytes takes ``max(0, S - warm) / fresh`` seconds longer, whatever tier it came from, and
nothing changes without the keys."""

from __future__ import annotations

import pytest
from simtoy import model, node, phases, req, run

from sllmsim.config.hardware import node_to_dict, parse_hardware
from sllmsim.errors import ConfigError

GiB = 1024**3
HOST = {"placement_config": {"host_memory": ["0"]}}
LOAD = 0.0625  # 4 GiB from host memory at 64 GiB/s
FRESH = {"fresh_memory_bandwidth": "1GB/s", "warm_memory_size": "1GB"}


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_a_load_pays_the_bytes_beyond_the_warm_part_at_the_fresh_rate():
    reqs = [req(0.0, "m", output_tokens=2)]
    (plain,) = run([node()], [model("m", **HOST)], reqs).requests
    fresh_run = run([node(**FRESH)], [model("m", **HOST)], reqs)
    (fresh,) = fresh_run.requests
    assert plain.queued_until_s == approx(LOAD)
    assert fresh.queued_until_s == approx(LOAD + 3.0)  # (4 - 1) GiB at 1 GiB/s
    assert fresh.finish_s - fresh.queued_until_s == approx(plain.finish_s - plain.queued_until_s)
    assert phases(fresh_run)[1] == ("loading_to_gpu", 0.0, approx(LOAD + 3.0))


def test_a_disk_load_pays_it_once_and_a_load_inside_the_warm_part_not_at_all():
    disk = {"placement_config": {"local_disk": ["0"]}}
    reqs = [req(0.0, "m")]
    (plain,) = run([node()], [model("m", **disk)], reqs).requests
    (fresh,) = run([node(**FRESH)], [model("m", **disk)], reqs).requests
    assert fresh.queued_until_s - plain.queued_until_s == approx(3.0)
    (small_plain,) = run([node()], [model("m", size="1GB", **HOST)], reqs).requests
    (small,) = run([node(**FRESH)], [model("m", size="1GB", **HOST)], reqs).requests
    assert small.queued_until_s == approx(small_plain.queued_until_s)


def test_without_a_warm_part_every_byte_is_fresh():
    (r,) = run([node(fresh_memory_bandwidth="2GB/s")], [model("m", **HOST)], [req(0.0, "m")]).requests
    assert r.queued_until_s == approx(LOAD + 2.0)


def test_the_keys_are_checked_and_shown_only_when_set():
    (spec,) = parse_hardware({"0": node(**FRESH)}).nodes
    assert spec.fresh_memory_bytes_per_s == GiB and spec.warm_memory_bytes == GiB
    assert spec.fresh_memory_s(GiB // 2) == 0.0 and spec.fresh_memory_s(3 * GiB) == approx(2.0)
    assert node_to_dict(spec)["fresh_memory_bytes_per_s"] == GiB
    (plain,) = parse_hardware({"0": node()}).nodes
    assert "fresh_memory_bytes_per_s" not in node_to_dict(plain)
    with pytest.raises(ConfigError, match=r"0\.warm_memory_size.*fresh_memory_bandwidth"):
        parse_hardware({"0": node(warm_memory_size="1GB")}, "hw.json")
    with pytest.raises(ConfigError, match=r"0\.fresh_memory_bandwidth"):
        parse_hardware({"0": node(fresh_memory_bandwidth="fast")}, "hw.json")
    with pytest.raises(ConfigError, match=r"0\.warm_memory_size"):
        parse_hardware({"0": node(fresh_memory_bandwidth="1GB/s", warm_memory_size=-3)}, "hw.json")
