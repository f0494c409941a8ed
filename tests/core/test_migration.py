"""Live-migration planning and migration-aware placement on hand-built snapshots."""

from __future__ import annotations

import itertools
import logging
import random

import pytest

from sllmsim.core import ClusterView, ModelView, NodeView, Tier, make_placement_policy, place, startup_estimate_s
from sllmsim.core.migration import plan_migration, resume_time_s
from sllmsim.core.snapshot import RunningInstanceView
from sllmsim.errors import ConfigError

GiB = 1024**3
DISK_BW = 5 * GiB
NET_BW = 10 * GiB / 8
PCIE_BW = 24 * GiB


def node(node_id, free=1, total=None, host=(), disk=(), backlog=0.0, running=()):
    total = free + sum(i.num_gpus for i in running) if total is None else total
    return NodeView(node_id, total, free, frozenset(host), frozenset(disk), backlog, DISK_BW, NET_BW, PCIE_BW,
                    running=tuple(running))


def inst(instance_id, model, tokens):
    return RunningInstanceView(instance_id, model, tokens)


SMALL = ModelView("small", 2 * GiB)
BIG = ModelView("big", 6 * GiB)
NEW = ModelView("new", 4 * GiB)


# ---- cost formula ---------------------------------------------------------------------------------


def test_resume_time_is_alpha_times_tokens_plus_beta_with_reference_defaults():
    assert resume_time_s(inst("i", SMALL, 0)) == 0.1
    assert resume_time_s(inst("i", SMALL, 250)) == pytest.approx(0.01 * 250 + 0.1)
    tuned = ModelView("tuned", GiB, resume_alpha_s_per_token=0.002, resume_beta_s=0.5)
    assert resume_time_s(inst("i", tuned, 1000)) == pytest.approx(0.002 * 1000 + 0.5)


def test_one_move_costs_resume_plus_startup_estimate_on_the_destination():
    source = node("0", free=0, running=[inst("s-1", SMALL, 300)])
    dest = node("1", disk=["small"], backlog=0.75)
    plan = plan_migration(source, ClusterView((source, dest)), 1, placing_model="new")
    (move,) = plan.moves
    assert (move.instance_id, move.model, move.from_node, move.to_node, move.num_gpus) == ("s-1", "small", "0", "1", 1)
    assert move.resume_s == 0.01 * 300 + 0.1
    assert move.load_s == startup_estimate_s(dest, SMALL)[0] == 0.75 + SMALL.size_bytes / DISK_BW
    assert move.tier is Tier.DISK
    assert move.cost_s == move.resume_s + move.load_s
    assert plan.total_cost_s == move.cost_s
    assert plan.freed_gpus == 1


def test_destination_is_the_cheapest_other_node_for_the_migrated_model():
    source = node("0", free=0, host=["small"], running=[inst("s-1", SMALL, 10)])
    cluster = ClusterView((source, node("1"), node("2", disk=["small"]), node("3", host=["small"])))
    (move,) = plan_migration(source, cluster, 1, placing_model="new").moves
    assert (move.to_node, move.tier) == ("3", Tier.HOST)  # never the source, though it caches the model too


def test_cheapest_instance_is_moved():
    # Equal models and destinations: the one with fewer tokens so far resumes faster.
    source = node("0", free=0, running=[inst("a", SMALL, 900), inst("b", SMALL, 40), inst("c", SMALL, 500)])
    cluster = ClusterView((source, node("1", free=3, disk=["small"])))
    plan = plan_migration(source, cluster, 1, placing_model="new")
    assert [m.instance_id for m in plan.moves] == ["b"]


def test_one_two_gpu_move_beats_two_cheaper_one_gpu_moves():
    # Singly the one-GPU instances are cheapest to move, but together they cost more than the pair.
    two_gpu = ModelView("two", 2 * GiB, num_gpus=2)
    source = node("0", free=0, running=[inst("a", SMALL, 100), inst("b", SMALL, 150), inst("t", two_gpu, 180)])
    plan = plan_migration(source, ClusterView((source, node("1", free=4, host=["small", "two"]))), 2,
                          placing_model="new")
    assert [m.instance_id for m in plan.moves] == ["t"]
    assert plan.total_cost_s == pytest.approx(0.01 * 180 + 0.1 + two_gpu.size_bytes / PCIE_BW)


def test_a_two_gpu_instance_can_free_a_one_gpu_shortage():
    two_gpu = ModelView("two", 2 * GiB, num_gpus=2)
    source = node("0", free=0, running=[inst("t", two_gpu, 0)])
    plan = plan_migration(source, ClusterView((source, node("1", free=2, host=["two"]))), 1, placing_model="new")
    assert [m.instance_id for m in plan.moves] == ["t"]
    assert plan.freed_gpus == 2


# ---- destination capacity and queueing -------------------------------------------------------------


def test_two_moves_never_count_the_same_free_gpu():
    # Node 1 caches both models but has one free GPU: only one of the two moves may go there.
    source = node("0", free=0, running=[inst("a", SMALL, 100), inst("b", BIG, 100)])
    fast = node("1", free=1, host=["small", "big"])
    slow = node("2", free=1, disk=["small", "big"])
    plan = plan_migration(source, ClusterView((source, fast, slow)), 2, placing_model="new")
    assert sorted(m.to_node for m in plan.moves) == ["1", "2"]
    # The big model gains more from the host cache, so it takes node 1.
    assert {m.instance_id: m.to_node for m in plan.moves} == {"a": "2", "b": "1"}
    expected = (resume_time_s(inst("a", SMALL, 100)) + startup_estimate_s(slow, SMALL)[0]
                + resume_time_s(inst("b", BIG, 100)) + startup_estimate_s(fast, BIG)[0])
    assert plan.total_cost_s == pytest.approx(expected)


def test_no_room_on_any_other_node_means_no_plan():
    source = node("0", free=0, running=[inst("a", SMALL, 1)])
    assert plan_migration(source, ClusterView((source, node("1", free=0, total=1))), 1, placing_model="new") is None
    # Two one-GPU instances to move but only one free GPU elsewhere.
    source = node("0", free=0, running=[inst("a", SMALL, 1), inst("b", SMALL, 1)])
    assert plan_migration(source, ClusterView((source, node("1", free=1))), 2, placing_model="new") is None


def test_moves_to_one_destination_queue_shortest_load_first():
    source = node("0", free=0, running=[inst("big-1", BIG, 0), inst("small-1", SMALL, 0)])
    dest = node("1", free=2, host=["small", "big"], backlog=0.5)
    plan = plan_migration(source, ClusterView((source, dest)), 2, placing_model="new")
    assert [m.instance_id for m in plan.moves] == ["small-1", "big-1"]
    small_load = SMALL.size_bytes / PCIE_BW
    big_load = BIG.size_bytes / PCIE_BW
    assert plan.moves[0].load_s == pytest.approx(0.5 + small_load)
    assert plan.moves[1].load_s == pytest.approx(0.5 + small_load + big_load)  # waits for the first load
    assert plan.total_cost_s == pytest.approx(0.2 + 0.5 + small_load + 0.5 + small_load + big_load)


# ---- what may not move ------------------------------------------------------------------------------


def test_instances_of_the_model_being_placed_are_never_moved():
    source = node("0", free=0, running=[inst("n-1", NEW, 5)])
    assert plan_migration(source, ClusterView((source, node("1", free=4))), 1, placing_model="new") is None


def test_target_nodes_of_the_migrated_model_limit_its_destinations():
    pinned = ModelView("pinned", GiB, target_nodes=("0", "2"))
    source = node("0", free=0, running=[inst("p", pinned, 5)])
    cluster = ClusterView((source, node("1", host=["pinned"]), node("2")))
    assert [m.to_node for m in plan_migration(source, cluster, 1, placing_model="new").moves] == ["2"]
    no_room = ClusterView((source, node("1", host=["pinned"]), node("2", free=0, total=1)))
    assert plan_migration(source, no_room, 1, placing_model="new") is None


def test_not_enough_movable_gpus_means_no_plan():
    source = node("0", free=0, total=4, running=[inst("a", SMALL, 1)])  # the other 3 GPUs are busy loading
    assert plan_migration(source, ClusterView((source, node("1", free=8))), 2, placing_model="new") is None


def test_nothing_to_free_is_an_empty_plan():
    source = node("0", free=2)
    plan = plan_migration(source, ClusterView((source,)), 0, placing_model="new")
    assert (plan.moves, plan.total_cost_s, plan.freed_gpus) == ((), 0.0, 0)


# ---- optimality against brute force ------------------------------------------------------------------


def _brute_force_cost(source, cluster, gpus_to_free, placing_model):
    """Least total cost over every subset of instances and every assignment to destinations."""
    movable = [i for i in source.running if i.model.name != placing_model]
    others = [n for n in cluster.nodes if n.node_id != source.node_id]
    best = None
    for size in range(1, len(movable) + 1):
        for subset in itertools.combinations(movable, size):
            if sum(i.num_gpus for i in subset) < gpus_to_free:
                continue
            for targets in itertools.product(others, repeat=size):
                cost = _assignment_cost(subset, targets)
                if cost is not None and (best is None or cost < best):
                    best = cost
    return best


def _assignment_cost(subset, targets):
    """Cost of moving subset[k] to targets[k], or None if a destination lacks GPUs or is not allowed."""
    cost = 0.0
    for dest in set(targets):
        group = [i for i, t in zip(subset, targets) if t is dest]
        if sum(i.num_gpus for i in group) > dest.free_gpus:
            return None
        if any(i.model.target_nodes is not None and dest.node_id not in i.model.target_nodes for i in group):
            return None
        # Loads share the destination's queue; shortest first minimises the total wait.
        durations = sorted(i.model.size_bytes / _bottleneck(dest, i.model.name) for i in group)
        waited = dest.io_backlog_s
        for duration in durations:
            waited += duration
            cost += waited
        cost += sum(0.01 * i.tokens_so_far + 0.1 for i in group)
    return cost


def _bottleneck(dest, model_name):
    if model_name in dest.host_models:
        return PCIE_BW
    if model_name in dest.disk_models:
        return min(DISK_BW, PCIE_BW)
    return min(NET_BW, DISK_BW, PCIE_BW)


def _random_case(rng):
    models = [ModelView(f"m{k}", rng.choice([1, 2, 3, 5]) * GiB, num_gpus=rng.choice([1, 1, 2]),
                        target_nodes=rng.choice([None, None, None, ("0", "1", "2")]))
              for k in range(4)]
    running = [inst(f"i{k}", rng.choice(models), rng.randrange(0, 400)) for k in range(rng.randint(1, 5))]
    source = node("0", free=rng.randint(0, 1), running=running)
    dests = []
    for d in range(1, rng.randint(2, 4)):
        names = [m.name for m in models]
        dests.append(node(str(d), free=rng.randint(0, 3), total=4,
                          host=rng.sample(names, rng.randint(0, 2)), disk=rng.sample(names, rng.randint(0, 3)),
                          backlog=rng.choice([0.0, 0.0, 0.3, 1.7])))
    gpus_to_free = rng.randint(1, 4)
    return source, ClusterView((source, *dests)), gpus_to_free


def _check_plan_is_valid(plan, source, cluster, gpus_to_free):
    by_id = {i.instance_id: i for i in source.running}
    nodes = {n.node_id: n for n in cluster.nodes}
    assert len({m.instance_id for m in plan.moves}) == len(plan.moves)
    assert plan.freed_gpus == sum(by_id[m.instance_id].num_gpus for m in plan.moves) >= gpus_to_free
    for dest_id in {m.to_node for m in plan.moves}:
        assert dest_id != source.node_id
        assert sum(m.num_gpus for m in plan.moves if m.to_node == dest_id) <= nodes[dest_id].free_gpus
    assert plan.total_cost_s == pytest.approx(sum(m.cost_s for m in plan.moves))
    subset = [by_id[m.instance_id] for m in plan.moves]
    assert _assignment_cost(subset, [nodes[m.to_node] for m in plan.moves]) == pytest.approx(plan.total_cost_s)


def test_planner_is_optimal_on_random_small_cases():
    rng = random.Random(20240611)
    feasible = infeasible = multi_move = 0
    for _ in range(500):
        source, cluster, gpus_to_free = _random_case(rng)
        plan = plan_migration(source, cluster, gpus_to_free, placing_model="m3")
        expected = _brute_force_cost(source, cluster, gpus_to_free, "m3")
        if expected is None:
            assert plan is None
            infeasible += 1
            continue
        assert plan is not None
        _check_plan_is_valid(plan, source, cluster, gpus_to_free)
        assert plan.total_cost_s == pytest.approx(expected, rel=1e-9)
        feasible += 1
        multi_move += len(plan.moves) > 1
    # The cases must exercise both outcomes and multi-move plans, or the check proves little.
    assert feasible > 50 and infeasible > 20 and multi_move > 20


def test_planner_is_deterministic():
    rng = random.Random(7)
    source, cluster, gpus_to_free = _random_case(rng)
    assert plan_migration(source, cluster, 3) == plan_migration(source, cluster, 3)


# ---- placement with migration --------------------------------------------------------------------


def _contended_cluster(tokens=200):
    """Node 0 caches the new model but its only GPU serves 'small'; node 1 is free but has nothing
    local; node 2 is free and has 'small' on disk."""
    return ClusterView((
        node("0", free=0, host=["new"], running=[inst("small-1", SMALL, tokens)]),
        node("1", free=1),
        node("2", free=1, disk=["small"]),
    ))


def test_migration_disabled_ranks_and_logs_exactly_as_before(caplog):
    cluster = _contended_cluster()
    plain = make_placement_policy("storage_aware")
    flagged_off = make_placement_policy("storage_aware", enable_migration=False)
    assert flagged_off.rank(NEW, cluster) == plain.rank(NEW, cluster)
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        chosen = place(flagged_off, NEW, cluster)
    # Node 0 is full, so it is not an option; nodes 1 and 2 both download: the tie goes to node 1.
    assert chosen.migration is None and chosen.node_id == "1"
    network_s = NEW.size_bytes / NET_BW
    assert caplog.messages == [
        f"Sorted scheduling options: [('1', {network_s}), ('2', {network_s})]",
        "Allocated node 1 for model new",
    ]


def test_spec_example_logs_are_unchanged_with_migration_enabled(caplog):
    cluster = ClusterView((node("0", disk=["opt-2.7b"]), node("1", disk=["opt-2.7b"])))
    model = ModelView("opt-2.7b", 2651596800 * 2, target_nodes=("0",))
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        place(make_placement_policy("storage_aware", enable_migration=True), model, cluster)
    assert caplog.messages == [
        "Sorted scheduling options: [('0', 0.9877967834472656)]",
        "Allocated node 0 for model opt-2.7b",
    ]


def test_migration_frees_the_best_locality_node_when_cheaper(caplog):
    cluster = _contended_cluster(tokens=20)
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        chosen = place(make_placement_policy("storage_aware", enable_migration=True), NEW, cluster)
    host_s = NEW.size_bytes / PCIE_BW
    move_s = 0.01 * 20 + 0.1 + SMALL.size_bytes / DISK_BW  # to node 2, where 'small' is on disk
    network_s = NEW.size_bytes / NET_BW
    assert chosen.node_id == "0"
    assert chosen.estimate_s == pytest.approx(host_s + move_s)
    (move,) = chosen.migration.moves
    assert (move.instance_id, move.from_node, move.to_node) == ("small-1", "0", "2")
    assert caplog.messages == [
        f"Sorted scheduling options: [('0', {chosen.estimate_s}), ('1', {network_s}), ('2', {network_s})]",
        f"Migration plan for model new on node 0: [('small-1', '0', '2', {move.cost_s})] "
        f"(total_cost_s={chosen.migration.total_cost_s}, freed_gpus=1)",
        "Allocated node 0 for model new",
    ]


def test_migration_is_not_chosen_when_it_costs_more_than_loading_elsewhere():
    # 1000 tokens so far: resuming takes 10.1 s, far more than downloading the new model.
    cluster = _contended_cluster(tokens=1000)
    ranked = make_placement_policy("storage_aware", enable_migration=True).rank(NEW, cluster)
    assert [o.node_id for o in ranked] == ["1", "2", "0"]
    assert ranked[0].migration is None
    assert ranked[2].migration is not None
    assert ranked[2].estimate_s == pytest.approx(startup_estimate_s(cluster.nodes[0], NEW)[0]
                                                 + ranked[2].migration.total_cost_s)


def test_a_full_node_without_a_plan_is_not_an_option():
    cluster = ClusterView((node("0", free=0, host=["new"], running=[inst("n", NEW, 3)]), node("1")))
    ranked = make_placement_policy("storage_aware", enable_migration=True).rank(NEW, cluster)
    assert [o.node_id for o in ranked] == ["1"]


def test_enable_migration_is_refused_by_policies_that_cannot_migrate():
    with pytest.raises(ConfigError, match="enable_migration.*'first_fit' cannot migrate"):
        make_placement_policy("first_fit", enable_migration=True)
