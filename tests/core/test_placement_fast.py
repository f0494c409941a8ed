"""The placement fast paths against a straightforward reference, on random snapshots.

The reference below evaluates every node with the estimate written out and sorts all the options;
the policies' own ``rank``, their ``best`` (storage-aware placement's single pass, and its index,
built on a snapshot and carried to the next ones, see ``sllmsim/core/placement_index.py``) and
:func:`place` with and without the ranking logged must give the same options, estimates bit for
bit, in the same order. The snapshots are drawn so that equal estimates (ties broken by node id), rounding ties
(backlogs too small to change a sum) and text node ids are common.
"""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from sllmsim.core import ClusterView, ModelView, NodeView, Tier, make_placement_policy, place
from sllmsim.core.migration import plan_migration
from sllmsim.core.placement_index import SnapshotIndexer
from sllmsim.core.reclaim import choose_idle_to_reclaim, with_idle_reclaimed
from sllmsim.core.snapshot import IdleInstanceView, RunningInstanceView, node_sort_key

GiB = 1024**3
SNAPSHOTS = 1200
MODELS = ("m0", "m1", "m2", "m3", "m4", "m5")
# Few distinct values, so that nodes share figures (the index's groups) and estimates tie; plus a
# random value now and then.
_SIZES = (GiB, 2 * GiB, 5 * GiB, 5302190080, 14 * GiB)
_PCIE = (5 * GiB, 24 * GiB, 24 * GiB, 32 * GiB)
_DISK = (2 * GiB, 5 * GiB, 5 * GiB, 10 * GiB)
_NETWORK = (10 * GiB / 8, 25 * GiB / 8, 25 * GiB / 8, 100 * GiB / 8)
# 1e-17 and 5e-17 vanish when added to a fixed cost of 0.5 s or more: estimates tie although the
# backlogs differ, and the tie must still go to the smaller node id.
_BACKLOG = (0.0, 0.0, 0.0, 1e-17, 5e-17, 0.5, 1.0, 2.0)
_OVERHEAD = (0.0, 0.0, 0.5, 1.0)
_PER_LAYER = (0.0, 0.0, 0.01)


def _pick(rng: random.Random, values: tuple, low: float, high: float) -> float:
    return rng.choice(values) if rng.random() < 0.85 else rng.uniform(low, high)


def _model(rng: random.Random, name: str, node_ids: list[str]) -> ModelView:
    targets = None
    if rng.random() < 0.2:
        unknown = ["nowhere"] if rng.random() < 0.2 else []
        targets = tuple(rng.sample(node_ids, rng.randint(0, len(node_ids))) + unknown)
    return ModelView(name, int(_pick(rng, _SIZES, GiB / 4, 20 * GiB)), num_gpus=rng.choice((1, 1, 1, 2, 4)),
                     target_nodes=targets, resume_alpha_s_per_token=rng.choice((0.01, 0.002)),
                     resume_beta_s=rng.choice((0.1, 0.3)), num_layers=rng.choice((0, 0, 24, 32, 80)))


def random_cluster(rng: random.Random, num_nodes: int, makes_room: bool) -> ClusterView:
    """``num_nodes`` nodes in random order with numeric (and some text) ids; running and idle
    instances only with ``makes_room`` (migration, preemption and reclaim plan over them)."""
    ids = [str(i) for i in range(num_nodes)]
    for k in rng.sample(range(num_nodes), num_nodes // 8):
        ids[k] = rng.choice(("n", "gpu-", "a")) + ids[k]
    rng.shuffle(ids)
    nodes = []
    for k, node_id in enumerate(ids):
        total = rng.choice((1, 2, 4, 8, 8))
        running, idle, used = [], [], 0
        if makes_room:
            for j in range(rng.choice((0, 0, 1, 2))):
                gpus = rng.choice((1, 1, 2))
                if used + gpus <= total:
                    model = _model(rng, rng.choice(MODELS), ids)
                    model = ModelView(model.name, model.size_bytes, gpus, None, model.resume_alpha_s_per_token,
                                      model.resume_beta_s, model.num_layers)
                    running.append(RunningInstanceView(f"r{k}-{j}", model, rng.randint(0, 3000)))
                    used += gpus
            for j in range(rng.choice((0, 0, 1))):
                gpus = rng.choice((1, 2))
                if used + gpus <= total:
                    idle.append(IdleInstanceView(f"i{k}-{j}", rng.choice(MODELS), gpus,
                                                 rng.choice((0.0, 5.0, 10.0, rng.uniform(0, 20)))))
                    used += gpus
        free = rng.randint(0, total - used) if rng.random() < 0.7 else total - used
        host = frozenset(m for m in MODELS if rng.random() < 0.15)
        disk = frozenset(m for m in MODELS if rng.random() < 0.3) | (host if rng.random() < 0.5 else frozenset())
        nodes.append(NodeView(
            node_id, total, free, host, disk, _pick(rng, _BACKLOG, 0.0, 5.0),
            _pick(rng, _DISK, GiB, 12 * GiB), _pick(rng, _NETWORK, GiB / 8, 100 * GiB / 8),
            _pick(rng, _PCIE, 4 * GiB, 32 * GiB), load_overhead_s=_pick(rng, _OVERHEAD, 0.0, 3.0),
            load_overhead_per_layer_s=_pick(rng, _PER_LAYER, 0.0, 0.05), running=tuple(running), idle=tuple(idle)))
    return ClusterView(tuple(nodes))


# ---- the reference: every node evaluated, all options sorted --------------------------------------


def reference_estimate(node: NodeView, model: ModelView) -> tuple[float, Tier]:
    """The startup estimate as the spec states it, in the estimate's order of float operations."""
    queued_s = node.io_backlog_s + (node.load_overhead_s + model.num_layers * node.load_overhead_per_layer_s)
    bottleneck = node.host_to_gpu_bytes_per_s
    if model.name in node.host_models:
        return queued_s + model.size_bytes / bottleneck, Tier.HOST
    if node.disk_bandwidth_bytes_per_s < bottleneck:
        bottleneck = node.disk_bandwidth_bytes_per_s
    if model.name in node.disk_models:
        return queued_s + model.size_bytes / bottleneck, Tier.DISK
    if node.network_bandwidth_bytes_per_s < bottleneck:
        bottleneck = node.network_bandwidth_bytes_per_s
    return queued_s + model.size_bytes / bottleneck, Tier.NETWORK


def _allowed(node: NodeView, model: ModelView) -> bool:
    return model.target_nodes is None or node.node_id in model.target_nodes


def reference_storage_aware(model: ModelView, cluster: ClusterView, enable_migration: bool = False) -> list[tuple]:
    """Options of ``storage_aware`` as (node id, estimate, tier, migration plan), best first."""
    keyed = []
    for i, node in enumerate(cluster.nodes):
        if not _allowed(node, model) or node.total_gpus < model.num_gpus:
            continue
        estimate, tier = reference_estimate(node, model)
        plan = None
        if node.free_gpus < model.num_gpus:
            if not enable_migration:
                continue
            plan = plan_migration(node, cluster, model.num_gpus - node.free_gpus, placing_model=model.name)
            if plan is None:
                continue
            estimate += plan.total_cost_s
        keyed.append(((estimate, node_sort_key(node.node_id), i), (node.node_id, estimate, tier, plan)))
    keyed.sort(key=lambda item: item[0])
    return [option for _, option in keyed]


def reference_serverlessllm(model: ModelView, cluster: ClusterView) -> list[tuple]:
    """Options of ``serverlessllm``: nodes whose disk holds the checkpoint, the reference's prices."""
    options = []
    for node in cluster.nodes:
        if node.free_gpus < model.num_gpus or not _allowed(node, model) or model.name not in node.disk_models:
            continue
        if model.name in node.host_models:
            options.append((node.node_id, model.size_bytes / node.host_to_gpu_bytes_per_s, Tier.HOST, None))
        else:
            options.append((node.node_id, node.io_backlog_s + model.size_bytes / node.disk_bandwidth_bytes_per_s,
                            Tier.DISK, None))
    options.sort(key=lambda o: (o[1], o[0]))  # stable: equal (estimate, id) keep cluster order
    return options


def _bits(options) -> list[tuple]:
    """Options as comparable tuples with each estimate's exact bits."""
    return [(o[0], float(o[1]).hex(), o[2], o[3]) for o in options]


def _as_reference(option) -> tuple:
    assert option.preemption is None
    return (option.node_id, option.estimate_s, option.tier, option.migration)


@pytest.fixture
def index_small_snapshots(monkeypatch):
    """Let the index decide on snapshots of any size (by default only large ones use it)."""
    monkeypatch.setattr(SnapshotIndexer, "min_nodes", 1)


@pytest.fixture
def scheduler_log():
    logger = logging.getLogger("sllmsim.scheduler")
    level = logger.level

    def set_logged(logged: bool) -> None:
        logger.setLevel(logging.INFO if logged else logging.WARNING)

    yield set_logged
    logger.setLevel(level)


def _decide(policy, model, cluster, logged: bool, set_logged, reclaim_idle: bool = False):
    set_logged(logged)
    return place(policy, model, cluster, reclaim_idle=reclaim_idle)


def _snapshot_sizes(rng: random.Random) -> int:
    roll = rng.random()
    return rng.randint(1, 20) if roll < 0.6 else rng.randint(21, 100) if roll < 0.95 else rng.randint(101, 300)


@pytest.mark.parametrize("policy_name, reference", [
    ("storage_aware", reference_storage_aware), ("serverlessllm", reference_serverlessllm)])
def test_rank_best_and_place_match_the_reference_on_random_snapshots(policy_name, reference, scheduler_log,
                                                                     index_small_snapshots):
    rng = random.Random(f"fast-{policy_name}")
    indexed = 0
    for _ in range(SNAPSHOTS):
        cluster = random_cluster(rng, _snapshot_sizes(rng), makes_room=False)
        ids = [n.node_id for n in cluster.nodes]
        policy = make_placement_policy(policy_name)
        # Several models asked of one snapshot: the first decision is the single pass, the later
        # ones use the snapshot's index (a model asked again reuses what the index found for it).
        models = [_model(rng, rng.choice(MODELS), ids) for _ in range(3)]
        expected = [_bits(reference(model, cluster)) for model in models]
        for model, options in zip(models, expected):
            assert _bits([_as_reference(o) for o in policy.rank(model, cluster)]) == options
        for model, options in zip(models * 2, expected * 2):
            fast = _decide(policy, model, cluster, False, scheduler_log)
            assert _bits([_as_reference(fast)] if fast else []) == options[:1]
        # place() ranks every option when the ranking is logged: the same first one.
        logged = _decide(policy, models[0], cluster, True, scheduler_log)
        assert _bits([_as_reference(logged)] if logged else []) == expected[0][:1]
        indexed += getattr(policy, "indexer", None) is not None and policy.indexer._index is not None
    if policy_name == "storage_aware":
        assert indexed == SNAPSHOTS  # every snapshot was decided on through an index too


def test_migration_options_match_the_reference_on_random_snapshots(scheduler_log):
    rng = random.Random("fast-migration")
    for _ in range(SNAPSHOTS // 3):
        cluster = random_cluster(rng, rng.randint(1, 30), makes_room=True)
        model = _model(rng, rng.choice(MODELS), [n.node_id for n in cluster.nodes])
        policy = make_placement_policy("storage_aware", enable_migration=True)
        expected = _bits(reference_storage_aware(model, cluster, enable_migration=True))
        assert _bits([_as_reference(o) for o in policy.rank(model, cluster)]) == expected
        for logged in (False, True, False):
            chosen = _decide(policy, model, cluster, logged, scheduler_log)
            assert _bits([_as_reference(chosen)] if chosen else []) == expected[:1]


def _first_fit_reference(model: ModelView, cluster: ClusterView) -> list[tuple]:
    nodes = [n for n in cluster.nodes if n.free_gpus >= model.num_gpus and _allowed(n, model)]
    nodes.sort(key=lambda n: node_sort_key(n.node_id))
    return [(n.node_id, *reference_estimate(n, model), None) for n in nodes]


@pytest.mark.parametrize("policy_name, reference", [
    ("storage_aware", reference_storage_aware), ("serverlessllm", reference_serverlessllm),
    ("first_fit", _first_fit_reference)])
def test_reclaim_options_match_the_reference_on_random_snapshots(policy_name, reference, scheduler_log):
    rng = random.Random(f"fast-reclaim-{policy_name}")
    reclaimed = 0
    for _ in range(SNAPSHOTS // 3):
        cluster = random_cluster(rng, _snapshot_sizes(rng) // 4 + 1, makes_room=True)
        model = _model(rng, rng.choice(MODELS), [n.node_id for n in cluster.nodes])
        policy = make_placement_policy(policy_name)
        # The reference: the ranking, else the ranking with every reclaimable idle instance
        # released, its first option naming the longest-idle instances to release.
        ranked = reference(model, cluster)
        expected = (*ranked[0], ()) if ranked else None
        if expected is None and any(n.idle for n in cluster.nodes):
            relaxed = reference(model, with_idle_reclaimed(cluster, model.name))
            if relaxed:
                node = next(n for n in cluster.nodes if n.node_id == relaxed[0][0])
                short = model.num_gpus - node.free_gpus
                expected = (*relaxed[0], choose_idle_to_reclaim(node, short, model.name))
                reclaimed += 1
        for logged in (False, True, False):
            chosen = _decide(policy, model, cluster, logged, scheduler_log, reclaim_idle=True)
            got = None if chosen is None else (*_as_reference(chosen), chosen.reclaim)
            assert _bits([got] if got else []) == _bits([expected] if expected else [])
            assert got is None or got[4] == expected[4]
    assert reclaimed > 0


@pytest.mark.parametrize("policy_name", ["shepherd", "first_fit", "random", "round_robin"])
def test_other_policies_decide_as_their_ranking_on_random_snapshots(policy_name, scheduler_log):
    # A policy with its own state (random stream, round-robin cursor) must move it the same way
    # whether place() logs the ranking or not: two equally seeded policies, one each way.
    rng = random.Random(f"fast-{policy_name}")
    quiet, logged = make_placement_policy(policy_name, seed=7), make_placement_policy(policy_name, seed=7)
    for _ in range(SNAPSHOTS // 3):
        cluster = random_cluster(rng, rng.randint(1, 40), makes_room=policy_name == "shepherd")
        model = _model(rng, rng.choice(MODELS), [n.node_id for n in cluster.nodes])
        for _ in range(2):
            assert _decide(quiet, model, cluster, False, scheduler_log) == \
                _decide(logged, model, cluster, True, scheduler_log)


def _changed(rng: random.Random, node: NodeView) -> NodeView:
    """``node`` with one to three of what a runtime changes between snapshots changed."""
    changes = {}
    for what in rng.sample(("free", "backlog", "host", "disk", "static"), rng.randint(1, 3)):
        if what == "free":
            changes["free_gpus"] = rng.randint(0, node.total_gpus)
        elif what == "backlog":
            changes["io_backlog_s"] = _pick(rng, _BACKLOG, 0.0, 5.0)
        elif what == "host":
            changes["host_models"] = node.host_models ^ {rng.choice(MODELS)}
        elif what == "disk":
            changes["disk_models"] = node.disk_models ^ {rng.choice(MODELS)}
        else:
            changes["host_to_gpu_bytes_per_s"] = _pick(rng, _PCIE, 4 * GiB, 32 * GiB)
            changes["load_overhead_s"] = _pick(rng, _OVERHEAD, 0.0, 3.0)
    return dataclasses.replace(node, **changes)


@pytest.mark.parametrize("share", [SnapshotIndexer.max_changed_share, 1.0])
def test_an_index_carried_across_changing_snapshots_matches_the_reference(share, index_small_snapshots,
                                                                          monkeypatch):
    monkeypatch.setattr(SnapshotIndexer, "max_changed_share", share)
    # As in a runtime: each snapshot reuses the views of the nodes that did not change. Now and
    # then most views change, two nodes swap places, or another cluster is decided on, and the
    # index must start over.
    rng = random.Random("fast-carried")
    carried = 0
    for _ in range(80):
        policy = make_placement_policy("storage_aware")
        cluster = random_cluster(rng, rng.randint(1, 30) if rng.random() < 0.7 else rng.randint(31, 200),
                                 makes_room=False)
        if rng.random() < 0.5:  # one hardware kind, few free-GPU counts and backlogs: large tied groups
            like = cluster.nodes[0]
            cluster = ClusterView(tuple(dataclasses.replace(
                like, node_id=n.node_id, host_models=n.host_models, disk_models=n.disk_models,
                free_gpus=rng.choice((0, 1, like.total_gpus)), io_backlog_s=rng.choice((0.0, 0.0, 1e-17, 1.0)))
                for n in cluster.nodes))
        ids = [n.node_id for n in cluster.nodes]
        models = [_model(rng, name, ids) for name in MODELS] + [_model(rng, rng.choice(MODELS), ids)]
        for _ in range(40):
            roll = rng.random()
            nodes = list(cluster.nodes)
            if roll < 0.05:
                nodes = list(random_cluster(rng, len(nodes), makes_room=False).nodes)
            elif roll < 0.08 and len(nodes) > 1:
                a, b = rng.sample(range(len(nodes)), 2)
                nodes[a], nodes[b] = nodes[b], nodes[a]
            elif roll < 0.1:
                other = random_cluster(rng, rng.randint(1, 200), makes_room=False)
                model = _model(rng, rng.choice(MODELS), [n.node_id for n in other.nodes])
                chosen = policy.best(model, other)
                expected = _bits(reference_storage_aware(model, other)[:1])
                assert _bits([_as_reference(chosen)] if chosen else []) == expected
            else:
                for k in rng.sample(range(len(nodes)), min(len(nodes), rng.choice((0, 1, 1, 2, 3)))):
                    nodes[k] = _changed(rng, nodes[k])
            cluster = ClusterView(tuple(nodes))
            before = policy.indexer._index
            for model in rng.sample(models, 3):
                chosen = policy.best(model, cluster)
                expected = _bits(reference_storage_aware(model, cluster)[:1])
                assert _bits([_as_reference(chosen)] if chosen else []) == expected
            carried += before is not None and policy.indexer._index is before
    assert carried > (400 if share < 1 else 2000)  # snapshots whose decisions a carried index answered


def test_small_snapshots_are_decided_by_the_single_pass_without_an_index():
    rng = random.Random("fast-small")
    cluster = random_cluster(rng, SnapshotIndexer.min_nodes - 1, makes_room=False)
    policy = make_placement_policy("storage_aware")
    for _ in range(3):
        policy.best(ModelView("m1", 2 * GiB), cluster)
    assert policy.indexer._index is None
