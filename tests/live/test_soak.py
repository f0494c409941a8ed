"""A bounded soak test of live mode (issue 11): a few hundred requests of mixed traffic — plain and
streaming requests, clients that leave while queued or decoding, bad inputs of every class, and a
model deleted under traffic — and every request is accounted for, on the client's side and in the
server's ``/records`` and ``/metrics``.

It prints one line with what it measured (sent / completed / failed by reason / lost).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter

import httpx
import pytest

from live.server import create_app, serve_in_thread
from sllmsim.config.hardware import load_hardware

from test_disconnect import make_slow
from test_server import HARDWARE, MESSAGES, spec_config, wait_until

pytestmark = pytest.mark.slow

CPU = {"0": "cpu", "1": "cpu"}
BODY_LIMIT_BYTES = 64 * 1024
SEED = 11


def _plan(rng: random.Random) -> list[tuple[str, dict]]:
    """(kind, parameters) of every request, shuffled."""
    plan = [("good", {"model": "fast", "stream": rng.random() < 0.4, "max_tokens": rng.randint(1, 24)})
            for _ in range(170)]
    plan += [("good", {"model": "slow", "stream": rng.random() < 0.4, "max_tokens": rng.randint(1, 4)})
             for _ in range(30)]
    plan += [("leaver", {"model": "slow", "stream": i % 2 == 0, "max_tokens": 300}) for i in range(30)]
    bad = ["type", "range", "surrogate", "oversized", "context", "unknown"]
    plan += [("bad", {"what": bad[i % len(bad)]}) for i in range(48)]
    plan += [("victim", {"model": "victim", "stream": False, "max_tokens": 4}) for _ in range(22)]
    rng.shuffle(plan)
    return plan


async def _send(client: httpx.AsyncClient, kind: str, p: dict) -> tuple[str, str]:
    """Send one request; returns (outcome, detail) as the client saw it."""
    if kind == "bad":
        body: dict | str = {"model": "fast", "messages": MESSAGES, "max_tokens": 2}
        if p["what"] == "type":
            body["max_tokens"] = "5"
        elif p["what"] == "range":
            body["temperature"] = 7
        elif p["what"] == "surrogate":
            body = '{"model": "fast", "messages": [{"role": "user", "content": "\\ud800"}]}'
        elif p["what"] == "oversized":
            body["messages"] = [{"role": "user", "content": "x" * (2 * BODY_LIMIT_BYTES)}]
        elif p["what"] == "context":
            body["max_tokens"] = 100_000
        else:
            body["model"] = "no-such-model"
        content = body if isinstance(body, str) else json.dumps(body)
        r = await client.post("/v1/chat/completions", content=content.encode(),
                              headers={"content-type": "application/json"})
        assert r.headers["content-type"].startswith("application/json"), r.text
        return f"http_{r.status_code}", p["what"]
    body = {"model": p["model"], "messages": MESSAGES, "max_tokens": p["max_tokens"], "stream": p["stream"]}
    # No pool timeout: a request waits for a connection of the client's pool without giving up.
    timeout = httpx.Timeout(1.0 if kind == "leaver" else 120.0, pool=None)
    try:
        if p["stream"]:
            async with client.stream("POST", "/v1/chat/completions", json=body, timeout=timeout) as r:
                if r.status_code != 200:
                    await r.aread()
                    return f"http_{r.status_code}", r.json()["error"]["message"][:40]
                events = []
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if kind == "leaver" and len(events) == 5:
                            return "left", "mid-stream"  # leaving the block closes the connection
            assert events[-1] == "[DONE]"
            final = json.loads(events[-2])
            assert "error" not in final, final
            return "completed", ""
        r = await client.post("/v1/chat/completions", json=body, timeout=timeout)
        if r.status_code != 200:
            return f"http_{r.status_code}", r.json()["error"]["message"][:40]
        reply = r.json()
        # A random-weight model may sample its end token first: then "stop" with no token is a whole answer.
        finish = reply["choices"][0]["finish_reason"]
        assert reply["usage"]["completion_tokens"] >= 1 or finish == "stop", reply
        assert finish in ("stop", "length"), reply
        return "completed", ""
    except httpx.TimeoutException:
        return "left", ""


async def _traffic(url: str, plan: list[tuple[str, dict]], rng: random.Random) -> list[tuple[str, str, str]]:
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one(i: int, kind: str, p: dict):
            await asyncio.sleep(i * 0.02 + rng.random() * 0.05)  # about 15 s of arrivals
            outcome, detail = await _send(client, kind, p)
            return kind, outcome, detail

        async def delete_victim():
            await asyncio.sleep(len(plan) * 0.02 / 2)  # half-way through
            r = await client.post("/delete", json={"models": ["victim"]}, timeout=120)
            assert r.status_code == 200, r.text

        results = await asyncio.gather(*(one(i, k, p) for i, (k, p) in enumerate(plan)), delete_victim())
    return results[:-1]


def test_soak_mixed_traffic_accounts_for_every_request(tmp_path, tiny_model_factory, monkeypatch):
    make_slow(monkeypatch)  # the OPT models ("slow", "victim") take ~50 ms a token and never end early
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU, max_body_bytes=BODY_LIMIT_BYTES)
    with serve_in_thread(app) as url:
        for name, arch, node in (("fast", "llama", "1"), ("slow", "opt", "0"), ("victim", "opt", "0")):
            cfg = spec_config("opt-2.7b", tiny_model_factory(arch, seed=3 if name == "victim" else 0), model=name,
                              auto_scaling_config__max_instances=1, auto_scaling_config__keep_alive=30,
                              backend_config__max_batch_size=4, placement_config__target_nodes=[node])
            if name == "slow":
                cfg["auto_scaling_config"]["max_instances"] = 2
                cfg["placement_config"]["target_nodes"] = ["0", "1"]
            assert httpx.post(f"{url}/register", json=cfg, timeout=60).status_code == 200, name
        rng = random.Random(SEED)
        plan = _plan(rng)
        results = asyncio.run(_traffic(url, plan, rng))
        http = httpx.Client(base_url=url, timeout=60)
        wait_until(lambda: all(m["in_flight"] == 0 for m in http.get("/status").json()["models"]), timeout_s=30,
                   what="every request to end")
        records = http.get("/records").json()["requests"]
        metrics = http.get("/metrics").text
        models = [m["model"] for m in http.get("/status").json()["models"]]

    client = Counter(outcome for _, outcome, _ in results)
    # The client's side: every request got an answer or was given up by its client.
    assert len(results) == len(plan) and sum(client.values()) == len(plan)
    by_kind = Counter((kind, outcome) for kind, outcome, _ in results)
    assert by_kind[("good", "completed")] == 200, by_kind
    assert by_kind[("leaver", "left")] == 30, by_kind
    bad = Counter((detail, outcome) for kind, outcome, detail in results if kind == "bad")
    assert bad == {("type", "http_400"): 8, ("range", "http_400"): 8, ("surrogate", "http_400"): 8,
                   ("oversized", "http_413"): 8, ("context", "http_400"): 8, ("unknown", "http_404"): 8}, bad
    victims = Counter(outcome for kind, outcome, _ in results if kind == "victim")
    assert set(victims) <= {"completed", "http_404"} and victims["completed"] >= 1, victims
    assert "victim" not in models

    # The server's side: one record per request that reached a model, none left running.
    statuses = Counter(r["status"] for r in records)
    assert statuses["running"] == 0
    reasons = Counter(re.sub(r"\d+", "N", r["reason"]) for r in records if r["status"] == "failed")
    completed = client["completed"]
    assert statuses["completed"] == completed
    left = [r for r in records if "disconnect" in r["reason"]]
    assert len(left) == 30 and all(r["output_tokens"] < 300 for r in left)
    context = [r for r in records if "max_tokens is 100000" in r["reason"]]
    assert len(context) == 8
    assert len(records) == completed + 30 + 8  # nothing else reached a model, nothing lost
    for status, n in statuses.items():
        total = sum(float(v) for v in re.findall(
            rf'sllmsim_requests_total{{model="[^"]+",status="{status}"}} ([0-9.]+)', metrics))
        assert total == n, (status, total, n)
    lost = len(plan) - sum(client.values())
    print(f"\nsoak: sent {len(plan)}, completed {completed}, answered 4xx "
          f"{sum(n for o, n in client.items() if o.startswith('http_'))} ({dict(bad)} + victim after delete "
          f"{victims['http_404']}), clients left {client['left']}, server failed by reason {dict(reasons)}, "
          f"lost {lost}")
    assert lost == 0
