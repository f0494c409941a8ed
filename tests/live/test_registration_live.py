"""Registration in live mode: `/register` puts the checkpoint where the reference's store manager would,
before it answers, so the spec's files give the spec's placements with disk-tier cold starts."""

from __future__ import annotations

import re

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402

from test_server import HARDWARE, HOST_BYTES_PER_S, MESSAGES, spec_config  # noqa: E402

DISK_BYTES_PER_S = 5 * 1024**3  # the spec's 5GB/s, binary units
CPU = {"0": "cpu", "1": "cpu"}


def test_spec_files_register_round_robin_and_log_one_disk_option_per_model(tmp_path, tiny_model_factory):
    storage = tmp_path / "models"
    with serve_in_thread(create_app(load_hardware(HARDWARE), storage, devices=CPU)) as url:
        http = httpx.Client(base_url=url, timeout=60)
        for name, arch in (("opt-2.7b", "opt"), ("opt-1.3b", "llama")):
            assert http.post("/register", json=spec_config(name, tiny_model_factory(arch))).status_code == 200
        # Before any request: each checkpoint is on the disk of the node the round robin chose.
        nodes = {n["node"]: n for n in http.get("/status").json()["nodes"]}
        assert (nodes["0"]["disk_models"], nodes["1"]["disk_models"]) == (["opt-2.7b"], ["opt-1.3b"])
        assert nodes["0"]["host_models"] == nodes["1"]["host_models"] == []
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for model in ("opt-2.7b", "opt-1.3b"):
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
        records = http.get("/records").json()
        sizes = {m["model"]: m["size_bytes"] for m in http.get("/status").json()["models"]}
    log = records["scheduler_log"]
    assert len(log) == 4
    for (sorted_line, allocated), (model, node) in zip((log[0:2], log[2:4]), (("opt-2.7b", "0"), ("opt-1.3b", "1"))):
        estimate = float(re.fullmatch(rf"Sorted scheduling options: \[\('{node}', ([0-9.e-]+)\)\]", sorted_line).group(1))
        assert estimate == sizes[model] / DISK_BYTES_PER_S  # the core's formula, bit for bit
        assert allocated == f"Allocated node {node} for model {model}"
    assert [(r["model"], r["node"], r["tier"]) for r in records["requests"]] == [
        ("opt-2.7b", "0", "disk"), ("opt-1.3b", "1", "disk")]


def test_memory_pool_loads_into_host_memory_and_empty_local_disk_registers_nowhere(tmp_path, tiny_model_factory):
    storage = tmp_path / "models"
    with serve_in_thread(create_app(load_hardware(HARDWARE), storage, devices=CPU)) as url:
        http = httpx.Client(base_url=url, timeout=60)
        pooled = spec_config("opt-1.3b", tiny_model_factory("opt"), model="pooled",
                             placement_config={"target_nodes": ["1"], "memory_pool": ["1"]})
        nowhere = spec_config("opt-2.7b", tiny_model_factory("llama"), model="nowhere",
                              placement_config={"target_nodes": ["0"], "local_disk": []})
        for cfg in (pooled, nowhere):
            assert http.post("/register", json=cfg).status_code == 200, cfg
        nodes = {n["node"]: n for n in http.get("/status").json()["nodes"]}
        # pooled: round robin picked node 0's disk; memory_pool node 1 gets disk and host copies.
        assert nodes["0"]["disk_models"] == ["pooled"] and nodes["0"]["host_models"] == []
        assert nodes["1"]["disk_models"] == ["pooled"] and nodes["1"]["host_models"] == ["pooled"]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for model in ("pooled", "nowhere"):
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
        records = http.get("/records").json()
        size = next(m["size_bytes"] for m in http.get("/status").json()["models"] if m["model"] == "pooled")
    assert [(r["model"], r["tier"]) for r in records["requests"]] == [("pooled", "host"), ("nowhere", "network")]
    assert records["scheduler_log"][0] == f"Sorted scheduling options: [('1', {size / HOST_BYTES_PER_S!r})]"
