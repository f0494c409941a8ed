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
   stop them and re-queue their requests (preemption); :mod:`sllmsim.sim.making_room` carries it out. With
   ``scheduler.reclaim_idle``, when no node has the GPUs, idle instances of other models that only
   wait out their keep-alive are released first (:mod:`sllmsim.core.reclaim`).
7. **Records.** Every request gets a :class:`~sllmsim.records.RequestRecord`, every instance phase a
   :class:`~sllmsim.records.PhaseRecord`, and every change of instances, busy GPUs and tier usage a
   :class:`~sllmsim.records.TimeseriesRecord`.

Nothing here polls: transfers, batch changes and keep-alive checks are SimPy events, and superseded
timers are ignored by a version check (:class:`~sllmsim.sim.timers.Wake`). Arrivals are read from the
trace's columns inside the event loop, each instant's at the place its timer event would hold in
SimPy's queue (:meth:`Simulation._run_events`), so they cost no event each. The entities
(deployments, nodes, instances, migrations) are in :mod:`sllmsim.sim.state`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import replace
from heapq import heappop, heappush
from itertools import chain

import simpy
from simpy.events import NORMAL, URGENT, Event

from sllmsim.config.trace import TraceConfig, arrives_in_run, check_trace, trace_to_dict
from sllmsim.core.autoscale import (IdleInstance, ScalingContext, decide_scaling, decision_holds_until,
                                    keep_alive_expires_s, make_autoscale_policy)
from sllmsim.core.placement import ShepherdPlacement, make_placement_policy, place, placement_seed
from sllmsim.core.placement import logger as scheduler_logger
from sllmsim.core.room import worth_attempting
from sllmsim.core.snapshot import ClusterView, IdleInstanceView, RunningInstanceView, Tier
from sllmsim.errors import SllmsimError
from sllmsim.records import PhaseRecord, RequestRecord, RunResult, TimeseriesRecord
from sllmsim.sim.links import FlowNetwork
from sllmsim.sim.making_room import MAX_CATCHUP_ROUNDS, MakingRoom
from sllmsim.sim.roofline import decode_time_s
from sllmsim.sim.scheduler_log import SchedulerLog, SimTime
from sllmsim.sim.state import (DOWNLOADING, IDLE, LOAD_PHASES, LOADING_TO_GPU, LOADING_TO_HOST, READY, RELEASED,
                               TIME_EPS, Deployment, Instance, NodeState, Retry, WaitingIndex)
from sllmsim.sim.storage import TierStore
from sllmsim.sim.timers import Wake

__all__ = ["MAX_CATCHUP_ROUNDS", "Simulation"]

log = logging.getLogger("sllmsim.sim")

#: A request whose remaining decode steps are within this of the batch minimum finishes with it.
_STEP_EPS = 1e-6


#: Requests per chunk of the trace's columns turned into Python values at a time.
_CHUNK = 1 << 16


def _column(values, n: int) -> Callable[[], object]:
    """A ``next()`` over the first ``n`` values of a column as Python values, ``_CHUNK`` at a time."""
    return chain.from_iterable(values[k:min(k + _CHUNK, n)].tolist() for k in range(0, n, _CHUNK)).__next__


def _arrival_time_s(now: float, time_s: float) -> float:
    """When an arrival at ``time_s`` is handled: ``now + (time_s - now)``, the time SimPy gave its timer
    event (not always ``time_s`` in floating point). When they are equal, ``time_s`` itself: the
    request's record then shares that float instead of holding a copy."""
    at = now + (time_s - now)
    return time_s if at == time_s else at


class Simulation(MakingRoom):
    """One replay of a trace; :meth:`run` returns the records."""

    def __init__(self, trace: TraceConfig, progress: Callable[[int, int], None] | None = None):
        check_trace(trace)
        self.trace = trace
        self.progress = progress
        self.env = simpy.Environment(initial_time=0.0)
        self.flows = FlowNetwork(self.env)
        self.placement = make_placement_policy(trace.scheduler.placement, seed=placement_seed(trace.seed),
                                               enable_migration=trace.scheduler.enable_migration)
        # Only these policies may ask to make room; for the others the snapshot lists no running
        # instances, which keeps their placements exactly as cheap as before.
        self.makes_room = trace.scheduler.enable_migration or isinstance(self.placement, ShepherdPlacement)
        self.reclaim_idle = trace.scheduler.reclaim_idle
        self._retry = Retry()
        self._preempted: set[int] = set()
        """Ids of requests stopped by a preemption once: their instances are never victims again."""
        self.autoscaler = make_autoscale_policy(trace.scheduler.autoscale)
        self.sequential = trace.simulation.loading == "sequential"

        self.nodes = [NodeState(spec, i) for i, spec in enumerate(trace.cluster.nodes)]
        self.node_by_id = by_id = {n.node_id: n for n in self.nodes}
        self.deployments: dict[str, Deployment] = {}
        for cfg in trace.models:
            targets = cfg.placement_config.target_nodes
            allowed = self.nodes if targets is None else [by_id[t] for t in targets]
            self.deployments[cfg.model] = m = Deployment(cfg, allowed)
            m.fail_reason = m.unservable()

        self.requests: list[RequestRecord] = []
        self.phases: list[PhaseRecord] = []
        self.timeseries: list[TimeseriesRecord] = []
        self.pending: dict[Instance, None] = {}
        """Instances waiting for a node with enough free GPUs, in request order (a dict: a
        placement or a cancellation takes one out of the middle)."""
        self._waiting = None if self.makes_room or self.reclaim_idle else WaitingIndex()
        """The same instances by the GPUs they need, where only free GPUs can place them."""
        self._view: ClusterView | None = None
        self._stale: set[NodeState] = set(self.nodes)
        """Nodes whose view in :attr:`_view` is out of date: changed since, or loading (their
        backlog changes with time)."""
        self._free_counts = [0] * (max(n.free_gpus for n in self.nodes) + 1)
        """Free GPUs -> nodes with that many free: the freest node's count without a scan."""
        for n in self.nodes:
            self._free_counts[n.free_gpus] += 1

        for model, (disk, host) in trace.initial_storage().items():
            size = self.deployments[model].size_bytes
            for node_id in disk:
                by_id[node_id].disk.place(model, size)
            for node_id in host:
                by_id[node_id].host.place(model, size)

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> RunResult:
        """Replay the whole trace and return its records."""
        env = self.env
        limit = self.trace.simulation.scheduler_log_limit
        handler = SchedulerLog(limit) if limit else None
        stamp = SimTime(env)
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
            for m in self.deployments.values():
                if not m.fail_reason:
                    self._rescale(m)  # min_instances start at time 0
            self._run_events(self.trace.simulation.until_s)
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

    def _run_events(self, until: float | None) -> None:
        """SimPy's ``env.run(until)``, with the arrivals merged into the loop instead of one event each.

        Arrivals are read from the trace's columns in order. Each instant's arrivals are handled
        exactly where their timer event used to be in SimPy's queue: the engine scheduled the next
        arrival (at ``now + (t - now)``, ``NORMAL`` priority) once the previous one was handled, so
        the arrival takes that event's id from SimPy's counter at that moment and runs before the
        queue's head whenever its (time, priority, id) key is smaller. Event order, event ids and
        times are the same as with the timers (byte-identical runs); only one event per arrival
        instant (its allocation, heap push and pop, and step) is gone.
        """
        env = self.env
        queue = env._queue
        eid = env._eid
        step = env.step
        reqs = self.trace.requests
        # Requests from until_s on are outside the run: they never arrive (and get no record).
        n = int(arrives_in_run(reqs.time_s, until).sum())  # times are sorted
        # The columns as Python values one chunk at a time: whole-run lists would hold 4 pointers
        # (and a float) per request for the whole run.
        next_time = _column(reqs.time_s, n)
        next_name = _column(reqs.model, n)
        next_input = _column(reqs.input_tokens, n)
        next_output = _column(reqs.output_tokens, n)
        progress = self.progress
        progress_every = max(n // 200, 1)
        progress_at = 0
        deployments = self.deployments
        records = self.requests
        arrive = self._arrive
        never = float("inf")
        i = 0
        # The next arrival instant's place in the queue: its time and the id its timer would have had.
        if n:
            arrival_s = _arrival_time_s(env._now, next_time())
            arrival_eid = next(eid)
        else:
            arrival_s = never
            if progress is not None:
                progress(0, 0)
        stop = None
        if until is not None:
            # As env.run(until=...) does: a marker event at until_s, before every regular event then.
            if until <= env._now:
                raise ValueError(f"until ({until}) must be greater than the current simulation time")
            stop = Event(env)
            stop._ok = True
            stop._value = None
            env.schedule(stop, URGENT, until - env._now)
        while True:
            if queue:
                head = queue[0]
                head_s = head[0]
                if not (arrival_s < head_s or (arrival_s == head_s and (
                        head[1] > NORMAL or (head[1] == NORMAL and arrival_eid < head[2])))):
                    if head[3] is stop:
                        heappop(queue)
                        env._now = head_s
                        return
                    step()
                    continue
            elif i == n:
                return
            # The arrivals at this instant, in trace order (what one timer event used to handle).
            now = env._now = arrival_s
            while True:
                name = next_name()
                rec = RequestRecord(i, name, now, next_input(), next_output())
                records.append(rec)
                arrive(rec, deployments[name], now)
                i += 1
                if i == n:
                    break
                time_s = next_time()
                if time_s > now:
                    break
            if progress is not None and i >= progress_at:
                progress_at = i + progress_every
                progress(i, n)
            if i < n:
                arrival_s = _arrival_time_s(now, time_s)
                arrival_eid = next(eid)
            else:
                arrival_s = never
                if progress is not None:
                    progress(n, n)

    # --------------------------------------------------------------------------------------- requests

    def _arrive(self, rec: RequestRecord, m: Deployment, now: float) -> None:
        if m.fail_reason:
            rec.status = "failed"
            rec.reason = m.fail_reason
            return
        m.in_flight += 1
        best = None
        best_active = m.capacity
        for inst in m.ready:
            if inst.active < best_active:
                best = inst
                best_active = inst.active
        if best is None:
            m.queue.append(rec)
        else:
            # _admit and _kick inlined for an instance on a node without request overhead (the
            # common case: two calls fewer per request).
            if not best.request_overhead_s:
                if best.phase != READY:  # idle until now (the least-loaded instance often is)
                    self._phase(best, READY, now)
                    m.idle.pop(best.instance_id, None)
                    if self.makes_room and self.pending:
                        self._retry_at(self._movable_from(best))  # it is running now: it may make room soon
                best.active += 1
                rec.node = best.node_id
                rec.instance_id = best.instance_id
                if best.ready_s > rec.arrival_s:
                    rec.cold_start = True
                    rec.tier = best.tier
                else:
                    rec.tier = "gpu"
                best.prefill_queue.append(rec)
            else:
                self._admit(best, rec, now)
            if best.prefill_queue:
                if now < best.prefill_end:
                    if not best.prefill_wake:
                        best.prefill_wake = True
                        best.version += 1
                        Wake(self.env, best, self._on_prefill_done, best.prefill_end - now)
                else:
                    self._start_prefill(best, now)
        # _rescale's first skip inlined: the desired count holds and there is no surplus to release.
        holds = m.holds
        if (holds is None or holds[3] > 0 or not holds[0] <= m.in_flight <= holds[1]
                or holds[2] != len(m.instances) - m.moving):
            self._rescale(m)

    def _admit(self, inst: Instance, rec: RequestRecord, now: float) -> None:
        """Give ``rec`` a batch slot of ``inst``; its prefill starts at the next :meth:`_kick`."""
        if inst.phase != READY:
            self._phase(inst, READY, now)
            inst.deployment.idle.pop(inst.instance_id, None)
            if self.makes_room and self.pending:
                self._retry_at(self._movable_from(inst))  # it is running now: it may make room soon
        inst.active += 1
        rec.node = inst.node_id
        rec.instance_id = inst.instance_id
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
        while arriving and arriving[0][0] <= now + TIME_EPS:
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
                Wake(self.env, inst, self._on_prefill_done, inst.prefill_end - now)
        else:
            self._start_prefill(inst, now)

    def _start_prefill(self, inst: Instance, now: float) -> None:
        # Prompts admitted so far are prefilled as one batch while decode pauses. Their first token
        # comes at the end of the prefill; then they decode with the rest of the batch, so they join
        # the heap now and the next decode segment starts when the prefill ends.
        heap = inst.heap
        if heap:
            inst.steps = inst.steps_at(now)
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
        base += roof.forward_overhead_s + (k - 1) * roof.sequence_overhead_s  # = roof.step_base_s(k), inlined
        inst.base_s = base
        inst.seg_start = start
        left = inst.heap[0][0] - inst.steps
        inst.version += 1
        inst.prefill_wake = False
        Wake(self.env, inst, self._on_decode_done,
             start - now + decode_time_s(left, base, inst.kv_s, inst.ctx_offset + k * inst.steps, k))

    def _on_prefill_done(self, event: Wake) -> None:
        inst = event.target
        if event.version == inst.version:
            inst.prefill_wake = False
            self._start_prefill(inst, self.env._now)

    def _on_decode_done(self, event: Wake) -> None:
        inst = event.target
        if event.version != inst.version:
            return
        now = self.env._now  # env.now without the property call (once per event on the hot path)
        m = inst.deployment
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
        inst.active -= finished
        m.in_flight -= finished
        migrating = inst.migration is not None  # a migration source admits nothing new
        if m.queue and not migrating:
            self._fill(inst, now)
        if inst.prefill_queue:
            self._start_prefill(inst, now)
        elif inst.batch:
            self._schedule_decode(inst, now, now)
        if not inst.active:
            if migrating:
                self._abandon_migration(inst.migration, now)
            else:
                self._go_idle(inst, now)
        # m.idle is in idle-since order, so its first entry is the first whose keep-alive runs out.
        if m.unplaced or (m.idle and (
                m.check_at is None or keep_alive_expires_s(next(iter(m.idle.values())), m.asc) <= now)):
            self._rescale(m)
        if self.reclaim_idle:
            self._retry_reclaim(m, now)  # fewer requests in flight: an idle instance may now be surplus

    # ------------------------------------------------------------------------------------ autoscaling

    def _rescale(self, m: Deployment) -> None:
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
        # The core said over which in-flight counts its last decision's desired count holds, and
        # the surplus beyond it (decision_holds_until): skip re-deciding while that decision would
        # change nothing. With a surplus, m.idle is in idle-since order, so its first entry expires
        # first: nothing is released before then, and the check asked for then is already scheduled.
        if (holds is not None and holds[0] <= m.in_flight <= holds[1] and holds[2] == count
                and (holds[3] <= 0 or not m.unplaced)):
            if holds[3] <= 0 or not m.idle:
                return
            check_at = m.check_at
            if check_at is not None:
                expires_s = keep_alive_expires_s(next(iter(m.idle.values())), m.asc)
                if self.env._now < expires_s and check_at <= expires_s:
                    return
        now = self.env._now
        ctx = ScalingContext(m.name, now, m.in_flight, count, tuple(m.idle.values()), m.asc)
        decision = decide_scaling(self.autoscaler, ctx)
        span = decision_holds_until(self.autoscaler, ctx, decision)
        m.holds = None if span is None else (span[0], span[1], count + decision.start, span[2])
        if decision.start:
            for _ in range(decision.start):
                self._start_instance(m, now)
        if decision.release:
            for instance_id in decision.release:
                self._release(m.by_id[instance_id], now)
        count = len(m.instances) - m.moving
        if m.unplaced and decision.desired < count:
            self._cancel_unplaced(m, count - decision.desired, now)
        check = decision.next_check_s
        if check is not None and (m.check_at is None or check < m.check_at):
            m.check_at = check
            m.version += 1
            Wake(self.env, m, self._on_model_check, check - now)

    def _on_model_check(self, event: Wake) -> None:
        m = event.target
        if event.version == m.version:
            m.check_at = None
            self._rescale(m)

    # -------------------------------------------------------------------------------------- placement

    def _start_instance(self, m: Deployment, now: float) -> None:
        inst = m.new_instance(now)
        self._sample(now, "instances", m.name, len(m.instances))
        self.pending[inst] = None
        m.pending[inst] = None
        if self._waiting is not None:
            self._waiting.add(inst)
        m.unplaced += 1
        self._try_place(inst, now)

    def _cluster_view(self, now: float) -> ClusterView:
        """The scheduler's snapshot at ``now``: the last one with the stale nodes' views replaced."""
        stale = self._stale
        view = self._view
        if stale:
            nodes = [None] * len(self.nodes) if view is None else list(view.nodes)
            for n in stale:
                nodes[n.index] = n.make_view(now)
            self._stale = {n for n in stale if n.loading}
            view = self._view = ClusterView(tuple(nodes))
        return view

    def _set_free_gpus(self, node: NodeState, free_gpus: int) -> None:
        """Every change of a node's free GPUs goes through here (it keeps :attr:`_free_counts`)."""
        counts = self._free_counts
        counts[node.free_gpus] -= 1
        counts[free_gpus] += 1
        node.free_gpus = free_gpus
        self._stale.add(node)

    def _most_free_gpus(self) -> int:
        """The free GPUs of the freest node."""
        counts = self._free_counts
        gpus = len(counts) - 1
        while gpus and not counts[gpus]:
            gpus -= 1
        return gpus

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
        m = inst.deployment
        need = m.num_gpus
        running = self._running_views(now) if self.makes_room else None
        idle = None
        # Cheap pre-check so that a full cluster does not log a failed placement per retry.
        if (self._most_free_gpus() < need if m.allowed is self.nodes
                else not any(n.free_gpus >= need for n in m.allowed)):
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
        self._set_free_gpus(node, node.free_gpus - take)
        self._sample_gpus(node, now)
        del self.pending[inst]
        del m.pending[inst]
        if self._waiting is not None:
            self._waiting.left(inst)
        m.unplaced -= 1
        inst.place_on(node)
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
        if self._waiting is not None:
            # Without room-making or reclaiming, an instance needing more GPUs than the freest node
            # has would fail _try_place's pre-check; the index skips all of those without looking
            # at them (on many models, every release used to rescan every waiting instance).
            # Placements only take GPUs, so the bound stays an upper bound until it is recomputed.
            most_free = self._most_free_gpus()
            for inst in self._waiting.fitting(lambda gpus: gpus <= most_free):
                if self._try_place(inst, now):
                    most_free = self._most_free_gpus()
            return
        for inst in list(self.pending):
            # A placement can start or cancel other instances (a preemption re-queues requests,
            # whose model may scale out), so skip the ones no longer waiting.
            if inst.node is None and inst.phase != RELEASED:
                self._try_place(inst, now)

    def _cancel_unplaced(self, m: Deployment, surplus: int, now: float) -> None:
        """Drop the ``surplus`` most recently started of ``m``'s instances still waiting for GPUs."""
        for inst in reversed(list(m.pending)):
            if surplus == 0:
                break
            del self.pending[inst]
            del m.pending[inst]
            if self._waiting is not None:
                self._waiting.left(inst)
            m.unplaced -= 1
            surplus -= 1
            self._drop(inst, now)

    # ---------------------------------------------------------------------------------------- loading

    def _begin_load(self, inst: Instance, node: NodeState, now: float) -> None:
        """Reserve space and start the transfer now, so the next decision at this instant already
        sees this load in the node's backlog; a process carries it through the remaining stages."""
        inst.placed_s = now
        m = inst.deployment
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
        self._stale.add(node)
        self._phase(inst, stages[0][1], now)
        if self.sequential:
            first = self.flows.transfer((stages[0][0],), size)
        else:
            # One stream through every tier at once: its rate is the slowest link's share.
            first = self.flows.transfer(tuple(link for link, _ in stages), size)
        self.env.process(self._load(inst, node, tier, stages, writes, first))

    def _load(self, inst: Instance, node: NodeState, tier: Tier, stages, writes: dict[str, TierStore], first):
        env = self.env
        model = inst.deployment.name
        if self.sequential:
            for i, (link, phase) in enumerate(stages):
                if i:
                    self._phase(inst, phase, env.now)
                yield self.flows.transfer((link,), inst.deployment.size_bytes) if i else first
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
        spec = node.spec
        fixed_s = spec.load_fixed_s(inst.deployment.num_layers)
        if spec.fresh_memory_bytes_per_s is not None:
            fixed_s += spec.fresh_memory_s(inst.deployment.size_bytes)
        if fixed_s:
            yield env.timeout(fixed_s)
        node.loading -= 1
        self._stale.add(node)
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
        m = inst.deployment
        inst.ready_s = now
        m.ready.append(inst)
        self._fill(inst, now)
        self._kick(inst, now)
        if not inst.active:
            self._go_idle(inst, now)
            self._rescale(m)
            if self.reclaim_idle:
                self._retry_reclaim(m, now)

    def _fill(self, inst: Instance, now: float) -> None:
        """Admit its deployment's queued requests, first come first served, while ``inst`` has room."""
        queue = inst.deployment.queue
        while queue and inst.active < inst.capacity:
            self._admit(inst, queue.popleft(), now)

    def _go_idle(self, inst: Instance, now: float) -> None:
        """``inst`` serves nothing now: it is idle (from ``now``) until a request or a release."""
        # _phase inlined (once per request that empties its instance); a ready instance has no bytes.
        m = inst.deployment
        old = inst.phase
        self.phases.append(PhaseRecord(inst.instance_id, m.name, inst.node_id, old, inst.phase_since_s, now,
                                       inst.tier, m.size_bytes if old in LOAD_PHASES else 0))
        inst.phase = IDLE
        inst.phase_since_s = now
        m.idle[inst.instance_id] = IdleInstance(inst.instance_id, now)

    def _release(self, inst: Instance, now: float) -> None:
        self._unload(inst, now)
        self._place_pending(now)

    def _unload(self, inst: Instance, now: float) -> None:
        """Release a loaded instance and free its GPUs; its checkpoint stays in the node's tiers."""
        m = inst.deployment
        m.ready.remove(inst)
        m.idle.pop(inst.instance_id, None)
        self._drop(inst, now)
        node = inst.node
        self._set_free_gpus(node, node.free_gpus + m.num_gpus)
        self._sample_gpus(node, now)

    def _drop(self, inst: Instance, now: float) -> None:
        """End an instance's lifecycle: close its phase and record the zero-length ``released`` marker."""
        m = inst.deployment
        m.instances.remove(inst)
        del m.by_id[inst.instance_id]
        self._phase(inst, RELEASED, now)
        self._phase(inst, RELEASED, now)
        self._sample(now, "instances", m.name, len(m.instances))

    # ---------------------------------------------------------------------------------------- records

    def _phase(self, inst: Instance, phase: str, now: float) -> None:
        old = inst.phase
        loading = old in LOAD_PHASES
        dep = inst.deployment
        self.phases.append(PhaseRecord(inst.instance_id, dep.name, inst.node_id, old, inst.phase_since_s, now,
                                       inst.tier, dep.size_bytes if loading else 0))
        inst.phase = phase
        inst.phase_since_s = now

    def _sample(self, now: float, metric: str, key: str, value: float) -> None:
        self.timeseries.append(TimeseriesRecord(now, metric, key, value))

    def _sample_gpus(self, node: NodeState, now: float) -> None:
        """Record ``node``'s busy GPUs (after any change of its free GPUs)."""
        self.timeseries.append(TimeseriesRecord(now, "gpus_busy", node.node_id, node.spec.num_gpus - node.free_gpus))

    def _sample_all(self, now: float) -> None:
        for m in self.deployments.values():
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
                m = self.deployments[rec.model]
                if until is not None:
                    rec.reason = f"unfinished when the simulation stopped at until_s={until:g}"
                elif m.unplaced:
                    rec.reason = "no node had enough free GPUs for an instance before the simulation ended"
                else:
                    rec.reason = "no instance served it before the simulation ended"
        for m in self.deployments.values():
            for inst in m.instances:
                # A forced migration hand-over opens the destination's ready phase at the end of
                # its pause, which may lie past an until_s cut.
                self._phase(inst, inst.phase, max(end_s, inst.phase_since_s))
