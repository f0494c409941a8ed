"""How fast this machine hands a process memory it has not used lately: the device stage's hidden cost.

    python experiments/validation-cpu/first_touch.py [--size-mb 1024] [--steps 5]

A CPU "device" load is ``live.loader.to_device``: one ``torch.empty`` of the checkpoint's size and a
copy into it. Its rate depends on where the pages come from. Two measurements, each printed as GB/s
per allocation of ``--size-mb`` (allocation and copy timed together, as a load pays them):

* **kept** — ``--steps`` allocations in a row, each kept alive, as a server keeps each loaded
  instance resident while it loads the next; then **reuse** — free one, allocate again, three times.
* **after a pause** — allocate and free 2 x ``--size-mb``, wait 0, 2, 10 or 30 s, then allocate
  twice: how long memory a process gave back stays quick to get again.

On the 2-core Firecracker VM (2026-12-02, two runs, a helper's benchmark on the other core) kept
allocations ran at 1.4-1.6 GB/s for the first 0.3-1.3 GB and at 0.19-0.24 GB/s beyond; reuse right
after a free at 1.2-1.7 GB/s (one 0.22); after a pause the first GB came at 0.30 or 1.31 GB/s (the
two runs) and the second at 0.22-0.33 GB/s. The VM backs guest memory lazily and takes freed memory
back within seconds (system CPU time ten times the user time, ~7.6 M minor faults for ~30 GB
touched), so memory beyond the small pool the guest used lately costs a page fault through the
hypervisor (~20 us per 4 KiB page). Calibration's host -> device probe frees each buffer before the
next (the reuse case); a live load of a GB-scale checkpoint, with other instances resident and
seconds since the last load, gets the fresh case. That is why validation-disk's device stages run
2-6x slower live than the calibrated rate predicts, and why validation-small's loads (7-176 MB, well
inside the pool) do not show it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def _rate_gb_per_s(src, nbytes: int):
    import torch

    start = time.perf_counter()
    dst = torch.empty(nbytes, dtype=torch.uint8)
    dst.copy_(src)
    return dst, nbytes / 1e9 / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="bytes per allocation, MiB (default 1024)")
    parser.add_argument("--steps", type=int, default=5, help="kept allocations in a row (default 5)")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.steps < 1:
        parser.error("--size-mb and --steps: expected positive numbers")
    import torch

    torch.set_num_threads(1)
    for size_mb in sorted({64, 256, args.size_mb}):
        nbytes = size_mb * 2**20
        src = torch.ones(nbytes, dtype=torch.uint8)
        kept, kept_rates, reuse_rates = [], [], []
        for _ in range(args.steps):
            dst, rate = _rate_gb_per_s(src, nbytes)
            kept.append(dst)
            kept_rates.append(rate)
        for _ in range(3):
            kept.pop()
            dst, rate = _rate_gb_per_s(src, nbytes)
            kept.append(dst)
            reuse_rates.append(rate)
        print(f"{size_mb:>5} MiB  kept: {' '.join(f'{r:.2f}' for r in kept_rates)} GB/s   "
              f"reuse: {' '.join(f'{r:.2f}' for r in reuse_rates)} GB/s", flush=True)
        del kept, dst, src
    nbytes = args.size_mb * 2**20
    src = torch.ones(nbytes, dtype=torch.uint8)
    for pause_s in (0, 2, 10, 30):
        a, _ = _rate_gb_per_s(src, nbytes)
        b, _ = _rate_gb_per_s(src, nbytes)
        del a, b
        time.sleep(pause_s)
        a, first = _rate_gb_per_s(src, nbytes)
        b, second = _rate_gb_per_s(src, nbytes)
        del a, b
        print(f"after a {pause_s:>2} s pause: {first:.2f} then {second:.2f} GB/s", flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU time: user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s; "
          f"minor page faults {usage.ru_minflt:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
