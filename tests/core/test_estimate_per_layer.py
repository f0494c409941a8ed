"""The startup estimate prices a node's fixed load cost per model layer, as the engine does."""

from __future__ import annotations

import logging

import pytest

from sllmsim.core import ClusterView, ModelView, NodeView, Tier, make_placement_policy, place
from sllmsim.core.estimate import startup_estimate_s

GiB = 1024**3
SPEC_DISK_ESTIMATE_S = 0.9877967834472656  # opt-2.7b from node 0's disk, the spec's log line
OPT_27B_BYTES = 2651596800 * 2


def node(node_id="0", host=(), disk=(), backlog=0.0, overhead=0.0, per_layer=0.0) -> NodeView:
    return NodeView(node_id, 1, 1, frozenset(host), frozenset(disk), backlog, 5 * GiB, 10 * GiB / 8, 24 * GiB,
                    load_overhead_s=overhead, load_overhead_per_layer_s=per_layer)


@pytest.mark.parametrize("tier,bandwidth", [(Tier.HOST, 24 * GiB), (Tier.DISK, 5 * GiB), (Tier.NETWORK, 10 * GiB / 8)])
def test_the_estimate_adds_the_constant_and_the_per_layer_load_cost(tier, bandwidth):
    where = {"host": ["m"]} if tier is Tier.HOST else {"disk": ["m"]} if tier is Tier.DISK else {}
    n = node(backlog=0.5, overhead=0.0158, per_layer=0.0042, **where)
    model = ModelView("m", 2 * GiB, num_layers=12)
    estimate, got_tier = startup_estimate_s(n, model)
    assert got_tier is tier
    assert estimate == 0.5 + (0.0158 + 12 * 0.0042) + 2 * GiB / bandwidth


def test_without_per_layer_cost_or_depth_the_estimate_is_unchanged():
    plain = startup_estimate_s(node(disk=["m"], overhead=0.25), ModelView("m", GiB))[0]
    assert plain == 0.25 + GiB / (5 * GiB)
    assert startup_estimate_s(node(disk=["m"], overhead=0.25, per_layer=0.01), ModelView("m", GiB))[0] == plain
    assert startup_estimate_s(node(disk=["m"], overhead=0.25), ModelView("m", GiB, num_layers=40))[0] == plain


def test_per_layer_load_cost_can_change_the_ranking():
    # Node 0 caches the checkpoint but builds every layer slowly; node 1 reads it from disk.
    cluster = ClusterView((node("0", host=["m"], per_layer=0.05), node("1", disk=["m"])))
    policy = make_placement_policy("storage_aware")
    shallow = policy.rank(ModelView("m", 4 * GiB, num_layers=2), cluster)
    deep = policy.rank(ModelView("m", 4 * GiB, num_layers=32), cluster)
    assert [o.node_id for o in shallow] == ["0", "1"]   # 1/6 s + 0.1 s < 0.8 s
    assert [o.node_id for o in deep] == ["1", "0"]      # 1/6 s + 1.6 s > 0.8 s
    assert deep[1].estimate_s == 4 / 24 + 32 * 0.05


def test_the_placement_log_line_carries_the_per_layer_cost(caplog):
    # The spec's opt-2.7b (32 layers) on node 0's disk, with 4.2 ms per layer to construct it.
    cluster = ClusterView((node("0", disk=["opt-2.7b"], per_layer=0.0042),))
    model = ModelView("opt-2.7b", OPT_27B_BYTES, target_nodes=("0",), num_layers=32)
    with caplog.at_level(logging.INFO, logger="sllmsim.scheduler"):
        place(make_placement_policy("storage_aware"), model, cluster)
    expected = 0.0 + (0.0 + 32 * 0.0042) + OPT_27B_BYTES / (5 * GiB)
    assert expected == pytest.approx(SPEC_DISK_ESTIMATE_S + 0.1344, rel=1e-12)
    assert caplog.messages == [f"Sorted scheduling options: [('0', {expected!r})]",
                               "Allocated node 0 for model opt-2.7b"]
