"""Registration as the reference's store manager does it: local_disk, else round-robin; memory_pool."""

from __future__ import annotations

import pytest

from sllmsim.config.deploy import PlacementConfig
from sllmsim.core.registration import Registrar, Registration, register_all


def test_round_robin_in_deploy_order_only_for_models_without_local_disk():
    reg = Registrar(["0", "1", "2"])
    assert reg.register(PlacementConfig()) == Registration(("0",), ())
    # An explicit local_disk does not advance the round robin.
    assert reg.register(PlacementConfig(local_disk=("2",))) == Registration(("2",), ())
    assert reg.register(PlacementConfig()) == Registration(("1",), ())
    assert reg.register(PlacementConfig(target_nodes=("0",))) == Registration(("2",), ())  # target_nodes ignored
    assert reg.register(PlacementConfig()) == Registration(("0",), ())


def test_empty_local_disk_means_no_disk_copy_and_memory_pool_implies_disk():
    reg = Registrar(["0", "1"])
    assert reg.register(PlacementConfig(local_disk=())) == Registration((), ())
    assert reg.register(PlacementConfig(local_disk=("0",), host_memory=("1",))) == Registration(("0", "1"), ("1",))
    # memory_pool without local_disk: the round-robin node plus the pool's nodes.
    assert reg.register(PlacementConfig(host_memory=("1",))) == Registration(("0", "1"), ("1",))


def test_register_all_is_a_fresh_registrar():
    placements = [("a", PlacementConfig()), ("b", PlacementConfig()), ("c", PlacementConfig())]
    assert {m: r.disk_nodes for m, r in register_all(placements, ["0", "1"]).items()} == {
        "a": ("0",), "b": ("1",), "c": ("0",)}
    with pytest.raises(ValueError):
        Registrar([])


def test_node_view_takes_the_static_figures_from_the_spec():
    from sllmsim.config.hardware import parse_hardware
    from sllmsim.core.views import node_view

    spec = parse_hardware({"0": {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB",
                                 "disk_bandwidth": "5GB/s", "network_bandwidth": "10Gbps", "num_gpus": 2,
                                 "load_overhead_s": 0.5}}).nodes[0]
    view = node_view(spec, 1, frozenset({"a"}), frozenset({"a", "b"}), 0.25)
    assert (view.node_id, view.total_gpus, view.free_gpus, view.io_backlog_s) == ("0", 2, 1, 0.25)
    assert view.disk_bandwidth_bytes_per_s == 5 * 1024**3 and view.host_to_gpu_bytes_per_s == 24 * 1024**3
    assert view.network_bandwidth_bytes_per_s == 10 * 1024**3 / 8 and view.load_overhead_s == 0.5
    assert view.running == () and view.idle == ()


@pytest.mark.parametrize("placement, field", [
    ({"target_nodes": ["7"]}, "placement_config.target_nodes"),
    ({"local_disk": ["0", "9"]}, "placement_config.local_disk"),
    ({"memory_pool": ["2"]}, "placement_config.memory_pool"),
])
def test_check_fits_cluster_names_the_field_and_the_node(placement, field):
    from sllmsim.config.deploy import parse_deploy_config
    from sllmsim.config.hardware import parse_hardware
    from sllmsim.core.registration import check_fits_cluster
    from sllmsim.errors import ConfigError

    node = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB", "disk_bandwidth": "5GB/s",
            "network_bandwidth": "10Gbps"}
    cluster = parse_hardware({"0": node, "1": node}, "hw.json")
    check_fits_cluster(parse_deploy_config({"model": "m"}, "ok.json"), cluster)
    with pytest.raises(ConfigError) as err:
        check_fits_cluster(parse_deploy_config({"model": "m", "placement_config": placement}, "cfg.json"), cluster)
    assert (err.value.source, err.value.field) == ("cfg.json", field)
    assert "is not in the hardware config hw.json" in err.value.message
