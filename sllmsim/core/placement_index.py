"""A per-snapshot index that finds the storage-aware placement decision without evaluating every node.

A decision by startup estimate (:func:`~sllmsim.core.estimate.startup_estimate_s`) over a
10,000-node snapshot costs milliseconds when every node is evaluated. Most nodes of a large
cluster share the figures the estimate depends on, so the index groups them once per snapshot:

- nodes by their *static figures* (host-to-GPU, disk and network bandwidths, fixed load costs) and
  free GPUs: within one group, a model that no node of the group holds has the same estimate
  function ``(backlog + fixed) + size / bottleneck``, which does not decrease as the backlog grows
  (float addition rounds monotonically);
- within each group, nodes by distinct backlog, ascending, each backlog's nodes in tie-break order.

A decision then evaluates only the nodes that hold the model in host memory or on disk (listed per
model, the first time the model is asked about on this snapshot) exactly as the estimate does, and
from each group only the first node of the smallest backlogs that can still tie or beat the best
found. The arithmetic is the estimate's own, operation for operation, and ties go to the smallest
``(node_sort_key(node_id), position in the cluster)`` as in the single pass, so the decision is the
same bit for bit (``tests/core/test_placement_fast.py`` compares it with a straightforward ranking
on random snapshots).

Building the index is itself a pass over the nodes, so it pays off only when a snapshot is asked
more than once; :func:`placement_index` builds it on the second decision on the same snapshot.
A snapshot never changes, so the index stays true for as long as the snapshot lives.
"""

from __future__ import annotations

import functools
import math
import operator
from collections import defaultdict
from collections.abc import Sequence

from sllmsim.core.estimate import startup_estimate_s
from sllmsim.core.snapshot import ClusterView, ModelView, NodeView, Tier, node_sort_key

_HOST, _DISK, _NETWORK = Tier.HOST, Tier.DISK, Tier.NETWORK
_NOTHING: frozenset[int] = frozenset()

_INDEX = "placement_index"
_ASKED = "placement_asked"


def placement_index(cluster: ClusterView) -> PlacementIndex | None:
    """The index of ``cluster``, or None on the first decision asked of it (the single pass is
    cheaper than building an index that nobody reuses); built on the second and kept."""
    derived = cluster.derived
    index = derived.get(_INDEX)
    if index is None:
        if not derived.get(_ASKED):
            derived[_ASKED] = True
            return None
        index = derived[_INDEX] = PlacementIndex(cluster.nodes)
    return index


@functools.lru_cache(maxsize=16)
def _tie_order(node_ids: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each node's rank in tie-break order, ``(node_sort_key(node_id), cluster position)``, and the
    positions in that order (memoised: a cluster keeps its node ids from one snapshot to the next)."""
    order = sorted(range(len(node_ids)), key=lambda i: (node_sort_key(node_ids[i]), i))
    ranks = [0] * len(node_ids)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return tuple(ranks), tuple(order)


#: Nodes grouped for the scan: (free GPUs, static figures, [(backlog, positions in tie-break order)]
#: by ascending backlog), where the static figures are (host-to-GPU, disk, network bandwidths,
#: fixed load seconds, per-layer load seconds).
_Groups = list[tuple[int, tuple[float, float, float, float, float], list[tuple[float, list[int]]]]]


# One C call reads what groups a node (free GPUs, static figures, backlog), several times cheaper
# than a tuple display of its attributes.
_level_key = operator.attrgetter("free_gpus", "host_to_gpu_bytes_per_s", "disk_bandwidth_bytes_per_s",
                                 "network_bandwidth_bytes_per_s", "load_overhead_s", "load_overhead_per_layer_s",
                                 "io_backlog_s")
_first = operator.itemgetter(0)
_node_id = operator.attrgetter("node_id")
_host_models = operator.attrgetter("host_models")
_disk_models = operator.attrgetter("disk_models")


def _group(nodes: tuple[NodeView, ...], positions_in_rank_order: Sequence[int]) -> _Groups:
    """The given nodes grouped by free GPUs and static figures, then by distinct backlog."""
    levels: defaultdict[tuple, list[int]] = defaultdict(list)
    # In tie-break order, so that every level's positions are too.
    for i, key in zip(positions_in_rank_order, map(_level_key, map(nodes.__getitem__, positions_in_rank_order))):
        levels[key].append(i)
    groups: dict[tuple, list[tuple[float, list[int]]]] = {}
    for key, positions in levels.items():
        backlog = key[6]
        if backlog != backlog:  # NaN: its estimate never compares smaller, so it never wins
            continue
        groups.setdefault(key[:6], []).append((backlog, positions))
    return [(key[0], key[1:], sorted(by_backlog, key=_first)) for key, by_backlog in groups.items()]


class _Holders:
    """The nodes of a snapshot holding one model's checkpoint, grouped like the whole snapshot."""

    __slots__ = ("host", "disk_only", "held")

    def __init__(self, nodes: tuple[NodeView, ...], ranks: tuple[int, ...], hosts: list[frozenset[str]],
                 disks: list[frozenset[str]], name: str):
        host = [i for i, models in enumerate(hosts) if name in models]
        in_host = set(host)
        disk_only = [i for i, models in enumerate(disks) if name in models and i not in in_host]
        self.host = _group(nodes, sorted(host, key=ranks.__getitem__))
        self.disk_only = _group(nodes, sorted(disk_only, key=ranks.__getitem__))
        self.held = in_host.union(disk_only)


class PlacementIndex:
    """Nodes of one snapshot grouped for :meth:`best_by_estimate`."""

    def __init__(self, nodes: tuple[NodeView, ...]):
        self.nodes = nodes
        self.ranks, self._order = _tie_order(tuple(map(_node_id, nodes)))
        self._positions_by_id: dict[str, list[int]] | None = None
        self._holders: dict[str, _Holders] = {}
        self._hosts = list(map(_host_models, nodes))
        self._disks = list(map(_disk_models, nodes))
        self._groups = _group(nodes, self._order)

    def holders(self, name: str) -> _Holders:
        """The nodes holding ``name`` (grouped once per model and snapshot)."""
        found = self._holders.get(name)
        if found is None:
            found = self._holders[name] = _Holders(self.nodes, self.ranks, self._hosts, self._disks, name)
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
            for free_gpus, (host_to_gpu, disk, network, overhead_s, per_layer_s), levels in groups:
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
                for backlog, positions in levels:
                    estimate = (backlog + fixed_s) + transfer_s
                    if estimate > best_s:
                        break  # later backlogs are no smaller
                    for i in positions:
                        if i in skip:  # holds the checkpoint: priced by its own tier above
                            continue
                        # The first position left is this backlog's best (tie-break order).
                        if estimate < best_s or (estimate == best_s and ranks[i] < best_rank):
                            best_s, best_rank, best_i = estimate, ranks[i], i
                        break
        return best_i
