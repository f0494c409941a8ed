"""How busy the rest of the machine was while the live run served: CPU time used by other processes.

A live run on a small shared machine competes with whatever else runs there: on the 2-core machine
the committed report comes from, another process busy on the second core slows live mode's forward
passes and copies by up to 2×. The simulator knows nothing of that, so a validation should say, per
request and per load, how much CPU other processes took meanwhile. :class:`CpuSampler` samples, in a
daemon thread, the machine's busy CPU time (``/proc/stat``) and this process's own (``os.times``,
all its threads); :func:`other_cores` turns two samples around an interval into the mean number of
cores the *other* processes kept busy in it. Linux only: elsewhere nothing is sampled and the
intervals get NaN.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path

#: Columns of a sample: (clock seconds, machine busy CPU seconds, this process's CPU seconds).
Sample = tuple[float, float, float]

_PROC_STAT = Path("/proc/stat")


def machine_busy_s() -> float | None:
    """CPU seconds all processors have spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with _PROC_STAT.open() as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(v) for v in fields[1:9]] + [0] * 8)[:8]
    # guest time is already counted in user; idle and iowait are not busy.
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process (every thread) has used."""
    t = os.times()
    return t.user + t.system


class CpuSampler:
    """Samples machine and own CPU time every ``interval_s`` in a daemon thread while in a ``with`` block."""

    def __init__(self, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return machine_busy_s() is not None

    def sample(self) -> None:
        busy = machine_busy_s()
        if busy is not None:
            self.samples.append((self.clock(), busy, own_cpu_s()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> CpuSampler:
        if self.available:
            self.sample()
            self._thread = threading.Thread(target=self._run, name="sllmsim-cpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.sample()


def other_cores(samples: Sequence[Sample], start_s: float, end_s: float) -> float:
    """Mean cores busy with other processes' work from ``start_s`` to ``end_s`` (sample clock).

    Uses the last sample at or before ``start_s`` and the first at or after ``end_s``, so the window
    measured covers the interval (it may be up to one sampling interval longer at each end). NaN when
    the samples do not cover the interval.
    """
    if not samples or not (end_s >= start_s):
        return math.nan
    times = [s[0] for s in samples]
    i = bisect_right(times, start_s) - 1
    j = bisect_left(times, end_s)
    if i < 0 or j >= len(samples) or j <= i:
        return math.nan
    (t0, busy0, own0), (t1, busy1, own1) = samples[i], samples[j]
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))
