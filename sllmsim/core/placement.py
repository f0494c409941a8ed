"""Where placements are decided: the placement policies and the one wrapper that applies them.

Every policy ranks the nodes that can host a new instance (enough free GPUs, allowed by
``placement_config.target_nodes``); :func:`place` logs the ranking exactly as ServerlessLLM's
storage-aware scheduler does and returns the first option.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

from sllmsim.core.estimate import startup_estimate_s
from sllmsim.core.snapshot import ClusterView, ModelView, NodeView, Tier, node_sort_key
from sllmsim.registry import register, resolve

logger = logging.getLogger("sllmsim.scheduler")


@dataclass(frozen=True, slots=True)
class PlacementOption:
    """One node that can host the instance, with its estimated startup time."""

    node_id: str
    estimate_s: float
    tier: Tier


def feasible_nodes(model: ModelView, cluster: ClusterView) -> list[NodeView]:
    """Nodes with enough free GPUs that the model's ``target_nodes`` allow, in cluster order."""
    allowed = model.target_nodes
    need = model.num_gpus
    if allowed is None:
        return [n for n in cluster.nodes if n.free_gpus >= need]
    allowed_set = set(allowed)
    return [n for n in cluster.nodes if n.free_gpus >= need and n.node_id in allowed_set]


def _options(nodes: list[NodeView], model: ModelView) -> list[PlacementOption]:
    out = []
    for node in nodes:
        estimate, tier = startup_estimate_s(node, model)
        out.append(PlacementOption(node.node_id, estimate, tier))
    return out


class PlacementPolicy(ABC):
    """Ranks candidate nodes for a new instance; the first option is the decision.

    Policies are pure over the snapshot; the only state they may keep is their own (a seeded
    random stream, a round-robin cursor).
    """

    policy_name: str = "?"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    @abstractmethod
    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        """Feasible options, best first; empty when no node can host the model now."""


@register("placement", "storage_aware")
class StorageAwarePlacement(PlacementPolicy):
    """ServerlessLLM's storage-aware placement (Fu et al., OSDI'24, §6): the node with the smallest
    estimated startup time, ties broken by node id."""

    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        options = _options(feasible_nodes(model, cluster), model)
        options.sort(key=lambda o: (o.estimate_s, node_sort_key(o.node_id)))
        return options


@register("placement", "first_fit")
class FirstFitPlacement(PlacementPolicy):
    """The reference implementation's FCFS scheduler: the first node (by id) with enough free GPUs."""

    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        options = _options(feasible_nodes(model, cluster), model)
        options.sort(key=lambda o: node_sort_key(o.node_id))
        return options


@register("placement", "random")
class RandomPlacement(PlacementPolicy):
    """The paper's "Serverless" baseline: any node with a free GPU, chosen at random (seeded)."""

    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        options = _options(feasible_nodes(model, cluster), model)
        self.rng.shuffle(options)
        return options


@register("placement", "round_robin")
class RoundRobinPlacement(PlacementPolicy):
    """Cycles through the nodes in id order, skipping nodes that cannot host the model."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._next = 0

    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        options = _options(feasible_nodes(model, cluster), model)
        if not options:
            return options
        order = sorted(cluster.nodes, key=lambda n: node_sort_key(n.node_id))
        position = {n.node_id: i for i, n in enumerate(order)}
        start = self._next % len(order)
        options.sort(key=lambda o: (position[o.node_id] - start) % len(order))
        self._next = position[options[0].node_id] + 1
        return options


def make_placement_policy(name: str, seed: int = 0) -> PlacementPolicy:
    """Instantiate the placement policy registered (or importable) as ``name``."""
    return resolve("placement", name)(seed=seed)


def place(policy: PlacementPolicy, model: ModelView, cluster: ClusterView) -> PlacementOption | None:
    """Rank the options, log them as the reference does, and return the chosen one (or None)."""
    options = policy.rank(model, cluster)
    if logger.isEnabledFor(logging.INFO):
        logger.info("Sorted scheduling options: %s", [(o.node_id, o.estimate_s) for o in options])
        if options:
            logger.info("Allocated node %s for model %s", options[0].node_id, model.name)
        else:
            logger.info("No node can host model %s now (needs %d free GPUs)", model.name, model.num_gpus)
    return options[0] if options else None
