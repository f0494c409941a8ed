"""ServerlessLLM's own `sllm` client (the `serverless-llm` 0.8.0 package, unchanged) against `sllmsim
live`: the spec's steps 3 and 4 (deploy, chat, delete) plus `sllm status`, and 404 after delete.

The client runs in a subprocess with a stand-in for Ray (``tests/reference_sllm.py``); it skips, saying
how to install it, where the package is absent (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from reference_sllm import CLIENT_MODULES, run_reference, skip_unless_reference  # noqa: E402

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.config.deploy import parse_deploy_config  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402
from test_server import HARDWARE, MESSAGES, spec_config  # noqa: E402


@pytest.fixture
def server(tmp_path):
    skip_unless_reference(*CLIENT_MODULES)
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices={"0": "cpu", "1": "cpu"})
    with serve_in_thread(app) as url:
        yield url


def sllm(url: str, *args: str):
    """``sllm ARGS`` with ``LLM_SERVER_URL`` set as the spec sets it (with a trailing slash)."""
    proc = run_reference(["cli", *args], env={"LLM_SERVER_URL": url + "/"})
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _write(path: Path, cfg: dict) -> str:
    path.write_text(json.dumps(cfg, indent=4))
    return str(path)


def test_the_reference_client_deploys_lists_chats_and_deletes(server, tmp_path, tiny_model_factory):
    opt, llama = tiny_model_factory("opt"), tiny_model_factory("llama")
    configs = {"opt-2.7b": _write(tmp_path / "config-opt-2.7b.json", spec_config("opt-2.7b", opt)),
               "opt-1.3b": _write(tmp_path / "config-opt-1.3b.json", spec_config("opt-1.3b", llama))}

    assert sllm(server, "status").stdout.strip() == "No models currently deployed."
    for name, path in configs.items():
        proc = sllm(server, "deploy", "--config", path)
        assert proc.returncode == 0 and f"Model '{name}' deployed successfully" in proc.stdout, proc.stdout

    listed = sllm(server, "status").stdout.splitlines()
    assert listed == ["Model status retrieved successfully:", "- opt-2.7b", "- opt-1.3b"]

    # The spec's curl requests: each model starts on the node its target_nodes names.
    for name in configs:
        reply = httpx.post(f"{server}/v1/chat/completions", json={"model": name, "messages": MESSAGES,
                                                                   "max_tokens": 4}, timeout=120)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"
    records = httpx.get(f"{server}/records").json()
    assert [(r["model"], r["node"]) for r in records["requests"]] == [("opt-2.7b", "0"), ("opt-1.3b", "1")]
    # What `sllm deploy` sent: the package's default config under the spec's file.
    sent = records["resolved_config"]["models"]
    assert [m["backend_config"]["hf_model_class"] for m in sent] == ["AutoModelForCausalLM"] * 2
    assert [m["auto_scaling_config"]["keep_alive"] for m in sent] == [0, 0]

    # The spec's step 4, one model by deployment name, the other by its pretrained_model_name_or_path.
    proc = sllm(server, "delete", "opt-1.3b", str(opt))
    assert proc.stdout.splitlines() == ["[✅ SUCCESS] Delete request for 'opt-1.3b' sent successfully.",
                                        f"[✅ SUCCESS] Delete request for '{opt}' sent successfully."]
    assert sllm(server, "status").stdout.strip() == "No models currently deployed."
    for name in configs:
        gone = httpx.post(f"{server}/v1/chat/completions", json={"model": name, "messages": MESSAGES})
        assert gone.status_code == 404 and name in gone.json()["error"]["message"]


def test_the_reference_clients_errors_are_clear(server, tmp_path, tiny_model_dir):
    path = _write(tmp_path / "config.json", spec_config("opt-2.7b", tiny_model_dir))
    assert sllm(server, "deploy", "--config", path).returncode == 0

    # `sllm delete --lora-adapters` deletes only adapters in the reference: refused, nothing deleted.
    proc = sllm(server, "delete", "opt-2.7b", "--lora-adapters", "demo")
    assert "Failed to delete 'opt-2.7b'. Status: 400" in proc.stdout and "LoRA adapters" in proc.stdout
    proc = sllm(server, "delete", "opt-66b")
    assert "Failed to delete 'opt-66b'. Status: 404" in proc.stdout and "opt-2.7b" in proc.stdout
    assert sllm(server, "status").stdout.splitlines()[1:] == ["- opt-2.7b"]

    # The package's default backend is vllm: a config that does not say transformers is refused clearly.
    bare = _write(tmp_path / "bare.json", {"model": "x", "backend_config": {"pretrained_model_name_or_path": "x"}})
    proc = sllm(server, "deploy", "--config", bare)
    assert proc.returncode == 1
    assert "Deploy failed with status 400" in proc.stdout and "live mode serves only 'transformers'" in proc.stdout


def test_the_packages_default_config_and_the_spec_files_parse(tiny_model_dir):
    skip_unless_reference()
    import importlib.util

    package = Path(importlib.util.find_spec("sllm").origin).parent
    default = json.loads((package / "cli" / "default_config.json").read_text())
    # What `sllm deploy --model NAME` sends (the CLI also sets enable_lora and, with a model, the path).
    default.update(model="facebook/opt-1.3b")
    default["backend_config"].update(pretrained_model_name_or_path="facebook/opt-1.3b", enable_lora=False)
    cfg = parse_deploy_config(default, "default_config.json")
    assert (cfg.backend, cfg.auto_scaling_config.keep_alive) == ("vllm", 0.0)
    assert dict(cfg.backend_config.extra) == {"enable_lora": False, "hf_model_class": "AutoModelForCausalLM"}
    for name, node in (("opt-2.7b", "0"), ("opt-1.3b", "1")):
        assert parse_deploy_config(spec_config(name, tiny_model_dir)).placement_config.target_nodes == (node,)


@pytest.fixture
def plain_server(tmp_path):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices={"0": "cpu", "1": "cpu"})
    with serve_in_thread(app) as url:
        yield url


def test_both_delete_body_shapes_and_the_models_key(plain_server, tiny_model_factory):
    """No package needed: the body shapes `sllm` sends, and `sllmsim delete`'s own, by hand."""
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        cfg = spec_config("opt-2.7b", tiny_model_factory("opt", seed=seed), model=name)
        assert httpx.post(f"{plain_server}/register", json=cfg, timeout=120).status_code == 200
    listing = httpx.get(f"{plain_server}/v1/models").json()
    assert [m["id"] for m in listing["data"]] == [m["id"] for m in listing["models"]] == ["a", "b", "c"]

    for body, param in (({"model": "a", "models": ["b"]}, "body"), ({}, "body"), ({"models": []}, "models"),
                        ({"model": "a", "lora_adapters": ["x"]}, "lora_adapters")):
        refused = httpx.post(f"{plain_server}/delete", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    assert httpx.post(f"{plain_server}/delete", json={"model": "a"}, timeout=60).json() == {"deleted": ["a"]}
    # lora_adapters: null is what the reference's server takes as "the whole model".
    assert httpx.post(f"{plain_server}/delete", json={"model": "b", "lora_adapters": None},
                      timeout=60).json() == {"deleted": ["b"]}
    assert httpx.post(f"{plain_server}/delete", json={"models": ["c"]}, timeout=60).json() == {"deleted": ["c"]}
    assert httpx.get(f"{plain_server}/v1/models").json() == {"object": "list", "data": [], "models": []}
