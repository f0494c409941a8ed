"""The store (issue 11, items 5-8): names that cannot nest, one server per store, state that survives."""

from __future__ import annotations

import pytest

from live.checkpoint_format import InvalidModelNameError


@pytest.mark.parametrize("first, second", [("a", "a/b"), ("a/b", "a"), ("org/a", "org/a/b/c")])
def test_a_name_that_nests_with_a_stored_one_is_refused(spec_store, tiny_model_dir, first, second):
    spec_store.import_model(first, tiny_model_dir, ["0"])
    with pytest.raises(InvalidModelNameError, match="nests with"):
        spec_store.import_model(second, tiny_model_dir)
    # Siblings that merely share a prefix of characters are fine.
    spec_store.import_model(first + "x", tiny_model_dir)
    assert spec_store.is_imported(first) and spec_store.is_imported(first + "x")


def test_removing_a_model_leaves_others_intact(spec_store, tiny_model_dir):
    spec_store.import_model("org/a", tiny_model_dir, ["0"])
    spec_store.import_model("org/b", tiny_model_dir, ["0"])
    spec_store.remove_model("org/a")
    assert spec_store.is_imported("org/b") and "org/b" in spec_store.node("0").disk_models()


# --- item 8: one server per store, state that survives --------------------------------------------

import errno  # noqa: E402
import json  # noqa: E402

import httpx  # noqa: E402

from live.server import create_app, serve_in_thread  # noqa: E402
from live.state_file import StoreLock, StoreLockedError  # noqa: E402
from sllmsim import cli  # noqa: E402
from sllmsim.config.hardware import load_hardware  # noqa: E402

from test_server import HARDWARE, spec_config  # noqa: E402

CPU = {"0": "cpu", "1": "cpu"}


def _app(storage, **kw):
    return create_app(load_hardware(HARDWARE), storage, devices=CPU, **kw)


def test_a_second_server_on_the_same_store_does_not_start(tmp_path, capsys):
    storage = tmp_path / "models"
    with serve_in_thread(_app(storage)):
        with pytest.raises(RuntimeError, match="did not start"):
            with serve_in_thread(_app(storage)):
                pass
        capsys.readouterr()  # (uvicorn's own report of the failed in-process start)
        # The CLI says so in one line, before it serves.
        assert cli.main(["live", "--hardware-config", str(HARDWARE), "--storage", str(storage),
                         "--devices", "0=cpu,1=cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "in use by another sllmsim live server" in err and "\n" not in err
    StoreLock(storage).release()  # free again once the server stopped


def test_the_lock_names_the_holder(tmp_path):
    held = StoreLock(tmp_path)
    try:
        with pytest.raises(StoreLockedError, match=r"pid \d+"):
            StoreLock(tmp_path)
    finally:
        held.release()


def test_a_corrupt_state_file_is_kept_and_the_previous_one_used(tmp_path, tiny_model_factory):
    storage = tmp_path / "models"
    with serve_in_thread(_app(storage)) as url:
        for name, arch in (("opt-2.7b", "opt"), ("opt-1.3b", "llama")):
            assert httpx.post(f"{url}/register", json=spec_config(name, tiny_model_factory(arch)),
                              timeout=60).status_code == 200
    state = storage / "deployments.json"
    # The previous state (one deployment) was kept when the second was added.
    assert [d["config"]["model"] for d in json.loads((storage / "deployments.json.bak").read_text())["deployments"]] \
        == ["opt-2.7b"]
    state.write_text('{"version": 1, "deployments": [')  # torn by something else
    with serve_in_thread(_app(storage)) as url:
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["opt-2.7b"]
    assert (storage / "deployments.json.corrupt").read_text() == '{"version": 1, "deployments": ['


def test_a_failed_state_write_changes_nothing(tmp_path, tiny_model_dir, monkeypatch):
    import live.state_file as state_file

    real = state_file.write_bytes_durably

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    storage = tmp_path / "models"
    with serve_in_thread(_app(storage)) as url:
        http = httpx.Client(base_url=url, timeout=60)
        cfg = spec_config("opt-2.7b", tiny_model_dir)
        monkeypatch.setattr(state_file, "write_bytes_durably", full_disk)
        response = http.post("/register", json=cfg)
        assert response.status_code == 500 and "No space left" in response.json()["error"]["message"]
        assert http.get("/v1/models").json()["data"] == []  # not live
        monkeypatch.setattr(state_file, "write_bytes_durably", real)
        assert http.post("/register", json=cfg).status_code == 200  # a retry deploys it (no 409)

        monkeypatch.setattr(state_file, "write_bytes_durably", full_disk)
        assert http.post("/delete", json={"models": ["opt-2.7b"]}).status_code == 500
        assert http.get("/status").json()["models"][0]["state"] == "deployed"  # not stuck "deleting"
        assert http.post("/update", json=dict(cfg, auto_scaling_config={"keep_alive": 7})).status_code == 500
        assert http.get("/status").json()["models"][0]["config"]["auto_scaling_config"]["keep_alive"] == 0
        monkeypatch.setattr(state_file, "write_bytes_durably", real)
        assert http.post("/delete", json={"models": ["opt-2.7b"]}).status_code == 200
    assert json.loads((storage / "deployments.json").read_text())["deployments"] == []


# --- item 5: imports copy only the checkpoint -----------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402

from live.checkpoint_format import MANIFEST, CorruptCopyError, StoreError  # noqa: E402


def _folder_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "src"
    shutil.copytree(tiny_model_dir, folder)
    return folder


@pytest.mark.parametrize("link", ["etc", "self", "two", "outside_file"])
def test_links_that_leave_the_folder_or_loop_are_refused_or_skipped(spec_store, tiny_model_dir, tmp_path, link):
    folder = _folder_copy(tiny_model_dir, tmp_path)
    if link == "etc":
        os.symlink("/etc", folder / "etc")
    elif link == "self":
        os.symlink(".", folder / "again")
    elif link == "two":
        (folder / "sub").mkdir()
        os.symlink("..", folder / "sub" / "up")
        os.symlink("sub", folder / "down")
    else:
        secret = tmp_path / "secret.txt"
        secret.write_text("not part of the model")
        os.symlink(secret, folder / "notes.txt")
    if link in ("etc", "outside_file"):
        with pytest.raises(StoreError, match="outside the checkpoint folder"):
            spec_store.import_model("m", folder)
        assert not spec_store.is_imported("m")
    else:  # links inside the folder are not followed: one copy of each file, no loop
        spec_store.import_model("m", folder)
        stored = spec_store.import_path("m")
        copied = sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file())
        assert copied == sorted([*(p.name for p in tiny_model_dir.iterdir() if p.is_file()), MANIFEST])


def test_hugging_face_cache_links_into_blobs_are_followed_and_modes_kept(spec_store, tiny_model_dir, tmp_path):
    repo = tmp_path / "models--org--tiny"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in tiny_model_dir.iterdir() if p.is_file())):
        shutil.copy(f, blobs / f"blob{i}")
        os.symlink(os.path.relpath(blobs / f"blob{i}", snapshot), snapshot / f.name)
    os.chmod(blobs / "blob0", 0o600)
    first = sorted(p.name for p in tiny_model_dir.iterdir() if p.is_file())[0]
    spec_store.import_model("org/tiny", snapshot)
    stored = spec_store.import_path("org/tiny")
    assert (stored / "model.safetensors").is_file() and not (stored / "model.safetensors").is_symlink()
    assert (stored / first).stat().st_mode & 0o777 == 0o600


def test_the_management_api_imports_only_from_allowed_folders(tmp_path, tiny_model_dir):
    allowed = tmp_path / "allowed"
    inside = _folder_copy(tiny_model_dir, allowed)
    with serve_in_thread(_app(tmp_path / "models", import_roots=[allowed])) as url:
        response = httpx.post(f"{url}/register", json=spec_config("opt-2.7b", tiny_model_dir), timeout=60)
        assert response.status_code == 400 and "--import-from" in response.json()["error"]["message"]
        assert httpx.post(f"{url}/register", json=spec_config("opt-2.7b", inside), timeout=60).status_code == 200


# --- item 6: a bad copy is never blessed ----------------------------------------------------------

def test_a_damaged_stored_copy_is_not_copied_to_a_node_and_heals_when_restored(spec_store, tiny_model_dir):
    spec_store.import_model("m", tiny_model_dir)
    weights = spec_store.import_path("m") / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated behind the store's back
    with pytest.raises(CorruptCopyError, match="imported as"):
        spec_store.node("0").place_on_disk("m")
    assert "m" not in spec_store.node("0").disk_models()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(CorruptCopyError, match="content hash"):
        spec_store.node("0").place_on_disk("m")
    weights.write_bytes(good)  # restored: the next copy succeeds
    assert spec_store.node("0").place_on_disk("m") == len(good) + sum(
        p.stat().st_size for p in tiny_model_dir.iterdir() if p.is_file() and p.name != "model.safetensors")
    assert "m" in spec_store.node("0").disk_models()


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_node_copy_that_fails_to_load_is_dropped_and_copied_again(spec_store, tiny_model_dir, damage):
    from sllmsim.core import Tier

    spec_store.import_model("m", tiny_model_dir, ["0"])
    node = spec_store.node("0")
    weights = node.model_dir("m") / "model.safetensors"
    if damage == "deleted":
        weights.unlink()  # behind the server's back: its index still lists the copy
    else:
        weights.write_bytes(weights.read_bytes()[:100])
    assert node.tier_of("m") is Tier.DISK
    loaded = node.load("m")
    assert loaded.model is not None
    assert weights.stat().st_size == (spec_store.import_path("m") / "model.safetensors").stat().st_size
    node.release(loaded)
    assert node.load("m").tier is not Tier.NETWORK  # healed: the next load is local again


def test_a_checkpoint_with_nan_weights_is_refused_at_import(spec_store, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _folder_copy(tiny_model_dir, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StoreError, match="NaN"):
        spec_store.import_model("m", folder)
    assert not spec_store.is_imported("m")
    assert torch.isfinite(load_file(tiny_model_dir / "model.safetensors")[name]).all()


def test_status_says_what_is_unavailable(tmp_path, tiny_model_dir):
    # No node-disk copy at registration (local_disk: []): the store copy is the only one.
    storage = tmp_path / "models"
    with serve_in_thread(_app(storage)) as url:
        assert httpx.post(f"{url}/register", json=spec_config("opt-2.7b", tiny_model_dir, placement_config__local_disk=[]), timeout=60).status_code == 200
        assert httpx.get(f"{url}/status").json()["models"][0]["unavailable"] == ""
        shutil.rmtree(storage / "_import" / "opt-2.7b")  # behind the server's back
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                           json={"model": "opt-2.7b", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 500
        unavailable = httpx.get(f"{url}/status").json()["models"][0]["unavailable"]
        assert "no complete copy" in unavailable
