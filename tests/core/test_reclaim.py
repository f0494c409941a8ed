"""reclaim_idle: idle instances of other models give up their GPUs only when nothing fits otherwise."""

from __future__ import annotations

import logging

from sllmsim.core import ClusterView, ModelView, NodeView, make_placement_policy, place
from sllmsim.core.snapshot import IdleInstanceView

GiB = 1024**3


def node(node_id, free=0, total=1, idle=(), host=(), disk=()):
    return NodeView(node_id, total, free, frozenset(host), frozenset(disk), 0.0, 2 * GiB, GiB, 16 * GiB, idle=tuple(idle))


def idle(instance_id, model, since, gpus=1):
    return IdleInstanceView(instance_id, model, gpus, since)


M = ModelView("m", 4 * GiB)


def test_without_reclaim_a_full_cluster_has_no_option():
    cluster = ClusterView((node("0", idle=[idle("a", "x", 1.0)]),))
    assert place(make_placement_policy("storage_aware"), M, cluster) is None


def test_reclaims_the_longest_idle_instance_of_another_model():
    cluster = ClusterView((node("0", total=2, idle=[idle("a", "x", 5.0), idle("b", "y", 2.0)]),))
    chosen = place(make_placement_policy("storage_aware"), M, cluster, reclaim_idle=True)
    assert chosen.node_id == "0" and chosen.reclaim == ("b",)


def test_free_gpus_are_used_before_any_idle_instance_is_reclaimed():
    # Node 0 holds the checkpoint in host memory but is full of an idle instance; node 1 is free.
    cluster = ClusterView((node("0", idle=[idle("a", "x", 0.0)], host=["m"]), node("1", free=1)))
    chosen = place(make_placement_policy("storage_aware"), M, cluster, reclaim_idle=True)
    assert chosen.node_id == "1" and chosen.reclaim == ()


def test_storage_aware_ranks_reclaimable_nodes_by_estimate():
    cluster = ClusterView((node("0", idle=[idle("a", "x", 0.0)]), node("1", idle=[idle("b", "y", 9.0)], disk=["m"])))
    chosen = place(make_placement_policy("storage_aware"), M, cluster, reclaim_idle=True)
    assert chosen.node_id == "1" and chosen.reclaim == ("b",)
    assert chosen.estimate_s == 4 * GiB / (2 * GiB)


def test_idle_instances_of_the_same_model_are_not_reclaimed_and_too_few_gpus_give_none():
    same = ClusterView((node("0", idle=[idle("a", "m", 0.0)]),))
    assert place(make_placement_policy("storage_aware"), M, same, reclaim_idle=True) is None
    two_gpu = ModelView("big", GiB, num_gpus=2)
    short = ClusterView((node("0", total=2, idle=[idle("a", "x", 0.0)]),))
    assert place(make_placement_policy("first_fit"), two_gpu, short, reclaim_idle=True) is None


def test_reclaim_combines_free_and_idle_gpus():
    two_gpu = ModelView("big", GiB, num_gpus=2)
    cluster = ClusterView((node("0", free=1, total=3, idle=[idle("a", "x", 3.0), idle("b", "y", 1.0)]),))
    assert place(make_placement_policy("first_fit"), two_gpu, cluster, reclaim_idle=True).reclaim == ("b",)


def test_reclaim_is_logged(caplog):
    cluster = ClusterView((node("0", idle=[idle("a", "x", 0.0)]),))
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        place(make_placement_policy("storage_aware"), M, cluster, reclaim_idle=True)
    assert "Reclaiming idle instances ['a'] on node 0 for model m" in caplog.messages
    assert caplog.messages[-1] == "Allocated node 0 for model m"
