"""The live server end to end: the spec's two nodes, two tiny models, driven by the official openai client.

One server per device (CPU always; CUDA where present, ``@pytest.mark.gpu``) is shared by the tests of
this module; each test leaves the two spec deployments as it found them. Tests that need a server of
their own (restart, API key, failed loads) are in ``test_server_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HARDWARE = REPO / "traces" / "hardware_config.json"
#: 10Gbps in the spec's binary units: the network tier's bandwidth of both nodes.
NETWORK_BYTES_PER_S = 10 * 1024**3 / 8
HOST_BYTES_PER_S = 24 * 1024**3

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is your name?"}]


def spec_config(name: str, folder: Path, **changes) -> dict:
    """The spec's deploy config for ``name`` with its checkpoint pointing at a local tiny model."""
    cfg = json.loads((REPO / "traces" / f"config-{name}.json").read_text())
    cfg["backend_config"]["pretrained_model_name_or_path"] = str(folder)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[key] = value
    return cfg


def wait_until(predicate, timeout_s: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` (a test-side check of server state) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Live:
    url: str
    storage: Path
    http: httpx.Client
    client: openai.OpenAI

    def status(self) -> dict:
        return self.http.get("/status").json()

    def model_status(self, name: str) -> dict | None:
        return next((m for m in self.status()["models"] if m["model"] == name), None)

    def records(self) -> dict:
        return self.http.get("/records").json()

    def deploy(self, cfg: dict) -> httpx.Response:
        return self.http.post("/register", json=cfg)

    def delete(self, *names: str) -> httpx.Response:
        return self.http.post("/delete", json={"models": list(names)})


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def live(request, tmp_path_factory, tiny_model_factory):
    """The spec's hardware with both nodes on one device, and the spec's two deployments of tiny models."""
    device = request.param
    storage = tmp_path_factory.mktemp(f"live-{device}") / "models"
    app = create_app(load_hardware(HARDWARE), storage, devices={"0": device, "1": device})
    with serve_in_thread(app) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            server = Live(url, storage, http, openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0))
            for name, arch in (("opt-2.7b", "opt"), ("opt-1.3b", "llama")):
                response = server.deploy(spec_config(name, tiny_model_factory(arch)))
                assert response.status_code == 200, response.text
            yield server


def test_placements_follow_target_nodes_and_log_the_spec_lines(live, caplog):
    caplog.set_level("INFO", logger="sllmsim.scheduler")
    before = len(live.records()["scheduler_log"])
    for model in ("opt-2.7b", "opt-1.3b"):
        reply = live.client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=4)
        assert reply.model == model
    log = live.records()["scheduler_log"][before:]
    assert [line for line in log if line.startswith("Allocated")] == [
        "Allocated node 0 for model opt-2.7b", "Allocated node 1 for model opt-1.3b"]
    sorted_lines = [line for line in log if line.startswith("Sorted scheduling options")]
    assert [re.match(r"Sorted scheduling options: \[\('(\d)', [0-9.e-]+\)\]$", s).group(1) for s in sorted_lines] \
        == ["0", "1"]
    # The same lines reach the server's log, from the core's logger.
    logged = [r.getMessage() for r in caplog.records if r.name == "sllmsim.scheduler"]
    assert "Allocated node 0 for model opt-2.7b" in logged and "Allocated node 1 for model opt-1.3b" in logged
    requests = live.records()["requests"][-2:]
    assert [(r["model"], r["node"]) for r in requests] == [("opt-2.7b", "0"), ("opt-1.3b", "1")]


def test_estimates_are_the_core_formula_over_real_checkpoint_sizes(live, tiny_model_factory):
    """A first load comes over the network tier (registered on no disk); the next, after release,
    from the host-memory cache."""
    assert live.deploy(spec_config("opt-2.7b", tiny_model_factory("opt", seed=1), model="fresh",
                                   placement_config__local_disk=[])).status_code == 200
    try:
        size = live.model_status("fresh")["size_bytes"]
        assert size > 0
        estimates = []
        for _ in range(2):
            before = len(live.records()["scheduler_log"])
            live.client.chat.completions.create(model="fresh", messages=MESSAGES, max_tokens=2)
            line = live.records()["scheduler_log"][before]
            estimates.append(float(re.fullmatch(r"Sorted scheduling options: \[\('0', ([0-9.e-]+)\)\]", line).group(1)))
            wait_until(lambda: live.model_status("fresh")["instances"] == [], what="release (keep_alive 0)")
        assert estimates == [pytest.approx(size / NETWORK_BYTES_PER_S), pytest.approx(size / HOST_BYTES_PER_S)]
        tiers = [r["tier"] for r in live.records()["requests"] if r["model"] == "fresh"]
        assert tiers == ["network", "host"]
        node0 = live.status()["nodes"][0]
        assert "fresh" in node0["disk_models"] and "fresh" in node0["host_models"]
    finally:
        assert live.delete("fresh").status_code == 200


def test_chat_streaming_completions_and_models_list(live):
    client = live.client
    kwargs = dict(model="opt-1.3b", messages=MESSAGES, max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
    reply = client.chat.completions.create(**kwargs)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    # Same seed, same text, streamed as OpenAI chunks (the client parses them and the [DONE] end).
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] \
        == [choice.finish_reason]
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    completion = client.completions.create(model="opt-2.7b", prompt="The model server", max_tokens=5,
                                           temperature=0)
    assert completion.object == "text_completion"
    assert completion.usage.completion_tokens <= 5
    streamed = list(client.completions.create(model="opt-2.7b", prompt="The model server", max_tokens=5,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text

    assert sorted(m.id for m in client.models.list()) == ["opt-1.3b", "opt-2.7b"]
    assert live.http.get("/health").json()["status"] == "ok"


def test_stop_sequences_cut_the_reply(live):
    client = live.client
    full = client.completions.create(model="opt-2.7b", prompt="hello the model", max_tokens=24, temperature=0)
    text = full.choices[0].text
    assert len(text) > 6
    stop = text[3:6]
    cut = client.completions.create(model="opt-2.7b", prompt="hello the model", max_tokens=24, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="opt-2.7b", prompt="hello the model", max_tokens=24,
                                         temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text[:text.index(stop)]


def test_scale_from_zero_then_keep_alive_unload(live, tiny_model_factory):
    cfg = spec_config("opt-2.7b", tiny_model_factory("gpt2"), model="kept", auto_scaling_config__keep_alive=0.5,
                      placement_config__target_nodes=["0", "1"], placement_config__local_disk=[])
    assert live.deploy(cfg).status_code == 200
    try:
        assert live.model_status("kept")["instances"] == []  # min_instances 0: nothing loaded yet
        live.client.chat.completions.create(model="kept", messages=MESSAGES, max_tokens=3)
        live.client.chat.completions.create(model="kept", messages=MESSAGES, max_tokens=3)
        first, second = [r for r in live.records()["requests"] if r["model"] == "kept"]
        assert first["cold_start"] and first["tier"] == "network"
        assert not second["cold_start"] and second["tier"] == "gpu"  # kept alive: served warm
        assert first["instance_id"] == second["instance_id"]
        assert [i["phase"] for i in live.model_status("kept")["instances"]] == ["idle"]

        wait_until(lambda: live.model_status("kept")["instances"] == [], what="keep-alive release")
        phases = [p for p in live.records()["phases"] if p["instance_id"] == first["instance_id"]]
        names = [p["phase"] for p in phases]
        assert names[-1] == "released" and names[-2] == "idle"
        assert phases[-1]["start_s"] - phases[-2]["start_s"] >= 0.5  # not released before keep_alive
        assert {"downloading", "loading_to_host", "loading_to_gpu"} <= set(names)
    finally:
        assert live.delete("kept").status_code == 200


def test_fifty_concurrent_requests_over_two_models_are_all_answered(live):
    aclient = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    before = len(live.records()["requests"])

    async def one(i: int):
        model = ("opt-2.7b", "opt-1.3b")[i % 2]
        if i % 5 == 0:
            stream = await aclient.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6,
                                                           stream=True, seed=i)
            return model, "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        reply = await aclient.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, seed=i)
        return reply.model, reply.choices[0].message.content

    async def all_of_them():
        try:
            return await asyncio.gather(*(one(i) for i in range(50)))
        finally:
            await aclient.close()

    results = asyncio.run(all_of_them())
    assert len(results) == 50
    assert sorted(m for m, _ in results) == ["opt-1.3b"] * 25 + ["opt-2.7b"] * 25
    records = live.records()
    mine = records["requests"][before:]
    assert len(mine) == 50 and all(r["status"] == "completed" for r in mine)
    for r in mine:
        assert r["arrival_s"] <= r["queued_until_s"] <= r["first_token_s"] <= r["finish_s"]
        assert r["node"] == {"opt-2.7b": "0", "opt-1.3b": "1"}[r["model"]]
    # num_gpus slots are never exceeded: one GPU per node in the spec's hardware.
    assert max(s["value"] for s in records["timeseries"] if s["metric"] == "gpus_busy") <= 1
    assert wait_until(lambda: all(n["gpus_used"] == 0 for n in live.status()["nodes"]), what="scale to zero")


def test_delete_drains_in_flight_requests_first(live, tiny_model_factory):
    cfg = spec_config("opt-1.3b", tiny_model_factory("gpt2"), model="doomed", placement_config__target_nodes=["0"])
    assert live.deploy(cfg).status_code == 200
    aclient = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)

    async def scenario():
        try:
            traffic = [asyncio.create_task(aclient.chat.completions.create(
                model="doomed", messages=MESSAGES, max_tokens=40, seed=i)) for i in range(10)]
            async with httpx.AsyncClient(base_url=live.url, timeout=120) as http:
                while not traffic_started(await http.get("/status")):
                    await asyncio.sleep(0.01)
                deleted = await http.post("/delete", json={"models": ["doomed"]})
                after = await http.post("/v1/chat/completions", json={"model": "doomed", "messages": MESSAGES})
            return await asyncio.gather(*traffic), deleted, after
        finally:
            await aclient.close()

    def traffic_started(response) -> bool:
        doomed = next((m for m in response.json()["models"] if m["model"] == "doomed"), None)
        return doomed is not None and doomed["in_flight"] >= 10

    replies, deleted, after = asyncio.run(scenario())
    assert deleted.status_code == 200 and deleted.json() == {"deleted": ["doomed"]}
    assert len(replies) == 10 and all(r.choices[0].message.content is not None for r in replies)
    doomed = [r for r in live.records()["requests"] if r["model"] == "doomed"]
    assert [r["status"] for r in doomed] == ["completed"] * 10
    assert after.status_code == 404
    assert live.model_status("doomed") is None
    assert "doomed" not in [m.id for m in live.client.models.list()]
    assert live.status()["nodes"][0]["gpus_used"] == 0


def test_unknown_model_is_404_listing_deployed_models(live):
    with pytest.raises(openai.NotFoundError) as err:
        live.client.chat.completions.create(model="opt-66b", messages=MESSAGES)
    message = err.value.body["message"]
    assert "opt-66b" in message and "opt-2.7b" in message and "opt-1.3b" in message
    assert live.delete("opt-66b").status_code == 404


@pytest.mark.parametrize("body, param", [
    ({"model": "opt-2.7b", "messages": MESSAGES, "temperature": 5}, "temperature"),
    ({"model": "opt-2.7b"}, "messages"),
    ({"model": "opt-2.7b", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"model": "opt-2.7b", "messages": MESSAGES, "max_token": 3}, "max_token"),
    ({"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"model": "opt-2.7b", "messages": MESSAGES, "n": 2}, "n"),
    ({"model": "opt-2.7b", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_bad_request_fields_are_400_naming_the_field(live, body, param):
    response = live.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]


def test_malformed_json_is_400(live):
    response = live.http.post("/v1/chat/completions", content=b'{"model": "opt-2.7b", "messages": [',
                              headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]["message"]
    assert live.http.post("/register", content=b"{nope", headers={"content-type": "application/json"}
                          ).status_code == 400


def test_prompt_longer_than_the_context_is_400(live):
    with pytest.raises(openai.BadRequestError) as err:
        live.client.completions.create(model="opt-2.7b", prompt="the model " * 600, max_tokens=2)
    assert "context" in err.value.body["message"] and err.value.body["param"] == "prompt"
    # The slot it held is free again: the next request is served.
    assert live.client.completions.create(model="opt-2.7b", prompt="hi", max_tokens=2).choices


@pytest.mark.parametrize("change, field", [
    ({"model": "../evil"}, "model"),
    ({"model": "/etc/passwd"}, "model"),
    ({"model": "a/../../b"}, "model"),
    ({"placement_config": {"target_nodes": ["7"]}}, "placement_config.target_nodes"),
    ({"num_gpus": 2}, "num_gpus"),
    ({"backend": "vllm"}, "backend"),
    ({"auto_scaling_config": {"target": 0}}, "auto_scaling_config.target"),
])
def test_bad_deploy_configs_are_400_naming_the_field(live, tiny_model_dir, change, field):
    cfg = spec_config("opt-2.7b", tiny_model_dir, model="other")
    cfg.update(change)
    response = live.deploy(cfg)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert live.model_status(change.get("model", "other")) is None


def test_spec_config_with_a_hub_name_says_how_to_import(live):
    cfg = json.loads((REPO / "traces" / "config-opt-2.7b.json").read_text())
    cfg["model"] = "opt-2.7b-hub"
    response = live.deploy(cfg)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "backend_config.pretrained_model_name_or_path"
    assert "facebook/opt-2.7b" in error["message"] and "pretrained_model_name_or_path" in error["message"]


def test_deploying_a_deployed_name_is_409(live, tiny_model_dir):
    assert live.deploy(spec_config("opt-2.7b", tiny_model_dir)).status_code == 409


def test_update_changes_autoscaling(live, tiny_model_factory):
    folder = tiny_model_factory("opt")
    assert live.deploy(spec_config("opt-2.7b", folder, model="tunable")).status_code == 200
    try:
        response = live.http.post("/update", json=spec_config("opt-2.7b", folder, model="tunable",
                                                              auto_scaling_config__keep_alive=3.0))
        assert response.status_code == 200
        assert response.json()["config"]["auto_scaling_config"]["keep_alive"] == 3.0
        bad = live.http.post("/update", json=spec_config("opt-2.7b", folder, model="tunable",
                                                         backend_config__torch_dtype="float32"))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "backend_config.torch_dtype"
    finally:
        assert live.delete("tunable").status_code == 200


def test_metrics_in_prometheus_text(live):
    live.client.completions.create(model="opt-1.3b", prompt="hi", max_tokens=2)
    response = live.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r'^sllmsim_requests_total\{model="opt-1.3b",status="completed"\} [1-9]', text, re.M)
    assert re.search(r'^sllmsim_cold_starts_total\{model="opt-1.3b",tier="(network|disk|host)"\} [1-9]', text, re.M)
    assert re.search(r'^sllmsim_load_seconds_count\{model="opt-1.3b",tier="\w+"\} [1-9]', text, re.M)
    assert re.search(r'^sllmsim_instances\{model="opt-2.7b",phase="ready"\} \d', text, re.M)
    assert re.search(r'^sllmsim_gpu_slots\{node="1"\} 1', text, re.M)


def test_records_account_for_every_request(live):
    records = live.records()
    for r in records["requests"]:
        assert r["status"] in ("completed", "failed")
        if r["status"] == "failed":
            assert r["reason"]
        else:
            assert r["arrival_s"] <= r["queued_until_s"] <= r["first_token_s"] <= r["finish_s"]
            assert r["tier"] in ("gpu", "host", "disk", "network")
    for p in records["phases"]:
        assert p["start_s"] <= p["end_s"]
    assert records["resolved_config"]["devices"] in ({"0": "cpu", "1": "cpu"}, {"0": "cuda", "1": "cuda"},
                                                     {"0": "cuda:0", "1": "cuda:0"})


def test_a_checkpoint_transformers_cannot_build_is_refused_at_deploy(live, tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (folder / "config.json").write_text(json.dumps(config))
    response = live.deploy(spec_config("opt-2.7b", folder, model="odd"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "backend_config.pretrained_model_name_or_path" and "config.json" in error["message"]
    assert live.model_status("odd") is None
