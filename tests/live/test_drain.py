"""Bounded drain, nothing lost (issue 11, item 9): after the exit signal running requests have
``drain_s`` to finish; then (or at a second signal) streams end with an error event and ``[DONE]``,
other requests with a 503, all recorded as failed; the run folder is written, and each request was
already in the run folder's journal when it ended."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from live.server import create_app, make_server
from sllmsim.config.hardware import load_hardware

from test_disconnect import make_slow
from test_server import HARDWARE, MESSAGES, spec_config, wait_until

CPU = {"0": "cpu", "1": "cpu"}


@pytest.fixture
def slow_model(monkeypatch):
    make_slow(monkeypatch)


def _start(app, drain_s):
    server = make_server(app, drain_s=drain_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=60, what="the server to start")
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def _stream(url: str, out: list) -> None:
    body = {"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        out.extend(line[len("data: "):] for line in response.iter_lines() if line.startswith("data: "))


def _plain(url: str, out: list) -> None:
    out.append(httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 400}))


def _traffic(url: str):
    """One finished request, then a stream that runs and a plain request queued behind it."""
    assert httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 2}).status_code == 200
    events, replies = [], []
    threads = [threading.Thread(target=_stream, args=(url, events))]
    threads[0].start()
    wait_until(lambda: httpx.get(f"{url}/status").json()["models"][0]["in_flight"] == 1, what="the stream to run")
    threads.append(threading.Thread(target=_plain, args=(url, replies)))
    threads[1].start()
    wait_until(lambda: httpx.get(f"{url}/status").json()["models"][0]["queued"] == 1, what="the second to queue")
    return threads, events, replies


def _check_ended(events, replies, run_dir):
    assert events[-1] == "[DONE]" and "shut down" in json.loads(events[-2])["error"]["message"]
    assert replies[0].status_code == 503 and replies[0].json()["error"]["code"] == "shutting_down"
    journal = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert [r["status"] for r in journal] == ["completed", "failed", "failed"]
    assert all("shut down" in r["reason"] for r in journal[1:])
    csv = (run_dir / "requests.csv").read_text()
    assert csv.count("completed") == 1 and csv.count("shut down") == 2


def _app(tmp_path, tiny_model_dir):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU, run_dir=tmp_path / "run",
                     plots=False)
    return app


def _deploy(url, tiny_model_dir):
    cfg = spec_config("opt-2.7b", tiny_model_dir, auto_scaling_config__max_instances=1,
                      backend_config__max_batch_size=1, auto_scaling_config__keep_alive=30)
    assert httpx.post(f"{url}/register", json=cfg, timeout=60).status_code == 200


def test_the_drain_is_bounded_and_what_remains_is_ended_and_recorded(tmp_path, tiny_model_dir, slow_model):
    server, thread, url = _start(_app(tmp_path, tiny_model_dir), drain_s=1.0)
    _deploy(url, tiny_model_dir)
    threads, events, replies = _traffic(url)
    stopped = time.monotonic()
    server.should_exit = True  # what SIGTERM does
    for t in (*threads, thread):
        t.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - stopped < 8  # 400 tokens would take >= 20 s
    _check_ended(events, replies, tmp_path / "run")


def test_a_second_signal_ends_the_drain_at_once(tmp_path, tiny_model_dir, slow_model):
    server, thread, url = _start(_app(tmp_path, tiny_model_dir), drain_s=None)  # no limit of its own
    _deploy(url, tiny_model_dir)
    threads, events, replies = _traffic(url)
    stopped = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    time.sleep(0.5)
    assert thread.is_alive()  # draining
    server.handle_exit(signal.SIGINT, None)  # Ctrl-C
    for t in (*threads, thread):
        t.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - stopped < 8
    _check_ended(events, replies, tmp_path / "run")
