"""Storage and copy probes: disk, page-cache, host-copy, host → device and (throttled) network
bandwidths on a probe checkpoint, and a whole small model folder's fixed costs."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from live.calibration.results import Measurement, ModelProfile, sample
from live.loader import HostCheckpoint, allocate_host_buffer, read_checkpoint, to_device
from live.pagecache import drop_file, drop_tree
from live.store import copy_checkpoint
from sllmsim.units import rate_text

_MiB = 1024**2


def write_probe_checkpoint(folder: Path, nbytes: int, seed: int = 0) -> Path:
    """A one-tensor safetensors checkpoint of ``nbytes`` random bytes (incompressible), synced to disk."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    path = folder / "model.safetensors"
    save_file({"probe": data}, str(path))
    drop_file(path)  # also syncs it: what follows reads from the disk, not from dirty pages
    return folder


def disk_read_once(folder: Path) -> tuple[float, float]:
    """(cold, page-cache) read of ``folder``'s checkpoint through the live loader into a fresh buffer, bytes/s."""
    drop_tree([folder])
    start = time.perf_counter()
    ckpt = read_checkpoint(folder)
    cold = ckpt.nbytes / (time.perf_counter() - start)
    del ckpt
    start = time.perf_counter()
    ckpt = read_checkpoint(folder)
    return cold, ckpt.nbytes / (time.perf_counter() - start)


def disk_pair_read_once(first: Path, second: Path) -> float:
    """Two checkpoints read at once from two threads (as two loads on one node's disk), page cache
    dropped, each into a fresh host buffer: both files' bytes over the wall time, bytes/s."""
    drop_tree([first, second])
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = time.perf_counter()
        reads = [pool.submit(lambda folder: read_checkpoint(folder).nbytes, f) for f in (first, second)]
        nbytes = sum(r.result() for r in reads)  # a failed read raises here, with its own error
        elapsed_s = time.perf_counter() - start
    return nbytes / elapsed_s


def host_copy_once(src: torch.Tensor, dst: torch.Tensor) -> float:
    """A bulk copy between two already-touched host buffers (plain memory bandwidth), bytes/s."""
    start = time.perf_counter()
    dst.copy_(src)
    return src.numel() / (time.perf_counter() - start)


def host_to_device_once(ckpt: HostCheckpoint, device: torch.device) -> float:
    """live.loader.to_device of a host buffer, allocation on the device included, bytes/s."""
    start = time.perf_counter()
    on_device = to_device(ckpt, device, None, copy=True)
    rate = ckpt.nbytes / (time.perf_counter() - start)
    del on_device
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def copy_once(src: Path, work: Path, bandwidth_bytes_per_s: float | None) -> float:
    """A copy of ``src`` as live mode downloads it (throttled to the bandwidth unless None), bytes/s."""
    dst = work / f"copy-{uuid.uuid4().hex}"
    start = time.perf_counter()
    nbytes = copy_checkpoint(src, dst, bandwidth_bytes_per_s)
    rate = nbytes / (time.perf_counter() - start)
    shutil.rmtree(dst, ignore_errors=True)
    return rate


def measure_bandwidths(probe: Path, net_probe: Path, work: Path, device: str, network_bandwidth_bytes_per_s: float,
                       repeats: int, progress: Callable[[str], None] | None = None,
                       pair_probe: Path | None = None) -> dict[str, Measurement]:
    """Disk, page-cache, host-copy, host → device and copy bandwidths: ``repeats`` samples of the
    (throttled, seconds-long) copies and twice as many of the others, which take a fraction of a
    second each and vary most (a virtual disk's reads spread by ±30 % from one read to the next).
    With ``pair_probe`` (a second checkpoint of the probe's size), also the disk's rate in all with
    two reads at once (``disk_pair_read_bytes_per_s``).

    Interleaving the quantities (rather than repeating one, then the next) spreads a change in the
    machine's load over all of them.
    """
    dev = torch.device(device)
    nbytes = sum(f.stat().st_size for f in probe.iterdir())
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    dst.copy_(src)  # touch every page first: the copies below measure copying, not page faults
    pinned = allocate_host_buffer(nbytes, pin=dev.type == "cuda")
    pinned.fill_(1)
    host = HostCheckpoint(buffer=pinned, entries={}, tensors={}, nbytes=nbytes)
    keys = ("disk_read_bytes_per_s", "page_cache_read_bytes_per_s", "host_copy_bytes_per_s",
            "host_to_device_bytes_per_s", "network_copy_bytes_per_s", "unthrottled_copy_bytes_per_s")
    if pair_probe is not None:
        keys += ("disk_pair_read_bytes_per_s",)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    rounds = 2 * repeats
    for rep in range(rounds):
        if progress:
            progress(f"bandwidths ({rep + 1}/{rounds})")
        cold, warm = disk_read_once(probe)
        samples["disk_read_bytes_per_s"].append(cold)
        samples["page_cache_read_bytes_per_s"].append(warm)
        if pair_probe is not None:
            samples["disk_pair_read_bytes_per_s"].append(disk_pair_read_once(probe, pair_probe))
        samples["host_copy_bytes_per_s"].append(host_copy_once(src, dst))
        samples["host_to_device_bytes_per_s"].append(host_to_device_once(host, dev))
        if rep % 2 == 0:
            samples["network_copy_bytes_per_s"].append(copy_once(net_probe, work, network_bandwidth_bytes_per_s))
            samples["unthrottled_copy_bytes_per_s"].append(copy_once(net_probe, work, None))
    path = "pinned host buffer → CUDA" if dev.type == "cuda" else "host buffer → fresh host buffer (the CPU 'device')"
    labels = {
        "disk_read_bytes_per_s": ("disk read (page cache dropped)",
                                  "live.loader.read_checkpoint into a fresh host buffer, after posix_fadvise DONTNEED"),
        "disk_pair_read_bytes_per_s": ("two disk reads at once (page cache dropped)",
                                       "the probe and a second one of its size read by live.loader.read_checkpoint "
                                       "from two threads, each into a fresh host buffer: both sizes over the wall "
                                       "time"),
        "page_cache_read_bytes_per_s": ("disk read from the page cache",
                                        "the same read again without dropping: what a load of a just-written file sees"),
        "host_copy_bytes_per_s": ("host memory copy", "torch copy between two already-touched host buffers"),
        "host_to_device_bytes_per_s": ("host → device", f"live.loader.to_device, {path}, allocation included"),
        "network_copy_bytes_per_s": ("network copy (throttled)", "live.store.copy_checkpoint throttled to the "
                                     f"configured {rate_text(network_bandwidth_bytes_per_s)}"),
        "unthrottled_copy_bytes_per_s": ("local copy (unthrottled)",
                                         "the fastest a live 'download' can go on this machine"),
    }
    return {k: sample(k, labels[k][0], "bytes/s", samples[k], labels[k][1]) for k in keys}


def small_checkpoint_costs(profile: ModelProfile, work: Path, disk_bytes_per_s: float,
                           network_bytes_per_s: float, repeats: int) -> dict[str, Measurement]:
    """Time spent by a whole model folder's disk read and throttled download beyond ``size / bandwidth``.

    The bandwidths are measured on one large probe file; a model folder adds a handful of small files
    (config, tokenizer), their opens and creations. Reported, not written: no hardware key takes it,
    and on the machine these were written for it is a few milliseconds.
    """
    folder = Path(profile.path)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    read, download = [], []
    for _ in range(repeats):
        drop_tree([folder])
        start = time.perf_counter()
        ckpt = read_checkpoint(folder)
        read.append(time.perf_counter() - start - ckpt.nbytes / disk_bytes_per_s)
        del ckpt
        drop_tree([folder])
        dst = work / f"download-{uuid.uuid4().hex}"
        start = time.perf_counter()
        nbytes = copy_checkpoint(folder, dst, network_bytes_per_s)
        download.append(time.perf_counter() - start - nbytes / network_bytes_per_s)
        shutil.rmtree(dst, ignore_errors=True)
    name = profile.name
    return {
        "disk_read_fixed_s": sample("disk_read_fixed_s", f"{name} ({size / _MiB:.1f} MiB): disk read − size / disk "
                                     "bandwidth", "s", read, "live.loader.read_checkpoint of the folder, page cache "
                                     "dropped"),
        "download_fixed_s": sample("download_fixed_s", f"{name}: throttled download − size / network bandwidth", "s",
                                    download, "live.store.copy_checkpoint of the folder, source dropped from the "
                                    "page cache"),
    }
