"""Preemption victims for the Shepherd*-like baseline: which running instances to stop.

The ServerlessLLM paper (Fu et al., OSDI'24) compares live migration with a locality-aware
scheduler that, like Shepherd (Zhang et al., NSDI'23), preempts running work to free a GPU: the
victims' running requests are stopped and re-queued, losing the tokens they had computed. Here the
victims are the instances whose loss is smallest: the fewest tokens so far (prompt plus generated,
what the requests must compute again), then the fewest victims, among the sets that free enough GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sllmsim.core.migration import movable_instances
from sllmsim.core.snapshot import NodeView, RunningInstanceView


@dataclass(frozen=True, slots=True)
class PreemptionPlan:
    """Stop ``instance_ids`` on ``node_id``: their running requests go back to their model's queue
    and their ``freed_gpus`` GPUs become free at once."""

    node_id: str
    instance_ids: tuple[str, ...]
    models: tuple[str, ...]
    """Model of each victim, in the order of ``instance_ids``."""
    tokens_lost: int
    """Tokens so far of the victims: the work their requests must redo."""
    freed_gpus: int


def choose_preemption_victims(node: NodeView, gpus_to_free: int,
                              placing_model: str | None = None) -> PreemptionPlan | None:
    """The victims on ``node`` that free at least ``gpus_to_free`` GPUs losing the fewest tokens, or
    None when the instances listed in ``node.running`` (other than ``placing_model``'s) cannot.

    A covering knapsack solved by dynamic programming over the instances: ``best[f]`` is the
    cheapest set found so far freeing ``f`` GPUs (``f`` capped at the shortage). Ties go to fewer
    victims, then to the lexically first sorted instance ids.
    """
    if gpus_to_free <= 0:
        return PreemptionPlan(node.node_id, (), (), 0, 0)
    candidates = sorted(movable_instances(node, placing_model), key=lambda i: i.instance_id)
    Choice = tuple[int, int, tuple[str, ...]]  # (tokens lost, victims, sorted instance ids)
    best: list[Choice | None] = [None] * (gpus_to_free + 1)
    best[0] = (0, 0, ())
    for inst in candidates:
        row = list(best)  # extend the sets found before this instance, so each is used at most once
        for freed in range(gpus_to_free + 1):
            prev = row[freed]
            if prev is None:
                continue
            to = min(freed + inst.num_gpus, gpus_to_free)
            cand = (prev[0] + inst.tokens_so_far, prev[1] + 1, tuple(sorted(prev[2] + (inst.instance_id,))))
            if best[to] is None or cand < best[to]:
                best[to] = cand
    chosen = best[gpus_to_free]
    if chosen is None:
        return None
    by_id: dict[str, RunningInstanceView] = {i.instance_id: i for i in candidates}
    victims = [by_id[i] for i in chosen[2]]
    return PreemptionPlan(node.node_id, chosen[2], tuple(v.model.name for v in victims), chosen[0],
                          sum(v.num_gpus for v in victims))
