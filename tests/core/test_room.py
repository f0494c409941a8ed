"""worth_attempting: whether a placement can succeed now or after making room (both runtimes ask it)."""

from __future__ import annotations

import random

import pytest

from sllmsim.core import ClusterView, ModelView, NodeView, make_placement_policy
from sllmsim.core.placement import feasible_nodes
from sllmsim.core.reclaim import with_idle_reclaimed
from sllmsim.core.room import worth_attempting
from sllmsim.core.snapshot import IdleInstanceView, RunningInstanceView

GiB = 1024**3


def node(node_id, free=0, total=2, running=(), idle=(), disk=(), host=()):
    return NodeView(node_id, total, free, frozenset(host), frozenset(disk), 0.0, 2 * GiB, GiB, 16 * GiB,
                    running=tuple(running), idle=tuple(idle))


def running(instance_id, model, gpus=1, tokens=10):
    return RunningInstanceView(instance_id, ModelView(model, GiB, gpus), tokens)


def idle(instance_id, model, gpus=1, since=0.0):
    return IdleInstanceView(instance_id, model, gpus, since)


M = ModelView("m", 4 * GiB, num_gpus=2)


class _Spy:
    """A policy stand-in that records the clusters it ranks and answers with ``options``."""

    def __init__(self, options):
        self.options = options
        self.calls = []

    def rank(self, model, cluster):
        self.calls.append(cluster)
        return list(self.options)


def test_free_gpus_on_an_allowed_node_suffice():
    assert worth_attempting(M, ClusterView((node("0", free=1), node("1", free=2))))
    assert not worth_attempting(M, ClusterView((node("0", free=1), node("1", free=1))))
    targeted = ModelView("m", 4 * GiB, num_gpus=2, target_nodes=("0",))
    assert not worth_attempting(targeted, ClusterView((node("0", free=1), node("1", free=2))))


def test_idle_instances_of_other_models_count_not_those_of_the_model_itself():
    assert worth_attempting(M, ClusterView((node("0", free=1, idle=[idle("a", "x")]),)))
    assert not worth_attempting(M, ClusterView((node("0", free=1, idle=[idle("a", "m")]),)))


def test_running_instances_of_other_models_count_unless_the_policy_finds_no_plan():
    cluster = ClusterView((node("0", free=1, running=[running("a", "x")]),))
    assert worth_attempting(M, cluster)
    assert not worth_attempting(M, cluster, confirm=_Spy([]))
    assert worth_attempting(M, cluster, confirm=_Spy(["an option"]))
    own = ClusterView((node("0", free=1, running=[running("a", "m")]),))
    assert not worth_attempting(M, own)


def test_gpus_on_different_nodes_do_not_add_up():
    cluster = ClusterView((node("0", free=1), node("1", idle=[idle("a", "x")]), node("2", running=[running("b", "y")])))
    assert not worth_attempting(M, cluster, confirm=_Spy(["an option"]))


def test_a_node_smaller_than_the_model_is_never_counted():
    cluster = ClusterView((node("0", total=1, free=1, running=[running("a", "x", gpus=2)]),))
    assert not worth_attempting(M, cluster)


def test_the_policy_is_asked_only_about_room_running_instances_make_on_the_reclaimed_cluster():
    spy = _Spy([])
    assert worth_attempting(M, ClusterView((node("0", free=1, idle=[idle("a", "x")]),)), confirm=spy)
    assert spy.calls == []  # free plus idle GPUs need no plan
    cluster = ClusterView((node("0", running=[running("b", "y")], idle=[idle("a", "x")]),
                           node("1", idle=[idle("c", "z")])))
    assert not worth_attempting(M, cluster, confirm=spy)
    assert spy.calls == [with_idle_reclaimed(cluster, "m")]
    assert [(n.free_gpus, n.idle) for n in spy.calls[0].nodes] == [(1, ()), (1, ())]


# --- The two checks the runtimes made before this function, written out as they were. ----------------

def _sim_check(model, cluster):
    """The simulator's GPU arithmetic over allowed nodes (after its free-GPU fast path failed)."""
    allowed = None if model.target_nodes is None else set(model.target_nodes)
    for n in cluster.nodes:
        if n.total_gpus < model.num_gpus or (allowed is not None and n.node_id not in allowed):
            continue
        held = sum(v.num_gpus for v in n.running if v.model.name != model.name)
        held += sum(v.num_gpus for v in n.idle if v.model != model.name)
        if n.free_gpus + held >= model.num_gpus:
            return True
    return False


def _live_check(model, cluster, policy, enable_migration):
    """Live mode's check: feasible nodes, then with idle instances reclaimed, then the policy's ranking."""
    if feasible_nodes(model, cluster):
        return True
    if any(n.idle for n in cluster.nodes):
        cluster = with_idle_reclaimed(cluster, model.name)
        if feasible_nodes(model, cluster):
            return True
    return enable_migration and bool(policy.rank(model, cluster))


def _random_snapshot(rng, names, with_running, with_idle):
    nodes = []
    for i in range(rng.randint(1, 5)):
        total = rng.randint(1, 8)
        held = 0
        run, idl = [], []
        while held < total and rng.random() < 0.7:
            gpus = rng.randint(1, total - held)
            kind = rng.random()
            if with_running and kind < 0.5:
                run.append(running(f"r{i}-{len(run)}", rng.choice(names), gpus, rng.randint(0, 500)))
            elif with_idle and kind < 0.8:
                idl.append(idle(f"i{i}-{len(idl)}", rng.choice(names), gpus, rng.random()))
            else:
                pass  # GPUs busy with something that cannot make room (loading, or not offered)
            held += gpus
        free = rng.randint(0, total - held)
        nodes.append(node(str(i), free=free, total=total, running=run, idle=idl,
                          disk=[n for n in names if rng.random() < 0.3], host=[n for n in names if rng.random() < 0.2]))
    return ClusterView(tuple(nodes))


@pytest.mark.parametrize("with_running,with_idle", [(False, False), (False, True), (True, False), (True, True)])
def test_equals_what_each_runtime_decided_before_on_random_snapshots(with_running, with_idle):
    rng = random.Random(2 * with_running + with_idle)
    names = ["m", "x", "y", "z"]
    migrating = make_placement_policy("storage_aware", enable_migration=True)
    outcomes = set()
    for _ in range(600):
        cluster = _random_snapshot(rng, names, with_running, with_idle)
        targets = None if rng.random() < 0.7 else tuple(sorted(rng.sample([n.node_id for n in cluster.nodes], 1)))
        model = ModelView("m", rng.randint(1, 8) * GiB, rng.randint(1, 4), targets)
        # The simulator asks without confirmation; live mode lets the migrating policy confirm.
        sim = worth_attempting(model, cluster)
        assert sim == _sim_check(model, cluster)
        live = worth_attempting(model, cluster, confirm=migrating if with_running else None)
        assert live == _live_check(model, cluster, migrating, with_running)
        outcomes.add((sim, live))
    # The snapshots reach both answers (and, with running instances, a plan the policy refuses).
    assert {(True, True), (False, False)} <= outcomes
    if with_running:
        assert (True, False) in outcomes
