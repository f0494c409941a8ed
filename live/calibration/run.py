"""The whole calibration: probes, model profiles and serving measurements in order, on a work folder
under the storage, with the intra-op threads live mode's nodes get (see :mod:`live.calibration`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from live.calibration.batch_sweep import measure_batch_steps
from live.calibration.fresh_memory import measure_fresh_memory
from live.calibration.probes import measure_bandwidths, small_checkpoint_costs, write_probe_checkpoint
from live.calibration.profiles import profile_models
from live.calibration.recipes import PROBE_MODELS, build_model_folder
from live.calibration.results import Calibration, gpu_type_for
from live.calibration.serving import measure_served_steps, measure_serving
from sllmsim.errors import ConfigError
from sllmsim.fidelity.pass_fit import FULL_FIT, fit_construction, fit_forward_passes
from sllmsim.units import rate_text

_MiB = 1024**2
_GiB = 1024**3

#: Folder made under ``--storage`` for the probe files, removed afterwards.
PROBE_DIR = ".sllmsim-calibrate"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (the current number when None); yields the number."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def default_threads(num_nodes: int) -> int:
    """Intra-op threads per process so that every node's compute gets its own share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(num_nodes, 1))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 32 * _GiB


def default_sizes(storage: Path, num_nodes: int) -> tuple[int, int]:
    """(host_size, disk_size) per node: the spec's 32 GB / 128 GB, capped so that all nodes together
    use at most half of this machine's memory and of the storage filesystem's free space."""
    share = 2 * max(num_nodes, 1)
    host = min(32 * _GiB, _memory_bytes() // share)
    disk = min(128 * _GiB, shutil.disk_usage(storage).free // share)
    return max(host // _GiB, 1) * _GiB, max(disk // _GiB, 1) * _GiB


def calibrate(storage: str | Path, models: Sequence[str | Path] = (), device: str = "cpu", repeats: int = 10,
              probe_bytes: int = 256 * _MiB, network_bandwidth_bytes_per_s: float = _GiB / 8,
              threads: int | None = None, node_ids: Sequence[str] = ("0", "1"),
              host_size_bytes: int | None = None, disk_size_bytes: int | None = None,
              prompt_tokens: int = 128, decode_tokens: int = 32, num_gpus: int = 1,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure this machine (see the module docstring). Without ``models``, the :data:`PROBE_MODELS`
    are built under the storage folder and removed afterwards."""
    say = progress or (lambda _msg: None)
    if repeats < 2:
        raise ConfigError("--repeats", "", f"expected at least 2 repeats (a spread needs two samples), got {repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "", f"{device}: this machine has no CUDA device")
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    work = storage / PROBE_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    threads = default_threads(len(node_ids)) if threads is None and dev.type == "cpu" else threads
    host_default, disk_default = default_sizes(storage, len(node_ids))
    notes: list[str] = []
    load_average = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    try:
        with torch_threads(threads) as n_threads:
            say(f"probe checkpoint of {probe_bytes / _MiB:.0f} MiB on {storage}")
            probe = write_probe_checkpoint(work / "probe", probe_bytes)
            # Two seconds' worth at the configured rate keeps the throttled copies short.
            net_bytes = int(min(probe_bytes, max(8 * _MiB, 2 * network_bandwidth_bytes_per_s)))
            net_src = probe if net_bytes == probe_bytes else write_probe_checkpoint(work / "net-probe", net_bytes, 1)
            # A second file of the probe's size: two loads read one node's disk at once when they start together.
            pair = write_probe_checkpoint(work / "pair-probe", probe_bytes, 2)
            measured = measure_bandwidths(probe, net_src, work, device, network_bandwidth_bytes_per_s, repeats,
                                          say, pair_probe=pair)
            fresh = None
            if dev.type == "cpu":
                say("fresh device memory (kept allocations after a pause)")
                fresh = measure_fresh_memory(measured["host_to_device_bytes_per_s"].median, probe_bytes)
            achieved = measured["network_copy_bytes_per_s"].median
            network = network_bandwidth_bytes_per_s
            if achieved < 0.9 * network_bandwidth_bytes_per_s:
                network = achieved
                notes.append(f"a throttled copy reached only {rate_text(achieved)} of the configured "
                             f"{rate_text(network_bandwidth_bytes_per_s)}: the achieved rate is written")
            folders = [Path(p) for p in models]
            if not folders:
                for recipe in PROBE_MODELS:
                    say(f"building probe model {recipe.name}")
                    folders.append(build_model_folder(work / "models" / recipe.name, recipe))
            profiles = profile_models(folders, device, repeats, prompt_tokens, decode_tokens, progress=say)
            say("decode steps through the live server")
            served = measure_served_steps(profiles, device, work, repeats, prompt_tokens, decode_tokens,
                                          gpu_type_for(device, _device_name(dev)))
            profiles = [dataclasses.replace(p, decode_step_s=served[p.name], direct_decode_step_s=p.decode_step_s)
                        for p in profiles]
            # The smallest model: its requests are mostly fixed costs, the serving overhead stands out.
            smallest = min(profiles, key=lambda p: p.weights_bytes)
            say(f"serving {smallest.name} through the live server")
            fit = fit_forward_passes(profiles)
            if fit.method != FULL_FIT:
                notes.append(f"forward passes: {fit.method}")
            load_fit = fit_construction(profiles)
            if load_fit.load_overhead_per_layer_s == 0.0 or load_fit.load_overhead_s == 0.0:
                notes.append(f"model construction: {load_fit.method}")
            serving = measure_serving(smallest, fit, device, work, repeats, prompt_tokens, decode_tokens,
                                      gpu_type_for(device, _device_name(dev)),
                                      host_bytes_per_s=measured["host_to_device_bytes_per_s"].median)
            if serving.request_overhead_s.median < 0:
                notes.append(f"served requests reached their first token {-serving.request_overhead_s.median * 1e3:.1f}"
                             " ms before the modelled prefill: request_overhead_s is written as 0")
            # Rounds: half the repeats (at least two): a burst of 8 on the largest probe takes seconds.
            batch_points, batch_samples = measure_batch_steps(profiles, fit, device, work, max(2, (repeats + 1) // 2),
                                                              gpu_type_for(device, _device_name(dev)), progress=say)
            say(f"small-checkpoint costs of {smallest.name}")
            small = small_checkpoint_costs(smallest, work, measured["disk_read_bytes_per_s"].median, network, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if load_average:
        load_average.append(os.getloadavg()[0])
    return Calibration(device=str(dev), device_name=_device_name(dev), torch_threads=n_threads, measurements=measured,
                       models=profiles, network_bandwidth_bytes_per_s=network,
                       host_size_bytes=host_size_bytes or host_default, disk_size_bytes=disk_size_bytes or disk_default,
                       notes=notes, load_average_1min=load_average, serving=serving, small_checkpoint=small,
                       batch_points=batch_points, batch_samples=batch_samples, num_gpus=num_gpus,
                       fresh_memory=fresh)


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
