"""Making room for a placement in live mode: releasing the idle instances it reclaims and moving the
running instances its migration plan names, then loading the new instance on the slots they free.

:class:`MakingRoom` is a base class of :class:`live.controller.Controller` (as
:class:`sllmsim.sim.making_room.MakingRoom` is of the simulator's ``Simulation``): its methods use the
controller's state (deployments, workers, slot counts, recorder) and its phase and release helpers.
"""

from __future__ import annotations

import asyncio
import logging

from sllmsim.core.migration import MigrationMove
from sllmsim.core.placement import PlacementOption
from sllmsim.records import Phase

from live.migration import RunningRequest, take_over
from live.state import Instance

logger = logging.getLogger("sllmsim.live")


class MakingRoom:
    """Reclaim and migration steps of the live controller (mixed into it)."""

    def _make_room(self, inst: Instance, option: PlacementOption) -> None:
        """Release the idle instances ``option`` reclaims and start the moves of its migration plan;
        ``inst`` (placed on the node they free) loads after them.

        Runs without awaiting, in the same step as the placement decision: the reclaimed instances
        leave the ``idle`` phase here, so no request can be dispatched to them afterwards. The new
        instance takes the node's free slots now and each released instance's slots as it goes, so
        no other placement can take them in between.
        """
        node = inst.node_id
        free = self._node_gpus(node) - self._slots_used[node]
        inst.slots_held = max(0, min(free, inst.num_gpus))
        self._hold_slots(inst.deployment, node, inst.slots_held)
        waits = []
        if option.reclaim:
            inst.load_detail = "waiting for idle instances to unload"
            victims = [self._find_instance(instance_id) for instance_id in option.reclaim]
            now = self.recorder.now_s()
            for victim in victims:
                keep_alive_s = victim.deployment.config.auto_scaling_config.keep_alive
                logger.info("reclaiming idle instance %s of %s on node %s for %s (%.3f s of its %g s keep-alive left)",
                            victim.instance_id, victim.deployment.name, node, inst.deployment.name,
                            max(0.0, victim.phase_since_s + keep_alive_s - now), keep_alive_s)
                # Claimed now: out of the idle phase, so neither dispatch nor the autoscaler sees it.
                self._set_phase(victim, Phase.RELEASING)
                victim.task = self._loop.create_task(self._release_to(victim, inst))
                waits.append(victim.task)
            for victim_dep in dict.fromkeys(v.deployment for v in victims):
                self._rescale(victim_dep)  # re-times (or cancels) the keep-alive timer that counted them
        if option.migration is not None and option.migration.moves:
            inst.load_detail = "waiting for migration"
            plan = option.migration
            for move in plan.moves:
                src = self._find_instance(move.instance_id)
                dest = self._plan_destination(src, move)
                waits.append(self._loop.create_task(self._move(src, dest, move, inst)))
                dest.task = waits[-1]
            logger.info("migrating %s to make room for %s on node %s", ", ".join(
                f"{m.instance_id} to node {m.to_node}" for m in plan.moves), inst.deployment.name, node)
        inst.task = self._loop.create_task(self._load_when_freed(inst, waits))

    def _node_gpus(self, node_id: str) -> int:
        return next(n.num_gpus for n in self.cluster.nodes if n.node_id == node_id)

    def _plan_destination(self, src: Instance, move: MigrationMove) -> Instance:
        """Stop ``src`` from taking requests and reserve its destination instance's slots."""
        dep = src.deployment
        self._set_phase(src, Phase.MIGRATING)
        dest = self._new_instance(dep, move.to_node, src.num_gpus, src.capacity, move.load_s, move.tier.value)
        self._hold_slots(dep, move.to_node, dest.num_gpus)
        return dest

    async def _move(self, src: Instance, dest: Instance, move: MigrationMove, target: Instance) -> bool:
        """Carry out one move: load ``dest``, hand ``src``'s requests over, release ``src`` (its slots
        go to ``target``). True when ``src`` is gone; False when it keeps (some of) its requests."""
        dep = src.deployment
        started_s = self.recorder.now_s()
        reason = await self._load_checkpoint(dest)
        if reason is None:
            self._set_phase(dest, Phase.RESUMING)
            runs = list(src.running.values())
            dest.moves_in = len(runs)
            results = await asyncio.gather(*(self._move_request(run, src, dest) for run in runs),
                                           return_exceptions=True)
            dest.moves_in = 0
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                reason = f"handing a request over failed: {failures[0]}"
            if dest.phase == Phase.RESUMING or (dest.phase == Phase.READY and not dest.active):
                self._set_phase(dest, Phase.READY if dest.active else Phase.IDLE)
            self._on_room(dest)
        if reason is None and src.active == 0 and not self._closing:
            logger.info("moved instance %s of %s from node %s to node %s as %s in %.3f s (estimated %.3f s)",
                        src.instance_id, dep.name, src.node_id, dest.node_id, dest.instance_id,
                        self.recorder.now_s() - started_s, move.cost_s)
            await self._release_to(src, target)
            return True
        logger.warning("migration of instance %s of %s from node %s to node %s failed (%s); it stays on node %s",
                       src.instance_id, dep.name, src.node_id, move.to_node,
                       reason or "requests still running there", src.node_id)
        src.migration_failed = True
        # It served throughout: the attempt is recorded as ready time, so that a `migrating` phase
        # always means an instance that moved (as the simulator's records and metrics count them).
        src.phase = Phase.READY
        if not src.active:
            self._set_phase(src, Phase.IDLE)
        self._on_room(src)
        return False

    async def _move_request(self, run: RunningRequest, src: Instance, dest: Instance) -> None:
        ticket, rec = run.ticket, run.ticket.record

        def switch() -> None:
            src.running.pop(rec.request_id, None)
            src.active -= 1
            ticket.instance = dest
            if dest.phase == Phase.RESUMING:  # the first hand-over: from now on it serves
                self._set_phase(dest, Phase.READY)
            self._occupy(dest)
            dest.running[rec.request_id] = run
            rec.migrated = True
            rec.node, rec.instance_id = dest.node_id, dest.instance_id

        move = await take_over(run, self.workers[src.node_id], self.workers[dest.node_id], dest.instance_id,
                               self._migration, switch)
        if move.moved:
            logger.info("migrated request %d of %s from %s to %s: %d tokens re-computed, %d catch-up round(s), "
                        "%d generated at the hand-over, paused %.1f ms", rec.request_id, src.deployment.name,
                        src.instance_id, dest.instance_id, move.recomputed_tokens, move.rounds,
                        move.handover_tokens, move.pause_s * 1e3)

    async def _release_to(self, src: Instance, target: Instance) -> None:
        """Release a migrated-away (or reclaimed idle) instance; its slots go to ``target`` as far as
        it still needs them."""
        dep = src.deployment
        if src.alive:
            self._set_phase(src, Phase.RELEASING)
        await self._unload(src)
        freed = src.num_gpus
        if (target.slots_held is not None and target.node_id == src.node_id and not self._closing
                and target.deployment.instances.get(target.instance_id) is target):
            taken = min(freed, target.num_gpus - target.slots_held)
            target.slots_held += taken
            freed -= taken
        self._hold_slots(dep, src.node_id, -freed)
        if freed:
            self._rescale_all()
        self._check_drained(dep)

    async def _load_when_freed(self, inst: Instance, waits: list[asyncio.Task]) -> None:
        """Wait for the moves and releases that free ``inst``'s node, then load it; or give up and
        place its model again."""
        dep = inst.deployment
        await asyncio.gather(*waits, return_exceptions=True)
        now = self.recorder.now_s()
        self._record_phase(inst, Phase.QUEUED, inst.placed_s, now, tier=inst.tier_planned)
        if inst.slots_held >= inst.num_gpus and not self._closing:
            inst.slots_held = None
            await self._load(inst)
            return
        logger.warning("making room for %s on node %s did not free its GPUs; placing it again", dep.name,
                       inst.node_id)
        self._forget(inst, now_s=now)  # it ends where its wait ended
        self._hold_slots(dep, inst.node_id, -inst.slots_held)
        inst.slots_held = 0
        self._rescale_all()
        self._check_drained(dep)
