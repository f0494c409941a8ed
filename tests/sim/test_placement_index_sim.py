"""A simulation decides the same with storage-aware placement's carried index as with the single pass."""

from __future__ import annotations

from sllmsim.bench.sim import benchmark_trace
from sllmsim.core.placement_index import PlacementIndex, SnapshotIndexer
from sllmsim.sim import simulate


def test_the_carried_index_changes_no_placement_of_a_simulation(monkeypatch):
    trace = benchmark_trace(num_requests=3000, num_nodes=48, gpus_per_node=4, num_models=40, seed=3)
    monkeypatch.setattr(SnapshotIndexer, "min_nodes", 10**9)  # the single pass decides everything
    single_pass = simulate(trace)
    answered = []
    best_by_estimate = PlacementIndex.best_by_estimate

    def counted(self, model):
        answered.append(model.name)
        return best_by_estimate(self, model)

    monkeypatch.setattr(SnapshotIndexer, "min_nodes", 1)  # the index decides all but the first
    monkeypatch.setattr(PlacementIndex, "best_by_estimate", counted)
    indexed = simulate(trace)
    placed = sum(r.cold_start for r in single_pass.requests)
    assert placed > 100 and len(answered) > 100
    assert indexed.requests == single_pass.requests
    assert indexed.phases == single_pass.phases
