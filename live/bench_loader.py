"""Benchmark the fast loader against raw reads, ``safetensors.torch.load_file`` and ``from_pretrained``.

``python -m live.bench_loader [--size-gb 1] [--device cpu|cuda] [--repeats 3]``

Builds (once, then reuses) a random-weight OPT checkpoint of about ``--size-gb`` GB in ``--dir``,
then times, in each cache state — *cold* (every file dropped from the page cache with
``posix_fadvise(DONTNEED)`` first) and *warm* (files read once just before):

* ``raw read``: sequential ``preadv`` of every safetensors file into one reused 64 MiB buffer by one
  reader: the plain throughput of the disk (or page cache), the baseline the loader is held to;
* ``raw read (N threads)``: the loader's own I/O pattern (N readers, 16 MiB chunks) into small
  reused buffers, with no loader around it: what parallel reads alone give on this machine;
* ``ours``: :func:`live.loader.load_model` with a reused host buffer (pinned on CUDA), and once
  more with a fresh buffer each time;
* ``load_file``: ``safetensors.torch.load_file`` of every shard (tensors only, no model);
* ``from_pretrained``: ``AutoModelForCausalLM.from_pretrained``.

Every measurement ends with the weights resident on the device: on CPU, ``load_file`` and
``from_pretrained`` hand out tensors backed by a lazy mmap, so the timed step reads one byte of every
4 KiB page of every tensor (a model is not ready to serve before its weights are in memory). The
table reports the median time, GB/s (10^9 bytes of checkpoint per second), the share of raw read
throughput and the speed-up over ``from_pretrained``. Numbers depend on the machine's disk and on
what else runs on it; the script prints what it measured and claims nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Imported before any timer starts: import cost is not load cost.
import safetensors.torch
import torch
import transformers
from transformers import AutoModelForCausalLM, OPTConfig

from live import loader

_RAW_CHUNK_BYTES = 64 * 1024**2
_PAGE_BYTES = 4096


def bench_config(size_gb: float) -> OPTConfig:
    """An OPT config (opt-1.3b's width and vocabulary) with as many layers as give about ``size_gb`` in fp16."""
    hidden, vocab, positions = 2048, 50272, 2048
    per_layer = 12 * hidden * hidden + 13 * hidden  # attention 4h^2 + MLP 8h^2, biases and norms
    fixed = (vocab + positions + 2) * hidden + 2 * hidden
    layers = max(1, round((size_gb * 1e9 / 2 - fixed) / per_layer))
    return OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, ffn_dim=4 * hidden,
                     num_attention_heads=32, max_position_embeddings=positions, word_embed_proj_dim=hidden,
                     dtype="float16")


def build_checkpoint(folder: Path, size_gb: float, seed: int = 0) -> Path:
    """Write a random-weight fp16 checkpoint to ``folder`` unless an identical one is there."""
    config = bench_config(size_gb)
    stamp = {"layers": config.num_hidden_layers, "seed": seed, "transformers": transformers.__version__}
    marker = folder / "bench-stamp.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with loader.parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, p in model.named_parameters():
        weights[name] = (torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.02).to(torch.float16)
    model.load_state_dict(weights, assign=True, strict=False)
    model.tie_weights()
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder, max_shard_size="5GB")
    transformers.utils.logging.enable_progress_bar()
    for path in folder.iterdir():
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())  # dirty pages cannot be dropped from the page cache
    marker.write_text(json.dumps(stamp))
    return folder


def drop_from_page_cache(files: list[Path]) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_share(files: list[Path]) -> float | None:
    """Share of the files' pages in the page cache (via util-linux ``fincore``), None if unavailable."""
    import shutil
    import subprocess

    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", *map(str, files)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    res = size = 0
    for line in out.stdout.split("\n"):
        if line.strip():
            r, s = line.split()
            res, size = res + int(r), size + int(s)
    return res / size if size else None


def raw_read(files: list[Path], buffer: memoryview) -> int:
    """One reader, one file after the other, ``len(buffer)`` bytes per ``preadv``: the plain baseline."""
    total = 0
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            offset = 0
            while n := os.preadv(fd, [buffer], offset):
                offset += n
            total += offset
        finally:
            os.close(fd)
    return total


def raw_read_parallel(files: list[Path], buffers: list[memoryview]) -> int:
    """The loader's I/O pattern without the loader: ``len(buffers)`` readers taking chunks in turn."""
    chunk = len(buffers[0])
    jobs = [(path, off) for path in files for off in range(0, path.stat().st_size, chunk)]
    lock = threading.Lock()
    total = [0]

    def reader(buffer: memoryview) -> None:
        fds: dict[Path, int] = {}
        try:
            while True:
                with lock:
                    if not jobs:
                        return
                    path, off = jobs.pop(0)
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                    os.posix_fadvise(fds[path], 0, 0, os.POSIX_FADV_SEQUENTIAL)
                n = os.preadv(fds[path], [buffer], off)
                with lock:
                    total[0] += n
        finally:
            for fd in fds.values():
                os.close(fd)

    threads = [threading.Thread(target=reader, args=(b,)) for b in buffers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0]


def touch(tensors, device: str) -> None:
    """Make every page of every tensor resident (faults in lazily mapped files)."""
    acc = torch.zeros((), dtype=torch.int64, device=device)
    seen = set()
    for t in tensors:
        if t.data_ptr() in seen or t.numel() == 0:
            continue
        seen.add(t.data_ptr())
        flat = t.detach().reshape(-1).view(torch.uint8)
        acc += flat[::_PAGE_BYTES].sum()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return None


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/sllmsim-bench-loader"),
                        help="where the benchmark checkpoint is built (and reused)")
    parser.add_argument("--size-gb", type=float, default=1.0, help="checkpoint size, 10^9 bytes (fp16)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method and cache state (median kept)")
    args = parser.parse_args(argv)
    device = str(torch.device(args.device))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.empty(1, device=device)  # create the CUDA context before timing

    t0 = time.perf_counter()
    folder = build_checkpoint(args.dir, args.size_gb)
    files = loader.checkpoint_files(folder)
    ckpt_bytes = sum(p.stat().st_size for p in files)
    print(f"checkpoint: {folder} ({len(files)} file(s), {ckpt_bytes / 1e9:.3f} GB, ready in "
          f"{time.perf_counter() - t0:.1f} s); device {device}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, safetensors {safetensors.__version__}; "
          f"{os.cpu_count()} CPUs")

    raw_buffer = memoryview(bytearray(_RAW_CHUNK_BYTES))
    raw_parallel_buffers = [memoryview(bytearray(loader.READ_CHUNK_BYTES)) for _ in range(loader.READ_THREADS)]
    plans, _, host_bytes = loader.plan_checkpoint(folder)
    reused = loader.allocate_host_buffer(host_bytes, pin=cuda)

    def ours_reused():
        model = loader.load_model(folder, device, allocate=lambda n: reused)
        touch(model.parameters(), device)
        return model

    def ours_fresh():
        model = loader.load_model(folder, device, allocate=lambda n: loader.allocate_host_buffer(n, cuda))
        touch(model.parameters(), device)
        return model

    def load_file():
        tensors = {}
        for path in files:
            tensors.update(safetensors.torch.load_file(path, device=device))
        touch(tensors.values(), device)
        return tensors

    def from_pretrained():
        kwargs = {"device_map": device} if cuda else {}
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", local_files_only=True, **kwargs)
        touch(model.parameters(), device)
        return model

    methods: dict[str, Callable[[], object]] = {
        "raw read": lambda: raw_read(files, raw_buffer),
        f"raw read ({loader.READ_THREADS} threads)": lambda: raw_read_parallel(files, raw_parallel_buffers),
        "ours (reused buffer)": ours_reused,
        "ours (fresh buffer)": ours_fresh,
        "safetensors load_file": load_file,
        "from_pretrained": from_pretrained,
    }
    # One untimed warm run of each: lazy imports inside transformers, allocator and CUDA warm-up.
    for fn in methods.values():
        timed(fn)

    results: dict[tuple[str, str], list[float]] = {}
    residency: dict[str, list[float]] = {"cold": [], "warm": []}
    for state in ("cold", "warm"):
        for rep in range(args.repeats):
            names = list(methods)
            names = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no method always goes first
            for name in names:
                if state == "cold":
                    drop_from_page_cache(files)
                else:
                    raw_read(files, raw_buffer)
                share = resident_share(files)
                if share is not None:
                    residency[state].append(share)
                results.setdefault((name, state), []).append(timed(methods[name]))

    print()
    if not residency["cold"]:
        print("page-cache residency not checked (util-linux `fincore` is not installed)")
    for state, shares in residency.items():
        if shares:
            print(f"{state}: {min(shares):.0%}..{max(shares):.0%} of the file's pages were in the page cache "
                  "before each run (fincore)")
    header = (f"{'method':<24} {'cache':<5} {'median s':>9} {'min s':>7} {'GB/s':>7} {'% of raw':>9} "
              f"{'x from_pretrained':>18}")
    print(header)
    print("-" * len(header))
    for state in ("cold", "warm"):
        raw_s = statistics.median(results["raw read", state])
        fp_s = statistics.median(results["from_pretrained", state])
        for name in methods:
            times = results[name, state]
            median_s = statistics.median(times)
            print(f"{name:<24} {state:<5} {median_s:>9.3f} {min(times):>7.3f} {ckpt_bytes / median_s / 1e9:>7.2f} "
                  f"{raw_s / median_s:>8.0%} {fp_s / median_s:>17.2f}x")
    print("\nGB/s = checkpoint bytes / median time; '% of raw' = raw-read time / method time; every method "
          "ends with all weights resident on the device.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
