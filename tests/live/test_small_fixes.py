"""Small ones (issue 11, item 11): docs behind the API key, ``HEAD /health``, running requests in
``/records``, no store paths in error bodies."""

from __future__ import annotations

import threading

import httpx

from live.server import create_app, serve_in_thread
from sllmsim.config.hardware import load_hardware

from test_disconnect import _leave_after, _model, slow_server  # noqa: F401  (fixture)
from test_server import HARDWARE, MESSAGES, spec_config, wait_until
from test_server_lifecycle import _corrupt_header

CPU = {"0": "cpu", "1": "cpu"}


def test_docs_are_closed_with_an_api_key_and_head_health_answers(tmp_path):
    with serve_in_thread(create_app(load_hardware(HARDWARE), tmp_path / "models", devices=CPU,
                                    api_key="s3cret")) as url:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(f"{url}{path}").status_code in (401, 404), path
            assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"}).status_code == 404
        assert httpx.head(f"{url}/health").status_code == 200
    with serve_in_thread(create_app(load_hardware(HARDWARE), tmp_path / "open", devices=CPU)) as url:
        assert httpx.get(f"{url}/openapi.json").status_code == 200  # without a key they stay


def test_records_say_running_for_a_running_request(slow_server):  # noqa: F811
    runner = threading.Thread(target=_leave_after, args=(slow_server, 1.5))
    runner.start()
    wait_until(lambda: _model(slow_server)["in_flight"] == 1, what="the request to run")
    record = httpx.get(f"{slow_server}/records").json()["requests"][0]
    runner.join()
    assert record["status"] == "running" and record["finish_s"] is None


def test_error_bodies_carry_no_store_paths(tmp_path, tiny_model_dir):
    # No node-disk copy at registration (local_disk: []), so the first load reads the damaged store copy.
    storage = tmp_path / "models"
    with serve_in_thread(create_app(load_hardware(HARDWARE), storage, devices=CPU)) as url:
        assert httpx.post(f"{url}/register", json=spec_config("opt-2.7b", tiny_model_dir, placement_config__local_disk=[]),
                          timeout=60).status_code == 200
        _corrupt_header(storage / "_import" / "opt-2.7b")
        response = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                              json={"model": "opt-2.7b", "messages": MESSAGES, "max_tokens": 2})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "<storage>/" in message and "opt-2.7b" in message and str(tmp_path) not in message and str(storage.resolve()) not in message
