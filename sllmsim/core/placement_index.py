"""An index of a snapshot's nodes that finds the storage-aware placement decision without
evaluating every node, carried from snapshot to snapshot.

A decision by startup estimate (:func:`~sllmsim.core.estimate.startup_estimate_s`) over a
10,000-node snapshot costs milliseconds when every node is evaluated. Most nodes of a large
cluster share the figures the estimate depends on, so the index groups them:

- nodes by their *static figures* (host-to-GPU, disk and network bandwidths, fixed load costs) and
  free GPUs: within one group, a model that no node of the group holds has the same estimate
  function ``(backlog + fixed) + size / bottleneck``, which does not decrease as the backlog grows
  (float addition rounds monotonically);
- within each group, nodes by distinct backlog, ascending, each backlog's nodes in tie-break order.

A decision then looks at the nodes that hold the model in host memory or on disk (grouped the same
way per model, the first time the model is asked about) and at the rest, and from each group only
at the first node of the smallest backlogs that can still tie or beat the best found. The
arithmetic is the estimate's own, operation for operation, and ties go to the smallest
``(node_sort_key(node_id), position in the cluster)`` as in the single pass, so the decision is the
same bit for bit (``tests/core/test_placement_fast.py`` compares it with a straightforward ranking
on random snapshots).

Building the index costs a few passes over the nodes, so it pays off only when it is reused: the
runtimes build a new snapshot per decision but keep the views of the nodes that did not change, and
:class:`SnapshotIndexer` (one per policy) carries the index to the next snapshot by regrouping only
the replaced views (found by identity: a view never changes).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sllmsim.core.estimate import startup_estimate_s
from sllmsim.core.snapshot import ClusterView, ModelView, NodeView, Tier, node_sort_key

_HOST, _DISK, _NETWORK = Tier.HOST, Tier.DISK, Tier.NETWORK
_NOTHING: frozenset[int] = frozenset()


class SnapshotIndexer:
    """A policy's placement index, carried from one snapshot to the next.

    A runtime hands the core a new snapshot per decision, but rebuilds only the views of the nodes
    that changed and reuses the others, so the index of the last snapshot is brought up to date by
    regrouping those few (:meth:`PlacementIndex.advance`). Building an index costs a few passes
    over the nodes, so one is built only when two consecutive snapshots share most of their views
    (or the same snapshot is asked again), and never below ``min_nodes`` nodes, where the single
    pass is as cheap. Which path answers changes only the cost, never the decision.
    """

    min_nodes = 256
    """Smaller snapshots are always decided by the single pass."""
    max_changed_share = 0.125
    """An index is carried to a snapshot with at most this share of its node views replaced."""

    def __init__(self) -> None:
        self._index: PlacementIndex | None = None
        self._last: tuple[NodeView, ...] | None = None
        """The last snapshot's nodes, while there is no index."""

    def index_for(self, cluster: ClusterView) -> PlacementIndex | None:
        """The index of ``cluster``, or None when the single pass should decide."""
        nodes = cluster.nodes
        if len(nodes) < self.min_nodes:
            return None
        max_changed = int(len(nodes) * self.max_changed_share)
        index = self._index
        if index is not None:
            if index.advance(nodes, max_changed):
                return index
            self._index = None  # the cluster moved on wholesale (or is another): start over
        last, self._last = self._last, nodes
        if last is None or not _mostly_shared(last, nodes, max_changed):
            return None
        self._last = None
        index = self._index = PlacementIndex(nodes)
        return index


def _mostly_shared(old: tuple[NodeView, ...], new: tuple[NodeView, ...], max_changed: int) -> bool:
    """Whether ``new`` is ``old`` with at most ``max_changed`` node views replaced."""
    return len(old) == len(new) and sum(map(operator.is_not, old, new)) <= max_changed


@functools.lru_cache(maxsize=16)
def _tie_order(node_ids: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each node's rank in tie-break order, ``(node_sort_key(node_id), cluster position)``, and the
    positions in that order (memoised: a cluster keeps its node ids from one snapshot to the next)."""
    order = sorted(range(len(node_ids)), key=lambda i: (node_sort_key(node_ids[i]), i))
    ranks = [0] * len(node_ids)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return tuple(ranks), tuple(order)


class _Levels:
    """The nodes of one group (same free GPUs and static figures) by distinct backlog."""

    __slots__ = ("backlogs", "positions")

    def __init__(self) -> None:
        self.backlogs: list[float] = []
        """The distinct backlogs, ascending."""
        self.positions: dict[float, list[int]] = {}
        """Each backlog's node positions, in tie-break order."""


#: Groups by (free GPUs, host-to-GPU, disk and network bandwidths, fixed load seconds, per-layer
#: load seconds).
_Groups = dict[tuple, _Levels]

# One C call reads what places a node in the groups (free GPUs, static figures, backlog), several
# times cheaper than a tuple display of its attributes.
_level_key = operator.attrgetter("free_gpus", "host_to_gpu_bytes_per_s", "disk_bandwidth_bytes_per_s",
                                 "network_bandwidth_bytes_per_s", "load_overhead_s", "load_overhead_per_layer_s",
                                 "io_backlog_s")
_node_id = operator.attrgetter("node_id")
_host_models = operator.attrgetter("host_models")
_disk_models = operator.attrgetter("disk_models")


def _group(keys: Sequence[tuple], positions_in_rank_order: Iterable[int]) -> _Groups:
    """The given positions grouped by their level keys (``keys[i]``)."""
    by_key: defaultdict[tuple, list[int]] = defaultdict(list)
    for i in positions_in_rank_order:  # in tie-break order, so that every level's list is too
        by_key[keys[i]].append(i)
    groups: _Groups = {}
    for key, positions in by_key.items():
        backlog = key[6]
        if backlog != backlog:  # NaN: its estimate never compares smaller, so it never wins
            continue
        levels = groups.get(key[:6])
        if levels is None:
            levels = groups[key[:6]] = _Levels()
        levels.backlogs.append(backlog)
        levels.positions[backlog] = positions
    for levels in groups.values():
        levels.backlogs.sort()
    return groups


def _add(groups: _Groups, key: tuple, i: int, ranks: Sequence[int]) -> None:
    backlog = key[6]
    if backlog != backlog:
        return
    levels = groups.get(key[:6])
    if levels is None:
        levels = groups[key[:6]] = _Levels()
    positions = levels.positions.get(backlog)
    if positions is None:
        levels.positions[backlog] = [i]
        bisect.insort(levels.backlogs, backlog)
    else:
        bisect.insort(positions, i, key=ranks.__getitem__)


def _remove(groups: _Groups, key: tuple, i: int) -> None:
    backlog = key[6]
    if backlog != backlog:
        return
    levels = groups[key[:6]]
    positions = levels.positions[backlog]
    positions.remove(i)
    if not positions:
        del levels.positions[backlog]
        levels.backlogs.remove(backlog)
        if not levels.backlogs:
            del groups[key[:6]]


def _tier(name: str, host: frozenset[str], disk: frozenset[str]) -> Tier | None:
    return _HOST if name in host else _DISK if name in disk else None


class _Holders:
    """The nodes holding one model's checkpoint, grouped like the whole snapshot, per tier."""

    __slots__ = ("host", "disk_only", "held")

    def __init__(self, index: PlacementIndex, name: str):
        host = [i for i, models in enumerate(index.hosts) if name in models]
        in_host = set(host)
        disk_only = [i for i, models in enumerate(index.disks) if name in models and i not in in_host]
        ranks = index.ranks
        self.host = _group(index.keys, sorted(host, key=ranks.__getitem__))
        self.disk_only = _group(index.keys, sorted(disk_only, key=ranks.__getitem__))
        self.held = in_host.union(disk_only)

    def move(self, i: int, old: tuple[Tier | None, tuple], new: tuple[Tier | None, tuple],
             ranks: Sequence[int]) -> None:
        """Node ``i`` went from (tier, level key) ``old`` to ``new``."""
        if old == new:
            return
        (old_tier, old_key), (new_tier, new_key) = old, new
        if old_tier is not None:
            _remove(self.host if old_tier is _HOST else self.disk_only, old_key, i)
            self.held.discard(i)
        if new_tier is not None:
            _add(self.host if new_tier is _HOST else self.disk_only, new_key, i, ranks)
            self.held.add(i)


class PlacementIndex:
    """Nodes of a snapshot grouped for :meth:`best_by_estimate`; :meth:`advance` carries it to a
    later snapshot of the same cluster by regrouping only the nodes whose view changed."""

    def __init__(self, nodes: tuple[NodeView, ...]):
        self.nodes = nodes
        self.ranks, order = _tie_order(tuple(map(_node_id, nodes)))
        self.keys = list(map(_level_key, nodes))
        self.hosts = list(map(_host_models, nodes))
        self.disks = list(map(_disk_models, nodes))
        self._positions_by_id: dict[str, list[int]] | None = None
        self._holders: dict[str, _Holders] = {}
        self._groups = _group(self.keys, order)

    def advance(self, nodes: tuple[NodeView, ...], max_changed: int) -> bool:
        """Make this the index of ``nodes`` when they are the indexed nodes with at most
        ``max_changed`` node views replaced (same node ids in the same order); False, leaving the
        index as it was, otherwise. Views are compared by identity: a view never changes."""
        old_nodes = self.nodes
        if nodes is old_nodes:
            return True
        if len(nodes) != len(old_nodes):
            return False
        changed = list(itertools.compress(range(len(nodes)), map(operator.is_not, nodes, old_nodes)))
        if len(changed) > max_changed or any(nodes[i].node_id != old_nodes[i].node_id for i in changed):
            return False
        ranks, keys, hosts, disks, holders = self.ranks, self.keys, self.hosts, self.disks, self._holders
        for i in changed:
            node = nodes[i]
            old_key, new_key = keys[i], _level_key(node)
            old_host, old_disk, new_host, new_disk = hosts[i], disks[i], node.host_models, node.disk_models
            if old_key != new_key:
                _remove(self._groups, old_key, i)
                _add(self._groups, new_key, i, ranks)
                affected = old_host | old_disk | new_host | new_disk
            else:
                affected = (old_host ^ new_host) | (old_disk ^ new_disk)
            for name in affected:
                found = holders.get(name)
                if found is not None:
                    found.move(i, (_tier(name, old_host, old_disk), old_key),
                               (_tier(name, new_host, new_disk), new_key), ranks)
            keys[i], hosts[i], disks[i] = new_key, new_host, new_disk
        self.nodes = nodes
        return True

    def holders(self, name: str) -> _Holders:
        """The nodes holding ``name`` (grouped the first time it is asked, then kept up to date)."""
        found = self._holders.get(name)
        if found is None:
            found = self._holders[name] = _Holders(self, name)
        return found

    def _allowed_positions(self, target_nodes: tuple[str, ...]) -> list[int]:
        if self._positions_by_id is None:
            by_id: dict[str, list[int]] = {}
            for i, node in enumerate(self.nodes):
                by_id.setdefault(node.node_id, []).append(i)
            self._positions_by_id = by_id
        by_id = self._positions_by_id
        return sorted({i for node_id in set(target_nodes) for i in by_id.get(node_id, ())})

    def best_by_estimate(self, model: ModelView) -> int | None:
        """Position of the feasible node with the smallest ``(startup estimate, tie-break rank)``,
        or None when no node has the free GPUs (and the ``target_nodes`` permission) it needs."""
        nodes, ranks, need = self.nodes, self.ranks, model.num_gpus
        # As the single pass: a node is taken when its estimate is at most the best so far (so an
        # infinite estimate can win, a NaN one never), ties going to the smaller rank.
        best_s = math.inf
        best_rank = len(nodes)
        best_i = None
        if model.target_nodes is not None:
            # Few nodes are allowed, typically: evaluate each of them.
            for i in self._allowed_positions(model.target_nodes):
                node = nodes[i]
                if node.free_gpus >= need:
                    estimate = startup_estimate_s(node, model)[0]
                    if estimate < best_s or (estimate == best_s and ranks[i] < best_rank):
                        best_s, best_rank, best_i = estimate, ranks[i], i
            return best_i
        holders = self.holders(model.name)
        size, layers = model.size_bytes, model.num_layers
        # Per group, one estimate per distinct backlog, smallest first: startup_estimate_s's
        # operations in its order, (backlog + fixed) + size / bottleneck of the tier.
        for tier, groups in ((_HOST, holders.host), (_DISK, holders.disk_only), (_NETWORK, self._groups)):
            skip = holders.held if tier is _NETWORK else _NOTHING
            for (free_gpus, host_to_gpu, disk, network, overhead_s, per_layer_s), levels in groups.items():
                if free_gpus < need:
                    continue
                fixed_s = overhead_s + layers * per_layer_s
                bottleneck = host_to_gpu
                if tier is not _HOST:
                    if disk < bottleneck:
                        bottleneck = disk
                    if tier is _NETWORK and network < bottleneck:
                        bottleneck = network
                transfer_s = size / bottleneck
                by_backlog = levels.positions
                for backlog in levels.backlogs:
                    estimate = (backlog + fixed_s) + transfer_s
                    if estimate > best_s:
                        break  # later backlogs are no smaller
                    for i in by_backlog[backlog]:
                        if i in skip:  # holds the checkpoint: priced by its own tier above
                            continue
                        # The first position left is this backlog's best (tie-break order).
                        if estimate < best_s or (estimate == best_s and ranks[i] < best_rank):
                            best_s, best_rank, best_i = estimate, ranks[i], i
                        break
        return best_i
