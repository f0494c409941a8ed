"""Making room for a placement: reclaiming idle instances, live migration, preemption.

The part of :class:`~sllmsim.sim.engine.Simulation` that carries out what a placement option asks
for before its instance can load on a node short of free GPUs, and retries waiting placements when
room may have appeared. :class:`MakingRoom` is a base of ``Simulation``; its methods use the
engine's state and records (``deployments``, ``pending``, ``_phase``, ``_sample``, ``_admit``).
"""

from __future__ import annotations

import math
from collections import deque
from operator import attrgetter

from sllmsim.core.autoscale import ScalingContext, surplus_idle
from sllmsim.core.migration import MigrationPlan, movable_from_s
from sllmsim.core.preemption import PreemptionPlan
from sllmsim.core.snapshot import IdleInstanceView, RunningInstanceView
from sllmsim.errors import SllmsimError
from sllmsim.sim.state import (IDLE, MIGRATING, PREEMPTED, READY, RESUMING, TIME_EPS, TOKEN_EPS, Deployment,
                               Instance, Migration, NodeState)
from sllmsim.sim.timers import Wake

#: Catch-up rounds of a migration before the hand-over is forced (the stream then pauses while the
#: destination re-computes the rest). Rounds shrink the gap geometrically whenever re-computing a
#: token is faster than generating one, so a few suffice; the cap only matters when it is not.
MAX_CATCHUP_ROUNDS = 8
#: A migration hands over once every request's gap (tokens the source has and the destination
#: lacks) is at most this: the destination's next decode step consumes the last token anyway.
HANDOVER_GAP_TOKENS = 1.0

_request_id = attrgetter("request_id")


class MakingRoom:
    """Reclaiming, migration and preemption: the room-making methods of the simulation engine."""

    # ------------------------------------------------------------------------------ reclaiming idle
    #
    # With scheduler.reclaim_idle, an instance that is idle only to wait out its keep-alive (the
    # autoscaler would release it once the keep-alive ran out; one kept for min_instances is not)
    # is offered to the core as reclaimable. The core uses such GPUs only when no node can host the
    # new instance otherwise; the engine releases the chosen instances at once (`released`, GPUs
    # freed, checkpoint kept in the node's host memory and disk as for any release) and the new
    # load starts. Waiting placements are retried whenever an instance may have become reclaimable.

    def _idle_views(self, placing: Deployment) -> dict[str, list[IdleInstanceView]]:
        """Per node id, the idle instances of models other than ``placing`` that may be reclaimed."""
        out: dict[str, list[IdleInstanceView]] = {}
        for m in self.deployments.values():
            if m is placing or not m.idle:
                continue
            # At an instant past every keep-alive, the autoscaler names the idle instances it would
            # release: those beyond what min_instances and the requests in flight need.
            surplus = surplus_idle(self.autoscaler, ScalingContext(
                m.name, math.inf, m.in_flight, len(m.instances) - m.moving, tuple(m.idle.values()), m.asc))
            for instance_id in surplus:
                inst = m.by_id[instance_id]
                out.setdefault(inst.node_id, []).append(
                    IdleInstanceView(instance_id, m.name, m.num_gpus, m.idle[instance_id].idle_since_s))
        return out

    def _reclaim(self, m: Deployment, node: NodeState, instance_ids: tuple[str, ...], now: float) -> None:
        """Release the idle instances a placement of ``m`` on ``node`` chose to reclaim."""
        for instance_id in instance_ids:
            inst = next((om.by_id[instance_id] for om in self.deployments.values() if instance_id in om.by_id), None)
            if inst is None or inst.phase != IDLE or inst.node is not node or inst.deployment is m:
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} chose to reclaim "
                                   f"{instance_id} on node {node.node_id}, which is not an idle instance of "
                                   "another model there")
            self._unload(inst, now)

    def _retry_reclaim(self, m: Deployment, now: float) -> None:
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

    def _running_views(self, now: float) -> dict[str, list[RunningInstanceView]]:
        """Per node id, the instances a placement may move or stop: loaded, serving, not migrating,
        past the thrash guard."""
        out: dict[str, list[RunningInstanceView]] = {}
        stopped = self._preempted
        for m in self.deployments.values():
            for inst in m.ready:
                if inst.active and inst.migration is None and now >= self._movable_from(inst) - TIME_EPS:
                    requests = inst.request_tokens(now)
                    if stopped and any(rid in stopped for rid, _ in requests):
                        continue
                    tokens = sum(t for _, t in requests)
                    out.setdefault(inst.node_id, []).append(
                        RunningInstanceView(inst.instance_id, m.view, int(tokens + TOKEN_EPS)))
        return out

    def _retry_when_movable(self, now: float) -> None:
        """Retry the waiting placements when the next running instance passes its thrash guard."""
        soonest = math.inf
        for m in self.deployments.values():
            for inst in m.ready:
                if inst.active and inst.migration is None:
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
            Wake(self.env, retry, self._on_retry, t - now)

    def _on_retry(self, event: Wake) -> None:
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
            self._set_free_gpus(node, node.free_gpus + (gpus - use))
            self._sample_gpus(node, now)
            self._place_pending(now)

    def _migrate(self, target: Instance, plan: MigrationPlan, now: float) -> None:
        """Start every move of ``plan``; ``target`` (placed on ``plan.node_id``) waits for the GPUs."""
        for move in plan.moves:
            sm = self.deployments[move.model]
            source = sm.by_id.get(move.instance_id)
            node = self.node_by_id[move.to_node]
            if (source is None or source.migration is not None or not source.active
                    or source.node is not target.node or node.free_gpus < move.num_gpus):
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} planned an impossible "
                                   f"migration of {move.instance_id} from node {move.from_node} to {move.to_node}")
            self._set_free_gpus(node, node.free_gpus - move.num_gpus)
            self._sample_gpus(node, now)
            dest = sm.new_instance(now)
            sm.moving += 1
            self._sample(now, "instances", sm.name, len(sm.instances))
            dest.place_on(node)
            mig = Migration(source, dest, target)
            source.migration = dest.migration = mig
            sm.ready.remove(source)
            self._phase(source, MIGRATING, now)
            self._begin_load(dest, node, now)

    def _start_resume(self, mig: Migration, now: float) -> None:
        """The destination has loaded the model: start re-computing the requests' KV cache."""
        self._phase(mig.dest, RESUMING, now)
        self._catch_up(mig, now)

    def _catch_up(self, mig: Migration, now: float) -> None:
        """One round: re-compute, as one prefill pass, the tokens the destination does not hold yet."""
        todo = 0.0
        computed = mig.computed
        for rid, tokens in mig.source.request_tokens(now):
            have = computed.get(rid, 0.0)
            if tokens > have:
                todo += tokens - have
                computed[rid] = tokens
        mig.rounds += 1
        mig.version += 1
        Wake(self.env, mig, self._on_round_done, mig.dest.roof.prefill_s(todo) if todo > 0 else 0.0)

    def _on_round_done(self, event: Wake) -> None:
        mig = event.target
        if event.version != mig.version:
            return
        now = self.env.now
        source = mig.source
        computed = mig.computed
        gaps = [tokens - computed.get(rid, 0.0) for rid, tokens in source.request_tokens(now)]
        prefilling = source.prefill_end - now > TIME_EPS or bool(source.prefill_queue) or bool(source.arriving)
        if not prefilling and max(gaps) <= HANDOVER_GAP_TOKENS + TOKEN_EPS:
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
            Wake(self.env, mig, self._on_round_done, wait)
        else:
            self._hand_over(mig, now, mig.dest.roof.prefill_s(sum(g for g in gaps if g > 0)))

    def _hand_over(self, mig: Migration, now: float, pause_s: float) -> None:
        """The source stops; its requests continue on the destination after ``pause_s`` (0 when the
        catch-up converged; else the re-computation of the remaining gap); the source's GPUs go to
        the instance waiting for them."""
        source, dest = mig.source, mig.dest
        m = source.deployment
        heap = source.heap
        source.steps = source.steps_at(now)
        # The decode state moves as it is: same step counter, same context, same finishing steps.
        dest.heap, dest.batch, dest.steps, dest.ctx_offset, dest.active = (
            heap, source.batch, source.steps, source.ctx_offset, source.active)
        source.heap, source.batch, source.active = [], 0, 0
        source.version += 1
        for _, _, rec in heap:
            rec.node = dest.node_id
            rec.instance_id = dest.instance_id
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
        self._fill(dest, now)
        self._kick(dest, now)
        if self.pending:
            self._retry_at(self._movable_from(dest))

    def _abandon_migration(self, mig: Migration, now: float) -> None:
        """The source's requests all finished before the hand-over: release it now (its GPUs go to
        the waiting instance); the destination carries on as an ordinary instance."""
        source, dest = mig.source, mig.dest
        m = source.deployment
        mig.version += 1
        source.migration = dest.migration = None
        m.moving -= 1
        self._drop(source, now)
        self._give_gpus(mig.target, source.node, m.num_gpus, now)
        if dest.phase == RESUMING:
            self._instance_ready(dest, now)

    def _preempt(self, target: Instance, plan: PreemptionPlan, now: float) -> None:
        """Stop the victims of ``plan``: their requests are re-queued and their GPUs go to ``target``."""
        hit: list[Deployment] = []
        for instance_id, model in zip(plan.instance_ids, plan.models):
            vm = self.deployments[model]
            victim = vm.by_id.get(instance_id)
            if victim is None or victim.migration is not None or not victim.active or victim.node is not target.node:
                raise SllmsimError(f"placement policy {self.trace.scheduler.placement!r} planned an impossible "
                                   f"preemption of {instance_id} on node {plan.node_id}")
            lost = sum(t for _, t in victim.request_tokens(now))
            requests = [rec for _, _, rec in victim.heap] + victim.prefill_queue + [rec for _, rec in victim.arriving]
            victim.heap, victim.prefill_queue, victim.batch, victim.active = [], [], 0, 0
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
            vm.preempted_tokens += int(lost + TOKEN_EPS)
            self._sample(now, "preempted_requests", vm.name, vm.preempted_requests)
            self._sample(now, "preempted_tokens", vm.name, vm.preempted_tokens)
            self._give_gpus(target, target.node, vm.num_gpus, now)
            if vm not in hit:
                hit.append(vm)
        for vm in hit:
            for inst in vm.ready:
                if not vm.queue:
                    break
                self._fill(inst, now)
                self._kick(inst, now)
            self._rescale(vm)

