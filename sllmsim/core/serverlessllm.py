"""The ``serverlessllm`` placement policy: ServerlessLLM 0.8.0's ``StorageAwareScheduler``, decision for
decision.

For a researcher who compares against the real system, this policy takes the reference's choices
(``sllm/schedulers/storage_aware_scheduler.py`` of the ``serverless-llm`` 0.8.0 package, ``schedule``
and the sort in its control loop) rather than the better physics of ``storage_aware``:

- only nodes whose local disk holds the checkpoint are options (the reference skips the rest, since
  a download from the model hub is hard to estimate);
- a node whose host memory holds the checkpoint is priced ``size / host-to-GPU bandwidth``, with no
  queue time; any other is priced ``queue time + size / disk bandwidth``, whatever the host-to-GPU
  link; no fixed load cost is added;
- options are sorted by ``(estimate, node id)`` with node ids compared as text ("10" before "5").

One deliberate difference: ``placement_config.target_nodes`` is honoured, as the spec documents
(0.8.0 reads the key but never applies it). ``tests/core/test_serverlessllm_policy.py`` checks every
other decision against the package's own ``schedule()``. Live migration (the reference's
``enable_migration``) is not reproduced: the policy refuses it (see :func:`make_placement_policy`).
"""

from __future__ import annotations

from sllmsim.core.placement import PlacementOption, PlacementPolicy
from sllmsim.core.registry import register
from sllmsim.core.snapshot import ClusterView, ModelView, Tier


def _reference_order(option: PlacementOption) -> tuple[float, str]:
    # The reference's sort key: the estimate, then the node id as a string.
    return option.estimate_s, option.node_id


@register("placement", "serverlessllm")
class ServerlessLLMPlacement(PlacementPolicy):
    """ServerlessLLM 0.8.0's storage-aware scheduler (``StorageAwareScheduler.schedule``), exactly,
    except that ``target_nodes`` restricts the nodes as the spec documents.

    A node is an option when it has enough free GPUs, the model's ``target_nodes`` allow it, and its
    local disk holds the checkpoint. Its estimate is ``size / host_to_gpu`` when the checkpoint is in
    its host memory, else ``io_backlog + size / disk`` (the arithmetic, and so every bit, of the
    reference). A model with no local copy on any allowed node has no option and waits, as in the
    reference.
    """

    def rank(self, model: ModelView, cluster: ClusterView) -> list[PlacementOption]:
        name, size, need = model.name, model.size_bytes, model.num_gpus
        allowed = None if model.target_nodes is None else set(model.target_nodes)
        options = []
        for node in cluster.nodes:
            if node.free_gpus < need or name not in node.disk_models:
                continue
            if allowed is not None and node.node_id not in allowed:
                continue
            if name in node.host_models:
                options.append(PlacementOption(node.node_id, size / node.host_to_gpu_bytes_per_s, Tier.HOST))
            else:
                options.append(PlacementOption(
                    node.node_id, node.io_backlog_s + size / node.disk_bandwidth_bytes_per_s, Tier.DISK))
        options.sort(key=_reference_order)
        return options
