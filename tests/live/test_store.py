"""The model store and a node's tiers: imports, names, disk_size, host-cache LRU, throttled copies, phases."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch

from live.checkpoint_format import InvalidModelNameError, ModelNotFoundError, StorageFullError, StoreError
from live.host_cache import HostCache
from live.loader import HostCheckpoint, load_model
from live.store import StoreRegistry
from sllmsim.core import Tier
from sllmsim.records import Phase


def _hardware(nodes=("0", "1"), host_size="1GB", disk_size="1GB", network_bandwidth="10Gbps"):
    return {n: {"host_size": host_size, "host_bandwidth": "24GB/s", "disk_size": disk_size,
                "disk_bandwidth": "5GB/s", "network_bandwidth": network_bandwidth} for n in nodes}


def _phases(loaded):
    return [(p.phase, p.tier) for p in loaded.phases]


# --- names and imports -----------------------------------------------------------------------------------

def test_import_and_resolve(spec_store, tiny_model_dir):
    local = spec_store.resolve(str(tiny_model_dir))
    assert not local.in_store and local.path == tiny_model_dir
    nbytes = spec_store.import_model("opt-tiny", local, node_ids=["1"])
    assert nbytes == spec_store.model_bytes("opt-tiny") > 0
    assert spec_store.resolve("opt-tiny").in_store
    node0, node1 = spec_store.node("0"), spec_store.node("1")
    assert node1.disk_models() == {"opt-tiny"} and node0.disk_models() == frozenset()
    assert (node1.tier_of("opt-tiny"), node0.tier_of("opt-tiny")) == (Tier.DISK, Tier.NETWORK)
    # A hub-style name already in the store is imported under the deployment's own name.
    spec_store.import_model("facebook/opt-tiny", "opt-tiny")
    assert spec_store.resolve("facebook/opt-tiny").store_name == "facebook/opt-tiny"


def test_missing_hub_name_says_how_to_import(spec_store):
    with pytest.raises(ModelNotFoundError, match="not in the store.*pretrained_model_name_or_path"):
        spec_store.resolve("facebook/opt-2.7b")
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        spec_store.resolve("./does/not/exist")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "a\\b", ".hidden", "a//b", "~/m", "", "a b"])
def test_names_that_escape_the_store_are_rejected(spec_store, tiny_model_dir, bad):
    with pytest.raises(InvalidModelNameError):
        spec_store.import_model(bad, tiny_model_dir)
    with pytest.raises(InvalidModelNameError):
        spec_store.node("0").load(bad)
    assert {p.name for p in spec_store.root.iterdir()} == {"_import", "0", "1"}
    assert [p.name for p in spec_store.import_root.iterdir() if not p.name.startswith(".")] == []


def test_reimport_unchanged_copies_nothing_changed_replaces_stale_copies(spec_store, tiny_model_factory, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_factory("gpt2"), src)
    spec_store.import_model("m", src, node_ids=["0"])
    stored = spec_store.import_path("m") / "model.safetensors"
    inode = stored.stat().st_ino
    spec_store.import_model("m", src, node_ids=["0"])
    assert stored.stat().st_ino == inode
    spec_store.node("0").release(spec_store.node("0").load("m"))
    assert spec_store.node("0").host_models() == {"m"}

    shutil.rmtree(src)
    shutil.copytree(tiny_model_factory("gpt2", seed=1), src)
    spec_store.import_model("m", src)
    assert stored.read_bytes() == (src / "model.safetensors").read_bytes()
    # The old copy on node 0 (disk and host memory) is gone; the next load fetches the new one.
    assert spec_store.node("0").disk_models() == frozenset() and spec_store.node("0").host_models() == frozenset()
    loaded = spec_store.node("0").load("m")
    assert loaded.tier is Tier.NETWORK
    fresh = load_model(src)
    assert all(torch.equal(t, fresh.state_dict()[k]) for k, t in loaded.model.state_dict().items())


def test_import_rejects_non_checkpoints(spec_store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="config.json"):
        spec_store.import_model("x", tmp_path / "empty")


def test_store_survives_a_restart(store_factory, tiny_model_dir, tmp_path):
    store = store_factory(_hardware())
    store.import_model("opt-tiny", tiny_model_dir, node_ids=["0"])
    again = store_factory(_hardware(), root=store.root)
    assert again.node("0").disk_models() == {"opt-tiny"}
    assert again.resolve("opt-tiny").in_store
    assert again.node("0").load("opt-tiny").tier is Tier.DISK


# --- disk_size -------------------------------------------------------------------------------------------

def test_disk_size_evicts_least_recently_used(store_factory, tiny_model_factory):
    sizes = {}
    probe = store_factory(_hardware(nodes=("p",)))
    for arch in ("opt", "llama", "gpt2"):
        sizes[arch] = probe.import_model(arch, tiny_model_factory(arch))
    # Room for any two of the three checkpoints, never all three.
    disk_bytes = sorted(sizes.values())[1] + sorted(sizes.values())[2] + 1000
    assert disk_bytes < sum(sizes.values())
    store = store_factory(_hardware(nodes=("0",), disk_size=disk_bytes), root=probe.root / "second")
    node = store.node("0")
    for arch in sizes:
        store.import_model(arch, tiny_model_factory(arch))
    node.load("opt")
    node.load("llama")
    assert node.disk_models() == {"opt", "llama"}
    node.load("opt")  # opt is now the most recently used
    loaded = node.load("gpt2")
    assert loaded.tier is Tier.NETWORK
    assert node.disk_models() == {"opt", "gpt2"}
    assert node.disk_used_bytes <= disk_bytes
    assert not (node.models_dir / "llama").exists()
    # The host cache never keeps a model whose disk copy was evicted.
    assert node.host_models() <= node.disk_models()


def test_disk_too_small_or_pinned_is_storage_full(store_factory, tiny_model_factory, tmp_path):
    hardware = _hardware(nodes=("0", "1"), disk_size="100KB")
    # A checkpoint larger than every node's disk could never be placed: refused at import.
    with pytest.raises(StorageFullError, match="largest node disk"):
        store_factory(hardware, root=tmp_path / "tiny").import_model("opt", tiny_model_factory("opt"))
    hardware["1"]["disk_size"] = "1GB"
    store = store_factory(hardware)
    store.import_model("opt", tiny_model_factory("opt"))
    with pytest.raises(StorageFullError, match="disk_size"):
        store.node("0").load("opt")
    assert store.node("0").disk_models() == frozenset() and store.node("0").disk_used_bytes == 0

    size = store.model_bytes("opt")
    store = store_factory(_hardware(nodes=("0",), disk_size=int(size * 1.5)), root=store.root / "second")
    node = store.node("0")
    store.import_model("opt", tiny_model_factory("opt"), node_ids=["0"])
    store.import_model("llama", tiny_model_factory("llama"))
    assert node.pin_disk("opt")  # e.g. another node is downloading from this copy
    with pytest.raises(StorageFullError, match="in use"):
        node.load("llama")
    node.unpin_disk("opt")
    assert node.load("llama").tier is Tier.NETWORK
    assert node.disk_models() == {"llama"}


# --- host cache ------------------------------------------------------------------------------------------

def _fake_ckpt(cache: HostCache, nbytes: int) -> HostCheckpoint | None:
    buffer = cache.allocate(nbytes)
    return None if buffer is None else HostCheckpoint(buffer, {}, {}, nbytes)


def test_host_cache_lru_never_over_capacity():
    cache = HostCache(capacity_bytes=1000)
    sizes = {"a": 400, "b": 300, "c": 250, "d": 600, "e": 90, "f": 1000}
    for model in ["a", "b", "c", "a", "d", "e", "b", "f", "c", "a"]:
        if cache.acquire(model) is None:
            ckpt = _fake_ckpt(cache, sizes[model])
            assert cache.used_bytes <= 1000
            cache.insert(model, ckpt, use=True)
        cache.unuse(model)
        assert cache.used_bytes <= 1000
    assert cache.models() == {"c", "a"}  # f filled the cache alone; then c and a came back
    assert _fake_ckpt(cache, 1001) is None


def test_host_cache_keeps_entries_in_use_and_reuses_buffers():
    cache = HostCache(capacity_bytes=1000)
    a = _fake_ckpt(cache, 600)
    cache.insert("a", a, use=True)  # a load is still copying "a" to its device
    assert _fake_ckpt(cache, 500) is None
    cache.unuse("a")
    b = _fake_ckpt(cache, 500)  # evicts "a" and reuses its buffer rather than allocating
    assert b.buffer is a.buffer and cache.models() == frozenset()
    cache.insert("b", b)
    assert cache.used_bytes == 600 and cache.cached_bytes == 600
    assert cache.evict("b") and cache.used_bytes == 600  # pooled until someone needs the room
    small = _fake_ckpt(cache, 100)  # too small to fill a 600-byte buffer: a new one, the 600 stay pooled
    assert small.buffer is not a.buffer and cache.used_bytes == 700
    cache.insert("small", small)
    big = _fake_ckpt(cache, 700)  # too big for the pooled buffer and no room beside it: that one is freed
    assert big.buffer is not a.buffer and cache.used_bytes == 800 and cache.models() == {"small"}


# --- loading through the tiers ------------------------------------------------------------------------------

def test_phases_in_order_with_tiers(spec_store, tiny_model_dir):
    spec_store.import_model("opt-tiny", tiny_model_dir)
    node = spec_store.node("0")
    seen = []
    first = node.load("opt-tiny", on_phase=seen.append)
    assert seen == first.phases
    assert _phases(first) == [(Phase.DOWNLOADING, Tier.NETWORK), (Phase.LOADING_TO_HOST, Tier.NETWORK),
                              (Phase.LOADING_TO_GPU, Tier.NETWORK)]
    for earlier, later in zip(first.phases, first.phases[1:]):
        assert earlier.start_s <= earlier.end_s <= later.start_s <= later.end_s
    assert first.phases[0].nbytes == spec_store.model_bytes("opt-tiny")
    node.release(first)
    assert first.model is None and first.released

    second = node.load("opt-tiny")
    assert second.tier is Tier.HOST and _phases(second) == [(Phase.LOADING_TO_GPU, Tier.HOST)]
    assert second.nbytes == first.nbytes
    # Each load owns its device copy: two instances of one model share no memory with the cache.
    third = node.load("opt-tiny")
    assert third.model.lm_head.weight.data_ptr() != second.model.lm_head.weight.data_ptr()

    assert node.host_cache.evict("opt-tiny")
    fourth = node.load("opt-tiny", dtype="float16")
    assert _phases(fourth) == [(Phase.LOADING_TO_HOST, Tier.DISK), (Phase.LOADING_TO_GPU, Tier.DISK)]
    assert fourth.model.dtype == torch.float16
    assert fourth.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_network_copy_is_throttled(store_factory, tiny_model_dir):
    bandwidth_bytes_per_s = 4 * 1024**2 / 8  # "4Mbps" in the spec's binary units
    store = store_factory(_hardware(network_bandwidth="4Mbps"))
    nbytes = store.import_model("opt-tiny", tiny_model_dir)
    start = time.monotonic()
    loaded = store.node("1").load("opt-tiny")
    wall_s = time.monotonic() - start
    download = loaded.phases[0]
    assert download.phase is Phase.DOWNLOADING and download.nbytes == nbytes
    assert download.duration_s >= nbytes / bandwidth_bytes_per_s
    assert wall_s >= nbytes / bandwidth_bytes_per_s


def test_concurrent_loads_queue_and_backlog_drains(store_factory, tiny_model_factory):
    store = store_factory(_hardware(network_bandwidth="8Mbps"))
    store.import_model("opt", tiny_model_factory("opt"))
    store.import_model("gpt2", tiny_model_factory("gpt2"))
    node = store.node("0")
    results, errors = {}, []

    def load(model):
        try:
            results[model] = node.load(model)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(m,)) for m in ("opt", "gpt2")]
    threads[0].start()
    while not node._io_lock.locked():
        time.sleep(0.001)
    threads[1].start()
    time.sleep(0.05)
    assert node.io_backlog_s() > 0
    for t in threads:
        t.join()
    assert not errors and node.io_backlog_s() == 0
    assert results["gpt2"].phases[0].phase is Phase.QUEUED
    assert results["gpt2"].phases[0].end_s >= results["opt"].phases[-1].end_s - 1e-6
    assert node.disk_models() == {"opt", "gpt2"}


def test_corrupt_checkpoint_fails_cleanly(spec_store, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"{" * 32  # the JSON header is now garbage; the import's header check catches it
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="corrupt safetensors header"):
        spec_store.import_model("bad", bad)

    # A node's copy corrupted after import (e.g. a disk error) is dropped and copied again from the store.
    spec_store.import_model("opt-tiny", tiny_model_dir, node_ids=["0"])
    on_disk = spec_store.node("0").model_dir("opt-tiny") / "model.safetensors"
    on_disk.write_bytes(on_disk.read_bytes()[:-4096])
    node = spec_store.node("0")
    node.release(node.load("opt-tiny"))
    assert node.host_models() == {"opt-tiny"}
    node.host_cache.evict("opt-tiny")
    # Damaged in the store as well: the load fails with the file named, nothing leaks.
    on_disk.write_bytes(on_disk.read_bytes()[:-4096])
    stored = spec_store.import_path("opt-tiny") / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-4096])
    with pytest.raises(StoreError, match="model.safetensors"):
        node.load("opt-tiny")
    assert node.host_models() == frozenset() and node.host_cache.used_bytes >= 0
    assert node.io_backlog_s() == 0 and not node._io_lock.locked() and not node._disk_pins
    stored.write_bytes((tiny_model_dir / "model.safetensors").read_bytes())  # restored: it heals
    assert spec_store.node("1").load("opt-tiny").tier is Tier.NETWORK  # the store still serves others


def test_for_cluster_and_unknown_node(spec_store):
    assert [n.node_id for n in spec_store.nodes] == ["0", "1"]
    with pytest.raises(Exception, match="unknown node"):
        spec_store.node("7")
    assert isinstance(spec_store, StoreRegistry)


@pytest.mark.gpu
def test_cuda_node_loads_through_a_pinned_host_cache(store_factory, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    store = store_factory(_hardware(nodes=("0",)), devices={"0": "cuda:0"})
    store.import_model("opt-tiny", tiny_model_dir, node_ids=["0"])
    node = store.node("0")
    first = node.load("opt-tiny")
    assert first.tier is Tier.DISK and first.device == "cuda:0"
    assert all(t.device.type == "cuda" for t in [*first.model.parameters(), *first.model.buffers()])
    cached = node.host_cache.acquire("opt-tiny")
    assert cached is not None and cached.buffer.is_pinned()
    node.host_cache.unuse("opt-tiny")

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).to("cuda:0").eval()
    ids = torch.tensor([[1, 17, 230, 45, 99]], device="cuda:0")
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, reference(ids).logits)

    before = torch.cuda.memory_allocated()
    node.release(first)
    assert torch.cuda.memory_allocated() <= before - first.nbytes
    second = node.load("opt-tiny", dtype="float16")
    assert second.tier is Tier.HOST and second.model.dtype == torch.float16
    assert _phases(second) == [(Phase.LOADING_TO_GPU, Tier.HOST)]


def test_loading_a_model_never_imported_is_a_clear_error(spec_store):
    with pytest.raises(ModelNotFoundError, match="neither in the import area"):
        spec_store.node("0").load("never-imported")
    assert spec_store.node("0").io_backlog_s() == 0
