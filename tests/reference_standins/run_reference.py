"""Runs code of the installed ``serverless-llm`` 0.8.0 package without Ray (``tests/reference_sllm.py``
starts it in a subprocess, with ``tests/reference_standins`` first on the path so that ``import ray``
finds the stand-in).

- ``run_reference.py cli ARGS...``: the package's ``sllm`` command (``sllm.cli.clic:cli``), unchanged.
  Its module imports the reference's server side (``sllm.controller``: the store manager, which needs
  the ``serverless-llm-store`` package and a GPU stack), which the client commands never call; a
  stand-in module takes its place.
- ``run_reference.py schedule IN.json OUT.json``: for each snapshot in IN.json, the package's own
  ``StorageAwareScheduler.schedule`` (migration off), sorted by the key its control loop sorts with;
  writes ``[[node_id, latency], ...]`` per snapshot to OUT.json (floats round-trip exactly in JSON).
"""

from __future__ import annotations

import asyncio
import json
import sys
import types


def _stand_in_server_side() -> None:
    controller = types.ModuleType("sllm.controller")

    class SllmController:  # noqa: D401 - a placeholder the client commands never instantiate
        """Stand-in for the reference controller (server side only)."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError("the reference controller is stood in for; only client commands run here")

    controller.SllmController = SllmController
    sys.modules["sllm.controller"] = controller


def _reference_inputs(snapshot: dict) -> tuple:
    """The four mappings ``schedule()`` reads, shaped as the reference's store manager returns them."""
    worker_nodes, store_info, hardware_info = {}, {}, {}
    model, size = snapshot["model"], snapshot["size_bytes"]
    model_info = {model: size, **{m: s for m, s in snapshot.get("other_models", {}).items()}}
    for node in snapshot["nodes"]:
        node_id = node["node_id"]
        worker_nodes[node_id] = {"free_gpu": node["free_gpus"], "total_gpu": node["total_gpus"]}
        disk = {m: ([f"/models/{m}"], model_info[m]) for m in node["disk_models"]}
        pinned = {m: True for m in node["host_models"]}
        store_info[node_id] = [disk, pinned, node["io_backlog_s"]]
        hardware_info[node_id] = {"disk_bandwidth": node["disk_bandwidth_bytes_per_s"],
                                  "pcie_bandwidth": node["host_to_gpu_bytes_per_s"]}
    return worker_nodes, model_info, store_info, hardware_info


async def _schedule_all(snapshots: list[dict]) -> list[list]:
    from sllm.schedulers.storage_aware_scheduler import StorageAwareScheduler

    scheduler = StorageAwareScheduler({"enable_migration": False})  # needs a running event loop
    out = []
    for snapshot in snapshots:
        worker_nodes, model_info, store_info, hardware_info = _reference_inputs(snapshot)
        options = await scheduler.schedule(snapshot["model"], snapshot["num_gpus"], worker_nodes, model_info,
                                           store_info, hardware_info)
        # The control loop's sort (storage_aware_scheduler.py: key (latency, node_id)).
        options.sort(key=lambda plan: (plan.latency, plan.node_id))
        out.append([[plan.node_id, plan.latency] for plan in options])
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["cli"]:
        _stand_in_server_side()
        from sllm.cli.clic import cli

        cli.main(args=argv[1:], prog_name="sllm")
        return 0
    if argv[:1] == ["schedule"] and len(argv) == 3:
        with open(argv[1]) as f:
            snapshots = json.load(f)
        result = asyncio.run(_schedule_all(snapshots))
        with open(argv[2], "w") as f:
            json.dump(result, f)
        return 0
    print("usage: run_reference.py cli ARGS... | schedule IN.json OUT.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
