"""The disk's aggregate rate (``disk_aggregate_bandwidth`` per node): one read gets ``disk_bandwidth``,
concurrent reads share the aggregate equally, each at most ``disk_bandwidth``; nothing changes
without the key."""

from __future__ import annotations

import pytest
from simtoy import model, node, phases, req, run

from sllmsim.config.hardware import node_to_dict, parse_hardware
from sllmsim.errors import ConfigError

GiB = 1024**3
DISK = {"placement_config": {"local_disk": ["0"]}}
AGGREGATE = {"disk_aggregate_bandwidth": "3GB/s", "num_gpus": 2}  # one reader 2 GiB/s, two 3 GiB/s in all


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def _to_host_end_s(result, instance):
    (end,) = [e for p, _s, e in phases(result, instance) if p == "loading_to_host"]
    return end


def test_two_reads_at_once_share_the_aggregate_and_one_alone_gets_the_stream_rate():
    models = [model("a", **DISK), model("b", **DISK)]
    both = [req(0.0, "a"), req(0.0, "b")]
    shared = run([node(num_gpus=2)], models, both)
    streams = run([node(**AGGREGATE)], models, both)
    for inst in ("a-0", "b-0"):
        assert _to_host_end_s(shared, inst) == approx(4.0)  # 4 GiB each at half of 2 GiB/s
        assert _to_host_end_s(streams, inst) == approx(8.0 / 3.0)  # at half of 3 GiB/s
    alone = run([node(**AGGREGATE)], [model("a", **DISK)], [req(0.0, "a")])
    assert _to_host_end_s(alone, "a-0") == approx(2.0)  # capped at disk_bandwidth, not 3 GiB/s


def test_without_the_key_the_run_is_unchanged():
    models = [model("a", **DISK), model("b", **DISK)]
    both = [req(0.0, "a"), req(0.1, "b")]
    plain = run([node(num_gpus=2)], models, both)
    same = run([node(num_gpus=2, disk_aggregate_bandwidth="2GB/s")], models, both)
    assert [r.finish_s for r in plain.requests] == [r.finish_s for r in same.requests]
    assert [(p.phase, p.start_s, p.end_s) for p in plain.phases] == [(p.phase, p.start_s, p.end_s) for p in same.phases]


def test_the_key_is_checked_and_shown_only_when_set():
    (spec,) = parse_hardware({"0": node(**AGGREGATE)}).nodes
    assert spec.disk_aggregate_bandwidth_bytes_per_s == 3 * GiB
    assert node_to_dict(spec)["disk_aggregate_bandwidth_bytes_per_s"] == 3 * GiB
    (plain,) = parse_hardware({"0": node()}).nodes
    assert "disk_aggregate_bandwidth_bytes_per_s" not in node_to_dict(plain)
    with pytest.raises(ConfigError, match=r"hw\.json.*0\.disk_aggregate_bandwidth.*at least disk_bandwidth"):
        parse_hardware({"0": node(disk_aggregate_bandwidth="1GB/s")}, "hw.json")
    with pytest.raises(ConfigError, match=r"0\.disk_aggregate_bandwidth"):
        parse_hardware({"0": node(disk_aggregate_bandwidth="fast")}, "hw.json")
