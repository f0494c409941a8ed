"""Fresh device memory: what a load pays for memory the machine has not used lately.

On a VM that backs guest memory lazily (the 2-core Firecracker VM this project is checked on), a CPU
"device" load's ``torch.empty`` gets pages the hypervisor must fault in: 0.19-0.24 GB/s against
1.2-1.7 GB/s for memory just freed (``experiments/validation-cpu/first_touch.py``). Calibration's
host -> device probe frees each buffer before the next and so prices only the quick case; this probe
prices the other: after a pause like the gaps between a trace's load windows, it allocates and keeps
chunks, as a server keeps each loaded instance, and finds how much came quick (``warm_memory_size``)
and what each byte beyond cost on top of the copy (``fresh_memory_bandwidth``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

#: Seconds the probe waits first: the validation traces leave 15-50 s between load windows, and the
#: VM takes freed memory back within seconds (first_touch.py: after 10 s the second GB is slow).
PAUSE_S = 15.0
MAX_PROBE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class FreshMemory:
    """The fitted term: ``warm_bytes`` come quick, each byte beyond costs ``1 / fresh_bytes_per_s`` s more."""

    warm_bytes: int
    fresh_bytes_per_s: float
    chunk_bytes: int
    rates_bytes_per_s: tuple[float, ...]

    def to_json(self) -> dict:
        return {"warm_bytes": self.warm_bytes, "fresh_bytes_per_s": self.fresh_bytes_per_s,
                "chunk_bytes": self.chunk_bytes, "rates_bytes_per_s": list(self.rates_bytes_per_s)}


def fit_fresh_memory(chunk_bytes: int, rates_bytes_per_s: list[float], host_bytes_per_s: float) -> FreshMemory | None:
    """Fit the term to kept allocations' rates (allocation and copy timed together), in order.

    A chunk is slow when it ran under half the calibrated host -> device rate. The warm part is what
    came before the first slow chunk; the slow chunks' median rate, less the copy the host -> device
    rate already prices, gives the fresh rate. None when no chunk was slow (memory is not an issue).
    """
    if chunk_bytes <= 0 or host_bytes_per_s <= 0:
        raise ValueError("chunk_bytes and host_bytes_per_s must be positive")
    slow = [i for i, r in enumerate(rates_bytes_per_s) if r < 0.5 * host_bytes_per_s]
    if not slow:
        return None
    cold = statistics.median(rates_bytes_per_s[i] for i in slow)
    extra_s_per_byte = 1.0 / cold - 1.0 / host_bytes_per_s
    return FreshMemory(warm_bytes=slow[0] * chunk_bytes, fresh_bytes_per_s=1.0 / extra_s_per_byte,
                       chunk_bytes=chunk_bytes, rates_bytes_per_s=tuple(rates_bytes_per_s))


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def kept_allocation_rates(chunk_bytes: int, total_bytes: int = MAX_PROBE_BYTES,
                          pause_s: float = PAUSE_S) -> list[float]:
    """After ``pause_s``, allocate-and-copy ``chunk_bytes`` chunks up to ``total_bytes``, each kept; bytes/s each."""
    import torch

    src = torch.ones(chunk_bytes, dtype=torch.uint8)
    time.sleep(pause_s)
    kept, rates = [], []
    for _ in range(max(1, total_bytes // chunk_bytes)):
        start = time.perf_counter()
        dst = torch.empty(chunk_bytes, dtype=torch.uint8)
        dst.copy_(src)
        rates.append(chunk_bytes / (time.perf_counter() - start))
        kept.append(dst)
    return rates


def measure_fresh_memory(host_bytes_per_s: float, probe_bytes: int, pause_s: float | None = None) -> FreshMemory | None:
    """The probe on the CPU device: kept chunks of one probe size each (a live load is one bulk
    allocation of the checkpoint's size: 64 MiB chunks fault ~1.7x faster than 256 MiB or 1 GiB ones
    on the 2-core VM), eight of them at most, 2 GiB at most, a quarter of the available memory at
    most. ``pause_s`` defaults to :data:`PAUSE_S`, or to none for probes under 64 MiB (calibrate's
    quick smoke runs)."""
    chunk = max(1, probe_bytes)
    avail = available_bytes()
    total = min(MAX_PROBE_BYTES, 8 * probe_bytes, avail // 4 if avail is not None else MAX_PROBE_BYTES)
    if total < 4 * chunk:
        return None
    if pause_s is None:
        pause_s = PAUSE_S if probe_bytes >= 64 * 2**20 else 0.0
    return fit_fresh_memory(chunk, kept_allocation_rates(chunk, total, pause_s), host_bytes_per_s)
