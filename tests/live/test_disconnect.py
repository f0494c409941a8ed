"""A client that leaves cancels its request, in every state (issue 11, item 1).

The tiny model is made slow (every forward pass sleeps) so that a request is still running when its
client gives up; the model class's ``forward`` is patched, which holds for any generation loop.
"""

from __future__ import annotations

import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

from transformers import OPTForCausalLM  # noqa: E402

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402

from test_server import HARDWARE, MESSAGES, spec_config, wait_until  # noqa: E402

CPU = {"0": "cpu", "1": "cpu"}
#: Seconds each forward pass of the slowed model takes (on top of its real cost).
STEP_S = 0.05


def make_slow(monkeypatch) -> None:
    """Make the tiny OPT models take STEP_S per forward pass and never end on their own (the end
    token's logit is masked), so a long request is still running when a test acts on it."""
    forward = OPTForCausalLM.forward

    def slow_forward(self, *args, **kwargs):
        time.sleep(STEP_S)
        out = forward(self, *args, **kwargs)
        out.logits[..., self.config.eos_token_id] = float("-inf")
        return out

    monkeypatch.setattr(OPTForCausalLM, "forward", slow_forward)


@pytest.fixture
def slow_server(tmp_path, tiny_model_dir, monkeypatch):
    """One deployment (one instance, one request at a time) of a model that needs ~STEP_S per token."""
    make_slow(monkeypatch)
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU)
    with serve_in_thread(app) as url:
        cfg = spec_config("opt-2.7b", tiny_model_dir, auto_scaling_config__max_instances=1,
                          auto_scaling_config__keep_alive=30, backend_config__max_batch_size=1)
        assert httpx.post(f"{url}/register", json=cfg, timeout=60).status_code == 200
        yield url


def _records(url: str) -> list[dict]:
    return httpx.get(f"{url}/records").json()["requests"]


def _leave_after(url: str, timeout_s: float, **body) -> None:
    """Send a request and give up on it after ``timeout_s`` (the connection is closed)."""
    payload = {"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 400, **body}
    with pytest.raises(httpx.TimeoutException):
        with httpx.Client(timeout=timeout_s) as client:
            if body.get("stream"):
                with client.stream("POST", f"{url}/v1/chat/completions", json=payload) as response:
                    for _ in response.iter_bytes():
                        pass
            else:
                client.post(f"{url}/v1/chat/completions", json=payload)


def _model(url: str) -> dict:
    return httpx.get(f"{url}/status").json()["models"][0]


def test_a_non_streaming_client_that_leaves_stops_its_generation(slow_server):
    left = time.monotonic()
    _leave_after(slow_server, 1.0)  # 400 tokens take >= 20 s
    record = wait_until(lambda: next((r for r in _records(slow_server) if r["finish_s"] is not None), None),
                        timeout_s=5, what="the request to end")
    assert time.monotonic() - left < 6
    assert record["status"] == "failed" and "disconnect" in record["reason"]
    assert record["output_tokens"] < 100
    assert _model(slow_server)["in_flight"] == 0
    # The slot is free: the next request is served at once.
    reply = httpx.post(f"{slow_server}/v1/chat/completions", timeout=30,
                       json={"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 2})
    assert reply.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_a_queued_client_that_leaves_leaves_the_queue(slow_server, stream):
    holder = threading.Thread(target=_leave_after, args=(slow_server, 4.0))
    holder.start()
    wait_until(lambda: _model(slow_server)["in_flight"] == 1, what="the first request to run")
    _leave_after(slow_server, 1.0, stream=stream)
    # The queued request is gone from the queue and the gauges well before the first one ends.
    wait_until(lambda: _model(slow_server)["queued"] == 0 and _model(slow_server)["in_flight"] == 1,
               timeout_s=2, what="the queued request to leave")
    queued = _records(slow_server)[1]
    assert queued["status"] == "failed" and "waiting" in queued["reason"] and queued["output_tokens"] == 0
    metrics = httpx.get(f"{slow_server}/metrics").text
    assert 'sllmsim_requests_queued{model="opt-2.7b"} 0.0' in metrics
    holder.join()
    wait_until(lambda: _model(slow_server)["in_flight"] == 0, timeout_s=5, what="the first request to end")


def test_delete_stops_waiting_for_a_client_that_left(slow_server):
    runner = threading.Thread(target=_leave_after, args=(slow_server, 1.5))
    runner.start()
    wait_until(lambda: _model(slow_server)["in_flight"] == 1, what="the request to run")
    started = time.monotonic()
    response = httpx.post(f"{slow_server}/delete", json={"models": ["opt-2.7b"]}, timeout=30)
    runner.join()
    assert response.status_code == 200
    assert time.monotonic() - started < 8  # not the ~20 s the 400 tokens would take
    assert httpx.get(f"{slow_server}/status").json()["models"] == []
