"""The engine's incremental bookkeeping on the placement path (stale-node views, free-GPU counts,
per-deployment waiting lists, each tier's complete-model set) must give, at every decision, exactly
what a full recomputation from the nodes' state gives: checked on a busy many-model run with small
host memories (evictions) and a cluster too small for its models (waiting and cancelled starts)."""

from sllmsim.bench.sim import benchmark_raw
from sllmsim.config.trace import parse_trace
from sllmsim.core.views import node_view
from sllmsim.sim.engine import Simulation


def _complete(store):
    return frozenset(m for m, e in store._entries.items() if e.complete)


def _backlog_s(node, now):
    if not node.loading:
        return 0.0
    return max(max(sum(max(f.remaining_bytes - f.rate * (now - f.updated_s), 0.0) for f in link.flows), 0.0)
               / link.bandwidth_bytes_per_s if link.flows else 0.0
               for link in (node.net_link, node.disk_link, node.pcie_link))


class CheckedSimulation(Simulation):
    checks = 0

    def _cluster_view(self, now):
        view = super()._cluster_view(now)
        fresh = tuple(node_view(n.spec, n.free_gpus, _complete(n.host), _complete(n.disk), _backlog_s(n, now))
                      for n in self.nodes)
        assert view.nodes == fresh
        assert self._most_free_gpus() == max(n.free_gpus for n in self.nodes)
        for m in self.deployments.values():
            assert list(m.pending) == [i for i in self.pending if i.deployment is m]
            assert len(m.pending) == m.unplaced
        self.checks += 1
        return view


def test_incremental_views_equal_a_full_rebuild_at_every_decision():
    raw = benchmark_raw(num_requests=6000, num_nodes=4, gpus_per_node=4, num_models=60, seed=3)
    for spec in raw["hardware"].values():
        spec["host_size"] = "100GB"
    sim = CheckedSimulation(parse_trace(raw, source="<test>"))
    result = sim.run()
    assert sim.checks > 200
    assert any(r.tier == "host" for r in result.requests)  # host copies were made, evicted and reused
