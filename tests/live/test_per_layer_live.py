"""Live mode's placement estimate prices a node's per-layer load cost with the model's depth (the
deploy config's ``num_layers``, else the stored checkpoint's config.json, else the catalog's), as the
simulator does."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from live.controller import Controller  # noqa: E402
from live.generation import GenerationRequest, SamplingParams  # noqa: E402
from live.records import LiveRecorder  # noqa: E402
from live.store import StoreRegistry  # noqa: E402
from live.worker import Finished, LocalNodeWorker  # noqa: E402
from sllmsim.catalog import config_num_layers  # noqa: E402
from sllmsim.config.hardware import parse_hardware  # noqa: E402
from test_server import spec_config  # noqa: E402

GiB = 1024**3
PER_LAYER_S = 0.25
NODE = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB", "disk_bandwidth": "5GB/s",
        "network_bandwidth": "10Gbps", "load_overhead_per_layer_s": PER_LAYER_S}


def test_the_placement_estimate_includes_the_per_layer_load_cost(tmp_path, tiny_model_dir):
    async def scenario():
        cluster = parse_hardware({"0": NODE}, "per-layer hardware")
        storage = tmp_path / "models"
        registry = StoreRegistry.for_cluster(storage, cluster, {"0": "cpu"})
        workers = {"0": LocalNodeWorker(cluster.nodes[0], registry.node("0"), "cpu")}
        controller = Controller(cluster, workers, registry, storage, LiveRecorder())
        await controller.start()
        try:
            assert controller.cluster_view().nodes[0].load_overhead_per_layer_s == PER_LAYER_S
            estimates = {}
            for name, extra in (("tiny-deep", {"num_layers": 6}), ("tiny-stored", {})):
                await controller.deploy(spec_config("opt-1.3b", tiny_model_dir, model=name, placement_config={},
                                                    **extra))
                ticket = await controller.admit(name)
                request = GenerationRequest(SamplingParams(max_tokens=2, temperature=0.0), prompt="hi")
                events = [e async for e in controller.generate(ticket, request)]
                assert isinstance(events[-1], Finished)
                line = next(li for li in reversed(controller.recorder.scheduler_log)
                            if li.startswith("Sorted scheduling options"))
                estimates[name] = float(line.split(", ")[1].rstrip(")]"))
            # Both read the same checkpoint from node 0's disk; the deep one pays the 6 layers its deploy
            # config declares, the other the depth of the checkpoint it really loads.
            stored = config_num_layers(tiny_model_dir)
            assert stored is not None and stored != 6
            assert controller._deployments["tiny-stored"].num_layers == stored
            assert estimates["tiny-deep"] - estimates["tiny-stored"] == pytest.approx((6 - stored) * PER_LAYER_S,
                                                                                      rel=1e-9)
        finally:
            await controller.close()

    asyncio.run(scenario())
