"""Live mode placed by the `serverlessllm` policy (ServerlessLLM 0.8.0's decisions)."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402
from test_server import HARDWARE, MESSAGES, spec_config  # noqa: E402

DISK_BYTES_PER_S = 5 * 1024**3  # the spec's disk_bandwidth, 5GB/s in binary units


def test_live_mode_places_with_the_reference_policy(tmp_path, tiny_model_factory):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices={"0": "cpu", "1": "cpu"},
                     placement="serverlessllm")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        sizes = {}
        for name, arch, node in (("opt-2.7b", "opt", "0"), ("opt-1.3b", "llama", "1")):
            # The checkpoint on the target node's disk, where the reference's registration puts it.
            cfg = spec_config(name, tiny_model_factory(arch), placement_config={"target_nodes": [node],
                                                                                 "local_disk": [node]})
            deployed = http.post("/register", json=cfg)
            assert deployed.status_code == 200, deployed.text
            sizes[name] = deployed.json()["size_bytes"]
        for name in sizes:
            assert http.post("/v1/chat/completions", json={"model": name, "messages": MESSAGES,
                                                           "max_tokens": 2}).status_code == 200
        records = http.get("/records").json()
    assert records["resolved_config"]["scheduler"] == "serverlessllm"
    # One option per model, priced as the reference prices a disk copy (no queue: nothing else loads).
    assert records["scheduler_log"] == [
        f"Sorted scheduling options: [('0', {sizes['opt-2.7b'] / DISK_BYTES_PER_S!r})]",
        "Allocated node 0 for model opt-2.7b",
        f"Sorted scheduling options: [('1', {sizes['opt-1.3b'] / DISK_BYTES_PER_S!r})]",
        "Allocated node 1 for model opt-1.3b",
    ]
    assert [(r["model"], r["node"], r["tier"]) for r in records["requests"]] == [
        ("opt-2.7b", "0", "disk"), ("opt-1.3b", "1", "disk")]
