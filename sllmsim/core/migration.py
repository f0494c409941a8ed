"""Live-migration planning: which running instances to move off a node so a new instance fits there.

ServerlessLLM (Fu et al., OSDI'24, §5) frees the node that would start a model fastest by migrating
running inferences elsewhere instead of starting the model on a slower node. Moving one instance
costs the time to load its model on the destination plus the time to resume it there
(``alpha × tokens so far + beta``); the planner picks the set of moves that frees enough GPUs at
the least total cost.

Cost model (what :func:`plan_migration` minimises, exactly):

- ``resume_s = alpha × tokens_so_far + beta`` of the instance's model.
- ``load_s`` is :func:`~sllmsim.core.estimate.startup_estimate_s` of the instance's model on the
  destination (the same estimator as placement). Loads on one node are serialised by its loading
  queue, so when several moves share a destination the later ones also wait for the earlier planned
  loads; the plan queues them shortest load first, which minimises the sum of their waits.
- A destination is another node, allowed by the migrated model's ``target_nodes``, whose free GPUs
  are consumed as moves are assigned: two moves never count the same free GPU.
- ``total_cost_s`` is the sum of the moves' ``resume_s + load_s``, as in the reference scheduler,
  which adds it to the placement option's estimate.

The search is a knapsack-style dynamic program over the node's instances: the state after
deciding the first ``i`` instances is (GPUs freed so far, capped at the shortage; GPUs taken and
loads queued on each destination used), so two partial plans that leave the rest of the problem
the same are merged and only the cheaper is kept. Two prunings keep it small without losing the
optimum: a plan needs at most ``shortage`` moves, so each instance only needs its ``shortage``
cheapest destinations; and a partial plan is dropped when its cost plus a lower bound on the rest
(each instance left priced at its cheapest destination as the partial plan leaves it) cannot beat
the best full plan found so far, which a greedy plan seeds. The result is optimal to within a
relative 1e-12 (float rounding), checked against brute force in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sllmsim.core.estimate import startup_estimate_s
from sllmsim.core.snapshot import ClusterView, NodeView, RunningInstanceView, Tier, node_sort_key

# A plan must beat the best one found by more than this relative margin to replace it. Costs summed
# in different orders differ in their last bits; without the margin, plans that only tie (common on
# identical nodes) would all be explored and the search would blow up.
_TIE_MARGIN = 1e-12


def resume_time_s(instance: RunningInstanceView) -> float:
    """Seconds the destination needs to resume ``instance``: ``alpha × tokens so far + beta``."""
    model = instance.model
    return model.resume_alpha_s_per_token * instance.tokens_so_far + model.resume_beta_s


@dataclass(frozen=True, slots=True)
class MigrationMove:
    """Move one running instance to another node."""

    instance_id: str
    model: str
    from_node: str
    to_node: str
    num_gpus: int
    """GPUs freed on ``from_node`` and taken on ``to_node``."""
    resume_s: float
    load_s: float
    """Estimated seconds until ``to_node`` has the model loaded: its loading backlog, the loads of
    earlier moves of this plan to the same node, then this load."""
    tier: Tier
    """Tier ``to_node`` loads the checkpoint from."""
    cost_s: float
    """``resume_s + load_s``."""


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """The moves that free ``freed_gpus`` GPUs on ``node_id``, in the order to carry them out
    (grouped by destination; each destination's loads queue in this order)."""

    node_id: str
    moves: tuple[MigrationMove, ...]
    total_cost_s: float
    freed_gpus: int


@dataclass(frozen=True, slots=True)
class _Dest:
    """One destination candidate of one instance."""

    estimate_s: float
    """startup_estimate_s on the destination as it is now (its backlog included)."""
    duration_s: float
    """The same load without the backlog: how long it holds the destination's loading queue."""
    index: int
    tier: Tier


def movable_from_s(placed_s: float, ready_s: float) -> float:
    """When an instance placed at ``placed_s`` and ready at ``ready_s`` may first be migrated or
    preempted: once it has served for as long as it took to start, so that at most half of any
    instance's GPU time goes to starting it however often placements want its GPUs (the thrash
    guard both runtimes apply before listing an instance in :attr:`NodeView.running`)."""
    return ready_s + (ready_s - placed_s)


def movable_instances(node: NodeView, placing_model: str | None) -> list[RunningInstanceView]:
    """Instances of ``node`` that may make room: all listed ones but those of ``placing_model``
    (moving an instance of a model to start another instance of the same model gains nothing)."""
    return [i for i in node.running if i.model.name != placing_model]


def _schedule(node: NodeView, dest_nodes: list[NodeView], instances: list[RunningInstanceView],
              dests: list[list[_Dest]], moves: tuple[tuple[int, int], ...]) -> tuple[MigrationMove, ...]:
    """Turn (instance index, destination option index) pairs into ordered, costed moves."""
    per_dest: dict[int, list[tuple[RunningInstanceView, _Dest]]] = {}
    for inst_i, opt_i in moves:
        dest = dests[inst_i][opt_i]
        per_dest.setdefault(dest.index, []).append((instances[inst_i], dest))
    out = []
    for dest_index in sorted(per_dest, key=lambda d: node_sort_key(dest_nodes[d].node_id)):
        queued_s = 0.0
        for inst, dest in sorted(per_dest[dest_index], key=lambda p: (p[1].duration_s, p[0].instance_id)):
            # The first load waits for the destination's backlog only (exactly startup_estimate_s);
            # each later one also for the planned loads queued before it.
            load_s = dest.estimate_s + queued_s
            queued_s += dest.duration_s
            resume_s = resume_time_s(inst)
            out.append(MigrationMove(inst.instance_id, inst.model.name, node.node_id,
                                     dest_nodes[dest_index].node_id, inst.num_gpus, resume_s, load_s,
                                     dest.tier, resume_s + load_s))
    return tuple(out)


def _cost(moves: tuple[MigrationMove, ...]) -> float:
    return math.fsum(m.cost_s for m in moves)


# One destination's use by a partial plan: (destination index, GPUs taken, sorted queued load durations).
_Use = tuple[int, int, tuple[float, ...]]
# A partial or full plan: (instance index, option index) pairs.
_Moves = tuple[tuple[int, int], ...]


class _Search:
    """The dynamic program of :func:`plan_migration` over one node's movable instances.

    The cost of adding instance ``i`` at a destination already holding queued loads ``Q`` is, with
    the loads served shortest first, ``resume_i + estimate_i + sum(min(q, duration_i) for q in Q)``:
    the new load waits for the shorter ones, and delays each longer one by its own duration.
    """

    def __init__(self, node: NodeView, dest_nodes: list[NodeView], instances: list[RunningInstanceView],
                 options: list[list[_Dest]], gpus_to_free: int):
        self.node = node
        self.dest_nodes = dest_nodes
        self.instances = instances
        self.options = options
        self.need = gpus_to_free
        self.gpus = [i.num_gpus for i in instances]
        self.resume = [resume_time_s(i) for i in instances]
        self.best: tuple[float, _Moves] | None = None

    def marginal_s(self, i: int, dest: _Dest, used: dict[int, tuple[int, tuple[float, ...]]]) -> float | None:
        """Added cost of moving instance ``i`` to ``dest`` after ``used``; None if it has no room."""
        taken, loads = used.get(dest.index, (0, ()))
        if taken + self.gpus[i] > self.dest_nodes[dest.index].free_gpus:
            return None
        return self.resume[i] + dest.estimate_s + sum(min(q, dest.duration_s) for q in loads)

    def schedule(self, moves: _Moves) -> tuple[MigrationMove, ...]:
        return _schedule(self.node, self.dest_nodes, self.instances, self.options, moves)

    def beats_best(self, cost_s: float) -> bool:
        return self.best is None or cost_s < self.best[0] * (1 - _TIE_MARGIN)

    def consider(self, cost_s: float, moves: _Moves) -> None:
        """Keep the full plan ``moves`` if it is cheaper than the best so far (the first found wins a tie)."""
        if self.beats_best(cost_s):
            self.best = (_cost(self.schedule(moves)), moves)

    def cover_cost_s(self, costs: list[float], first: int, gpus: int) -> float:
        """Least sum of ``costs[j]`` over instances ``j >= first`` freeing at least ``gpus`` GPUs."""
        table = [0.0] + [math.inf] * gpus
        for j in range(first, len(self.instances)):
            if math.isinf(costs[j]):
                continue
            g = self.gpus[j]
            for r in range(gpus, 0, -1):
                via = table[max(r - g, 0)] + costs[j]
                if via < table[r]:
                    table[r] = via
        return table[gpus]

    def promising(self, cost_s: float, first: int, freed: int,
                  used: dict[int, tuple[int, tuple[float, ...]]]) -> bool:
        """Whether a partial plan might still beat the best full plan.

        Each instance left is priced at its cheapest destination given what the partial plan has
        already queued and taken there; interactions among the instances left are ignored, which
        only lowers the bound, so no plan as good as the best is ever dropped.
        """
        costs = [math.inf] * len(self.instances)
        for j in range(first, len(self.instances)):
            prices = [m for m in (self.marginal_s(j, d, used) for d in self.options[j]) if m is not None]
            if prices:
                costs[j] = min(prices)
        bound = cost_s + self.cover_cost_s(costs, first, self.need - freed)
        if math.isinf(bound):
            return False  # the instances left cannot free the rest
        return self.beats_best(bound)

    def greedy(self, order: list[int]) -> None:
        """A quick full plan to prune with: each instance in ``order`` to its cheapest room."""
        used: dict[int, tuple[int, tuple[float, ...]]] = {}
        cost_s, freed, moves = 0.0, 0, ()
        for i in order:
            priced = [(m, o) for o, d in enumerate(self.options[i])
                      if (m := self.marginal_s(i, d, used)) is not None]
            if not priced:
                continue
            price, opt_i = min(priced)
            dest = self.options[i][opt_i]
            taken, loads = used.get(dest.index, (0, ()))
            used[dest.index] = (taken + self.gpus[i], tuple(sorted(loads + (dest.duration_s,))))
            cost_s, freed, moves = cost_s + price, freed + self.gpus[i], moves + ((i, opt_i),)
            if freed >= self.need:
                self.consider(cost_s, moves)
                return

    def run(self, best_single_s: list[float]) -> _Moves | None:
        """The best full plan, or None."""
        n = len(self.instances)
        if math.isinf(self.cover_cost_s(best_single_s, 0, self.need)):
            return None
        self.greedy(list(range(n)))
        self.greedy(sorted(range(n), key=lambda i: best_single_s[i] / self.gpus[i]))

        states: dict[tuple[int, tuple[_Use, ...]], tuple[float, int, _Moves]] = {(0, ()): (0.0, 0, ())}
        for i in range(n):
            nxt: dict[tuple[int, tuple[_Use, ...]], tuple[float, int, _Moves]] = {}
            for (freed, uses), (cost_s, count, moves) in states.items():
                used = {d: (taken, loads) for d, taken, loads in uses}
                if self.promising(cost_s, i + 1, freed, used):
                    _offer(nxt, (freed, uses), (cost_s, count, moves))  # instance i stays
                for opt_i, dest in enumerate(self.options[i]):
                    price = self.marginal_s(i, dest, used)
                    if price is None:
                        continue
                    new_cost, new_moves = cost_s + price, moves + ((i, opt_i),)
                    new_freed = min(freed + self.gpus[i], self.need)
                    if new_freed == self.need:
                        # A full plan: moving more would only add cost, so it leaves the search here.
                        self.consider(new_cost, new_moves)
                        continue
                    taken, loads = used.get(dest.index, (0, ()))
                    new_used = dict(used)
                    new_used[dest.index] = (taken + self.gpus[i], tuple(sorted(loads + (dest.duration_s,))))
                    if not self.promising(new_cost, i + 1, new_freed, new_used):
                        continue
                    key = (new_freed, tuple(sorted((d, t, q) for d, (t, q) in new_used.items())))
                    _offer(nxt, key, (new_cost, count + 1, new_moves))
            # Full plans found late in the layer may prune partial plans kept earlier in it.
            states = {key: value for key, value in nxt.items()
                      if self.promising(value[0], i + 1, key[0], {d: (t, q) for d, t, q in key[1]})}
        return None if self.best is None else self.best[1]


def _offer(table: dict, key: tuple, value: tuple) -> None:
    """Keep the better of two partial plans that leave the same problem (cost, moves, then order)."""
    held = table.get(key)
    if held is None or value < held:
        table[key] = value


def plan_migration(node: NodeView, cluster: ClusterView, gpus_to_free: int,
                   placing_model: str | None = None) -> MigrationPlan | None:
    """The cheapest moves that free at least ``gpus_to_free`` GPUs on ``node``, or None if none do.

    ``node.running`` lists the instances that may move; ``cluster`` gives the possible
    destinations (every other node, with their free GPUs and storage). ``placing_model`` names the
    model the GPUs are freed for, whose own instances are never moved. Among plans of equal cost
    the search keeps the first it finds; its order is fixed, so the same snapshot gives the same plan.
    """
    if gpus_to_free <= 0:
        return MigrationPlan(node.node_id, (), 0.0, 0)
    instances = movable_instances(node, placing_model)
    if sum(i.num_gpus for i in instances) < gpus_to_free:
        return None
    dest_nodes = [n for n in cluster.nodes if n.node_id != node.node_id]
    # An optimal plan never needs more moves than GPUs to free (each move frees at least one, and a
    # move that is not needed only adds cost); so an instance goes to one of its `max_moves`
    # cheapest destinations: a cheaper one left unused by the other moves would do at least as well.
    max_moves = min(gpus_to_free, len(instances))
    idle_dest_nodes = [replace(n, io_backlog_s=0.0) for n in dest_nodes]

    scored = []
    for inst in instances:
        allowed = inst.model.target_nodes
        options = []
        for d_i, dest in enumerate(dest_nodes):
            if dest.free_gpus < inst.num_gpus or (allowed is not None and dest.node_id not in allowed):
                continue
            estimate_s, tier = startup_estimate_s(dest, inst.model)
            duration_s, _ = startup_estimate_s(idle_dest_nodes[d_i], inst.model)
            options.append((estimate_s, node_sort_key(dest.node_id), _Dest(estimate_s, duration_s, d_i, tier)))
        options.sort(key=lambda o: o[:2])
        if options:
            best_s = resume_time_s(inst) + options[0][0]
            scored.append((best_s, inst.instance_id, inst, [o[2] for o in options[:max_moves]]))
    # Cheapest instances first: good full plans appear early and prune the rest sooner.
    scored.sort(key=lambda s: (s[0], s[1]))
    search = _Search(node, dest_nodes, [s[2] for s in scored], [s[3] for s in scored], gpus_to_free)
    best = search.run([s[0] for s in scored])
    if best is None:
        return None
    moves = search.schedule(best)
    return MigrationPlan(node.node_id, moves, _cost(moves), sum(m.num_gpus for m in moves))
