"""Whether a placement is worth attempting: the one question both runtimes ask before :func:`place`.

A model whose instance simply waits for GPUs would otherwise be ranked (and, with logging on, log
an empty ranking) at every arrival and every retry. The answer depends only on the snapshot: the
runtime lists in each node's view the running instances it allows to be moved or stopped
(``running``) and the idle instances it allows to be reclaimed (``idle``); a runtime that does
neither lists none, and the question becomes "has some allowed node enough free GPUs".
"""

from __future__ import annotations

from sllmsim.core.reclaim import with_idle_reclaimed
from sllmsim.core.snapshot import ClusterView, ModelView


def worth_attempting(model: ModelView, cluster: ClusterView, confirm=None) -> bool:
    """Whether some node that ``model``'s ``target_nodes`` allow (with enough GPUs in all) can host a
    new instance now or after making room.

    True when such a node has ``model.num_gpus`` GPUs free, or free plus held by its reclaimable
    idle instances (of other models), or free plus those plus held by its listed running instances
    of other models. The last is only necessary for a plan to exist (the policy decides whether and
    where one does): when ``confirm`` (a :class:`~sllmsim.core.placement.PlacementPolicy` whose
    ranking is pure, e.g. storage-aware with migration) is given, the room that running instances
    could make must also give ``confirm.rank`` an option on the cluster with its idle instances
    reclaimed. Idle and free GPUs alone need no confirmation: the reclaimed cluster then has a
    node with the GPUs free, which every policy ranks.
    """
    need = model.num_gpus
    name = model.name
    allowed = None if model.target_nodes is None else set(model.target_nodes)
    by_running = False
    for node in cluster.nodes:
        if node.total_gpus < need or (allowed is not None and node.node_id not in allowed):
            continue
        gpus = node.free_gpus
        if gpus >= need:
            return True
        for inst in node.idle:
            if inst.model != name:
                gpus += inst.num_gpus
        if gpus >= need:
            return True
        if not by_running:
            for inst in node.running:
                if inst.model.name != name:
                    gpus += inst.model.num_gpus
            by_running = gpus >= need
    if not by_running:
        return False
    if confirm is None:
        return True
    if any(n.idle for n in cluster.nodes):
        cluster = with_idle_reclaimed(cluster, name)
    return bool(confirm.rank(model, cluster))
