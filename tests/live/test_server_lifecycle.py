"""Live servers of their own: restart restoring deployments, API-key auth, loads that fail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware, parse_hardware  # noqa: E402
from sllmsim.metrics import read_run  # noqa: E402
from test_server import HARDWARE, MESSAGES, spec_config, wait_until  # noqa: E402

CPU = {"0": "cpu", "1": "cpu"}


def _openai(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_restart_restores_deployments(tmp_path, tiny_model_factory):
    storage = tmp_path / "models"
    cluster = load_hardware(HARDWARE)
    run_dir = tmp_path / "run"
    with serve_in_thread(create_app(cluster, storage, devices=CPU, run_dir=run_dir, plots=False)) as url:
        for name, arch in (("opt-2.7b", "opt"), ("opt-1.3b", "llama")):
            assert httpx.post(f"{url}/register", json=spec_config(name, tiny_model_factory(arch))).status_code == 200
        first = _openai(url).chat.completions.create(model="opt-2.7b", messages=MESSAGES, max_tokens=6, seed=3,
                                                     temperature=0.7)
    assert (storage / "deployments.json").exists()
    # On shutdown the first server wrote its records as a run folder, in the simulator's format.
    frames = read_run(run_dir)
    # Registration put opt-2.7b on node 0's disk (round robin, first deploy): its first load reads it there.
    assert list(frames.requests["status"]) == ["completed"] and list(frames.requests["tier"]) == ["disk"]
    assert {"loading_to_host", "loading_to_gpu", "released"} <= set(frames.phases["phase"])
    assert "downloading" not in set(frames.phases["phase"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cold_starts_disk"] == 1 and summary["cold_starts_network"] == 0 and summary["completed"] == 1
    assert "Allocated node 0 for model opt-2.7b" in (run_dir / "scheduler.log").read_text()

    with serve_in_thread(create_app(cluster, storage, devices=CPU)) as url:
        client = _openai(url)
        assert sorted(m.id for m in client.models.list()) == ["opt-1.3b", "opt-2.7b"]
        again = client.chat.completions.create(model="opt-2.7b", messages=MESSAGES, max_tokens=6, seed=3,
                                               temperature=0.7)
        assert again.choices[0].message.content == first.choices[0].message.content
        status = httpx.get(f"{url}/status").json()
        restored = {m["model"]: m for m in status["models"]}
        assert restored["opt-1.3b"]["config"]["placement_config"]["target_nodes"] == ["1"]
        # The checkpoint that registration copied to node 0's disk is still there: a disk-tier load.
        assert [r["tier"] for r in httpx.get(f"{url}/records").json()["requests"]] == ["disk"]
        assert httpx.post(f"{url}/delete", json={"models": ["opt-1.3b"]}).status_code == 200

    with serve_in_thread(create_app(cluster, storage, devices=CPU)) as url:
        assert [m.id for m in _openai(url).models.list()] == ["opt-2.7b"]


def test_api_key_guards_every_route_but_health(tmp_path, tiny_model_dir):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU, api_key="s3cret")
    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for method, path in (("GET", "/status"), ("GET", "/v1/models"), ("POST", "/register"), ("GET", "/metrics"),
                             ("GET", "/records")):
            response = httpx.request(method, f"{url}{path}", json={})
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            _openai(url, "wrong").models.list()
        headers = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/register", json=spec_config("opt-2.7b", tiny_model_dir),
                          headers=headers).status_code == 200
        reply = _openai(url, "s3cret").chat.completions.create(model="opt-2.7b", messages=MESSAGES, max_tokens=2)
        assert reply.choices[0].message.content is not None


def _corrupt_header(folder: Path) -> None:
    """Overwrite the safetensors header length with a huge value, keeping the file's size."""
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.write((2**40).to_bytes(8, "little"))


def test_failed_loads_answer_5xx_free_the_slot_and_the_server_goes_on(tmp_path, tiny_model_factory):
    hardware = json.loads(HARDWARE.read_text())
    hardware["0"]["disk_size"] = "64KB"  # too small for any tiny checkpoint: "disk full" on node 0
    storage = tmp_path / "models"
    app = create_app(parse_hardware(hardware, "small-disk hardware"), storage, devices=CPU)
    with serve_in_thread(app) as url:
        http = httpx.Client(base_url=url, timeout=60)
        client = _openai(url)
        assert http.post("/register", json=spec_config("opt-1.3b", tiny_model_factory("opt"), model="broken", placement_config__local_disk=[]
                                                       )).status_code == 200
        assert http.post("/register", json=spec_config("opt-2.7b", tiny_model_factory("llama"), model="no-room", placement_config__local_disk=[]
                                                       )).status_code == 200
        assert http.post("/register", json=spec_config("opt-1.3b", tiny_model_factory("gpt2"), model="healthy", placement_config__local_disk=[]
                                                       )).status_code == 200
        _corrupt_header(storage / "_import" / "broken")

        for _ in range(2):  # a second try fails the same way instead of hanging
            with pytest.raises(openai.InternalServerError) as err:
                client.chat.completions.create(model="broken", messages=MESSAGES, max_tokens=2)
            message = err.value.body["message"]
            # The node's copy is checked against the imported manifest: the damage is found before loading.
            assert "broken" in message and "node 1" in message and "damaged" in message
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="no-room", messages=MESSAGES, max_tokens=2)
        assert "node 0" in err.value.body["message"] and "disk" in err.value.body["message"]

        status = http.get("/status").json()
        assert [n["gpus_used"] for n in status["nodes"]] == [0, 0]
        assert all(m["instances"] == [] and m["in_flight"] == 0 for m in status["models"])
        assert "broken" not in status["nodes"][1]["host_models"]
        assert "no-room" not in status["nodes"][0]["disk_models"]

        # The server keeps serving the model that loads, on the node the broken one just failed on.
        reply = client.chat.completions.create(model="healthy", messages=MESSAGES, max_tokens=2)
        assert reply.choices[0].message.content is not None
        failed = [r for r in http.get("/records").json()["requests"] if r["status"] == "failed"]
        assert [r["model"] for r in failed] == ["broken", "broken", "no-room"]
        assert all("failed" in r["reason"] for r in failed)
        metrics = http.get("/metrics").text
        assert 'sllmsim_load_failures_total{model="broken"} 2.0' in metrics
        wait_until(lambda: http.get("/status").json()["nodes"][1]["gpus_used"] == 0, what="release of healthy")


def test_scale_out_under_concurrency_up_to_max_instances(tmp_path, tiny_model_factory):
    """Three GPUs on node 0 and a slow network: four requests at once ask for four instances, the
    autoscaler allows two (max_instances), and the two serve all four."""
    hardware = json.loads(HARDWARE.read_text())
    hardware["0"]["num_gpus"] = 3
    hardware["0"]["network_bandwidth"] = "16Mbps"  # ~0.4 s to copy a tiny checkpoint: all four arrive meanwhile
    app = create_app(parse_hardware(hardware, "three-GPU hardware"), tmp_path / "models", devices=CPU)
    with serve_in_thread(app) as url:
        cfg = spec_config("opt-2.7b", tiny_model_factory("opt"), auto_scaling_config__max_instances=2)
        assert httpx.post(f"{url}/register", json=cfg, timeout=60).status_code == 200
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)

        async def burst():
            try:
                return await asyncio.gather(*(aclient.chat.completions.create(
                    model="opt-2.7b", messages=MESSAGES, max_tokens=4, seed=i) for i in range(4)))
            finally:
                await aclient.close()

        replies = asyncio.run(burst())
        assert len(replies) == 4
        records = httpx.get(f"{url}/records").json()
        assert [r["status"] for r in records["requests"]] == ["completed"] * 4
        assert len({r["instance_id"] for r in records["requests"]}) <= 2
        assert max(s["value"] for s in records["timeseries"] if s["metric"] == "instances") == 2
        allocations = [line for line in records["scheduler_log"] if line.startswith("Allocated")]
        assert allocations == ["Allocated node 0 for model opt-2.7b"] * 2


def test_min_instances_are_started_at_deploy(tmp_path, tiny_model_dir):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU)
    with serve_in_thread(app) as url:
        cfg = spec_config("opt-1.3b", tiny_model_dir, auto_scaling_config__min_instances=1)
        assert httpx.post(f"{url}/register", json=cfg, timeout=60).status_code == 200

        def instances():
            return httpx.get(f"{url}/status").json()["models"][0]["instances"]

        wait_until(lambda: [(i["node"], i["phase"]) for i in instances()] == [("1", "idle")], what="warm instance")
        reply = _openai(url).chat.completions.create(model="opt-1.3b", messages=MESSAGES, max_tokens=2)
        assert reply.choices[0].message.content is not None
        served = httpx.get(f"{url}/records").json()["requests"][0]
        assert not served["cold_start"] and served["tier"] == "gpu"
        assert [(i["node"], i["phase"]) for i in instances()] == [("1", "idle")]  # kept: min_instances 1
