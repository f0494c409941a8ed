"""Checkpoint loading on two-node toy clusters: exact phase times through the storage tiers."""

from __future__ import annotations

import logging

from simtoy import GiB, model, node, phases, req, run, samples


def test_4gib_checkpoint_on_disk_at_2gibps_spends_2s_loading_to_host():
    result = run([node()], [model("m", placement_config={"local_disk": ["0"]})], [req(0.0, "m")])
    assert phases(result)[:2] == [("queued", 0.0, 0.0), ("loading_to_host", 0.0, 2.0)]
    load = result.phases[1]
    assert (load.tier, load.bytes, load.node) == ("disk", 4 * GiB, "0")
    rec = result.requests[0]
    assert (rec.cold_start, rec.tier, rec.queued_until_s) == (True, "disk", 2.0)


def test_sequential_loading_finishes_each_tier_before_the_next():
    result = run([node()], [model("m", placement_config={"local_disk": ["0"]})], [req(0.0, "m")],
                 simulation={"loading": "sequential"})
    # disk → host at 2 GiB/s, then host → GPU at 64 GiB/s (4/64 = 0.0625 s, exact in binary).
    assert phases(result)[1:3] == [("loading_to_host", 0.0, 2.0), ("loading_to_gpu", 2.0, 2.0625)]
    assert result.requests[0].queued_until_s == 2.0625


def test_network_download_then_disk_sequential_and_pipelined():
    nodes = [node(host_bandwidth="4GB/s")]
    nowhere = model("m", placement_config={"local_disk": []})  # registered on no node's disk
    seq = run(nodes, [nowhere], [req(0.0, "m")], simulation={"loading": "sequential"})
    # network 1 GiB/s (8 Gbps) for 4 s, disk 2 GiB/s for 2 s, host → GPU 4 GiB/s for 1 s.
    assert phases(seq)[1:4] == [("downloading", 0.0, 4.0), ("loading_to_host", 4.0, 6.0),
                                ("loading_to_gpu", 6.0, 7.0)]
    assert seq.requests[0].tier == "network"
    # Pipelined: one stream through all three links at the slowest one's rate.
    pipe = run(nodes, [nowhere], [req(0.0, "m")])
    assert phases(pipe)[1] == ("downloading", 0.0, 4.0)
    # The downloaded copy lands on the disk and in host memory, and stays after the instance goes.
    assert samples(pipe, "disk_used_bytes", "0") == [(0.0, 0), (0.0, 4 * GiB)]
    assert samples(pipe, "host_used_bytes", "0") == [(0.0, 0), (0.0, 4 * GiB)]


def test_checkpoint_in_host_memory_loads_over_host_to_gpu_only():
    result = run([node()], [model("m", placement_config={"host_memory": ["0"]})], [req(0.0, "m")])
    assert phases(result)[1] == ("loading_to_gpu", 0.0, 0.0625)
    assert result.requests[0].tier == "host"


def test_two_concurrent_loads_on_one_disk_each_take_twice_as_long():
    nodes = [node(num_gpus=2)]
    models = [model("a", placement_config={"local_disk": ["0"]}), model("b", placement_config={"local_disk": ["0"]})]
    alone = run(nodes, models, [req(0.0, "a")])
    both = run(nodes, models, [req(0.0, "a"), req(0.0, "b")])
    assert phases(alone, "a-0")[1] == ("loading_to_host", 0.0, 2.0)
    assert phases(both, "a-0")[1] == ("loading_to_host", 0.0, 4.0)
    assert phases(both, "b-0")[1] == ("loading_to_host", 0.0, 4.0)


def test_a_load_speeds_up_when_the_other_load_on_its_link_ends():
    nodes = [node(num_gpus=2)]
    models = [model("a", placement_config={"local_disk": ["0"]}),
              model("b", size="8GB", placement_config={"local_disk": ["0"]})]
    result = run(nodes, models, [req(0.0, "b"), req(1.0, "a")])
    # b alone for 1 s (2 GiB moved); then both at 1 GiB/s: a's 4 GiB take until t=5, by when b has
    # moved 6 GiB; b's last 2 GiB then go at the full 2 GiB/s, ending at t=6.
    assert phases(result, "a-0")[1] == ("loading_to_host", 1.0, 5.0)
    assert phases(result, "b-0")[1] == ("loading_to_host", 0.0, 6.0)


def test_loading_backlog_feeds_the_storage_aware_estimate(caplog):
    nodes = [node(num_gpus=2), node(num_gpus=2)]
    models = [model("big", size="8GB", placement_config={"local_disk": ["0"]}),
              model("m", placement_config={"local_disk": ["0", "1"]})]
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        result = run(nodes, models, [req(0.0, "big"), req(1.0, "m")])
    # At t=1 node 0 still has 6 GiB of "big" to read at 2 GiB/s: 3 s of backlog before m's 2 s.
    assert result.scheduler_log[2:] == ["Sorted scheduling options: [('1', 2.0), ('0', 5.0)]",
                                        "Allocated node 1 for model m"]
    assert result.requests[1].node == "1"
    assert caplog.messages == result.scheduler_log


def test_nodes_without_a_copy_are_estimated_over_the_network():
    nodes = [node(), node()]
    result = run(nodes, [model("m", placement_config={"local_disk": ["1"]})], [req(0.0, "m")])
    assert result.scheduler_log[0] == "Sorted scheduling options: [('1', 2.0), ('0', 4.0)]"


def test_disk_is_lru_and_never_over_capacity():
    nodes = [node(disk_size="10GB", host_size="4GB")]  # host memory holds only the latest checkpoint
    models = [model("a", placement_config={"local_disk": ["0"]}), model("b", placement_config={"local_disk": ["0"]}),
              model("c", placement_config={"local_disk": []})]
    result = run(nodes, models, [req(0.0, "b"), req(10.0, "a"), req(20.0, "c"), req(30.0, "b")],
                 simulation={"loading": "sequential"})
    # c needs 4 GiB of the 10 GiB disk holding a and b: b, read longest ago, is evicted; so b comes
    # over the network again at t=30 and evicts a in turn.
    tiers = [(r.model, r.tier) for r in result.requests]
    assert tiers == [("b", "disk"), ("a", "disk"), ("c", "network"), ("b", "network")]
    disk = samples(result, "disk_used_bytes", "0")
    assert max(v for _, v in disk) <= 10 * GiB
    assert disk[0] == (0.0, 8 * GiB)


def test_host_cache_is_lru_and_never_over_capacity():
    nodes = [node(host_size="8GB")]
    models = [model(n, placement_config={"local_disk": ["0"]}) for n in "abc"]
    result = run(nodes, models, [req(0.0, "a"), req(10.0, "b"), req(20.0, "c"), req(30.0, "b"), req(40.0, "a")])
    # Host memory holds two checkpoints: loading c evicts a (least recently used); b is still cached.
    assert [r.tier for r in result.requests] == ["disk", "disk", "disk", "host", "disk"]
    assert max(v for _, v in samples(result, "host_used_bytes", "0")) <= 8 * GiB


def test_checkpoint_too_big_for_host_memory_streams_through_without_caching():
    result = run([node(host_size="2GB")], [model("m", placement_config={"local_disk": ["0"]})],
                 [req(0.0, "m"), req(10.0, "m")])
    assert [r.tier for r in result.requests] == ["disk", "disk"]
    assert samples(result, "host_used_bytes", "0") == [(0.0, 0)]


def test_a_placement_sees_the_load_started_by_the_one_before_it_at_the_same_instant():
    nodes = [node(num_gpus=2), node(num_gpus=2)]
    models = [model("a", placement_config={"local_disk": ["0", "1"]}),
              model("b", placement_config={"local_disk": ["0", "1"]})]
    result = run(nodes, models, [req(0.0, "a"), req(0.0, "b")])
    # a goes to node 0 (a tie broken by node id); b then finds node 0's disk 2 s deep in work.
    assert result.scheduler_log[2] == "Sorted scheduling options: [('1', 2.0), ('0', 4.0)]"
    assert [r.node for r in result.requests] == ["0", "1"]
