"""Preemption victims and the Shepherd*-like placement baseline on hand-built snapshots."""

from __future__ import annotations

import itertools
import logging
import random

import pytest

from sllmsim.core import ClusterView, ModelView, NodeView, make_placement_policy, place
from sllmsim.core.preemption import choose_preemption_victims
from sllmsim.core.registry import names
from sllmsim.core.snapshot import RunningInstanceView
from sllmsim.errors import ConfigError

GiB = 1024**3
PCIE_BW = 24 * GiB
NET_BW = 10 * GiB / 8


def node(node_id, free=1, total=None, host=(), disk=(), running=()):
    total = free + sum(i.num_gpus for i in running) if total is None else total
    return NodeView(node_id, total, free, frozenset(host), frozenset(disk), 0.0, 5 * GiB, NET_BW, PCIE_BW,
                    running=tuple(running))


ONE = ModelView("one", GiB)
TWO = ModelView("two", 2 * GiB, num_gpus=2)
NEW = ModelView("new", 4 * GiB)


def inst(instance_id, model, tokens):
    return RunningInstanceView(instance_id, model, tokens)


# ---- victim choice ------------------------------------------------------------------------------------


def test_victim_is_the_instance_with_fewest_tokens_so_far():
    n = node("0", free=0, running=[inst("a", ONE, 500), inst("b", ONE, 30), inst("c", ONE, 90)])
    plan = choose_preemption_victims(n, 1, placing_model="new")
    assert (plan.node_id, plan.instance_ids, plan.models, plan.tokens_lost, plan.freed_gpus) == \
        ("0", ("b",), ("one",), 30, 1)


def test_victims_together_lose_the_fewest_tokens():
    # Two GPUs to free: the 2-GPU instance (120 tokens) loses less than the two cheapest 1-GPU ones (70 + 90).
    n = node("0", free=0, running=[inst("a", ONE, 70), inst("b", ONE, 90), inst("t", TWO, 120)])
    assert choose_preemption_victims(n, 2, placing_model="new").instance_ids == ("t",)
    # With 200 tokens on it, the two 1-GPU instances are the cheaper pair.
    n = node("0", free=0, running=[inst("a", ONE, 70), inst("b", ONE, 90), inst("t", TWO, 200)])
    plan = choose_preemption_victims(n, 2, placing_model="new")
    assert (plan.instance_ids, plan.tokens_lost, plan.freed_gpus) == (("a", "b"), 160, 2)


def test_equal_loss_prefers_fewer_victims():
    n = node("0", free=0, running=[inst("a", ONE, 50), inst("b", ONE, 50), inst("t", TWO, 100)])
    assert choose_preemption_victims(n, 2, placing_model="new").instance_ids == ("t",)


def test_no_victims_when_the_listed_instances_cannot_free_enough():
    n = node("0", free=0, total=4, running=[inst("a", ONE, 1), inst("n", NEW, 1)])
    assert choose_preemption_victims(n, 2, placing_model="new") is None  # the instance of 'new' is not a victim
    assert choose_preemption_victims(n, 2, placing_model=None).instance_ids == ("a", "n")


def test_victims_are_optimal_on_random_small_cases():
    rng = random.Random(99)
    found = 0
    for _ in range(300):
        models = [ONE, TWO, ModelView("three", GiB, num_gpus=3), NEW]
        running = [inst(f"i{k}", rng.choice(models), rng.randrange(0, 300)) for k in range(rng.randint(0, 6))]
        n = node("0", free=0, running=running)
        gpus_to_free = rng.randint(1, 5)
        plan = choose_preemption_victims(n, gpus_to_free, placing_model="new")
        movable = [i for i in running if i.model.name != "new"]
        best = min(((sum(i.tokens_so_far for i in s), len(s))
                    for size in range(1, len(movable) + 1) for s in itertools.combinations(movable, size)
                    if sum(i.num_gpus for i in s) >= gpus_to_free), default=None)
        if best is None:
            assert plan is None
            continue
        by_id = {i.instance_id: i for i in running}
        victims = [by_id[v] for v in plan.instance_ids]
        assert plan.freed_gpus == sum(v.num_gpus for v in victims) >= gpus_to_free
        assert (plan.tokens_lost, len(victims)) == best == (sum(v.tokens_so_far for v in victims), len(victims))
        found += 1
    assert found > 100


# ---- the Shepherd*-like policy ---------------------------------------------------------------------


def _contended_cluster():
    """Node 0 caches 'new' but its GPU serves 'one'; node 1 is free but must download 'new'."""
    return ClusterView((node("0", free=0, host=["new"], running=[inst("one-1", ONE, 400)]), node("1")))


def test_shepherd_is_registered():
    assert "shepherd" in names("placement")


def test_shepherd_preempts_on_the_best_locality_node(caplog):
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        chosen = place(make_placement_policy("shepherd"), NEW, _contended_cluster())
    host_s = NEW.size_bytes / PCIE_BW
    network_s = NEW.size_bytes / NET_BW
    assert (chosen.node_id, chosen.estimate_s, chosen.migration) == ("0", host_s, None)
    assert chosen.preemption.instance_ids == ("one-1",)
    assert caplog.messages == [
        f"Sorted scheduling options: [('0', {host_s}), ('1', {network_s})]",
        "Preempting instances ['one-1'] on node 0 for model new (tokens_lost=400, freed_gpus=1)",
        "Allocated node 0 for model new",
    ]


def test_shepherd_needs_no_preemption_when_the_best_node_is_free():
    cluster = ClusterView((node("0", host=["new"]), node("1", free=0, host=["new"], running=[inst("x", ONE, 0)])))
    ranked = make_placement_policy("shepherd").rank(NEW, cluster)
    # Equal estimates: the node that needs no preemption comes first.
    assert [(o.node_id, o.preemption is None) for o in ranked] == [("0", True), ("1", False)]


def test_shepherd_skips_full_nodes_it_cannot_free_and_respects_target_nodes():
    cluster = ClusterView((node("0", free=0, host=["new"], running=[inst("n", NEW, 3)]), node("1"), node("2")))
    pinned = ModelView("new", 4 * GiB, target_nodes=("0", "2"))
    assert [o.node_id for o in make_placement_policy("shepherd").rank(pinned, cluster)] == ["2"]


def test_shepherd_does_not_take_enable_migration():
    with pytest.raises(ConfigError, match="'shepherd' cannot migrate"):
        make_placement_policy("shepherd", enable_migration=True)
