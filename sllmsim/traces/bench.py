"""Benchmark of the trace generators and converters: prints measured times, asserts nothing.

Run with ``python -m sllmsim.traces.bench`` (add ``--real DIR`` to include the real files, by
default ``../shared/traces-real`` when it exists). Each figure is the best of ``--repeat`` runs of
wall-clock time on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sllmsim.traces.synthetic import gamma_arrivals, generate_workloads, poisson_arrivals


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """The shortest wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=1_000_000, help="arrivals per synthetic case")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "traces-real")
    args = parser.parse_args(argv)
    n, repeat = args.arrivals, args.repeat
    rate, duration = 1000.0, n / 1000.0

    def rng():
        return np.random.default_rng(0)

    cases = [
        ("poisson_arrivals", lambda: poisson_arrivals(rng(), rate, duration)),
        ("gamma_arrivals cv=4", lambda: gamma_arrivals(rng(), rate, duration, 4.0)),
        ("generate_workloads 100 models, Zipf, lognormal tokens", lambda: generate_workloads(
            [{"models": [f"m{i}" for i in range(100)], "rate_per_s": rate, "duration_s": duration,
              "arrival": "gamma", "cv": 2.0, "input_tokens": {"distribution": "lognormal", "mean": 500, "cv": 1.0},
              "output_tokens": [1, 512]}], rng())),
    ]
    funcs = args.real / "azure_functions_2019_sample500_invocations.csv"
    conv = args.real / "AzureLLMInferenceTrace_conv.csv"
    code = args.real / "AzureLLMInferenceTrace_code.csv"
    if funcs.exists() and conv.exists() and code.exists():
        from sllmsim.traces.azure_functions import convert_azure_functions
        from sllmsim.traces.azure_llm import convert_azure_llm

        cases += [
            ("azure_llm code+conv (28,185 rows)", lambda: convert_azure_llm([(code, "a"), (conv, "b")]).requests),
            ("azure_functions 400 most popular functions, 8 h, as recorded",
             lambda: convert_azure_functions(funcs, [conv], [f"f{i}" for i in range(400)]).requests),
        ]
    print(f"{'case':58s} {'rows':>11s} {'best s':>8s} {'rows/s':>12s}")
    for name, fn in cases:
        seconds, out = best_of(fn, repeat)
        rows = len(out)
        print(f"{name:58s} {rows:11,d} {seconds:8.3f} {rows / seconds:12,.0f}")


if __name__ == "__main__":
    main()
