"""Placement policies on hand-built snapshots."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from repo_paths import REPO

from sllmsim.core import ClusterView, ModelView, NodeView, Tier, make_placement_policy, place
from sllmsim.core.registry import UnknownPolicyError, names

GiB = 1024**3


def node(node_id, free=1, host=(), disk=(), backlog=0.0, disk_bw=5 * GiB, net_bw=10 * GiB / 8, pcie=24 * GiB, total=1):
    return NodeView(node_id, total, free, frozenset(host), frozenset(disk), backlog, disk_bw, net_bw, pcie)


OPT_27B = ModelView("opt-2.7b", 2651596800 * 2)


def test_spec_estimate_on_local_disk_matches_reference_log():
    cluster = ClusterView((node("0", disk=["opt-2.7b"]),))
    model = ModelView("opt-2.7b", 2651596800 * 2, target_nodes=("0",))
    options = make_placement_policy("storage_aware").rank(model, cluster)
    assert [(o.node_id, o.estimate_s) for o in options] == [("0", 0.9877967834472656)]
    assert options[0].tier is Tier.DISK


def test_storage_aware_prefers_host_cache_over_disk_over_network():
    cluster = ClusterView((node("0"), node("1", disk=["opt-2.7b"]), node("2", host=["opt-2.7b"])))
    ranked = make_placement_policy("storage_aware").rank(OPT_27B, cluster)
    assert [o.node_id for o in ranked] == ["2", "1", "0"]
    assert [o.tier for o in ranked] == [Tier.HOST, Tier.DISK, Tier.NETWORK]
    size = OPT_27B.size_bytes
    assert ranked[0].estimate_s == size / (24 * GiB)
    assert ranked[2].estimate_s == size / (10 * GiB / 8)


def test_storage_aware_adds_queue_backlog():
    # Node 1 holds the checkpoint in host memory but its loading queue is 2 s deep: disk on node 0 wins.
    cluster = ClusterView((node("0", disk=["opt-2.7b"]), node("1", host=["opt-2.7b"], backlog=2.0)))
    ranked = make_placement_policy("storage_aware").rank(OPT_27B, cluster)
    assert [o.node_id for o in ranked] == ["0", "1"]
    assert ranked[1].estimate_s == 2.0 + OPT_27B.size_bytes / (24 * GiB)


def test_ties_break_by_numeric_node_id():
    cluster = ClusterView((node("10", disk=["m"]), node("2", disk=["m"]), node("1", disk=["m"])))
    ranked = make_placement_policy("storage_aware").rank(ModelView("m", GiB), cluster)
    assert [o.node_id for o in ranked] == ["1", "2", "10"]


def test_nodes_without_enough_free_gpus_or_outside_targets_are_skipped():
    cluster = ClusterView((node("0", free=0, host=["m"]), node("1", free=1), node("2", free=2, total=2)))
    two_gpu = ModelView("m", GiB, num_gpus=2)
    assert [o.node_id for o in make_placement_policy("storage_aware").rank(two_gpu, cluster)] == ["2"]
    targeted = ModelView("m", GiB, target_nodes=("0", "1"))
    assert [o.node_id for o in make_placement_policy("storage_aware").rank(targeted, cluster)] == ["1"]
    assert make_placement_policy("storage_aware").rank(ModelView("m", GiB, num_gpus=3), cluster) == []


def test_first_fit_takes_lowest_id_regardless_of_storage():
    cluster = ClusterView((node("1", host=["m"]), node("0")))
    assert make_placement_policy("first_fit").rank(ModelView("m", GiB), cluster)[0].node_id == "0"


def test_random_is_seeded_and_covers_all_nodes():
    cluster = ClusterView(tuple(node(str(i)) for i in range(4)))
    a = make_placement_policy("random", seed=7)
    b = make_placement_policy("random", seed=7)
    picks_a = [a.rank(ModelView("m", GiB), cluster)[0].node_id for _ in range(50)]
    picks_b = [b.rank(ModelView("m", GiB), cluster)[0].node_id for _ in range(50)]
    assert picks_a == picks_b
    assert set(picks_a) == {"0", "1", "2", "3"}


def test_placement_seed_is_the_traces_placement_stream():
    """Both runtimes seed their policy by ``placement_seed``; it is the stream the simulator has
    always used (so simulated random placements are unchanged), and differs from seed to seed."""
    import dataclasses

    from repo_paths import REPO

    from sllmsim.config.trace import load_trace
    from sllmsim.core.placement import placement_seed

    shipped = load_trace(REPO / "traces" / "validation-policies.yaml")
    for seed in (0, 7, 123456789):
        trace = dataclasses.replace(shipped, seed=seed)
        assert placement_seed(seed) == int(trace.seed_sequence("placement").generate_state(1)[0])
    assert placement_seed(0) != placement_seed(7)


def test_round_robin_cycles_and_skips_full_nodes():
    policy = make_placement_policy("round_robin")
    full = ClusterView((node("0"), node("1"), node("2")))
    picks = [policy.rank(ModelView("m", GiB), full)[0].node_id for _ in range(4)]
    assert picks == ["0", "1", "2", "0"]
    busy_1 = ClusterView((node("0"), node("1", free=0), node("2")))
    assert policy.rank(ModelView("m", GiB), busy_1)[0].node_id == "2"


def test_place_logs_exactly_like_the_reference(caplog):
    cluster = ClusterView((node("0", disk=["opt-2.7b"]), node("1", disk=["opt-2.7b"])))
    model = ModelView("opt-2.7b", 2651596800 * 2, target_nodes=("0",))
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        chosen = place(make_placement_policy("storage_aware"), model, cluster)
    assert chosen.node_id == "0"
    assert caplog.messages == [
        "Sorted scheduling options: [('0', 0.9877967834472656)]",
        "Allocated node 0 for model opt-2.7b",
    ]


def test_place_returns_none_when_nothing_fits():
    assert place(make_placement_policy("first_fit"), ModelView("m", GiB), ClusterView((node("0", free=0),))) is None


def test_registry_lists_builtins_and_suggests_on_typo():
    assert {"storage_aware", "first_fit", "random", "round_robin"} <= set(names("placement"))
    with pytest.raises(UnknownPolicyError, match="did you mean 'storage_aware'"):
        make_placement_policy("storage_awre")


def test_registry_alone_sees_every_builtin_policy():
    # A fresh interpreter that imports only the registry: the core package's __init__ must have
    # registered the built-ins, including serverlessllm, which nothing else in the chain imports.
    code = ("import json; from sllmsim.core.registry import names, resolve; "
            "print(json.dumps([names('placement'), names('autoscale'), resolve('placement', 'serverlessllm').__name__]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    placement, autoscale, cls = json.loads(out.stdout)
    assert {"storage_aware", "serverlessllm", "shepherd", "first_fit", "random", "round_robin"} <= set(placement)
    assert autoscale == ["concurrency"]
    assert cls == "ServerlessLLMPlacement"


def test_registry_imports_module_colon_class():
    policy = make_placement_policy("sllmsim.core.placement:FirstFitPlacement")
    assert policy.policy_name == "first_fit"


def _reference_choice(model, cluster):
    """Straightforward storage-aware placement: estimate every feasible node, sort, take the first."""
    from sllmsim.core.estimate import startup_estimate_s
    from sllmsim.core.snapshot import node_sort_key

    allowed = model.target_nodes
    options = []
    for i, n in enumerate(cluster.nodes):
        if n.free_gpus >= model.num_gpus and (allowed is None or n.node_id in allowed):
            estimate, tier = startup_estimate_s(n, model)
            options.append((estimate, node_sort_key(n.node_id), i, n.node_id, tier))
    if not options:
        return None
    estimate, _, _, node_id, tier = min(options)
    return node_id, estimate, tier


@pytest.mark.parametrize("seed", range(40))
def test_fast_placement_matches_the_reference_on_random_snapshots(seed):
    import random

    rng = random.Random(seed)
    gib = 1024**3
    names = [f"m{i}" for i in range(rng.choice((3, 20)))]
    # Few distinct bandwidths and backlogs, so that equal estimates (ties) are common.
    bandwidths = (2 * gib, 5 * gib, 24 * gib)
    ids = rng.sample(range(400), k=rng.choice((4, 30, 300)) if seed % 3 else 4)
    node_ids = [str(i) if rng.random() < 0.8 else f"n{i}" for i in ids]
    nodes = tuple(
        NodeView(node_id, 8, rng.randint(0, 8), frozenset(rng.sample(names, rng.randint(0, 2))),
                 frozenset(rng.sample(names, rng.randint(0, min(3, len(names))))), rng.choice((0.0, 0.0, 1.5, rng.uniform(0, 5))),
                 rng.choice(bandwidths), rng.choice(bandwidths), rng.choice(bandwidths),
                 load_overhead_s=rng.choice((0.0, 0.25)), load_overhead_per_layer_s=rng.choice((0.0, 0.01)))
        for node_id in node_ids
    )
    cluster = ClusterView(nodes)
    policy = make_placement_policy("storage_aware")
    for _ in range(10):
        targets = None if rng.random() < 0.7 else tuple(rng.sample(node_ids, k=min(3, len(node_ids))))
        model = ModelView(rng.choice(names), rng.choice((1, 7, 14)) * gib, rng.choice((1, 2, 4)), targets,
                          num_layers=rng.choice((0, 32)))
        want = _reference_choice(model, cluster)
        fast = policy.best(model, cluster)
        ranked = policy.rank(model, cluster)
        assert (None if fast is None else (fast.node_id, fast.estimate_s, fast.tier)) == want
        assert (ranked[0] if ranked else None) == fast
        assert place(policy, model, cluster) == fast  # logging off: place() takes the fast path
