"""The client commands (deploy, update, delete, status) against a live server, and `sllmsim live`'s
argument errors; the spec's steps 3 and 4 with `sllmsim` in place of `sllm-cli`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from live.server import create_app, serve_in_thread  # noqa: E402
from sllmsim.cli import main  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402
from test_server import HARDWARE, MESSAGES, REPO, spec_config  # noqa: E402


@pytest.fixture
def server(tmp_path, monkeypatch):
    app = create_app(load_hardware(HARDWARE), tmp_path / "models", devices={"0": "cpu", "1": "cpu"})
    with serve_in_thread(app) as url:
        monkeypatch.setenv("LLM_SERVER_URL", url + "/")
        monkeypatch.setenv("COLUMNS", "200")  # rich draws the full table when it is not a terminal
        yield url


def _write(path, cfg: dict):
    path.write_text(json.dumps(cfg, indent=4))
    return str(path)


def test_deploy_status_update_delete(server, tmp_path, tiny_model_factory, capsys, monkeypatch):
    opt, llama = tiny_model_factory("opt"), tiny_model_factory("llama")
    c27 = _write(tmp_path / "config-opt-2.7b.json", spec_config("opt-2.7b", opt))
    # A folder named relative to the current directory is sent as an absolute path.
    monkeypatch.chdir(llama.parent)
    c13 = _write(tmp_path / "config-opt-1.3b.json", spec_config("opt-1.3b", llama.name))

    assert main(["deploy", "--config", c27]) == 0
    assert main(["deploy", "--config", c13]) == 0
    out = capsys.readouterr().out
    assert "deployed opt-2.7b" in out and "deployed opt-1.3b" in out

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "opt-2.7b" in out and "opt-1.3b" in out and "scaled to zero" in out

    # Keep instances loaded for a while, then look at them after a request each.
    for path, name, folder in ((c27, "opt-2.7b", opt), (c13, "opt-1.3b", str(llama))):
        _write(tmp_path / "updated.json", spec_config(name, folder, auto_scaling_config__keep_alive=30))
        assert main(["update", "--config", str(tmp_path / "updated.json")]) == 0
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=2)
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    placed = {m["model"]: [(i["node"], i["phase"]) for i in m["instances"]] for m in status["models"]}
    assert placed == {"opt-2.7b": [("0", "idle")], "opt-1.3b": [("1", "idle")]}
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if "opt-2.7b-" in line)
    assert " 0 " in row and "idle" in row and "cpu" in row

    # Step 4: delete by deployment name, or by pretrained_model_name_or_path as the spec does.
    assert main(["delete", "opt-1.3b", str(opt)]) == 0
    out = capsys.readouterr().out
    assert "deleted opt-1.3b" in out and "deleted opt-2.7b" in out
    assert httpx.get(f"{server}/status").json()["models"] == []


def test_client_errors_are_one_line_without_traceback(server, tmp_path, capsys):
    bad = spec_config("opt-2.7b", tmp_path)
    bad["auto_scaling_config"]["target"] = 0
    path = _write(tmp_path / "bad.json", bad)
    assert main(["deploy", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: auto_scaling_config.target:") and "Traceback" not in err

    assert main(["delete", "nothing-here"]) == 2
    assert "nothing-here" in capsys.readouterr().err

    hub = _write(tmp_path / "hub.json", json.loads((REPO / "traces" / "config-opt-2.7b.json").read_text()))
    assert main(["deploy", "--config", hub]) == 2
    assert "facebook/opt-2.7b" in capsys.readouterr().err

    assert main(["status", "--url", "http://127.0.0.1:9/"]) == 2
    assert "cannot reach the sllmsim server" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--devices", "0=gpu"], ["--devices", "cuda"]),
    (["--devices", "7=cpu"], ["--devices", "no such node"]),
    (["--devices", "0=cuda:99"], ["--devices", "does not exist"]),
    (["--scheduler", "storage_awar"], ["storage_aware"]),
    (["--autoscale", "concurency"], ["--autoscale", "concurrency"]),
])
def test_live_command_rejects_bad_arguments(tmp_path, capsys, args, words):
    assert main(["live", "--hardware-config", str(HARDWARE), "--storage", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_live_command_names_a_missing_hardware_file(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["live", "--hardware-config", str(missing), "--storage", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_client_and_live_commands_import_no_torch_or_fastapi():
    code = ("import sys; import sllmsim.cli.client, sllmsim.cli.live; "
            "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_steps_with_its_config_files_unchanged(tmp_path, tiny_model_factory, capsys, monkeypatch, caplog):
    """Hub names resolve from the store: with checkpoints imported under `facebook/opt-*`, the spec's
    deploy files, requests and delete command work as written (sllmsim for sllm-cli)."""
    from live.store import StoreRegistry

    storage = tmp_path / "models"
    store = StoreRegistry(storage)
    store.import_model("facebook/opt-2.7b", tiny_model_factory("opt"))
    store.import_model("facebook/opt-1.3b", tiny_model_factory("llama"))
    caplog.set_level("INFO", logger="sllmsim.scheduler")
    app = create_app(load_hardware(HARDWARE), storage, devices={"0": "cpu", "1": "cpu"})
    with serve_in_thread(app) as url:
        monkeypatch.setenv("LLM_SERVER_URL", url + "/")
        for name in ("config-opt-2.7b.json", "config-opt-1.3b.json"):
            assert main(["deploy", "--config", str(REPO / "traces" / name)]) == 0
        for model in ("opt-2.7b", "opt-1.3b"):
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={"model": model, "messages": MESSAGES})
            assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"
        logged = [r.getMessage() for r in caplog.records if r.name == "sllmsim.scheduler"]
        assert [line for line in logged if line.startswith("Allocated")] == [
            "Allocated node 0 for model opt-2.7b", "Allocated node 1 for model opt-1.3b"]
        assert main(["delete", "facebook/opt-1.3b", "facebook/opt-2.7b"]) == 0
        assert "deleted opt-1.3b" in capsys.readouterr().out
        assert httpx.get(f"{url}/v1/models").json()["data"] == []
