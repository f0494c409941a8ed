"""Simulator speed: ``python -m sllmsim.bench.sim``.

Replays a generated trace (default 1,000,000 requests over 64 nodes × 8 GPUs and 100 models) and
prints requests simulated per wall-clock second next to a bare SimPy loop that only schedules the
same arrivals, both measured in this run; then times one storage-aware placement decision on a
1,000-node cluster snapshot. Targets (issue 2): ≥ 50,000 requests/s on one core; < 1 ms per placement.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import resource
import time
import timeit

from sllmsim.config.trace import TraceConfig, parse_trace

#: Catalogued models the benchmark deploys, with the GPUs each instance takes (A100-80GB).
_MODELS = (
    ("facebook/opt-1.3b", 1), ("facebook/opt-2.7b", 1), ("facebook/opt-6.7b", 1), ("facebook/opt-13b", 1),
    ("meta-llama/Llama-2-7b-hf", 1), ("meta-llama/Llama-2-13b-hf", 1), ("meta-llama/Llama-3.1-8B", 1),
    ("mistralai/Mistral-7B-v0.1", 1), ("tiiuae/falcon-7b", 1), ("Qwen/Qwen2.5-0.5B", 1),
    ("Qwen/Qwen2.5-1.5B", 1), ("Qwen/Qwen2.5-3B", 1), ("Qwen/Qwen2.5-7B", 1), ("Qwen/Qwen2.5-14B", 1),
    ("Qwen/Qwen2.5-32B", 2), ("meta-llama/Llama-2-70b-hf", 4),
)


def benchmark_raw(num_requests: int = 1_000_000, num_nodes: int = 64, gpus_per_node: int = 8,
                  num_models: int = 100, seed: int = 0) -> dict:
    """The benchmark scenario as a trace mapping (Zipf-popular models, Poisson arrivals)."""
    rng = random.Random(seed)
    hardware = {
        str(i): {"host_size": "512GB", "host_bandwidth": "24GB/s", "disk_size": "4TB", "disk_bandwidth": "5GB/s",
                 "network_bandwidth": "25Gbps", "num_gpus": gpus_per_node, "gpu": "A100-80GB"}
        for i in range(num_nodes)
    }
    models, disk = [], {}
    for i in range(num_models):
        path, gpus = _MODELS[i % len(_MODELS)]
        name = f"m{i:03d}-{path.split('/')[-1].lower()}"
        models.append({
            "model": name, "num_gpus": gpus,
            "auto_scaling_config": {"target": 4, "max_instances": 32, "keep_alive": 60},
            "backend_config": {"pretrained_model_name_or_path": path, "max_batch_size": 16},
        })
        # Each checkpoint starts on the local disks of three nodes; the rest must download it.
        disk[name] = [str(n) for n in rng.sample(range(num_nodes), 3)]
    duration_s = 3600.0
    return {
        "name": "bench",
        "hardware": hardware,
        "models": models,
        "scheduler": "storage_aware",
        "seed": seed,
        "storage": {"local_disk": disk},
        "workloads": [{
            "models": [m["model"] for m in models], "zipf_s": 1.0,
            "rate_per_s": num_requests / duration_s, "duration_s": duration_s,
            "input_tokens": {"distribution": "lognormal", "mean": 512, "cv": 1.0},
            "output_tokens": {"distribution": "lognormal", "mean": 128, "cv": 1.0},
        }],
        "simulation": {"scheduler_log_limit": 0},
    }


def benchmark_trace(**kwargs) -> TraceConfig:
    return parse_trace(benchmark_raw(**kwargs), source="<benchmark>")


def time_placement(num_nodes: int = 1000, repeats: int = 2000, seed: int = 0) -> float:
    """Mean seconds of one storage-aware placement (rank + choose) on a ``num_nodes`` snapshot."""
    from sllmsim.core import ClusterView, ModelView, NodeView, make_placement_policy, place

    rng = random.Random(seed)
    gib = 1024**3
    names = [f"m{i}" for i in range(100)]
    nodes = tuple(
        NodeView(str(i), 8, rng.randint(0, 8), frozenset(rng.sample(names, 3)), frozenset(rng.sample(names, 10)),
                 rng.choice((0.0, 0.0, 0.0, rng.uniform(0, 5))), 5 * gib, 25 * gib / 8, 24 * gib)
        for i in range(num_nodes)
    )
    cluster = ClusterView(nodes)
    model = ModelView("m7", 14 * gib)
    policy = make_placement_policy("storage_aware")
    logging.getLogger("sllmsim.scheduler").setLevel(logging.WARNING)
    timer = timeit.Timer(lambda: place(policy, model, cluster))
    best = min(timer.repeat(repeat=5, number=repeats // 5))
    return best / (repeats // 5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the simulation")
    args = parser.parse_args(argv)

    from sllmsim.sim import simulate
    from sllmsim.sim.baseline import bare_arrival_loop

    t0 = time.perf_counter()
    trace = benchmark_trace(num_requests=args.requests, num_nodes=args.nodes, gpus_per_node=args.gpus,
                            num_models=args.models)
    n = len(trace.requests)
    print(f"trace: {n:,} requests, {args.nodes} nodes x {args.gpus} GPUs, {args.models} models "
          f"(built in {time.perf_counter() - t0:.1f} s)")

    times = trace.requests.time_s.tolist()
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    bare_arrival_loop(times)
    bare_s, bare_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(f"bare SimPy arrival loop: {bare_s:.2f} s wall ({bare_cpu_s:.2f} s CPU) = {n / bare_s:,.0f} arrivals/s")

    gc.collect()
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    result = simulate(trace)
    sim_s, sim_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    done = sum(r.status == "completed" for r in result.requests)
    cold = sum(r.cold_start for r in result.requests)
    print(f"simulation: {sim_s:.2f} s wall ({sim_cpu_s:.2f} s CPU) = {n / sim_s:,.0f} requests/s "
          f"({sim_s / bare_s:.1f}x the bare loop's time); {done:,} completed, {cold:,} cold starts, "
          f"{len(result.phases):,} phase records, {len(result.timeseries):,} samples")

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS) of the process: {peak_rss_mib:,.0f} MiB")

    per_place = time_placement()
    print(f"one storage-aware placement on a 1,000-node snapshot: {per_place * 1e6:.0f} us")


if __name__ == "__main__":
    main()
