"""Live migration end to end: a streaming generation moves to another node mid-stream to make room
for a model whose checkpoint sits in its node's host memory; the client sees the same text.

Two one-GPU nodes with a slow network (1 Mbps: a tiny checkpoint takes seconds to download), so the
scheduler prefers moving the running request (its model is on node 1's disk) over downloading the
arriving model onto node 1.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import parse_hardware  # noqa: E402
from test_server import HARDWARE, MESSAGES, spec_config, wait_until  # noqa: E402
from test_server_lifecycle import _corrupt_header  # noqa: E402

#: Long enough that the move finishes well before the generation does (the tiny model's context is 512).
LONG_TOKENS = 320


def _hardware() -> dict:
    hardware = json.loads(HARDWARE.read_text())
    for node in hardware.values():
        node["network_bandwidth"] = "1Mbps"
    return hardware


def _configs(tiny_model_factory, second_targets: list[str] | None = None) -> tuple[dict, dict]:
    """``long`` (on both nodes' disks, any node) and ``second`` (on node 0's disk)."""
    long = spec_config("opt-2.7b", tiny_model_factory("llama"), model="long",
                       placement_config={"local_disk": ["0", "1"]}, backend_config__max_batch_size=1)
    placement = {"local_disk": ["0"]}
    if second_targets is not None:
        placement["target_nodes"] = second_targets
    second = spec_config("opt-1.3b", tiny_model_factory("opt"), model="second", placement_config=placement)
    return long, second


def _wait_past_thrash_guard(http: httpx.Client) -> None:
    """Wait until the instance serving the stream may be moved: the core's thrash guard
    (``sllmsim.core.migration.movable_from_s``) lets an instance move once it has served for as long
    as it took to start. It is ready already (the stream has text), so waiting its start time is enough."""
    phases = [p for p in http.get("/records").json()["phases"] if p["model"] == "long"]
    latest = max(phases, key=lambda p: p["start_s"])["instance_id"]
    own = [p for p in phases if p["instance_id"] == latest]
    ready_s = max(p["end_s"] for p in own if p["phase"] in ("downloading", "loading_to_host", "loading_to_gpu"))
    time.sleep(ready_s - min(p["start_s"] for p in own) + GUARD_MARGIN_S)


#: Beyond the guard's time: the recorded phase ends and the controller's ready time differ by a few ms.
GUARD_MARGIN_S = 0.05


def _stream_with_arrival(client: openai.OpenAI, arrival, http: httpx.Client, after_chunks: int = 3) -> str:
    """Stream a long greedy chat completion; once ``after_chunks`` chunks with text arrived and the
    serving instance is past the thrash guard, run ``arrival()`` in a thread. Returns the streamed
    text (after the arrival has finished)."""
    text, chunks, thread, failure = "", 0, None, []

    def arrive():
        try:
            _wait_past_thrash_guard(http)
            arrival()
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    stream = client.chat.completions.create(model="long", messages=MESSAGES, max_tokens=LONG_TOKENS,
                                            temperature=0, stream=True)
    for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            text += delta
            chunks += 1
            if chunks == after_chunks and thread is None:
                thread = threading.Thread(target=arrive)
                thread.start()
    assert thread is not None, "the stream ended before the second model's request was sent"
    thread.join(timeout=120)
    if failure:
        raise failure[0]
    return text


def _warm_second_on_node_0(http: httpx.Client, client: openai.OpenAI) -> None:
    """Serve one request of ``second`` (on node 0, its disk) so its checkpoint stays in node 0's host cache."""
    client.chat.completions.create(model="second", messages=MESSAGES, max_tokens=2)
    wait_until(lambda: http.get("/status").json()["nodes"][0]["gpus_used"] == 0, what="release of second")
    assert "second" in http.get("/status").json()["nodes"][0]["host_models"]


def _baseline(http: httpx.Client, client: openai.OpenAI) -> str:
    """The long request streamed without a migration (on node 0 too)."""
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="long", messages=MESSAGES, max_tokens=LONG_TOKENS, temperature=0, stream=True) if c.choices)
    wait_until(lambda: http.get("/status").json()["nodes"][0]["gpus_used"] == 0, what="release of long")
    return text


def test_a_streaming_generation_migrates_mid_stream_and_the_client_sees_the_same_text(tmp_path, tiny_model_factory):
    run_dir = tmp_path / "run"
    app = create_app(parse_hardware(_hardware(), "slow-network hardware"), tmp_path / "models",
                     devices={"0": "cpu", "1": "cpu"}, enable_migration=True, run_dir=run_dir, plots=False)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for cfg in _configs(tiny_model_factory):
            assert http.post("/register", json=cfg).status_code == 200
        _warm_second_on_node_0(http, client)
        want = _baseline(http, client)
        assert len(set(want.split())) > 20  # varied text: a dropped or repeated token would show
        replies = []

        def second_arrives():
            replies.append(client.chat.completions.create(model="second", messages=MESSAGES, max_tokens=4))

        got = _stream_with_arrival(client, second_arrives, http)
        assert got == want
        assert replies and replies[0].choices[0].message.content is not None

        records = http.get("/records").json()
        requests = records["requests"]
        assert [(r["model"], r["status"]) for r in requests] == [
            ("second", "completed"), ("long", "completed"), ("long", "completed"), ("second", "completed")]
        warm, baseline, moved, second = requests
        assert not baseline["migrated"] and baseline["node"] == "0"
        assert moved["migrated"] and moved["node"] == "1"  # it finished on node 1
        assert moved["output_tokens"] == baseline["output_tokens"]
        assert second["node"] == "0" and second["tier"] == "host" and not second["migrated"]

        # The scheduler chose node 0 with a plan moving the long request's instance to node 1.
        log = records["scheduler_log"]
        plans = [line for line in log if line.startswith("Migration plan for model second on node 0")]
        assert len(plans) == 1
        source_id = re.search(r"\[\('([^']+)', '0', '1', ", plans[0]).group(1)
        i = log.index(plans[0])
        assert log[i - 1].startswith("Sorted scheduling options: [('0', ") and "('1', " in log[i - 1]
        assert log[i + 1] == "Allocated node 0 for model second"

        phases = records["phases"]
        by_instance: dict[str, list[tuple[str, str]]] = {}
        for p in phases:
            by_instance.setdefault(p["instance_id"], []).append((p["node"], p["phase"]))
        assert by_instance[source_id] == [("0", "loading_to_gpu"), ("0", "idle"), ("0", "ready"), ("0", "migrating"),
                                          ("0", "released")]
        dest_phases = by_instance[moved["instance_id"]]
        assert ("1", "loading_to_gpu") in dest_phases and ("1", "resuming") in dest_phases
        assert dest_phases.index(("1", "resuming")) < dest_phases.index(("1", "ready"))
        # Invariant 6 (sllmsim.invariants): the resuming phase ends at the hand-over, before the request finishes.
        handover_s = next(p["end_s"] for p in phases if p["instance_id"] == moved["instance_id"]
                          and p["phase"] == "resuming")
        assert moved["first_token_s"] < handover_s < moved["finish_s"]
        second_phases = by_instance[second["instance_id"]]
        assert second_phases[0] == ("0", "queued") and ("0", "loading_to_gpu") in second_phases
        # The source's slot passed straight to the new instance: never more than one busy GPU per node.
        busy = [s["value"] for s in records["timeseries"] if s["metric"] == "gpus_busy"]
        assert max(busy) == 1 and min(busy) == 0
    # The run folder, in the simulator's format, counts the move as the simulator's metrics define it.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["migrations"], summary["migrated_requests"], summary["completed"]) == (1, 1, 4)
    assert "enable_migration: true" in (run_dir / "resolved_config.yaml").read_text()


def test_a_failed_move_leaves_the_request_on_its_source_and_the_new_model_waits(tmp_path, tiny_model_factory):
    storage = tmp_path / "models"
    app = create_app(parse_hardware(_hardware(), "slow-network hardware"), storage,
                     devices={"0": "cpu", "1": "cpu"}, enable_migration=True)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for cfg in _configs(tiny_model_factory, second_targets=["0"]):
            assert http.post("/register", json=cfg).status_code == 200
        _warm_second_on_node_0(http, client)
        want = _baseline(http, client)
        # The destination's load will fail: its disk copy is damaged, and so is the store's copy that a
        # damaged node copy is replaced from.
        _corrupt_header(storage / "1" / "models" / "long")
        _corrupt_header(storage / "_import" / "long")
        replies = []

        def second_arrives():
            replies.append(client.chat.completions.create(model="second", messages=MESSAGES, max_tokens=4))

        got = _stream_with_arrival(client, second_arrives, http)
        assert got == want and replies

        records = http.get("/records").json()
        requests = records["requests"]
        assert [(r["model"], r["status"], r["node"], r["migrated"]) for r in requests] == [
            ("second", "completed", "0", False), ("long", "completed", "0", False),
            ("long", "completed", "0", False), ("second", "completed", "0", False)]
        long_request, second = requests[2], requests[3]
        # The new model waited for the long request to finish, then started on node 0.
        assert second["queued_until_s"] >= long_request["finish_s"]
        log = records["scheduler_log"]
        assert sum(line.startswith("Migration plan for model second") for line in log) == 1  # tried once only
        phases = [(p["instance_id"], p["node"], p["phase"]) for p in records["phases"]]
        assert any(node == "1" and phase == "released" for _, node, phase in phases)  # the failed destination
        assert not any(phase in ("migrating", "resuming") for _, _, phase in phases)  # nothing moved
        served = [phase for inst, _, phase in phases if inst == long_request["instance_id"]]
        assert served[-3:] == ["ready", "idle", "released"] and served.count("ready") == 2  # before and during the try
        busy = [s["value"] for s in records["timeseries"] if s["metric"] == "gpus_busy"]
        assert max(busy) == 1


def test_an_instance_serving_two_streams_moves_both(tmp_path, tiny_model_factory):
    """Both requests of the moved instance (``max_batch_size`` 2, ``target`` 2: one instance) are
    handed over, each within its own stream, and the new model starts once both have left."""
    app = create_app(parse_hardware(_hardware(), "slow-network hardware"), tmp_path / "models",
                     devices={"0": "cpu", "1": "cpu"}, enable_migration=True)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        long, second = _configs(tiny_model_factory)
        long["backend_config"]["max_batch_size"] = 2
        long["auto_scaling_config"]["target"] = 2
        for cfg in (long, second):
            assert http.post("/register", json=cfg).status_code == 200
        _warm_second_on_node_0(http, client)
        want = _baseline(http, client)
        other_text, other_started = [], threading.Event()

        def other_stream():
            text = ""
            for chunk in client.chat.completions.create(model="long", messages=MESSAGES, max_tokens=LONG_TOKENS,
                                                        temperature=0, stream=True):
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                if len(text) > 10:
                    other_started.set()
            other_text.append(text)

        other = threading.Thread(target=other_stream)
        other.start()
        assert other_started.wait(60)

        def second_arrives():
            client.chat.completions.create(model="second", messages=MESSAGES, max_tokens=4)

        got = _stream_with_arrival(client, second_arrives, http)
        other.join(timeout=120)
        assert got == want and other_text == [want]

        records = http.get("/records").json()
        moved = [r for r in records["requests"] if r["migrated"]]
        assert len(moved) == 2 and {r["instance_id"] for r in moved} == {moved[0]["instance_id"]}
        assert all(r["status"] == "completed" for r in records["requests"])
        source = {p["instance_id"] for p in records["phases"] if p["phase"] == "migrating"}
        assert len(source) == 1
        source_released = next(p["end_s"] for p in records["phases"]
                               if p["instance_id"] in source and p["phase"] == "released")
        second_started = max(p["start_s"] for p in records["phases"]  # the last load: after the warm-up's
                             if p["model"] == "second" and p["phase"] == "loading_to_gpu")
        assert second_started >= source_released
        busy = [s["value"] for s in records["timeseries"] if s["metric"] == "gpus_busy"]
        assert max(busy) == 1


def test_live_offers_an_instance_for_a_move_only_past_the_cores_thrash_guard():
    """The controller's move filter applies ``core.migration.movable_from_s`` as the simulator does:
    an instance placed at 10 s and ready at 12 s serving a decoding request may move from 14 s on."""
    from types import SimpleNamespace

    from live.controller import Controller

    request = SimpleNamespace(accepted=True, closed=False)
    inst = SimpleNamespace(phase="ready", migration_failed=False, moves_in=0, active=1, running={7: request},
                           placed_s=10.0, ready_s=12.0)
    for now_s, movable in ((12.5, False), (13.999, False), (14.0, True), (20.0, True)):
        controller = SimpleNamespace(recorder=SimpleNamespace(now_s=lambda t=now_s: t))
        assert Controller._movable(controller, inst) is movable, now_s
    inst.ready_s = None  # still loading: never offered
    assert Controller._movable(SimpleNamespace(recorder=SimpleNamespace(now_s=lambda: 99.0)), inst) is False
