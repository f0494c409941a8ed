"""Fixtures shared by the live-mode tests: tiny model folders (built once per session) and stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from live.store import StoreRegistry  # noqa: E402
from live.tiny_model import make_tiny_model  # noqa: E402
from sllmsim.config.hardware import ClusterSpec, parse_hardware  # noqa: E402

#: The spec's two-node hardware config (storage-aware-scheduling.md, "Pre-requisites").
SPEC_HARDWARE = {
    node: {
        "host_size": "32GB",
        "host_bandwidth": "24GB/s",
        "disk_size": "128GB",
        "disk_bandwidth": "5GB/s",
        "network_bandwidth": "10Gbps",
    }
    for node in ("0", "1")
}


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory) -> Callable[..., Path]:
    """``make(arch="opt", seed=0)``: the folder of a tiny model, built once per (arch, seed) per session."""
    built: dict[tuple[str, int], Path] = {}

    def make(arch: str = "opt", seed: int = 0) -> Path:
        if (arch, seed) not in built:
            built[arch, seed] = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}-{seed}") / "model", arch, seed)
        return built[arch, seed]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory) -> Path:
    """A tiny OPT model folder (random weights, ~1 MB, float32), shared by the whole session. Read-only."""
    return tiny_model_factory("opt")


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_factory) -> Path:
    """A tiny llama model folder (untied embeddings, rotary buffers). Read-only."""
    return tiny_model_factory("llama")


@pytest.fixture
def spec_cluster() -> ClusterSpec:
    """The spec's two-node hardware config, validated."""
    return parse_hardware(SPEC_HARDWARE, "spec hardware_config.json")


@pytest.fixture
def store_factory(tmp_path) -> Callable[..., StoreRegistry]:
    """``make(hardware, devices=None, root=None)``: a store with one node storage per node of the
    ``hardware`` mapping (CPU devices unless ``devices`` says otherwise), under ``tmp_path/store``."""

    def make(hardware: dict, devices: dict[str, str] | None = None, root: Path | None = None) -> StoreRegistry:
        cluster = parse_hardware(hardware, "test hardware")
        return StoreRegistry.for_cluster(root or tmp_path / "store", cluster,
                                         devices or {n: "cpu" for n in cluster.node_ids})

    return make


@pytest.fixture
def spec_store(tmp_path, spec_cluster) -> StoreRegistry:
    """An empty store for the spec's two nodes, both on the CPU."""
    return StoreRegistry.for_cluster(tmp_path / "store", spec_cluster, {"0": "cpu", "1": "cpu"})
