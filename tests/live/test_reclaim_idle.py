"""reclaim_idle in live mode: an idle instance gives up its GPU slot to another model that waits.

One node with one GPU slot and two tiny models, ``opt-a`` and ``opt-b``. By default (the reference's
behaviour) a request for ``opt-b`` waits while ``opt-a`` sits idle for its whole keep-alive; with
``reclaim_idle`` the scheduler core releases the idle ``opt-a`` at once and places ``opt-b`` on its
slot. The controller-level tests drive :class:`~live.controller.Controller` on one event loop, so
that the order of two arrivals is exact (the race-safety cases).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.controller import Controller  # noqa: E402
from live.generation import GenerationRequest, SamplingParams  # noqa: E402
from live.records import LiveRecorder  # noqa: E402
from live.server import create_app, serve_in_thread  # noqa: E402
from live.store import StoreRegistry  # noqa: E402
from live.worker import Finished, LocalNodeWorker  # noqa: E402
from sllmsim.config.hardware import parse_hardware  # noqa: E402
from test_server import MESSAGES, spec_config, wait_until  # noqa: E402

#: The spec's node 0 alone: one GPU slot.
ONE_SLOT = {"0": {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB", "disk_bandwidth": "5GB/s",
                  "network_bandwidth": "10Gbps"}}
LONG_KEEP_ALIVE_S = 60.0


def _config(name: str, folder, keep_alive_s: float) -> dict:
    return spec_config("opt-2.7b", folder, model=name, placement_config={},
                       auto_scaling_config__keep_alive=keep_alive_s)


def _phases(records: dict, instance_id: str) -> list[dict]:
    return [p for p in records["phases"] if p["instance_id"] == instance_id]


def _ask(client: openai.OpenAI, model: str) -> str:
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=3).choices[0].message.content


def _serve_a_then_ask_b(url: str, tiny_model_factory, keep_alive_a_s: float):
    """Deploy both models, serve one request of opt-a (it stays idle), then send opt-b's request in a
    thread. Returns (http client, openai client, the thread, its result list, opt-a's instance id)."""
    http = httpx.Client(base_url=url, timeout=60)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert http.post("/register", json=_config("opt-a", tiny_model_factory("opt"), keep_alive_a_s)).status_code == 200
    assert http.post("/register", json=_config("opt-b", tiny_model_factory("llama"),
                                               LONG_KEEP_ALIVE_S)).status_code == 200
    _ask(client, "opt-a")
    a_instance = http.get("/records").json()["requests"][0]["instance_id"]
    result: list = []
    thread = threading.Thread(target=lambda: result.append(_ask(client, "opt-b")))
    thread.start()
    return http, client, thread, result, a_instance


def test_without_reclaim_idle_b_waits_for_a_keep_alive(tmp_path, tiny_model_factory):
    keep_alive_s = 1.5
    app = create_app(parse_hardware(ONE_SLOT, "one-slot hardware"), tmp_path / "models", devices={"0": "cpu"})
    with serve_in_thread(app) as url:
        http, _, thread, result, a_instance = _serve_a_then_ask_b(url, tiny_model_factory, keep_alive_s)

        def model(name):
            return next(m for m in http.get("/status").json()["models"] if m["model"] == name)

        wait_until(lambda: model("opt-b")["queued"] == 1, what="opt-b's request to queue")
        time.sleep(0.3)
        # Still waiting: opt-a keeps its slot while idle.
        assert model("opt-b")["instances"] == [] and model("opt-b")["queued"] == 1
        assert [(i["instance_id"], i["phase"]) for i in model("opt-a")["instances"]] == [(a_instance, "idle")]
        thread.join(timeout=60)
        assert result and result[0] is not None

        records = http.get("/records").json()
        a_phases = {p["phase"]: p for p in _phases(records, a_instance)}
        b_request = records["requests"][1]
        assert b_request["model"] == "opt-b" and b_request["status"] == "completed" and b_request["cold_start"]
        b_phases = _phases(records, b_request["instance_id"])
        # opt-a was released when its keep-alive ran out, not before; only then did opt-b load.
        assert a_phases["released"]["start_s"] >= a_phases["idle"]["start_s"] + keep_alive_s
        assert a_phases["idle"]["end_s"] - a_phases["idle"]["start_s"] >= keep_alive_s
        assert min(p["start_s"] for p in b_phases) >= a_phases["released"]["end_s"]
        assert b_request["arrival_s"] < a_phases["released"]["start_s"]
        assert not any(line.startswith("Reclaiming") for line in records["scheduler_log"])
        assert records["resolved_config"]["reclaim_idle"] is False


def test_with_reclaim_idle_b_takes_the_idle_slot_at_once(tmp_path, tiny_model_factory):
    app = create_app(parse_hardware(ONE_SLOT, "one-slot hardware"), tmp_path / "models", devices={"0": "cpu"},
                     reclaim_idle=True)
    with serve_in_thread(app) as url:
        http, client, thread, result, a_instance = _serve_a_then_ask_b(url, tiny_model_factory, LONG_KEEP_ALIVE_S)
        thread.join(timeout=60)
        assert result and result[0] is not None

        records = http.get("/records").json()
        b_request = records["requests"][1]
        assert b_request["model"] == "opt-b" and b_request["status"] == "completed"
        assert b_request["cold_start"] and b_request["node"] == "0"
        log = records["scheduler_log"]
        reclaim_line = f"Reclaiming idle instances ['{a_instance}'] on node 0 for model opt-b"
        assert reclaim_line in log
        assert log[log.index(reclaim_line) + 1] == "Allocated node 0 for model opt-b"

        a_phases = _phases(records, a_instance)
        assert [p["phase"] for p in a_phases][-2:] == ["idle", "released"]
        released = a_phases[-1]
        # Released long before its 60 s keep-alive ran out, and before opt-b's load began: opt-b's
        # instance waited (queued) for the unload, then loaded on the freed slot.
        assert released["start_s"] - a_phases[-2]["start_s"] < LONG_KEEP_ALIVE_S / 2
        b_phases = _phases(records, b_request["instance_id"])
        assert b_phases[0]["phase"] == "queued" and b_phases[0]["start_s"] <= released["end_s"]
        assert min(p["start_s"] for p in b_phases[1:]) >= released["end_s"]
        assert b_request["finish_s"] - b_request["arrival_s"] < LONG_KEEP_ALIVE_S / 2

        # opt-a again: its tensors stayed in the node's host cache, so it cold-starts from host
        # memory, taking the slot of the now idle opt-b the same way.
        assert "opt-a" in http.get("/status").json()["nodes"][0]["host_models"]
        assert _ask(client, "opt-a") is not None
        records = http.get("/records").json()
        again = records["requests"][2]
        assert again["model"] == "opt-a" and again["cold_start"] and again["tier"] == "host"
        assert again["instance_id"] != a_instance
        assert f"Reclaiming idle instances ['{b_request['instance_id']}'] on node 0 for model opt-a" in \
            records["scheduler_log"]
        assert [p["phase"] for p in _phases(records, a_instance)].count("released") == 1
        assert max(s["value"] for s in records["timeseries"] if s["metric"] == "gpus_busy") == 1
        assert records["resolved_config"]["reclaim_idle"] is True
        status = http.get("/status").json()
        assert [(m["model"], [i["phase"] for i in m["instances"]]) for m in status["models"]] == \
            [("opt-a", ["idle"]), ("opt-b", [])]


# --- controller-level: the exact order of arrivals ---------------------------------------------------


async def _controller(tmp_path, tiny_model_factory) -> Controller:
    cluster = parse_hardware(ONE_SLOT, "one-slot hardware")
    storage = tmp_path / "models"
    registry = StoreRegistry.for_cluster(storage, cluster, {"0": "cpu"})
    workers = {"0": LocalNodeWorker(cluster.nodes[0], registry.node("0"), "cpu")}
    controller = Controller(cluster, workers, registry, storage, LiveRecorder(), reclaim_idle=True)
    await controller.start()
    await controller.deploy(_config("opt-a", tiny_model_factory("opt"), LONG_KEEP_ALIVE_S))
    await controller.deploy(_config("opt-b", tiny_model_factory("llama"), LONG_KEEP_ALIVE_S))
    return controller


async def _run(controller: Controller, ticket):
    request = GenerationRequest(SamplingParams(max_tokens=3, temperature=0.0), prompt="hello")
    events = [event async for event in controller.generate(ticket, request)]  # to the end: the request is finished
    assert isinstance(events[-1], Finished)
    return ticket


async def _serve(controller: Controller, model: str):
    return await _run(controller, await controller.admit(model))


def test_an_instance_claimed_for_reclaim_is_never_handed_a_request(tmp_path, tiny_model_factory):
    """opt-b's arrival claims idle opt-a; opt-a's request arriving right after (same loop, before the
    unload finished) must not get the instance being unloaded: it waits and cold-starts a new one."""

    async def scenario():
        controller = await _controller(tmp_path, tiny_model_factory)
        try:
            first = await _serve(controller, "opt-a")
            old = first.instance
            assert old.phase == "idle" and controller._deployments["opt-a"].timer is not None
            b = asyncio.create_task(_serve(controller, "opt-b"))
            await asyncio.sleep(0)  # opt-b's admit runs up to its wait: placed, opt-a claimed
            assert old.phase == "releasing"
            # Its keep-alive timer is gone with it: nothing is left to fire on the released instance.
            assert controller._deployments["opt-a"].timer is None
            a = asyncio.create_task(_serve(controller, "opt-a"))
            await asyncio.sleep(0)
            assert not a.done() and controller._deployments["opt-a"].queue
            b_ticket, a_ticket = await asyncio.wait_for(asyncio.gather(b, a), timeout=60)
            assert a_ticket.instance is not old and a_ticket.cold_start
            assert a_ticket.record.tier == "host" and a_ticket.record.status == "completed"
            assert b_ticket.record.status == "completed" and b_ticket.cold_start
            log = controller.recorder.scheduler_log
            assert f"Reclaiming idle instances ['{old.instance_id}'] on node 0 for model opt-b" in log
            assert f"Reclaiming idle instances ['{b_ticket.instance.instance_id}'] on node 0 for model opt-a" in log
            released = [p for p in controller.recorder.phases if p.phase == "released"]
            assert [p.instance_id for p in released] == [old.instance_id, b_ticket.instance.instance_id]
        finally:
            await controller.close()

    asyncio.run(scenario())


def test_an_instance_serving_a_request_is_not_reclaimed(tmp_path, tiny_model_factory):
    """opt-a's request takes its idle instance first; opt-b, arriving next, finds no idle slot and
    waits until that request has finished, then takes the slot at once (not after the keep-alive)."""

    async def scenario():
        controller = await _controller(tmp_path, tiny_model_factory)
        try:
            old = (await _serve(controller, "opt-a")).instance
            a_ticket = await controller.admit("opt-a")  # warm: served by the idle instance
            assert a_ticket.instance is old and old.phase == "ready"
            b = asyncio.create_task(_serve(controller, "opt-b"))
            await asyncio.sleep(0)
            assert old.phase == "ready" and not b.done()
            assert not any(line.startswith("Reclaiming") for line in controller.recorder.scheduler_log)
            await _run(controller, a_ticket)
            b_ticket = await asyncio.wait_for(b, timeout=60)
            assert a_ticket.record.status == "completed" and b_ticket.record.status == "completed"
            released = next(p for p in controller.recorder.phases
                            if p.instance_id == old.instance_id and p.phase == "released")
            assert released.start_s >= a_ticket.record.finish_s
            assert b_ticket.record.finish_s - a_ticket.record.finish_s < LONG_KEEP_ALIVE_S / 2
            assert f"Reclaiming idle instances ['{old.instance_id}'] on node 0 for model opt-b" in \
                controller.recorder.scheduler_log
        finally:
            await controller.close()

    asyncio.run(scenario())


def test_min_instances_keeps_an_idle_instance_from_being_reclaimed(tmp_path, tiny_model_factory):
    """An idle instance that ``min_instances`` keeps is not waiting out a keep-alive: not offered."""

    async def scenario():
        controller = await _controller(tmp_path, tiny_model_factory)
        try:
            cfg = _config("opt-a", tiny_model_factory("opt"), LONG_KEEP_ALIVE_S)
            cfg["auto_scaling_config"]["min_instances"] = 1
            await controller.update(cfg)
            old = (await _serve(controller, "opt-a")).instance
            assert old.phase == "idle"
            assert controller.cluster_view().nodes[0].idle == ()
            b = asyncio.create_task(_serve(controller, "opt-b"))
            await asyncio.sleep(0.2)
            assert old.phase == "idle" and not b.done()
            b.cancel()
            with pytest.raises(asyncio.CancelledError):
                await b
        finally:
            await controller.close()

    asyncio.run(scenario())
