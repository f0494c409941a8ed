"""The SimPy engine: what happens when a request arrives, and everything it sets in motion.

One :class:`Simulation` replays a :class:`~sllmsim.config.trace.TraceConfig`:

1. **Arrival.** The request joins its model's in-flight count. It goes to the least-loaded loaded
   instance with a free batch slot; otherwise it waits in the model's queue, which the next
   instance to free a slot or finish loading drains first-come first-served. A model that no node
   can ever host fails the request at once, with the reason.
2. **Autoscaling.** After every change of a model's in-flight count, and at the keep-alive expiry
   instants the core asks for, :func:`sllmsim.core.autoscale.decide_scaling` says how many instances
   to start and which idle ones to release. The engine only carries that out (plus dropping
   not-yet-placed starts that the desired count no longer covers).
3. **Placement.** A new instance is placed by :func:`sllmsim.core.placement.place` on a snapshot of
   the cluster (free GPUs, complete checkpoints per tier, loading backlog per node); while no node
   has enough free GPUs it stays queued, and queued instances are retried whenever GPUs free up.
4. **Loading.** The checkpoint is read from the fastest tier holding it, through the node's links
   (:mod:`sllmsim.sim.links`): pipelined through every tier at once, or one tier after another.
   Disk and host-memory copies are kept in LRU stores (:mod:`sllmsim.sim.storage`). The node's
   fixed cost per load (``load_overhead_s`` plus ``load_overhead_per_layer_s`` per model layer)
   follows the transfer.
5. **Serving.** A loaded instance prefills the prompts it has admitted as one batch (decode pauses
   meanwhile), then decodes its batch; times come from the roofline (:mod:`sllmsim.sim.roofline`,
   with the node's ``forward_overhead_s`` plus ``forward_overhead_per_layer_s`` per model layer on
   every pass) and are computed once per batch change. A node's ``request_overhead_s`` holds each
   admitted request back from the next prefill for that long. Only here is a request's true output
   length used.
6. **Making room** (only with ``scheduler.enable_migration`` or the ``shepherd`` policy). The
   snapshot then lists each node's running instances, and a placement may first move some of them
   to other nodes (token-based live migration: the destination loads the model, re-computes the
   KV cache in catch-up rounds while the source keeps generating, then takes the requests over) or
   stop them and re-queue their requests (preemption). See "Making room" below. With
   ``scheduler.reclaim_idle``, when no node has the GPUs, idle instances of other models that only
   wait out their keep-alive are released first (:mod:`sllmsim.core.reclaim`).
7. **Records.** Every request gets a :class:`~sllmsim.records.RequestRecord`, every instance phase a
   :class:`~sllmsim.records.PhaseRecord`, and every change of instances, busy GPUs and tier usage a
   :class:`~sllmsim.records.TimeseriesRecord`.

Nothing here polls: arrivals, transfers, batch changes and keep-alive checks are SimPy events, and
superseded timers are ignored by a version check.
"""

from __future__ import annotations

import gc
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from heapq import heappop, heappush
from operator import attrgetter

import simpy
from simpy.events import NORMAL, Event

from sllmsim import catalog
from sllmsim.config.hardware import GpuType
from sllmsim.config.trace import TraceConfig, arrives_in_run, check_trace, trace_to_dict
from sllmsim.core.autoscale import (IdleInstance, ScalingContext, decide_scaling, decision_holds,
                                    keep_alive_expires_s, make_autoscale_policy, surplus_idle)
from sllmsim.core.placement import logger as scheduler_logger
from sllmsim.core.migration import MigrationPlan, movable_from_s
from sllmsim.core.placement import ShepherdPlacement, make_placement_policy, place
from sllmsim.core.preemption import PreemptionPlan
from sllmsim.core.room import worth_attempting
from sllmsim.core.snapshot import ClusterView, IdleInstanceView, ModelView, NodeView, RunningInstanceView, Tier
from sllmsim.core.views import node_view
from sllmsim.errors import SllmsimError
from sllmsim.records import Phase, PhaseRecord, RequestRecord, RunResult, TimeseriesRecord
from sllmsim.sim.links import FlowNetwork, Link
from sllmsim.sim.roofline import Roofline, decode_steps, decode_time_s
from sllmsim.sim.storage import TierStore

log = logging.getLogger("sllmsim.sim")

# Phase names as plain strings: they are written once per transition on the hot path.
QUEUED = Phase.QUEUED.value
DOWNLOADING = Phase.DOWNLOADING.value
LOADING_TO_HOST = Phase.LOADING_TO_HOST.value
LOADING_TO_GPU = Phase.LOADING_TO_GPU.value
READY = Phase.READY.value
IDLE = Phase.IDLE.value
RELEASED = Phase.RELEASED.value
MIGRATING = Phase.MIGRATING.value
RESUMING = Phase.RESUMING.value
PREEMPTED = Phase.PREEMPTED.value
_LOAD_PHASES = (DOWNLOADING, LOADING_TO_HOST, LOADING_TO_GPU)

#: A request whose remaining decode steps are within this of the batch minimum finishes with it.
_STEP_EPS = 1e-6
#: Slack for comparing simulated instants computed along different float paths.
_TIME_EPS = 1e-9
#: Slack for token counts derived from continuous decode progress (a whole token is not 0.999…).
_TOKEN_EPS = 1e-9
#: Catch-up rounds of a migration before the hand-over is forced (the stream then pauses while the
#: destination re-computes the rest). Rounds shrink the gap geometrically whenever re-computing a
#: token is faster than generating one, so a few suffice; the cap only matters when it is not.
MAX_CATCHUP_ROUNDS = 8
#: A migration hands over once every request's gap (tokens the source has and the destination
#: lacks) is at most this: the destination's next decode step consumes the last token anyway.
HANDOVER_GAP_TOKENS = 1.0


_request_id = attrgetter("request_id")


class _Wake(Event):
    """A timer for one instance or model; ignored when ``target.version`` has moved on."""

    __slots__ = ("target", "version")
    # Constant for every wake; class attributes save per-event assignments on the hot path.
    _ok = True
    _value = None

    def __init__(self, env: simpy.Environment, target, callback, delay: float):
        self.env = env
        self.callbacks = [callback]
        self.target = target
        self.version = target.version
        env.schedule(self, NORMAL, delay)


class ModelState:
    """One deployment's runtime state."""

    __slots__ = ("name", "cfg", "size_bytes", "num_params", "arch", "num_layers", "dtype_bytes", "num_gpus",
                 "max_batch", "asc", "view", "allowed", "instances", "ready", "by_id", "idle", "queue", "in_flight",
                 "counter", "unplaced", "fail_reason", "rooflines", "version", "check_at", "moving",
                 "preempted_requests", "preempted_tokens", "holds")

    def __init__(self, cfg, allowed_nodes: list[NodeState]):
        size = catalog.model_size(cfg)
        self.name = cfg.model
        self.cfg = cfg
        self.size_bytes = size.size_bytes
        self.num_params = size.num_params
        self.arch = size.arch
        # Unknown depth is only allowed where no node has per-layer costs (check_trace), so 0 is exact.
        self.num_layers = size.num_layers or 0
        self.dtype_bytes = cfg.backend_config.dtype_bytes
        self.num_gpus = cfg.num_gpus
        self.max_batch = cfg.backend_config.max_batch_size
        self.asc = cfg.auto_scaling_config
        self.view = ModelView(cfg.model, size.size_bytes, cfg.num_gpus, cfg.placement_config.target_nodes,
                              num_layers=self.num_layers)
        self.allowed = allowed_nodes
        self.instances: list[Instance] = []
        """Instances not released (queued, loading, ready or idle), oldest first."""
        self.ready: list[Instance] = []
        """Loaded instances (ready or idle), oldest first."""
        self.by_id: dict[str, Instance] = {}
        self.idle: dict[str, IdleInstance] = {}
        self.queue: deque[RequestRecord] = deque()
        self.in_flight = 0
        self.counter = 0
        self.unplaced = 0
        self.fail_reason = ""
        self.rooflines: dict[tuple[GpuType, float], Roofline] = {}
        self.version = 0
        self.check_at: float | None = None
        self.moving = 0
        """Destination instances of migrations in progress (they replace a source, so the autoscaler
        does not count them as extra instances)."""
        self.preempted_requests = 0
        self.preempted_tokens = 0
        self.holds: tuple[int, int, int, bool] | None = None
        """(low, high, instances, exact) of :func:`~sllmsim.core.autoscale.decision_holds` after the last
        decision: re-deciding repeats "do nothing" while the in-flight count is in [low, high], the
        instance count is ``instances``, none is idle and (unless ``exact``) none waits for GPUs."""

    def roofline(self, node: NodeState) -> Roofline:
        """This model's execution-time model on ``node``."""
        spec = node.spec
        fixed_s = spec.forward_fixed_s(self.num_layers)
        # Keyed by the whole GPU type (a node may override a named type's bandwidth or FLOP/s) and
        # by this model's fixed cost per forward pass there.
        key = (spec.gpu, fixed_s)
        roof = self.rooflines.get(key)
        if roof is None:
            roof = Roofline.build(self.num_params, self.dtype_bytes, self.arch, spec.gpu, self.num_gpus, fixed_s)
            self.rooflines[key] = roof
        return roof


class NodeState:
    """One server's runtime state: GPUs, tier stores, links, and its cached scheduler view."""

    __slots__ = ("spec", "node_id", "free_gpus", "disk", "host", "net_link", "disk_link", "pcie_link",
                 "loading", "view", "dirty", "_host_set", "_disk_set")

    def __init__(self, spec):
        self.spec = spec
        self.node_id = spec.node_id
        self.free_gpus = spec.num_gpus
        self.disk = TierStore(spec.disk_size_bytes)
        self.host = TierStore(spec.host_size_bytes)
        self.net_link = Link(f"{spec.node_id}:network", spec.network_bandwidth_bytes_per_s)
        self.disk_link = Link(f"{spec.node_id}:disk", spec.disk_bandwidth_bytes_per_s)
        self.pcie_link = Link(f"{spec.node_id}:host_to_gpu", spec.host_to_gpu_bytes_per_s)
        self.loading = 0
        """Loads in progress; while any is, the view's backlog changes with time and is rebuilt."""
        self.view: NodeView | None = None
        self.dirty = True
        self._host_set = (-1, frozenset())
        self._disk_set = (-1, frozenset())

    def backlog_s(self, now: float) -> float:
        """Seconds until the loads on this node drain (the reference's loading-queue time)."""
        if not self.loading:
            return 0.0
        return max(self.net_link.backlog_s(now), self.disk_link.backlog_s(now), self.pcie_link.backlog_s(now))

    def make_view(self, now: float) -> NodeView:
        if self._host_set[0] != self.host.version:
            self._host_set = (self.host.version, self.host.models())
        if self._disk_set[0] != self.disk.version:
            self._disk_set = (self.disk.version, self.disk.models())
        self.view = node_view(self.spec, self.free_gpus, self._host_set[1], self._disk_set[1], self.backlog_s(now))
        self.dirty = self.loading > 0
        return self.view


class Instance:
    """One model instance: its lifecycle phase and, once loaded, its batch.

    Decode bookkeeping: ``steps`` counts decode steps since the batch last emptied; a request that
    joined at step ``s`` with ``i`` prompt tokens holds ``i + 1 + (steps - s)`` context tokens, so the
    batch's total context is ``ctx_offset + batch * steps``. The heap holds each decoding request
    under the step count at which it finishes.
    """

    __slots__ = ("iid", "model", "node", "node_id", "phase", "phase_start", "tier", "ready_s", "load",
                 "prefill_queue", "prefill_end", "prefill_wake", "heap", "batch", "steps", "ctx_offset",
                 "seg_start", "base_s", "kv_s", "roof", "version", "placed_s", "migration", "waiting_gpus",
                 "request_overhead_s", "arriving")

    def __init__(self, iid: str, model: ModelState, now: float):
        self.iid = iid
        self.model = model
        self.node: NodeState | None = None
        self.node_id = ""
        self.phase = QUEUED
        self.phase_start = now
        self.tier = ""
        self.ready_s = math.inf
        self.load = 0
        """Requests admitted (waiting to prefill, prefilling or decoding)."""
        self.prefill_queue: list[RequestRecord] = []
        """Admitted prompts waiting for the next prefill."""
        self.request_overhead_s = 0.0
        """Its node's fixed serving time per request before the request's prefill."""
        self.arriving: deque[tuple[float, RequestRecord]] = deque()
        """Admitted requests still in their request overhead, with the instant each may be prefilled."""
        self.prefill_end = -1.0
        """When the latest prefill ends (decode of the batch resumes then)."""
        self.prefill_wake = False
        """True while the pending wake is the end of a prefill (with prompts waiting), not a completion."""
        self.heap: list[tuple[float, int, RequestRecord]] = []
        self.batch = 0
        self.steps = 0.0
        self.ctx_offset = 0.0
        self.seg_start = 0.0
        self.base_s = 0.0
        self.kv_s = 0.0
        self.roof: Roofline | None = None
        self.version = 0
        self.placed_s = math.inf
        """When its load began (it holds GPUs from then on)."""
        self.migration: _Migration | None = None
        """The migration this instance is the source or the destination of, while it runs."""
        self.waiting_gpus = 0
        """GPUs it still waits for on its node while running instances there make room."""


class _Migration:
    """One move of a migration plan in progress: ``source`` keeps serving on its node while ``dest``
    loads the model on another node and re-computes the requests' KV cache; ``target`` is the new
    instance waiting for the source's GPUs."""

    __slots__ = ("source", "dest", "target", "computed", "rounds", "version")

    def __init__(self, source: Instance, dest: Instance, target: Instance):
        self.source = source
        self.dest = dest
        self.target = target
        self.computed: dict[int, float] = {}
        """Tokens of each request whose KV cache the destination holds (request id -> tokens)."""
        self.rounds = 0
        self.version = 0


class _Retry:
    """The timer of the next placement retry while room-making waits for an instance to become movable."""

    __slots__ = ("version", "at")

    def __init__(self):
        self.version = 0
        self.at = math.inf


class _SchedulerLog(logging.Handler):
    """Keeps the scheduler's log lines of one run, and stops placement logging after ``limit``."""

    def __init__(self, limit: int):
        super().__init__(logging.INFO)
        self.limit = limit
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if len(self.lines) >= self.limit:
            # Formatting a large cluster's option list is costly; past the limit nobody reads it.
            scheduler_logger.setLevel(logging.WARNING)


class _SimTime(logging.Filter):
    """Stamps scheduler log records with the simulated time (``record.sim_time_s``)."""

    def __init__(self, env: simpy.Environment):
        super().__init__()
        self.env = env

    def filter(self, record: logging.LogRecord) -> bool:
        record.sim_time_s = self.env.now
        return True


class Simulation:
    """One replay of a trace; :meth:`run` returns the records."""

    version = 0  # arrival events never go stale

    def __init__(self, trace: TraceConfig, progress: Callable[[int, int], None] | None = None):
        check_trace(trace)
        self.trace = trace
        self.progress = progress
        self.env = simpy.Environment(initial_time=0.0)
        self.flows = FlowNetwork(self.env)
        placement_seed = int(trace.seed_sequence("placement").generate_state(1)[0])
        self.placement = make_placement_policy(trace.scheduler.placement, seed=placement_seed,
                                               enable_migration=trace.scheduler.enable_migration)
        # Only these policies may ask to make room; for the others the snapshot lists no running
        # instances, which keeps their placements exactly as cheap as before.
        self.makes_room = trace.scheduler.enable_migration or isinstance(self.placement, ShepherdPlacement)
        self.reclaim_idle = trace.scheduler.reclaim_idle
        self._retry = _Retry()
        self._preempted: set[int] = set()
        """Ids of requests stopped by a preemption once: their instances are never victims again."""
        self.autoscaler = make_autoscale_policy(trace.scheduler.autoscale)
        self.sequential = trace.simulation.loading == "sequential"

        self.nodes = [NodeState(spec) for spec in trace.cluster.nodes]
        self.node_by_id = by_id = {n.node_id: n for n in self.nodes}
        self.models: dict[str, ModelState] = {}
        for cfg in trace.models:
            targets = cfg.placement_config.target_nodes
            allowed = self.nodes if targets is None else [by_id[t] for t in targets]
            self.models[cfg.model] = m = ModelState(cfg, allowed)
            m.fail_reason = _unservable(m)

        self.requests: list[RequestRecord] = []
        self.phases: list[PhaseRecord] = []
        self.timeseries: list[TimeseriesRecord] = []
        self.pending: list[Instance] = []
        """Instances waiting for a node with enough free GPUs, in request order."""
        self._view: ClusterView | None = None

        for model, (disk, host) in trace.initial_storage().items():
            size = self.models[model].size_bytes
            for node_id in disk:
                by_id[node_id].disk.place(model, size)
            for node_id in host:
                by_id[node_id].host.place(model, size)

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> RunResult:
        """Replay the whole trace and return its records."""
        env = self.env
        limit = self.trace.simulation.scheduler_log_limit
        handler = _SchedulerLog(limit) if limit else None
        stamp = _SimTime(env)
        old_level = scheduler_logger.level
        scheduler_logger.addFilter(stamp)
        if handler is not None:
            scheduler_logger.addHandler(handler)
            scheduler_logger.setLevel(logging.INFO)
        else:
            scheduler_logger.setLevel(logging.WARNING)
        # The run allocates millions of small acyclic objects (records, events); the cyclic garbage
        # collector would rescan them over and over for nothing. It is restored afterwards.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._sample_all(0.0)
            for m in self.models.values():
                if not m.fail_reason:
                    self._autoscale(m)  # min_instances start at time 0
            self._start_arrivals()
            until = self.trace.simulation.until_s
            if until is None:
                env.run()
            else:
                env.run(until=until)
        finally:
            if gc_was_enabled:
                gc.enable()
            scheduler_logger.removeFilter(stamp)
            if handler is not None:
                scheduler_logger.removeHandler(handler)
            scheduler_logger.setLevel(old_level)
        self._close(env.now)
        return RunResult(
            name=self.trace.name,
            requests=self.requests,
            phases=self.phases,
            timeseries=self.timeseries,
            resolved_config=trace_to_dict(self.trace),
            mode="sim",
            scheduler_log=handler.lines if handler is not None else [],
        )

    def _start_arrivals(self) -> None:
        reqs = self.trace.requests
        # Requests from until_s on are outside the run: they never arrive (and get no record).
        n = int(arrives_in_run(reqs.time_s, self.trace.simulation.until_s).sum())  # times are sorted
        self._times = reqs.time_s[:n].tolist()
        self._names = reqs.model[:n].tolist()
        self._inputs = reqs.input_tokens[:n].tolist()
        self._outputs = reqs.output_tokens[:n].tolist()
        self._next = 0
        self._progress_every = max(len(self._times) // 200, 1)
        self._progress_at = 0
        self._schedule_arrival()

    def _schedule_arrival(self) -> None:
        # One event per distinct arrival time; each schedules the next (cheaper than a process).
        i = self._next
        if i < len(self._times):
            _Wake(self.env, self, self._on_arrival, self._times[i] - self.env.now)
        elif self.progress is not None:
            self.progress(len(self._times), len(self._times))

    def _on_arrival(self, event: _Wake) -> None:
        now = self.env.now
        times, names, inputs, outputs = self._times, self._names, self._inputs, self._outputs
        models = self.models
        records = self.requests
        arrive = self._arrive
        i = self._next
        total = len(times)
        while True:
            name = names[i]
            rec = RequestRecord(i, name, now, inputs[i], outputs[i])
            records.append(rec)
            arrive(rec, models[name], now)
            i += 1
            if i == total or times[i] > now:
                break
        self._next = i
        if self.progress is not None and i >= self._progress_at:
            self._progress_at = i + self._progress_every
            self.progress(i, total)
        self._schedule_arrival()

    # --------------------------------------------------------------------------------------- requests

    def _arrive(self, rec: RequestRecord, m: ModelState, now: float) -> None:
        if m.fail_reason:
            rec.status = "failed"
            rec.reason = m.fail_reason
            return
        m.in_flight += 1
        best = None
        best_load = m.max_batch
        for inst in m.ready:
            if inst.load < best_load:
                best = inst
                best_load = inst.load
        if best is None:
            m.queue.append(rec)
        else:
            self._admit(best, rec, now)
            self._kick(best, now)
        self._autoscale(m)

    def _admit(self, inst: Instance, rec: RequestRecord, now: float) -> None:
        """Give ``rec`` a batch slot of ``inst``; its prefill starts at the next :meth:`_kick`."""
        if inst.phase != READY:
            self._phase(inst, READY, now)
            inst.model.idle.pop(inst.iid, None)
            if self.makes_room and self.pending:
                self._retry_at(self._movable_from(inst))  # it is running now: it may make room soon
        inst.load += 1
        rec.node = inst.node_id
        rec.instance_id = inst.iid
        if inst.ready_s > rec.arrival_s:
            rec.cold_start = True
            rec.tier = inst.tier
        else:
            rec.tier = "gpu"
        if inst.request_overhead_s:
            self._delay_prompt(inst, rec, now + inst.request_overhead_s)
        else:
            inst.prefill_queue.append(rec)

    def _delay_prompt(self, inst: Instance, rec: RequestRecord, ready_s: float) -> None:
        """Hold an admitted request for its node's request overhead (tokenising, request handling:
        work beside the GPU, so the batch keeps decoding); then it joins the next prefill. The
        overhead is the same for every request of a node, so requests leave in admission order and
        one timer, for the oldest, is enough."""
        arriving = inst.arriving
        arriving.append((ready_s, rec))
        if len(arriving) == 1:
            self.env.timeout(ready_s - self.env.now).callbacks.append(lambda _e, inst=inst: self._on_prompt_ready(inst))

    def _on_prompt_ready(self, inst: Instance) -> None:
        now = self.env.now
        arriving = inst.arriving
        # (Empty when a preemption has taken the requests back.)
        while arriving and arriving[0][0] <= now + _TIME_EPS:
            inst.prefill_queue.append(arriving.popleft()[1])
        if arriving:
            self.env.timeout(arriving[0][0] - now).callbacks.append(lambda _e, inst=inst: self._on_prompt_ready(inst))
        self._kick(inst, now)

    def _kick(self, inst: Instance, now: float) -> None:
        """Start prefilling the admitted prompts now, or when the running prefill ends."""
        if not inst.prefill_queue:
            return
        if now < inst.prefill_end:
            if not inst.prefill_wake:
                inst.prefill_wake = True
                inst.version += 1
                _Wake(self.env, inst, self._on_prefill_done, inst.prefill_end - now)
        else:
            self._start_prefill(inst, now)

    def _start_prefill(self, inst: Instance, now: float) -> None:
        # Prompts admitted so far are prefilled as one batch while decode pauses. Their first token
        # comes at the end of the prefill; then they decode with the rest of the batch, so they join
        # the heap now and the next decode segment starts when the prefill ends.
        heap = inst.heap
        if heap and now > inst.seg_start:
            k = inst.batch
            steps = decode_steps(now - inst.seg_start, inst.base_s, inst.kv_s, inst.ctx_offset + k * inst.steps, k)
            left = heap[0][0] - inst.steps
            inst.steps += steps if steps < left else left
        batch = inst.prefill_queue
        inst.prefill_queue = []
        roof = inst.roof
        tokens = 0
        for rec in batch:
            tokens += rec.input_tokens
        duration = roof.flop_s_per_token * tokens
        if duration < roof.floor_s:
            duration = roof.floor_s
        end = now + (duration + roof.forward_overhead_s)
        steps = inst.steps
        offset = 0.0
        for rec in batch:
            rec.queued_until_s = now
            rec.first_token_s = end
            heappush(heap, (steps + rec.output_tokens - 1, rec.request_id, rec))
            offset += rec.input_tokens + 1 - steps
        inst.ctx_offset += offset
        inst.batch += len(batch)
        inst.prefill_end = end
        self._schedule_decode(inst, now, end)

    def _schedule_decode(self, inst: Instance, now: float, start: float) -> None:
        """Wake ``inst`` when the first request of its batch finishes, decoding from ``start`` on."""
        k = inst.batch
        roof = inst.roof
        base = roof.flop_s_per_token * k
        if base < roof.floor_s:
            base = roof.floor_s
        base += roof.forward_overhead_s
        inst.base_s = base
        inst.seg_start = start
        left = inst.heap[0][0] - inst.steps
        inst.version += 1
        inst.prefill_wake = False
        _Wake(self.env, inst, self._on_decode_done,
              start - now + decode_time_s(left, base, inst.kv_s, inst.ctx_offset + k * inst.steps, k))

    def _on_prefill_done(self, event: _Wake) -> None:
        inst = event.target
        if event.version == inst.version:
            inst.prefill_wake = False
            self._start_prefill(inst, self.env.now)

    def _on_decode_done(self, event: _Wake) -> None:
        inst = event.target
        if event.version != inst.version:
            return
        now = self.env.now
        m = inst.model
        heap = inst.heap
        done_at = heap[0][0]
        inst.steps = done_at
        inst.seg_start = now
        finished = 0
        offset = 0.0
        while heap and heap[0][0] <= done_at + _STEP_EPS:
            fin, _, rec = heappop(heap)
            rec.finish_s = now
            offset += rec.input_tokens + rec.output_tokens - fin
            finished += 1
        inst.batch -= finished
        if inst.batch:
            inst.ctx_offset -= offset
        else:
            inst.steps = inst.ctx_offset = 0.0  # restart the counters to keep them small
        inst.load -= finished
        m.in_flight -= finished
        queue = m.queue
        migrating = inst.migration is not None  # a migration source admits nothing new
        while queue and inst.load < m.max_batch and not migrating:
            self._admit(inst, queue.popleft(), now)
        if inst.prefill_queue:
            self._start_prefill(inst, now)
        elif inst.batch:
            self._schedule_decode(inst, now, now)
        if not inst.load:
            if migrating:
                self._abandon_migration(inst.migration, now)
            else:
                self._phase(inst, IDLE, now)
                m.idle[inst.iid] = IdleInstance(inst.iid, now)
        # m.idle is in idle-since order, so its first entry is the first whose keep-alive runs out.
        if m.unplaced or (m.idle and (
                m.check_at is None or keep_alive_expires_s(next(iter(m.idle.values())), m.asc) <= now)):
            self._autoscale(m)
        if self.reclaim_idle:
            self._retry_reclaim(m, now)  # fewer requests in flight: an idle instance may now be surplus

    # ------------------------------------------------------------------------------------ autoscaling

    def _autoscale(self, m: ModelState) -> None:
        """Consult the autoscaling policy (through the core's one wrapper) and carry out its decision.

        When to consult is the runtime's part (the reference polls once a second). Here: on every
        arrival, when an instance finishes loading idle, at the keep-alive expiry the core asked to
        be woken for, and on a completion that could change the outcome: while a start still waits
        for GPUs, while an idle instance is past its keep-alive, or while idle instances have no
        check scheduled. Any other completion only lowers the in-flight count, which cannot start an
        instance, and cannot release one before the already scheduled check at the earliest
        keep-alive expiry (this assumes, as every sensible policy does, that fewer requests in
        flight never ask for more instances).
        """
        count = len(m.instances) - m.moving
        holds = m.holds
        # The core said when its last decision would repeat "do nothing" (decision_holds): skip it.
        if (holds is not None and holds[0] <= m.in_flight <= holds[1] and holds[2] == count and not m.idle
                and (holds[3] or not m.unplaced)):
            return
        now = self.env.now
        ctx = ScalingContext(m.name, now, m.in_flight, count, tuple(m.idle.values()), m.asc)
        decision = decide_scaling(self.autoscaler, ctx)
        span = decision_holds(self.autoscaler, ctx, decision)
        m.holds = None if span is None else (span[0], span[1], count + decision.start,
                                             count + decision.start == decision.desired)
        if decision.start:
            for _ in range(decision.start):
                self._start_instance(m, now)
        if decision.release:
            for iid in decision.release:
                self._release(m.by_id[iid], now)
        count = len(m.instances) - m.moving
        if m.unplaced and decision.desired < count:
            self._cancel_unplaced(m, count - decision.desired, now)
        check = decision.next_check_s
        if check is not None and (m.check_at is None or check < m.check_at):
            m.check_at = check
            m.version += 1
            _Wake(self.env, m, self._on_model_check, check - now)

    def _on_model_check(self, event: _Wake) -> None:
        m = event.target
        if event.version == m.version:
            m.check_at = None
            self._autoscale(m)

    # -------------------------------------------------------------------------------------- placement

    def _start_instance(self, m: ModelState, now: float) -> None:
        iid = f"{m.name}-{m.counter}"
        m.counter += 1
        inst = Instance(iid, m, now)
        m.instances.append(inst)
        m.by_id[iid] = inst
        self._sample(now, "instances", m.name, len(m.instances))
        self.pending.append(inst)
        m.unplaced += 1
        self._try_place(inst, now)

    def _cluster_view(self, now: float) -> ClusterView:
        view = self._view
        if view is None or any(n.dirty for n in self.nodes):
            view = self._view = ClusterView(tuple(
                n.make_view(now) if n.dirty else n.view for n in self.nodes))
        return view

    def _offer_view(self, now: float, running: dict[str, list[RunningInstanceView]] | None,
                    idle: dict[str, list[IdleInstanceView]] | None) -> ClusterView:
        """The cluster view with the running instances that may be moved or stopped and the idle
        ones that may be reclaimed listed in their nodes' views."""
        view = self._cluster_view(now)
        if running:
            view = ClusterView(tuple(replace(v, running=tuple(running[v.node_id])) if v.node_id in running else v
                                     for v in view.nodes))
        if idle:
            view = ClusterView(tuple(replace(v, idle=tuple(idle[v.node_id])) if v.node_id in idle else v
                                     for v in view.nodes))
        return view

    def _try_place(self, inst: Instance, now: float) -> bool:
        m = inst.model
        need = m.num_gpus
        running = self._running_views(now) if self.makes_room else None
        idle = None
        # Cheap pre-check so that a full cluster does not log a failed placement per retry.
        if not any(n.free_gpus >= need for n in m.allowed):
            if self.reclaim_idle:
                idle = self._idle_views(m)
            if running is None and not idle:
                return False
            view = self._offer_view(now, running, idle)
            if not worth_attempting(m.view, view):
                if running is not None:
                    self._retry_when_movable(now)
                return False
        else:
            view = self._offer_view(now, running, None)
        if idle:
            option = place(self.placement, m.view, view, reclaim_idle=True)
        else:
            option = place(self.placement, m.view, view)
        if option is None:
            if running is not None:
                self._retry_when_movable(now)
            return False
        node = self.node_by_id[option.node_id]
        if option.reclaim:
            self._reclaim(m, node, option.reclaim, now)
        if option.migration is None and option.preemption is None and node.free_gpus < need:
            raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} chose node {node.node_id} "
                               f"for {m.name} without {need} free GPUs and without a plan to make room")
        take = min(node.free_gpus, need)
        node.free_gpus -= take
        node.dirty = True
        self._sample(now, "gpus_busy", node.node_id, node.spec.num_gpus - node.free_gpus)
        self.pending.remove(inst)
        m.unplaced -= 1
        inst.node = node
        inst.node_id = node.node_id
        inst.roof = roof = m.roofline(node)
        inst.kv_s = roof.kv_s_per_token
        inst.request_overhead_s = node.spec.request_overhead_s
        inst.waiting_gpus = need - take
        if option.migration is not None:
            self._migrate(inst, option.migration, now)
        elif option.preemption is not None:
            self._preempt(inst, option.preemption, now)
        else:
            self._begin_load(inst, node, now)
        return True

    def _place_pending(self, now: float) -> None:
        if not self.pending:
            return
        # Without room-making or reclaiming, an instance needing more GPUs than the freest node has
        # would fail _try_place's pre-check; skipping it here is the same outcome without its
        # O(nodes) scan (on many models, every release used to rescan every waiting instance).
        # Placements only take GPUs, so the bound stays an upper bound until it is recomputed.
        simple = not (self.makes_room or self.reclaim_idle)
        most_free = max(n.free_gpus for n in self.nodes) if simple else math.inf
        for inst in list(self.pending):
            if simple and inst.model.num_gpus > most_free:
                continue
            # A placement can start or cancel other instances (a preemption re-queues requests,
            # whose model may scale out), so skip the ones no longer waiting.
            if inst.node is None and inst.phase != RELEASED:
                if self._try_place(inst, now) and simple:
                    most_free = max(n.free_gpus for n in self.nodes)

    def _cancel_unplaced(self, m: ModelState, surplus: int, now: float) -> None:
        for inst in reversed(list(self.pending)):
            if surplus == 0:
                break
            if inst.model is m:
                self.pending.remove(inst)
                m.unplaced -= 1
                surplus -= 1
                self._drop(inst, now)

    # ---------------------------------------------------------------------------------------- loading

    def _begin_load(self, inst: Instance, node: NodeState, now: float) -> None:
        """Reserve space and start the transfer now, so the next decision at this instant already
        sees this load in the node's backlog; a process carries it through the remaining stages."""
        inst.placed_s = now
        m = inst.model
        model = m.name
        size = m.size_bytes
        host, disk = node.host, node.disk
        # Which copies this load writes (space reserved now, visible to the scheduler once complete).
        writes: dict[str, TierStore] = {}
        if host.has(model):
            tier = Tier.HOST
            host.pin(model)
            stages = ((node.pcie_link, LOADING_TO_GPU),)
        else:
            if self._reserve(host, model, size, node, "host_used_bytes", now):
                writes[LOADING_TO_HOST] = host
            if disk.has(model):
                tier = Tier.DISK
                disk.pin(model)
                stages = ((node.disk_link, LOADING_TO_HOST), (node.pcie_link, LOADING_TO_GPU))
            else:
                tier = Tier.NETWORK
                if self._reserve(disk, model, size, node, "disk_used_bytes", now):
                    writes[DOWNLOADING] = disk
                stages = ((node.net_link, DOWNLOADING), (node.disk_link, LOADING_TO_HOST),
                          (node.pcie_link, LOADING_TO_GPU))
        inst.tier = tier.value
        node.loading += 1
        node.dirty = True
        self._phase(inst, stages[0][1], now)
        if self.sequential:
            first = self.flows.transfer((stages[0][0],), size)
        else:
            # One stream through every tier at once: its rate is the slowest link's share.
            first = self.flows.transfer(tuple(link for link, _ in stages), size)
        self.env.process(self._load(inst, node, tier, stages, writes, first))

    def _load(self, inst: Instance, node: NodeState, tier: Tier, stages, writes: dict[str, TierStore], first):
        env = self.env
        model = inst.model.name
        if self.sequential:
            for i, (link, phase) in enumerate(stages):
                if i:
                    self._phase(inst, phase, env.now)
                yield self.flows.transfer((link,), inst.model.size_bytes) if i else first
                store = writes.pop(phase, None)
                if store is not None:
                    store.finish(model)  # this tier's copy is complete before the next one reads it
        else:
            yield first
            for store in writes.values():
                store.finish(model)
        if tier is Tier.HOST:
            node.host.unpin(model)
        elif tier is Tier.DISK:
            node.disk.unpin(model)
        fixed_s = node.spec.load_fixed_s(inst.model.num_layers)
        if fixed_s:
            yield env.timeout(fixed_s)
        node.loading -= 1
        node.dirty = True
        if inst.migration is not None:
            self._start_resume(inst.migration, env.now)
        else:
            self._instance_ready(inst, env.now)

    def _reserve(self, store: TierStore, model: str, size: int, node: NodeState, metric: str, now: float) -> bool:
        before = store.used_bytes
        kept, _evicted = store.reserve(model, size)
        if store.used_bytes != before:
            self._sample(now, metric, node.node_id, store.used_bytes)
        return kept

    def _instance_ready(self, inst: Instance, now: float) -> None:
        m = inst.model
        inst.ready_s = now
        m.ready.append(inst)
        queue = m.queue
        while queue and inst.load < m.max_batch:
            self._admit(inst, queue.popleft(), now)
        self._kick(inst, now)
        if not inst.load:
            self._phase(inst, IDLE, now)
            m.idle[inst.iid] = IdleInstance(inst.iid, now)
            self._autoscale(m)
            if self.reclaim_idle:
                self._retry_reclaim(m, now)

    def _release(self, inst: Instance, now: float) -> None:
        self._unload(inst, now)
        self._place_pending(now)

    def _unload(self, inst: Instance, now: float) -> None:
        """Release a loaded instance and free its GPUs; its checkpoint stays in the node's tiers."""
        m = inst.model
        m.ready.remove(inst)
        m.idle.pop(inst.iid, None)
        self._drop(inst, now)
        node = inst.node
        node.free_gpus += m.num_gpus
        node.dirty = True
        self._sample(now, "gpus_busy", node.node_id, node.spec.num_gpus - node.free_gpus)

    def _drop(self, inst: Instance, now: float) -> None:
        """End an instance's lifecycle: close its phase and record the zero-length ``released`` marker."""
        m = inst.model
        m.instances.remove(inst)
        del m.by_id[inst.iid]
        self._phase(inst, RELEASED, now)
        self._phase(inst, RELEASED, now)
        self._sample(now, "instances", m.name, len(m.instances))

    # ------------------------------------------------------------------------------ reclaiming idle
    #
    # With scheduler.reclaim_idle, an instance that is idle only to wait out its keep-alive (the
    # autoscaler would release it once the keep-alive ran out; one kept for min_instances is not)
    # is offered to the core as reclaimable. The core uses such GPUs only when no node can host the
    # new instance otherwise; the engine releases the chosen instances at once (`released`, GPUs
    # freed, checkpoint kept in the node's host memory and disk as for any release) and the new
    # load starts. Waiting placements are retried whenever an instance may have become reclaimable.

    def _idle_views(self, placing: ModelState) -> dict[str, list[IdleInstanceView]]:
        """Per node id, the idle instances of models other than ``placing`` that may be reclaimed."""
        out: dict[str, list[IdleInstanceView]] = {}
        for m in self.models.values():
            if m is placing or not m.idle:
                continue
            # At an instant past every keep-alive, the autoscaler names the idle instances it would
            # release: those beyond what min_instances and the requests in flight need.
            surplus = surplus_idle(self.autoscaler, ScalingContext(
                m.name, math.inf, m.in_flight, len(m.instances) - m.moving, tuple(m.idle.values()), m.asc))
            for iid in surplus:
                inst = m.by_id[iid]
                out.setdefault(inst.node_id, []).append(
                    IdleInstanceView(iid, m.name, m.num_gpus, m.idle[iid].idle_since_s))
        return out

    def _reclaim(self, m: ModelState, node: NodeState, instance_ids: tuple[str, ...], now: float) -> None:
        """Release the idle instances a placement of ``m`` on ``node`` chose to reclaim."""
        for iid in instance_ids:
            inst = next((om.by_id[iid] for om in self.models.values() if iid in om.by_id), None)
            if inst is None or inst.phase != IDLE or inst.node is not node or inst.model is m:
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} chose to reclaim "
                                   f"{iid} on node {node.node_id}, which is not an idle instance of another model there")
            self._unload(inst, now)

    def _retry_reclaim(self, m: ModelState, now: float) -> None:
        """Retry the waiting placements when ``m`` has idle instances that may have become reclaimable."""
        if self.reclaim_idle and self.pending and m.idle:
            self._place_pending(now)

    # ------------------------------------------------------------------------------------ making room
    #
    # With scheduler.enable_migration (storage-aware placement) or the shepherd policy, the snapshot
    # lists each node's running instances and a placement may make room on its node first:
    #
    # - Migration (ServerlessLLM, Fu et al., OSDI'24, §5, token-based): the new instance takes the
    #   node's free GPUs and waits for the rest. For each move, a destination instance of the moved
    #   model takes its GPUs on the other node at once and loads the checkpoint like any load. It then
    #   re-computes the KV cache of the source's requests from their tokens (prompt + generated so
    #   far) as one prefill pass of that many tokens on the destination's roofline, while the source
    #   keeps generating; each further catch-up round re-computes the tokens the source produced
    #   meanwhile. Once no request lacks more than one token (the destination's next decode step
    #   consumes the last one anyway) and the source is not prefilling, the source stops and its
    #   requests continue on the destination from exactly where they were: no pause. After
    #   MAX_CATCHUP_ROUNDS the hand-over is forced and the stream pauses while the destination
    #   re-computes the rest. The source's GPUs go straight to the waiting instance, which then loads.
    #   A source admits no new request while it migrates; if its requests all finish first, it is
    #   released at once and the destination becomes an ordinary instance when it is loaded.
    # - Preemption (the Shepherd*-like baseline): the victims stop now, their requests go back to
    #   their model's queue keeping their arrival order (what they had computed is lost and counted
    #   in the preempted_requests / preempted_tokens time series), and their GPUs go to the new instance.
    #
    # Thrash guards. For both: an instance may be moved or stopped only once it has served for at
    # least as long as it took to start (load, plus resume for a migrated one), so at most half of
    # any instance's GPU time goes to starting it, however often placements want its GPUs. For
    # preemption also: a request is stopped at most once (an instance serving one that was is no
    # victim), because the time guard alone lets two models whose generations outlast their loads
    # stop each other forever without either finishing. Migration needs no such rule: a moved
    # request keeps its progress, so it finishes however often it moves.

    def _movable_from(self, inst: Instance) -> float:
        """When ``inst`` may first be migrated or preempted (the core's thrash guard)."""
        return movable_from_s(inst.placed_s, inst.ready_s)

    def _request_tokens(self, inst: Instance, now: float) -> list[tuple[int, float]]:
        """(request id, prompt tokens + tokens generated so far) of each request ``inst`` serves at
        ``now``: what another node must re-compute to resume it. Decode progress is continuous, so
        the counts can be fractional."""
        heap = inst.heap
        steps = inst.steps
        if heap and now > inst.seg_start:
            k = inst.batch
            done = decode_steps(now - inst.seg_start, inst.base_s, inst.kv_s, inst.ctx_offset + k * steps, k)
            left = heap[0][0] - steps
            steps += done if done < left else left
        out = []
        for fin, rid, rec in heap:
            tokens = rec.input_tokens
            if rec.first_token_s <= now:  # a request whose prefill is still running has only its prompt
                tokens += rec.output_tokens - (fin - steps)
            out.append((rid, tokens))
        for rec in inst.prefill_queue:
            out.append((rec.request_id, rec.input_tokens))
        for _, rec in inst.arriving:
            out.append((rec.request_id, rec.input_tokens))
        return out

    def _running_views(self, now: float) -> dict[str, list[RunningInstanceView]]:
        """Per node id, the instances a placement may move or stop: loaded, serving, not migrating,
        past the thrash guard."""
        out: dict[str, list[RunningInstanceView]] = {}
        stopped = self._preempted
        for m in self.models.values():
            for inst in m.ready:
                if inst.load and inst.migration is None and now >= self._movable_from(inst) - _TIME_EPS:
                    requests = self._request_tokens(inst, now)
                    if stopped and any(rid in stopped for rid, _ in requests):
                        continue
                    tokens = sum(t for _, t in requests)
                    out.setdefault(inst.node_id, []).append(
                        RunningInstanceView(inst.iid, m.view, int(tokens + _TOKEN_EPS)))
        return out

    def _retry_when_movable(self, now: float) -> None:
        """Retry the waiting placements when the next running instance passes its thrash guard."""
        soonest = math.inf
        for m in self.models.values():
            for inst in m.ready:
                if inst.load and inst.migration is None:
                    t = self._movable_from(inst)
                    if now < t < soonest:
                        soonest = t
        if soonest < math.inf:
            self._retry_at(soonest)

    def _retry_at(self, t: float) -> None:
        now = self.env.now
        retry = self._retry
        t = max(t, now)
        if t < retry.at:
            retry.at = t
            retry.version += 1
            _Wake(self.env, retry, self._on_retry, t - now)

    def _on_retry(self, event: _Wake) -> None:
        retry = self._retry
        if event.version == retry.version:
            retry.at = math.inf
            if self.pending:
                self._place_pending(self.env.now)

    def _give_gpus(self, target: Instance, node: NodeState, gpus: int, now: float) -> None:
        """GPUs of a stopped or migrated instance on ``node`` go to ``target``, which waits for them
        there; any beyond what it still needs become free."""
        use = min(gpus, target.waiting_gpus)
        target.waiting_gpus -= use
        if use and not target.waiting_gpus:
            self._begin_load(target, node, now)
        if gpus > use:
            node.free_gpus += gpus - use
            node.dirty = True
            self._sample(now, "gpus_busy", node.node_id, node.spec.num_gpus - node.free_gpus)
            self._place_pending(now)

    def _migrate(self, target: Instance, plan: MigrationPlan, now: float) -> None:
        """Start every move of ``plan``; ``target`` (placed on ``plan.node_id``) waits for the GPUs."""
        for move in plan.moves:
            sm = self.models[move.model]
            source = sm.by_id.get(move.instance_id)
            node = self.node_by_id[move.to_node]
            if (source is None or source.migration is not None or not source.load
                    or source.node is not target.node or node.free_gpus < move.num_gpus):
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} planned an impossible "
                                   f"migration of {move.instance_id} from node {move.from_node} to {move.to_node}")
            node.free_gpus -= move.num_gpus
            node.dirty = True
            self._sample(now, "gpus_busy", node.node_id, node.spec.num_gpus - node.free_gpus)
            dest = Instance(f"{sm.name}-{sm.counter}", sm, now)
            sm.counter += 1
            sm.instances.append(dest)
            sm.by_id[dest.iid] = dest
            sm.moving += 1
            self._sample(now, "instances", sm.name, len(sm.instances))
            dest.node = node
            dest.node_id = node.node_id
            dest.roof = roof = sm.roofline(node)
            dest.kv_s = roof.kv_s_per_token
            dest.request_overhead_s = node.spec.request_overhead_s
            mig = _Migration(source, dest, target)
            source.migration = dest.migration = mig
            sm.ready.remove(source)
            self._phase(source, MIGRATING, now)
            self._begin_load(dest, node, now)

    def _start_resume(self, mig: _Migration, now: float) -> None:
        """The destination has loaded the model: start re-computing the requests' KV cache."""
        self._phase(mig.dest, RESUMING, now)
        self._catch_up(mig, now)

    def _catch_up(self, mig: _Migration, now: float) -> None:
        """One round: re-compute, as one prefill pass, the tokens the destination does not hold yet."""
        todo = 0.0
        computed = mig.computed
        for rid, tokens in self._request_tokens(mig.source, now):
            have = computed.get(rid, 0.0)
            if tokens > have:
                todo += tokens - have
                computed[rid] = tokens
        mig.rounds += 1
        mig.version += 1
        _Wake(self.env, mig, self._on_round_done, mig.dest.roof.prefill_s(todo) if todo > 0 else 0.0)

    def _on_round_done(self, event: _Wake) -> None:
        mig = event.target
        if event.version != mig.version:
            return
        now = self.env.now
        source = mig.source
        computed = mig.computed
        gaps = [tokens - computed.get(rid, 0.0) for rid, tokens in self._request_tokens(source, now)]
        prefilling = source.prefill_end - now > _TIME_EPS or bool(source.prefill_queue) or bool(source.arriving)
        if not prefilling and max(gaps) <= HANDOVER_GAP_TOKENS + _TOKEN_EPS:
            self._hand_over(mig, now, 0.0)
        elif mig.rounds < MAX_CATCHUP_ROUNDS:
            self._catch_up(mig, now)
        elif prefilling:
            # Prompts the source admitted before the migration are still being prefilled there (or
            # wait for their request overhead); hand over once that pass is done.
            wait = max(source.prefill_end - now, 0.0)
            if source.arriving:
                wait = max(wait, source.arriving[-1][0] - now)
            mig.version += 1
            _Wake(self.env, mig, self._on_round_done, wait)
        else:
            self._hand_over(mig, now, mig.dest.roof.prefill_s(sum(g for g in gaps if g > 0)))

    def _hand_over(self, mig: _Migration, now: float, pause_s: float) -> None:
        """The source stops; its requests continue on the destination after ``pause_s`` (0 when the
        catch-up converged; else the re-computation of the remaining gap); the source's GPUs go to
        the instance waiting for them."""
        source, dest = mig.source, mig.dest
        m = source.model
        heap = source.heap
        if heap and now > source.seg_start:
            k = source.batch
            steps = decode_steps(now - source.seg_start, source.base_s, source.kv_s,
                                 source.ctx_offset + k * source.steps, k)
            left = heap[0][0] - source.steps
            source.steps += steps if steps < left else left
        # The decode state moves as it is: same step counter, same context, same finishing steps.
        dest.heap, dest.batch, dest.steps, dest.ctx_offset, dest.load = (
            heap, source.batch, source.steps, source.ctx_offset, source.load)
        source.heap, source.batch, source.load = [], 0, 0
        source.version += 1
        for _, _, rec in heap:
            rec.node = dest.node_id
            rec.instance_id = dest.iid
            rec.migrated = True
        mig.version += 1
        source.migration = dest.migration = None
        m.moving -= 1
        # A forced hand-over's pause is still re-computation: the destination's resuming phase
        # runs until it serves, while the source's migrating phase ends now.
        dest.ready_s = dest.prefill_end = now + pause_s
        self._phase(dest, READY, now + pause_s)
        m.ready.append(dest)
        self._schedule_decode(dest, now, now + pause_s)
        self._drop(source, now)
        self._give_gpus(mig.target, source.node, m.num_gpus, now)
        queue = m.queue
        while queue and dest.load < m.max_batch:
            self._admit(dest, queue.popleft(), now)
        self._kick(dest, now)
        if self.pending:
            self._retry_at(self._movable_from(dest))

    def _abandon_migration(self, mig: _Migration, now: float) -> None:
        """The source's requests all finished before the hand-over: release it now (its GPUs go to
        the waiting instance); the destination carries on as an ordinary instance."""
        source, dest = mig.source, mig.dest
        m = source.model
        mig.version += 1
        source.migration = dest.migration = None
        m.moving -= 1
        self._drop(source, now)
        self._give_gpus(mig.target, source.node, m.num_gpus, now)
        if dest.phase == RESUMING:
            self._instance_ready(dest, now)

    def _preempt(self, target: Instance, plan: PreemptionPlan, now: float) -> None:
        """Stop the victims of ``plan``: their requests are re-queued and their GPUs go to ``target``."""
        hit: list[ModelState] = []
        for iid, model in zip(plan.instance_ids, plan.models):
            vm = self.models[model]
            victim = vm.by_id.get(iid)
            if victim is None or victim.migration is not None or not victim.load or victim.node is not target.node:
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} planned an impossible "
                                   f"preemption of {iid} on node {plan.node_id}")
            lost = sum(t for _, t in self._request_tokens(victim, now))
            requests = [rec for _, _, rec in victim.heap] + victim.prefill_queue + [rec for _, rec in victim.arriving]
            victim.heap, victim.prefill_queue, victim.batch, victim.load = [], [], 0, 0
            victim.arriving.clear()
            victim.version += 1
            vm.ready.remove(victim)
            self._phase(victim, PREEMPTED, now)
            self._drop(victim, now)
            for rec in requests:
                self._preempted.add(rec.request_id)
                rec.queued_until_s = rec.first_token_s = None
                rec.node = rec.instance_id = rec.tier = ""
                rec.cold_start = False
            # Request ids follow arrival order: the re-queued requests take their place in the line.
            vm.queue = deque(sorted([*vm.queue, *requests], key=_request_id))
            vm.preempted_requests += len(requests)
            vm.preempted_tokens += int(lost + _TOKEN_EPS)
            self._sample(now, "preempted_requests", vm.name, vm.preempted_requests)
            self._sample(now, "preempted_tokens", vm.name, vm.preempted_tokens)
            self._give_gpus(target, target.node, vm.num_gpus, now)
            if vm not in hit:
                hit.append(vm)
        for vm in hit:
            queue = vm.queue
            for inst in vm.ready:
                if not queue:
                    break
                while queue and inst.load < vm.max_batch:
                    self._admit(inst, queue.popleft(), now)
                self._kick(inst, now)
            self._autoscale(vm)

    # ---------------------------------------------------------------------------------------- records

    def _phase(self, inst: Instance, phase: str, now: float) -> None:
        old = inst.phase
        loading = old in _LOAD_PHASES
        self.phases.append(PhaseRecord(inst.iid, inst.model.name, inst.node_id, old, inst.phase_start, now,
                                       inst.tier, inst.model.size_bytes if loading else 0))
        inst.phase = phase
        inst.phase_start = now

    def _sample(self, now: float, metric: str, key: str, value: float) -> None:
        self.timeseries.append(TimeseriesRecord(now, metric, key, value))

    def _sample_all(self, now: float) -> None:
        for m in self.models.values():
            self._sample(now, "instances", m.name, 0)
        for n in self.nodes:
            self._sample(now, "gpus_busy", n.node_id, 0)
            self._sample(now, "host_used_bytes", n.node_id, n.host.used_bytes)
            self._sample(now, "disk_used_bytes", n.node_id, n.disk.used_bytes)

    def _close(self, end_s: float) -> None:
        """Fail what did not finish and close the phases still open at the end of the run."""
        until = self.trace.simulation.until_s
        for rec in self.requests:
            if rec.finish_s is None and rec.status != "failed":
                rec.status = "failed"
                m = self.models[rec.model]
                if until is not None:
                    rec.reason = f"unfinished when the simulation stopped at until_s={until:g}"
                elif m.unplaced:
                    rec.reason = "no node had enough free GPUs for an instance before the simulation ended"
                else:
                    rec.reason = "no instance served it before the simulation ended"
        for m in self.models.values():
            for inst in m.instances:
                # A forced migration hand-over opens the destination's ready phase at the end of
                # its pause, which may lie past an until_s cut.
                self._phase(inst, inst.phase, max(end_s, inst.phase_start))


def _unservable(m: ModelState) -> str:
    """Why no instance of ``m`` can ever be placed, or ``""``."""
    if not m.allowed:
        return "no node is allowed by placement_config.target_nodes"
    if not any(n.spec.num_gpus >= m.num_gpus for n in m.allowed):
        most = max(n.spec.num_gpus for n in m.allowed)
        return f"model needs {m.num_gpus} GPUs but no allowed node has more than {most}"
    fits = [n for n in m.allowed
            if n.spec.num_gpus >= m.num_gpus and n.spec.gpu.memory_bytes * m.num_gpus >= m.size_bytes]
    if not fits:
        return (f"checkpoint ({m.size_bytes} bytes) does not fit in the memory of {m.num_gpus} GPU(s) "
                "on any allowed node")
    return ""
