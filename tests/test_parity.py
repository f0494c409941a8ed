"""Parity: scenarios through the SimPy engine and through the live controller, same scheduler log.

Two one-GPU nodes (the spec's hardware), three tiny random-weight models and ``reclaim_idle``:

* t=0 ``alpha`` (on node 0's disk) cold-starts from the disk; its keep-alive (1 s) runs out: released.
* t=2 ``beta`` (``memory_pool`` on node 1) cold-starts from node 1's host memory and stays idle.
* t=3 ``gamma`` (registered nowhere) cold-starts from the network on the free node 0 and stays idle.
* t=4 two ``alpha`` requests at once: both slots hold idle instances, so the first reclaims one, and
  the autoscaler scales out (concurrency target 1) for the second, reclaiming the other.

The live side runs :class:`~live.controller.Controller` on one event loop, each step at its time; the
simulator replays the same requests at the same times (a parsed trace, :func:`sllmsim.sim.simulate`),
with each model's checkpoint size set to the live checkpoint's. Both logs come from the runtimes: the
test compares them line by line — placements and reclaims exactly (instance ids mapped through the
instances' first requests), option lists node by node with each estimate's tier (the estimate is the
checkpoint size over one of the node's bandwidths) and value — and the releases (model, node, time).

A second scenario adds the migration, on the same hardware with a slow network (2 Mbps) and
``enable_migration``:

* ``long`` (on both nodes' disks) cold-starts on node 0 from the disk for a 2-token request and stays idle.
* Once that instance is past the core's thrash guard, a 400-token ``long`` generation starts on it;
  after its first tokens ``short`` (on node 0's disk and in its host memory) arrives. Node 0 with a
  migration plan (move ``long``'s instance to node 1, which loads it from its disk) beats a download
  onto node 1: both runtimes log the same ranking, the same plan and the same allocation, then move
  the request (source ``migrating`` and released on node 0, destination ``resuming`` on node 1), and
  the long request finishes on node 1, migrated.

For the second scenario the simulator's hardware is fitted to the CPU the live side ran on: each
forward pass takes the live run's mean time per generated token (``forward_overhead_s``, which no
startup estimate uses), so a simulated request decodes for as long as the live one and is still
running when ``short`` arrives. Without the fit the simulator's roofline decodes a tiny checkpoint in
far under a millisecond per token, and no simulated request would last long enough to be moved. The
plan's cost includes ``alpha × tokens so far``, each runtime's own decode progress at the arrival,
so it is compared to a few tokens' worth of ``alpha``; the rest of each estimate exactly.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from live.controller import Controller  # noqa: E402
from live.generation import GenerationRequest, SamplingParams  # noqa: E402
from live.records import LiveRecorder  # noqa: E402
from live.store import StoreRegistry  # noqa: E402
from live.tiny_model import make_tiny_model  # noqa: E402
from live.worker import Finished, LocalNodeWorker, TextDelta  # noqa: E402
from sllmsim.config.hardware import parse_hardware  # noqa: E402
from sllmsim.config.trace import parse_trace  # noqa: E402
from sllmsim.core.migration import movable_from_s  # noqa: E402
from sllmsim.core.snapshot import DEFAULT_RESUME_ALPHA_S_PER_TOKEN  # noqa: E402
from sllmsim.records import Phase  # noqa: E402
from sllmsim.sim import simulate  # noqa: E402
from sllmsim.units import parse_bandwidth_bytes_per_s  # noqa: E402

from repo_paths import REPO  # noqa: E402

pytestmark = pytest.mark.slow

#: The spec's two-node hardware config (one GPU each).
SPEC_HARDWARE = json.loads((REPO / "traces" / "hardware_config.json").read_text())

OUTPUT_TOKENS = 2
#: (time after the start, models requested at that time, all at once).
STEPS = ((0.0, ("alpha",)), (2.0, ("beta",)), (3.0, ("gamma",)), (4.0, ("alpha", "alpha")))
#: Live steps start late by scheduling and load jitter; release times differ by the live service
#: times (tens of milliseconds on the CPU) that the simulator does not have for a tiny checkpoint.
TIME_TOLERANCE_S = 0.5
#: Records are compared up to each runtime's last finish plus this (its last releases are recorded by then).
END_MARGIN_S = 0.2
#: Estimates of the two runtimes are the same formula on the same sizes: equal up to rounding.
ESTIMATE_REL = 1e-9


def _deploy_configs(folders: dict[str, object]) -> list[dict]:
    def cfg(name: str, keep_alive_s: float, placement: dict) -> dict:
        return {"model": name, "backend": "transformers", "num_gpus": 1,
                "auto_scaling_config": {"metric": "concurrency", "target": 1, "min_instances": 0,
                                        "max_instances": 10, "keep_alive": keep_alive_s},
                "placement_config": placement,
                "backend_config": {"pretrained_model_name_or_path": str(folders[name]), "torch_dtype": "float32",
                                   "max_batch_size": 1}}

    return [cfg("alpha", 1.0, {"local_disk": ["0"]}),
            cfg("beta", 60.0, {"local_disk": ["1"], "memory_pool": ["1"]}),
            cfg("gamma", 60.0, {"local_disk": []})]


# --- the live run -------------------------------------------------------------------------------------


async def _start_controller(tmp_path, hardware: dict, **options) -> Controller:
    """A started live controller on ``hardware``, every node a CPU worker, storage under ``tmp_path``."""
    cluster = parse_hardware(hardware, "parity hardware")
    storage = tmp_path / "models"
    registry = StoreRegistry.for_cluster(storage, cluster, {"0": "cpu", "1": "cpu"})
    workers = {n.node_id: LocalNodeWorker(n, registry.node(n.node_id), "cpu") for n in cluster.nodes}
    controller = Controller(cluster, workers, registry, storage, LiveRecorder(), **options)
    await controller.start()
    return controller


async def _live(tmp_path, configs: list[dict]) -> tuple[LiveRecorder, dict[str, int]]:
    controller = await _start_controller(tmp_path, SPEC_HARDWARE, reclaim_idle=True)
    try:
        sizes = {}
        for cfg in configs:
            sizes[cfg["model"]] = (await controller.deploy(cfg))["size_bytes"]

        async def serve(model: str) -> None:
            ticket = await controller.admit(model)
            request = GenerationRequest(SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0), prompt="hello")
            events = [event async for event in controller.generate(ticket, request)]
            assert isinstance(events[-1], Finished)

        start = time.monotonic()
        for at_s, models in STEPS:
            await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
            await asyncio.wait_for(asyncio.gather(*(serve(m) for m in models)), timeout=60)
        await asyncio.sleep(0.5)  # past the last requests' finish: every phase so far is recorded
        return controller.recorder, sizes
    finally:
        await controller.close()


# --- the simulated run ----------------------------------------------------------------------------------


def _simulate(configs: list[dict], sizes: dict[str, int], arrivals_s: list[tuple[float, str]]):
    models = [{**cfg, "checkpoint_size": sizes[cfg["model"]]} for cfg in configs]
    requests = [{"time": t, "model": m, "input_tokens": 8, "output_tokens": OUTPUT_TOKENS} for t, m in arrivals_s]
    trace = parse_trace({"name": "parity", "hardware": SPEC_HARDWARE, "models": models, "requests": requests,
                         "scheduler": {"placement": "storage_aware", "reclaim_idle": True}}, source="<parity>")
    return simulate(trace)


# --- comparing --------------------------------------------------------------------------------------------

_OPTIONS = re.compile(r"Sorted scheduling options: (\[.*\])")
_PLAN = re.compile(r"Migration plan for model (\S+) on node (\S+): (\[.*\]) \(total_cost_s=(\S+), freed_gpus=(\d+)\)")
_RECLAIM = re.compile(r"Reclaiming idle instances (\[.*\]) on node (\S+) for model (\S+)")


def _tier(node: str, estimate_s: float, size_bytes: int, hardware: dict) -> str:
    """The tier whose bandwidth on ``node`` gives ``estimate_s`` for the checkpoint (no queue wait)."""
    spec = hardware[node]
    for tier, key in (("host", "host_bandwidth"), ("disk", "disk_bandwidth"), ("network", "network_bandwidth")):
        if estimate_s == pytest.approx(size_bytes / parse_bandwidth_bytes_per_s(spec[key]), rel=ESTIMATE_REL):
            return tier
    return f"other({estimate_s!r})"


def _normalised(log: list[str], model_of_line: list[str], sizes: dict[str, int], instance_names: dict[str, str],
                hardware: dict = SPEC_HARDWARE):
    """Each line as a comparable tuple: options become (node, tier, startup estimate), where an option
    with a migration plan (the plan's line follows its ranking) has the plan's cost taken off its
    estimate; instance ids become their names."""
    out = []
    for i, (line, model) in enumerate(zip(log, model_of_line)):
        if m := _OPTIONS.fullmatch(line):
            plan = _PLAN.fullmatch(log[i + 1]) if i + 1 < len(log) else None
            options = []
            for n, e in ast.literal_eval(m[1]):
                startup_s = e - float(plan[4]) if plan is not None and plan[2] == n else e
                options.append((n, _tier(n, startup_s, sizes[model], hardware), startup_s))
            out.append(("options", model, options))
        elif m := _PLAN.fullmatch(line):
            moves = [(instance_names.get(i, i), src, dst, cost) for i, src, dst, cost in ast.literal_eval(m[3])]
            out.append(("plan", m[1], m[2], moves, float(m[4]), int(m[5])))
        elif m := _RECLAIM.fullmatch(line):
            ids = ast.literal_eval(m[1])
            out.append(("reclaim", m[3], m[2], [instance_names.get(i, i) for i in ids]))
        else:
            out.append(("line", line))
    return out


def _models_of_lines(log: list[str]) -> list[str]:
    """The model each options line is for: the one named by the next 'Allocated'/'No node' line."""
    models, pending = [], 0
    for line in log:
        models.append("")
        if line.startswith("Sorted scheduling options"):
            pending = len(models) - 1
        found = re.search(r"for model (\S+)|host model (\S+) now", line)
        if found:
            models[pending] = found[1] or found[2]
    return models


def _instance_names(requests, phases) -> dict[str, str]:
    """Instance id -> '<model>#<k>': the k-th instance of its model by first phase start."""
    first: dict[str, tuple[float, str]] = {}
    for p in phases:
        if p.instance_id not in first or p.start_s < first[p.instance_id][0]:
            first[p.instance_id] = (p.start_s, p.model)
    names, counts = {}, {}
    for inst, (_, model) in sorted(first.items(), key=lambda kv: kv[1]):
        counts[model] = counts.get(model, 0) + 1
        names[inst] = f"{model}#{counts[model]}"
    return names


def _releases(phases, names: dict[str, str], until_s: float) -> list[tuple[str, str, float]]:
    return sorted(((names[p.instance_id], p.node, p.start_s) for p in phases
                   if p.phase == "released" and p.start_s <= until_s), key=lambda r: r[2])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """``make(arch, seed)``: a tiny random-weight model's folder, built once per module (read-only:
    deploying copies it into the run's store)."""
    built = {}

    def make(arch: str, seed: int):
        if (arch, seed) not in built:
            built[arch, seed] = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}-{seed}") / "model", arch, seed)
        return built[arch, seed]

    return make


def test_the_simulator_and_live_mode_log_the_same_decisions(tmp_path, tiny_model):
    folders = {name: tiny_model(arch, seed)
               for name, arch, seed in (("alpha", "opt", 0), ("beta", "llama", 0), ("gamma", "opt", 1))}
    configs = _deploy_configs(folders)
    recorder, sizes = asyncio.run(_live(tmp_path, configs))
    live_requests = sorted(recorder.requests, key=lambda r: r.arrival_s)
    live_phases = list(recorder.phases)
    assert [r.status for r in live_requests] == ["completed"] * 5
    # The simulator gets the scenario's times (the live run's steps, each step's requests at once).
    arrivals = [(at_s, m) for at_s, models in STEPS for m in models]
    for (at_s, _), r in zip(arrivals, live_requests):
        assert r.arrival_s - live_requests[0].arrival_s == pytest.approx(at_s, abs=TIME_TOLERANCE_S)
    live_t0 = live_requests[0].arrival_s
    sim = _simulate(configs, sizes, arrivals)
    assert [r.status for r in sim.requests] == ["completed"] * 5

    live_names = _instance_names(live_requests, live_phases)
    sim_names = _instance_names(sim.requests, sim.phases)
    live_log, sim_log = list(recorder.scheduler_log), list(sim.scheduler_log)
    live_lines = _normalised(live_log, _models_of_lines(live_log), sizes, live_names)
    sim_lines = _normalised(sim_log, _models_of_lines(sim_log), sizes, sim_names)
    assert len(live_lines) == len(sim_lines), (live_log, sim_log)
    assert len(live_lines) == 12  # five placements (options, allocation) and two reclaim lines
    for got, want in zip(live_lines, sim_lines):
        if got[0] == "options":
            assert [(n, t) for n, t, _ in got[2]] == [(n, t) for n, t, _ in want[2]], (got, want)
            assert [e for *_, e in got[2]] == pytest.approx([e for *_, e in want[2]], rel=ESTIMATE_REL)
        else:
            assert got == want

    # The scenario did what it says: every tier, a reclaim of each idle instance, a scale-out.
    tiers = [(r.model, r.node, r.tier) for r in live_requests]
    assert {t for *_, t in tiers} >= {"disk", "host", "network"}, tiers
    assert sum(line[0] == "reclaim" for line in live_lines) == 2
    # The scale-out: two alpha instances placed for the two requests at t=4 (whichever of them
    # serves which request is a race of the two loads, so requests are compared for steps 1-3 only).
    assert live_log.count("Allocated node 0 for model alpha") == 2
    assert live_log.count("Allocated node 1 for model alpha") == 1
    sim_tiers = [(r.model, r.node, r.tier) for r in sorted(sim.requests, key=lambda r: r.arrival_s)]
    assert sim_tiers[:3] == tiers[:3] == [("alpha", "0", "disk"), ("beta", "1", "host"), ("gamma", "0", "network")]

    # Releases: which instance on which node, and when (relative to the first arrival).
    # Up to each runtime's own last finish (plus a little): the t=4 instances' keep-alive releases
    # come a second after it, in both, and are not part of the scenario. (Cutting the simulator at
    # the live end instead took them in whenever the live t=4 loads ran late on a loaded machine.)
    live_end_s = max(r.finish_s for r in live_requests) + END_MARGIN_S
    live_rel = _releases(live_phases, live_names, live_end_s)
    sim_rel = _releases(sim.phases, sim_names, max(r.finish_s for r in sim.requests) + END_MARGIN_S)
    # Compared per instance: the two reclaims at t=4 release at the same simulated instant, so
    # their order is a tie in the simulator and a race of two unloads live.
    live_by_name = {n: (node, t - live_t0) for n, node, t in live_rel}
    sim_by_name = {n: (node, t) for n, node, t in sim_rel}
    assert {n: node for n, (node, _) in live_by_name.items()} == {n: node for n, (node, _) in sim_by_name.items()}
    for name, (_, t) in live_by_name.items():
        assert t == pytest.approx(sim_by_name[name][1], abs=TIME_TOLERANCE_S), name
    assert live_by_name.keys() == {"alpha#1", "beta#1", "gamma#1"}  # a keep-alive release, two reclaims


# --- the second scenario: a migration ----------------------------------------------------------------

#: The spec's hardware with a slow network: downloading ``short`` onto node 1 takes seconds, so moving
#: the running ``long`` request to node 1 (its checkpoint is on both nodes' disks) beats it.
MIGRATION_HARDWARE = {node: {**spec, "network_bandwidth": "2Mbps"} for node, spec in SPEC_HARDWARE.items()}
#: The long generation: long enough to still be decoding when its move is done (the tiny models'
#: context is 512 tokens).
LONG_TOKENS = 400
#: Tokens the long generation has streamed when ``short`` arrives.
TOKENS_BEFORE_ARRIVAL = 2
#: Past the thrash guard: the controller's ready time and the recorder's clock differ by microseconds.
GUARD_MARGIN_S = 0.05
#: The plan's cost is ``load + beta + alpha × tokens so far``: the load is the same formula in both
#: runtimes, the tokens so far are each runtime's own progress at the arrival (the simulator decodes
#: at the live run's mean rate from the live time to first token, the live run at its momentary
#: rate), so the costs agree to this many tokens' worth of ``alpha`` (differences of 0 to 3 tokens
#: were seen on a loaded machine).
PLAN_TOKENS_TOLERANCE = 8
#: Phases that show the move: the source's ``migrating``, the destination's ``resuming``, releases.
MOVE_PHASES = (Phase.MIGRATING.value, Phase.RESUMING.value, Phase.RELEASED.value)
#: Phases of a load (the destination's, before it resumes).
LOAD_PHASES = (Phase.DOWNLOADING.value, Phase.LOADING_TO_HOST.value, Phase.LOADING_TO_GPU.value)


def _migration_configs(folders: dict[str, object]) -> list[dict]:
    def cfg(name: str, placement: dict) -> dict:
        return {"model": name, "backend": "transformers", "num_gpus": 1,
                "auto_scaling_config": {"metric": "concurrency", "target": 1, "min_instances": 0,
                                        "max_instances": 10, "keep_alive": 60.0},
                "placement_config": placement,
                "backend_config": {"pretrained_model_name_or_path": str(folders[name]), "torch_dtype": "float32",
                                   "max_batch_size": 1}}

    return [cfg("long", {"local_disk": ["0", "1"]}), cfg("short", {"local_disk": ["0"], "memory_pool": ["0"]})]


async def _live_migration(tmp_path, configs: list[dict]) -> tuple[LiveRecorder, dict[str, int]]:
    """``long`` cold-starts on node 0 (disk, 2 tokens) and stays idle; once its instance is past the
    thrash guard a long ``long`` generation starts there, and after a few of its tokens ``short``
    arrives, whose checkpoint is in node 0's host memory: node 0 with a migration of ``long`` to
    node 1 beats downloading ``short`` onto node 1."""
    controller = await _start_controller(tmp_path, MIGRATION_HARDWARE, enable_migration=True)
    try:
        sizes = {}
        for cfg in configs:
            sizes[cfg["model"]] = (await controller.deploy(cfg))["size_bytes"]

        async def serve(model: str, max_tokens: int, streamed: asyncio.Event | None = None):
            ticket = await controller.admit(model)
            request = GenerationRequest(SamplingParams(max_tokens=max_tokens, temperature=0.0), prompt="hello")
            tokens, last = 0, None
            async for event in controller.generate(ticket, request):
                tokens += isinstance(event, TextDelta)
                if streamed is not None and tokens >= TOKENS_BEFORE_ARRIVAL:
                    streamed.set()
                last = event
            assert isinstance(last, Finished)
            return ticket

        first = await asyncio.wait_for(serve("long", OUTPUT_TOKENS), timeout=60)
        inst = first.instance
        guard_s = movable_from_s(inst.placed_s, inst.ready_s) + GUARD_MARGIN_S
        await asyncio.sleep(max(0.0, guard_s - controller.recorder.now_s()))
        streamed = asyncio.Event()
        long_task = asyncio.create_task(serve("long", LONG_TOKENS, streamed))
        waiting = asyncio.create_task(streamed.wait())
        await asyncio.wait({long_task, waiting}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert streamed.is_set() and not long_task.done(), "the long generation ended before short arrived"
        await asyncio.wait_for(asyncio.gather(long_task, serve("short", OUTPUT_TOKENS)), timeout=120)
        await asyncio.sleep(0.5)  # past the last requests' finish: every phase so far is recorded
        return controller.recorder, sizes
    finally:
        await controller.close()


def _simulate_migration(configs: list[dict], sizes: dict[str, int], live_requests):
    """The simulator on the live run's requests (arrival times relative to the first, prompt and
    output token counts), on the migration hardware fitted to the live CPU by the long generation
    (a warm instance's): a forward pass takes its mean time per generated token after the first
    (``forward_overhead_s``), and a request waits, before its prefill pass, for the rest of its time
    to first token (``request_overhead_s``). No startup estimate uses either, so both runtimes'
    options are still computed from the same figures."""
    long = live_requests[1]
    per_token_s = (long.finish_s - long.first_token_s) / (long.output_tokens - 1)
    request_s = max(0.0, long.first_token_s - long.arrival_s - per_token_s)
    hardware = {node: {**spec, "forward_overhead_s": per_token_s, "request_overhead_s": request_s}
                for node, spec in MIGRATION_HARDWARE.items()}
    models = [{**cfg, "checkpoint_size": sizes[cfg["model"]]} for cfg in configs]
    t0 = live_requests[0].arrival_s
    requests = [{"time": r.arrival_s - t0, "model": r.model, "input_tokens": r.input_tokens,
                 "output_tokens": r.output_tokens} for r in live_requests]
    trace = parse_trace({"name": "parity-migration", "hardware": hardware, "models": models, "requests": requests,
                         "scheduler": {"placement": "storage_aware", "enable_migration": True}},
                        source="<parity migration>")
    return simulate(trace)


def _move_phases(phases, names: dict[str, str], until_s: float) -> dict[str, list[tuple[str, str, float]]]:
    """Per instance name, its migrating / resuming / released phases as (phase, node, start_s) that
    start by ``until_s``."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for p in sorted(phases, key=lambda p: p.start_s):
        if p.phase in MOVE_PHASES and p.start_s <= until_s:
            out.setdefault(names[p.instance_id], []).append((p.phase, p.node, p.start_s))
    return out


def test_the_simulator_and_live_mode_decide_the_same_migration(tmp_path, tiny_model):
    folders = {name: tiny_model(arch, 0) for name, arch in (("long", "llama"), ("short", "opt"))}
    configs = _migration_configs(folders)
    recorder, sizes = asyncio.run(_live_migration(tmp_path, configs))
    live_requests = sorted(recorder.requests, key=lambda r: r.arrival_s)
    assert [(r.model, r.status) for r in live_requests] == [("long", "completed")] * 2 + [("short", "completed")]
    assert live_requests[1].output_tokens == LONG_TOKENS
    sim = _simulate_migration(configs, sizes, live_requests)
    sim_requests = sorted(sim.requests, key=lambda r: r.arrival_s)
    assert [r.status for r in sim_requests] == ["completed"] * 3

    live_names = _instance_names(live_requests, recorder.phases)
    sim_names = _instance_names(sim_requests, sim.phases)
    live_log, sim_log = list(recorder.scheduler_log), list(sim.scheduler_log)
    live_lines = _normalised(live_log, _models_of_lines(live_log), sizes, live_names, MIGRATION_HARDWARE)
    sim_lines = _normalised(sim_log, _models_of_lines(sim_log), sizes, sim_names, MIGRATION_HARDWARE)
    assert len(live_lines) == len(sim_lines), (live_log, sim_log)
    assert [line[0] for line in live_lines] == ["options", "line", "options", "plan", "line"], live_log
    for got, want in zip(live_lines, sim_lines):
        if got[0] == "options":
            assert [(n, t) for n, t, _ in got[2]] == [(n, t) for n, t, _ in want[2]], (got, want)
            assert [e for *_, e in got[2]] == pytest.approx([e for *_, e in want[2]], rel=ESTIMATE_REL), (got, want)
        elif got[0] == "plan":
            assert got[:3] + got[5:] == want[:3] + want[5:], (got, want)
            assert [m[:3] for m in got[3]] == [m[:3] for m in want[3]], (got, want)
            tolerance_s = PLAN_TOKENS_TOLERANCE * DEFAULT_RESUME_ALPHA_S_PER_TOKEN
            assert [m[3] for m in got[3]] == pytest.approx([m[3] for m in want[3]], abs=tolerance_s), (got, want)
            assert got[4] == pytest.approx(want[4], abs=tolerance_s), (got, want)
        else:
            assert got == want
    # The decision: node 0 (short's host copy) after moving long's instance to node 1 (its disk copy),
    # over node 1's network download.
    assert [(n, t) for n, t, _ in live_lines[2][2]] == [("0", "host"), ("1", "network")]
    assert [m[:3] for m in live_lines[3][3]] == [("long#1", "0", "1")]

    # The move and the resume, in both runtimes: the long request finished on node 1, migrated;
    # short was served on node 0 from host memory.
    for requests in (live_requests, sim_requests):
        assert [(r.node, r.migrated) for r in requests] == [("0", False), ("1", True), ("0", False)]
        assert requests[2].tier == "host"
    live_t0 = live_requests[0].arrival_s
    # Up to each runtime's last finish: the controller's close releases the rest.
    live_moves = _move_phases(recorder.phases, live_names, max(r.finish_s for r in live_requests) + END_MARGIN_S)
    sim_moves = _move_phases(sim.phases, sim_names, max(r.finish_s for r in sim_requests) + END_MARGIN_S)
    assert {n: [p[:2] for p in ps] for n, ps in live_moves.items()} == \
        {n: [p[:2] for p in ps] for n, ps in sim_moves.items()}
    assert [p[:2] for p in live_moves["long#1"]] == [("migrating", "0"), ("released", "0")]
    assert [p[:2] for p in live_moves["long#2"]] == [("resuming", "1")]
    # When: in both, the move starts at short's arrival (compared across the runtimes); then, in each,
    # the destination resumes once loaded, the source is released after the hand-over, and the long
    # request finishes after that. How long the destination's load takes is not compared: a tiny
    # checkpoint loads in milliseconds simulated, and in tens to hundreds of them on a loaded CPU.
    short_s = live_requests[2].arrival_s - live_t0
    assert live_moves["long#1"][0][2] - live_t0 == pytest.approx(short_s, abs=TIME_TOLERANCE_S)
    assert sim_moves["long#1"][0][2] == pytest.approx(short_s, abs=1e-9)
    for moves, phases, names, long_rec in ((live_moves, recorder.phases, live_names, live_requests[1]),
                                           (sim_moves, sim.phases, sim_names, sim_requests[1])):
        (_, _, migrating_s), (_, _, released_s) = moves["long#1"]
        [(_, _, resuming_s)] = moves["long#2"]
        loaded_s = max(p.end_s for p in phases if names[p.instance_id] == "long#2" and p.phase in LOAD_PHASES)
        assert migrating_s <= loaded_s <= resuming_s <= released_s <= long_rec.finish_s, moves


# --- the third scenario: random placement ---------------------------------------------------------------

#: The run seed of the random scenario; both runtimes seed the policy with ``placement_seed`` of it.
RANDOM_SEED = 7
#: One request a second, models in turn; with a keep-alive of 0.2 s each finds both nodes free, so
#: every placement shuffles the same two options in both runtimes.
RANDOM_ARRIVALS = tuple((1.0 * i, ("alpha", "beta", "gamma")[i % 3]) for i in range(9))
RANDOM_KEEP_ALIVE_S = 0.2


def _random_configs(folders: dict[str, object]) -> list[dict]:
    return [{**cfg, "auto_scaling_config": {**cfg["auto_scaling_config"], "keep_alive": RANDOM_KEEP_ALIVE_S}}
            for cfg in _deploy_configs(folders)]


async def _live_random(tmp_path, configs: list[dict]) -> tuple[LiveRecorder, dict[str, int]]:
    controller = await _start_controller(tmp_path, SPEC_HARDWARE, placement="random", seed=RANDOM_SEED)
    try:
        sizes = {cfg["model"]: (await controller.deploy(cfg))["size_bytes"] for cfg in configs}
        start = time.monotonic()
        for at_s, model in RANDOM_ARRIVALS:
            await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
            ticket = await controller.admit(model)
            request = GenerationRequest(SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0), prompt="hello")
            events = [event async for event in controller.generate(ticket, request)]
            assert isinstance(events[-1], Finished)
        return controller.recorder, sizes
    finally:
        await controller.close()


def test_random_placement_picks_the_same_nodes_in_both_runtimes(tmp_path, tiny_model):
    """The same arrivals and run seed: the live controller's random policy ranks and picks exactly
    the nodes the simulator's does (both seed it by ``placement_seed``, and ask it once per start)."""
    folders = {name: tiny_model(arch, seed)
               for name, arch, seed in (("alpha", "opt", 0), ("beta", "llama", 0), ("gamma", "opt", 1))}
    configs = _random_configs(folders)
    recorder, sizes = asyncio.run(_live_random(tmp_path, configs))
    live_log = list(recorder.scheduler_log)
    assert [r.status for r in recorder.requests] == ["completed"] * len(RANDOM_ARRIVALS)

    models = [{**cfg, "checkpoint_size": sizes[cfg["model"]]} for cfg in configs]
    requests = [{"time": t, "model": m, "input_tokens": 8, "output_tokens": OUTPUT_TOKENS} for t, m in RANDOM_ARRIVALS]
    sim = simulate(parse_trace({"name": "parity-random", "hardware": SPEC_HARDWARE, "models": models,
                                "requests": requests, "seed": RANDOM_SEED, "scheduler": {"placement": "random"}},
                               source="<parity>"))
    sim_log = list(sim.scheduler_log)

    def allocations(log: list[str]) -> list[str]:
        return [line for line in log if line.startswith("Allocated node")]

    def rankings(log: list[str]) -> list[list[str]]:
        return [[n for n, _ in ast.literal_eval(m[1])] for line in log if (m := _OPTIONS.fullmatch(line))]

    # Every arrival found both nodes free in both runtimes: nine shuffles of the same two options.
    assert rankings(sim_log) == rankings(live_log), (live_log, sim_log)
    assert len(rankings(live_log)) == len(RANDOM_ARRIVALS)
    assert all(sorted(r) == ["0", "1"] for r in rankings(live_log))
    assert allocations(live_log) == allocations(sim_log), (live_log, sim_log)
    # The draws matter: both nodes were picked (a policy pinned to one node would agree trivially).
    assert {line.split()[2] for line in allocations(live_log)} == {"0", "1"}
