"""Limits before work, types as the API defines them, no plain-text 500s (issue 11, items 2-4).

One server (a small body limit, the spec's two deployments of tiny models) shared by the module.
"""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402

from test_server import HARDWARE, MESSAGES, spec_config  # noqa: E402

CPU = {"0": "cpu", "1": "cpu"}
BODY_LIMIT_BYTES = 256 * 1024
#: The tiny models' context (live/tiny_model.py).
CONTEXT_TOKENS = 512


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_model_dir):
    storage = tmp_path_factory.mktemp("limits") / "models"
    app = create_app(load_hardware(HARDWARE), storage, devices=CPU, max_body_bytes=BODY_LIMIT_BYTES)
    with serve_in_thread(app) as base:
        response = httpx.post(f"{base}/register", json=spec_config("opt-2.7b", tiny_model_dir), timeout=60)
        assert response.status_code == 200, response.text
        yield base


def _chat(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "opt-2.7b", "messages": MESSAGES, **body},
                      timeout=60)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


# --- item 2: limits before work -------------------------------------------------------------------

def test_a_body_over_the_limit_is_413_before_it_is_read(url):
    big = json.dumps({"model": "opt-2.7b", "messages": [{"role": "user", "content": "x" * (2 * BODY_LIMIT_BYTES)}]})
    error = _error(httpx.post(f"{url}/v1/chat/completions", content=big,
                              headers={"content-type": "application/json"}), 413)
    assert str(BODY_LIMIT_BYTES) in error["message"] and "--max-body-bytes" in error["message"]

    def chunked():  # no Content-Length: refused once the limit is passed
        for _ in range(8):
            yield b"x" * (BODY_LIMIT_BYTES // 4)

    error = _error(httpx.post(f"{url}/v1/chat/completions", content=chunked(),
                              headers={"content-type": "application/json"}), 413)
    assert error["code"] == "body_too_large"
    # The server goes on serving.
    assert _chat(url, max_tokens=2).status_code == 200


def test_a_prompt_that_cannot_fit_is_refused_without_tokenizing_it(url):
    # Under the body limit, but far more text than 512 tokens of this vocabulary can spell.
    error = _error(_chat(url, messages=[{"role": "user", "content": "word " * 40_000}]), 400)
    assert error["param"] == "messages" and "bytes are at least" in error["message"]
    assert f"context is {CONTEXT_TOKENS} tokens" in error["message"]
    # A prompt near the limit is still tokenized and judged by its real length.
    error = _error(_chat(url, messages=[{"role": "user", "content": "word " * 600}]), 400)
    assert "the prompt has" in error["message"]


def test_max_tokens_beyond_the_context_is_400_naming_the_numbers(url):
    error = _error(_chat(url, max_tokens=5000), 400)
    assert error["param"] == "max_tokens"
    assert "max_tokens is 5000" in error["message"] and f"context is {CONTEXT_TOKENS}" in error["message"]
    error = _error(httpx.post(f"{url}/v1/completions", json={"model": "opt-2.7b", "prompt": "hi",
                                                             "max_tokens": CONTEXT_TOKENS}, timeout=60), 400)
    assert "at most" in error["message"]
    # What the context leaves is accepted, and a request without max_tokens keeps its default.
    assert _chat(url, max_tokens=3).status_code == 200 and _chat(url).status_code == 200


@pytest.mark.parametrize("section, field, value", [
    ("auto_scaling_config", "keep_alive", "NaN"),
    ("auto_scaling_config", "keep_alive", "Infinity"),
    ("auto_scaling_config", "keep_alive", "-1"),
    ("backend_config", "max_batch_size", "100000"),
    ("auto_scaling_config", "max_instances", "1000000000"),
    ("auto_scaling_config", "min_instances", "3"),
])
def test_deploy_fields_that_size_resources_are_bounded(url, tiny_model_dir, section, field, value):
    cfg = spec_config("opt-2.7b", tiny_model_dir, model=f"bounded-{field}")
    if field == "min_instances":
        cfg["auto_scaling_config"]["max_instances"] = 5
    cfg[section][field] = "@VALUE@"
    body = json.dumps(cfg).replace('"@VALUE@"', value)  # NaN and Infinity as Python's json writes them
    error = _error(httpx.post(f"{url}/register", content=body, headers={"content-type": "application/json"},
                              timeout=60), 400)
    assert error["param"] == f"{section}.{field}"
    assert f"bounded-{field}" not in [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]


# --- item 3: types as the API defines them --------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("max_tokens", "5"), ("max_tokens", True), ("max_tokens", 5.0), ("temperature", "0.5"),
    ("stream", "yes"), ("stream", 1), ("seed", "7"), ("top_p", True),
])
def test_fields_of_the_wrong_type_are_400_naming_the_field(url, field, value):
    error = _error(_chat(url, **{field: value}), 400)
    assert error["param"] == field and field in error["message"]


def test_numbers_of_the_right_type_are_accepted(url):
    reply = _chat(url, max_tokens=2, temperature=1, top_p=1, seed=-5, stream=False)
    assert reply.status_code == 200, reply.text


# --- item 4: no plain-text 500s -------------------------------------------------------------------

def _raw_chat(client: httpx.Client, raw_body: str) -> httpx.Response:
    return client.post("/v1/chat/completions", content=raw_body.encode(), headers={"content-type": "application/json"})


def test_out_of_range_seed_and_lone_surrogate_are_400_and_the_connection_lives(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        error = _error(client.post("/v1/chat/completions", json={"model": "opt-2.7b", "messages": MESSAGES,
                                                                 "seed": 2**70, "max_tokens": 2}), 400)
        assert error["param"] == "seed"
        body = '{"model": "opt-2.7b", "max_tokens": 2, "messages": [{"role": "user", "content": "hi \\ud800"}]}'
        error = _error(_raw_chat(client, body), 400)
        assert error["param"] == "messages.0.content" and "surrogate" in error["message"]
        body = '{"model": "opt-2.7b", "prompt": "\\udfff", "max_tokens": 2}'
        error = _error(client.post("/v1/completions", content=body.encode(),
                                   headers={"content-type": "application/json"}), 400)
        assert error["param"] == "prompt"
        # The next, valid request on the same keep-alive connection is answered.
        assert client.post("/v1/chat/completions", json={"model": "opt-2.7b", "messages": MESSAGES,
                                                         "max_tokens": 2}).status_code == 200


def test_an_unexpected_error_is_a_json_500_and_the_connection_lives(url, monkeypatch):
    from live.controller import Controller

    def broken(self):
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr(Controller, "status", broken)
    with httpx.Client(base_url=url, timeout=60) as client:
        error = _error(client.get("/status"), 500)
        assert error["type"] == "server_error" and "unforeseen" not in error["message"]
        monkeypatch.undo()
        assert client.get("/status").status_code == 200


def test_a_stream_that_fails_midway_ends_with_an_error_event_and_done(url, monkeypatch):
    from transformers import OPTForCausalLM

    forward, calls = OPTForCausalLM.forward, []

    def failing_forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("device lost")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(OPTForCausalLM, "forward", failing_forward)
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 50, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "error" in json.loads(events[-2])
    monkeypatch.undo()
    record = httpx.get(f"{url}/records").json()["requests"][-1]
    assert record["status"] == "failed" and "device lost" in record["reason"]
    assert _chat(url, max_tokens=2).status_code == 200
