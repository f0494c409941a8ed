"""The live controller: deployments, instances, placement and autoscaling over the node workers.

It keeps the real state (which instances exist where, which GPU slots they hold, which requests
wait) and asks the scheduler core — the very functions the simulator calls — what to do:
:func:`sllmsim.core.autoscale.decide_scaling` on every arrival, finish, load and keep-alive expiry,
and :func:`sllmsim.core.placement.place` for each instance to start, over a
:class:`~sllmsim.core.snapshot.ClusterView` built from the nodes' storage tiers and slot usage.

Everything runs on the server's event loop and never blocks it: loads and forward passes run in the
workers' threads; a request that needs a cold start waits on a future that the load resolves (no
polling); keep-alive expiries are ``loop.call_later`` timers at the time the autoscaler names.

The entities it changes are in :mod:`live.state` (with the instances' lifecycle), what the core
sees of them in :mod:`live.scheduler_views`, the deployments' validation and persistence in
:mod:`live.deployments`, checkpoint import in :mod:`live.checkpoint_import`, what ``GET /status``
shows in :mod:`live.status`, and making room for a placement (reclaiming idle instances, migrating
running ones) in :mod:`live.making_room`. Requests queue per deployment, first come first served; an instance pulls the
next queued request whenever it has room (``backend_config.max_batch_size`` concurrent requests).
A failed load fails the requests queued for its model at that moment (with the reason), frees its
slot, and the server goes on serving. Deleting a deployment drains it: queued and running requests
are served, new ones are refused, then its instances are released.

Live migration (``enable_migration``, ServerlessLLM §5): the snapshot then lists each node's running
instances (with the prompt and generated tokens of their requests), and the storage-aware policy may
choose a node that is short of GPUs together with a plan of instances to move away. The new instance
waits (phase ``queued``) while each move runs: the destination instance loads through the tiers
(its own load phases), re-computes its requests' KV caches from tokens and catches up
(``resuming``, :mod:`live.migration`) while the source goes on generating (``migrating``); then the
requests continue on the destination within the same client streams, the source is released and its
GPU slot passes straight to the new instance, which loads. A move that fails leaves its requests on
the source (never moved again); the new instance then gives its slots back and its model is placed
again, elsewhere, or waits for a free slot.

Reclaiming idle instances (``reclaim_idle``): by default an idle instance keeps its GPU slot for its
whole ``keep_alive``, also while another model waits for that slot (the reference's behaviour). With
``reclaim_idle`` the snapshot lists each node's idle instances that the autoscaler would release now
if their keep-alive were over (never one kept by ``min_instances``), and when no node has a free slot
:func:`~sllmsim.core.placement.place` may choose a node together with idle instances of other models
to release first (longest idle first). The choice and the claim happen in one synchronous step on the
event loop: the chosen instances leave the ``idle`` phase before any other request can be dispatched
to them, so one that a request is using is never chosen, and one that was chosen is never handed a
request. The new instance waits (phase ``queued``) until they are unloaded (their tensors stay in the
node's host cache), takes their slots and loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from sllmsim.catalog import model_depth
from sllmsim.config.deploy import deploy_config_to_dict, parse_deploy_config
from sllmsim.config.hardware import ClusterSpec
from sllmsim.core.autoscale import decide_scaling, make_autoscale_policy
from sllmsim.core.placement import make_placement_policy, place, placement_seed
from sllmsim.core.registry import DEFAULT_AUTOSCALE, DEFAULT_PLACEMENT
from sllmsim.core.room import worth_attempting
from sllmsim.core.snapshot import ClusterView, ModelView
from sllmsim.errors import SllmsimError
from sllmsim.records import Phase, RequestRecord

from live import scheduler_views
from live.checkpoint_import import CheckpointImporter
from live.deployments import check_for_live, check_update, save_deployments, saved_deployments
from live.errors import ConflictError, LoadFailedError, UnknownModelError
from live.generation import GenerationInputError, GenerationRequest
from live.metrics_prom import GaugeState, LiveMetrics
from live.making_room import MakingRoom
from live.migration import MigrationSettings, RunningRequest
from live.records import LiveRecorder
from live.state import RECORDED_PHASES, Deployment, Instance, Ticket, Waiter
from live.status import gauge_state, model_status, node_status
from live.worker import Finished, GenerationEvent, NodeWorker, Paused, PromptAccepted, TextDelta

logger = logging.getLogger("sllmsim.live")


class Controller(MakingRoom):
    """Owns deployments and instances; every method runs on the server's event loop.

    ``seed`` is the run seed (a trace's ``seed``): the placement policy is seeded with
    :func:`~sllmsim.core.placement.placement_seed` of it, as the simulator seeds its own, so a
    replayed trace's random placements draw the same stream in both runtimes.
    """

    def __init__(self, cluster: ClusterSpec, workers: dict[str, NodeWorker], registry, storage_dir: Path,
                 recorder: LiveRecorder, placement: str = DEFAULT_PLACEMENT, seed: int = 0,
                 enable_migration: bool = False, migration: MigrationSettings | None = None,
                 reclaim_idle: bool = False, autoscale: str = DEFAULT_AUTOSCALE):
        self.cluster = cluster
        self.workers = workers
        self.registry = registry
        self.storage_dir = Path(storage_dir)
        self.recorder = recorder
        self.metrics = LiveMetrics(self.gauge_state)
        self._placement = make_placement_policy(placement, seed=placement_seed(seed),
                                                enable_migration=enable_migration)
        self.enable_migration = enable_migration
        self.reclaim_idle = reclaim_idle
        """Whether a model that finds no free slot may take the slots of idle instances of other models."""
        self._migration = migration or MigrationSettings()
        self._autoscaler = make_autoscale_policy(autoscale)
        self._checkpoints = CheckpointImporter(cluster, workers, registry)
        self._deployments: dict[str, Deployment] = {}
        self._reserved_names: set[str] = set()
        self.deploy_history: list[dict] = []
        """Every deploy config deployed or updated during this run, in order (for the run's resolved config)."""
        self._slots_used: dict[str, int] = {n.node_id: 0 for n in cluster.nodes}
        self._instance_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.abort_reason: str | None = None
        """Set when the server ends the requests still running (its drain time ran out): the reason
        they are recorded with, instead of a client's disconnect."""

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and restore the deployments persisted in the storage folder."""
        self._loop = asyncio.get_running_loop()
        self.recorder.capture_scheduler_log()
        path, saved = saved_deployments(self.storage_dir)
        for raw, store_key in saved:
            try:
                await self.deploy(raw, source=f"{path} (restoring)", store_key=store_key, persist=False)
                logger.info("restored deployment %s", raw.get("model") if isinstance(raw, dict) else raw)
            except SllmsimError as exc:
                logger.error("could not restore a deployment: %s", exc)

    async def close(self) -> None:
        """Fail waiting requests, release every instance and close the workers."""
        self._closing = True
        for dep in self._deployments.values():
            if dep.timer is not None:
                dep.timer.cancel()
            self._fail_waiters(dep, "the server is shutting down")
        tasks = [i.task for d in self._deployments.values() for i in d.instances.values() if i.task]
        for task in tasks:
            if not task.done():
                with contextlib.suppress(BaseException):
                    await task
        for dep in list(self._deployments.values()):
            for inst in list(dep.instances.values()):
                if inst.alive:
                    self._set_phase(inst, Phase.RELEASING)
                    await self._do_release(inst)
        for worker in self.workers.values():
            await worker.close()
        self.recorder.stop_capture()

    # --- deployments ----------------------------------------------------------------------------

    def deployed_models(self) -> list[str]:
        """Names of the deployments that accept requests."""
        return [name for name, dep in self._deployments.items() if not dep.draining]

    async def deploy(self, raw, source: str = "deploy request", store_key: str | None = None,
                     persist: bool = True) -> dict:
        """Register a deployment from a deploy config (the spec's file, unchanged)."""
        cfg = parse_deploy_config(raw, source)
        check_for_live(cfg, self.cluster)
        if cfg.model in self._deployments or cfg.model in self._reserved_names:
            dep = self._deployments.get(cfg.model)
            what = "is being deleted; wait and deploy again" if dep and dep.draining else \
                "is already deployed; use update to change it"
            raise ConflictError(f"model {cfg.model!r} {what}")
        self._reserved_names.add(cfg.model)
        try:
            key, size = await self._checkpoints.prepare(cfg, store_key)
        finally:
            self._reserved_names.discard(cfg.model)
        # The deploy config's depth, else the stored checkpoint's own config.json (the model live mode
        # really loads), else the catalog's.
        depth = cfg.num_layers or await asyncio.to_thread(self.registry.model_layers, key) or model_depth(cfg) or 0
        dep = Deployment(config=cfg, raw=raw, store_key=key, size_bytes=size, num_layers=depth)
        self._deployments[cfg.model] = dep
        if persist:
            def undo() -> None:
                del self._deployments[cfg.model]  # not live: a retry deploys it
            self._persist(undo)
        self.deploy_history.append(deploy_config_to_dict(cfg))
        logger.info("deployed %s (%s, %d bytes)", cfg.model, key, size)
        self._rescale(dep)  # starts min_instances, if any
        return self._model_status(dep)

    async def update(self, raw, source: str = "update request") -> dict:
        """Change a deployment's autoscaling and placement; the checkpoint and backend must not change."""
        cfg = parse_deploy_config(raw, source)
        check_for_live(cfg, self.cluster)
        dep = self._deployments.get(cfg.model)
        if dep is None or dep.draining:
            raise UnknownModelError(cfg.model, self.deployed_models())
        check_update(dep.config, cfg, source)
        before = dep.config, dep.raw
        dep.config = cfg
        dep.raw = raw

        def undo() -> None:
            dep.config, dep.raw = before
        self._persist(undo)
        self.deploy_history.append(deploy_config_to_dict(cfg))
        self._rescale(dep)
        return self._model_status(dep)

    def _find_for_delete(self, name: str) -> Deployment:
        dep = self._deployments.get(name)
        if dep is not None:
            return dep
        # The spec deletes by hub name (`sllm-cli delete facebook/opt-1.3b`): accept a unique match.
        matches = [d for d in self._deployments.values()
                   if d.config.backend_config.pretrained_model_name_or_path == name]
        if len(matches) == 1:
            return matches[0]
        raise UnknownModelError(name, self.deployed_models())

    async def delete(self, names: list[str]) -> list[str]:
        """Stop taking requests for the named deployments, serve what they have, release them.

        Returns once every named deployment is gone. Nothing is deleted when a name is unknown.
        """
        deps = list(dict.fromkeys(self._find_for_delete(n) for n in names))
        fresh = [dep for dep in deps if not dep.draining]
        for dep in fresh:
            dep.draining = True

        def undo() -> None:
            for dep in fresh:  # still deployed, still serving: a retry deletes them
                dep.draining = False
        self._persist(undo)
        for dep in deps:
            self._rescale(dep)
            self._check_drained(dep)
        await asyncio.gather(*(dep.drained.wait() for dep in deps))
        return [dep.name for dep in deps]

    def _persist(self, undo) -> None:
        """Save the deployments to the storage folder; when that fails, ``undo()`` rolls back the
        change and :class:`~live.state_file.StateWriteError` goes to the client."""
        save_deployments(self.storage_dir, self._deployments.values(), undo)

    # --- requests -------------------------------------------------------------------------------

    async def admit(self, model: str) -> Ticket:
        """Admit a request for ``model`` onto an instance with room, waiting for a cold start if needed.

        Raises :class:`UnknownModelError` or :class:`LoadFailedError`.
        """
        dep = self._deployments.get(model)
        if dep is None or dep.draining or self._closing:
            note = " (it is being deleted)" if dep is not None else ""
            raise UnknownModelError(model, self.deployed_models(), note)
        rec = self.recorder.new_request(model)
        dep.in_flight += 1
        inst = self._free_instance(dep) if not dep.queue else None
        if inst is not None:
            self._occupy(inst)
            self._rescale(dep)
            return Ticket(rec, inst, cold_start=False)
        waiter = Waiter(self._loop.create_future(), rec)
        dep.queue.append(waiter)
        self._dispatch(dep)  # in case the queue held only requests whose clients had gone
        self._rescale(dep)
        try:
            inst = await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._finish(Ticket(rec, fut.result(), False), "failed", self.abort_reason or "client disconnected")
            elif not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    dep.queue.remove(waiter)
                self._request_gone(dep, rec, self.abort_reason or "client disconnected while waiting")
            raise
        # A cold start: the instance that serves it became ready only after the request arrived.
        return Ticket(rec, inst, cold_start=inst.ready_s is not None and inst.ready_s >= rec.arrival_s)

    async def generate(self, ticket: Ticket, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Run an admitted request; yields the worker's events and records the request when done.

        When a migration moves the request, the stream goes on from the destination worker: the
        caller sees one uninterrupted sequence of events.
        """
        inst, rec = ticket.instance, ticket.record
        ticket.started = True
        rec.queued_until_s = self.recorder.now_s()
        rec.node, rec.instance_id = inst.node_id, inst.instance_id
        rec.cold_start = ticket.cold_start
        rec.tier = inst.tier if ticket.cold_start else "gpu"
        run = RunningRequest(ticket, request, session_id=f"request-{rec.request_id}")
        status, reason = "failed", "client disconnected"
        try:
            stream = self.workers[inst.node_id].generate(inst.instance_id, request, run.session_id)
            while stream is not None:
                following = None
                async with contextlib.aclosing(stream):
                    async for event in stream:
                        if isinstance(event, Paused):
                            following = await run.paused(event.checkpoint)
                            if following is not None:
                                break  # closing the source's stream stops it; the destination goes on
                            await self.workers[ticket.instance.node_id].unpause(run.session_id)
                            continue
                        if isinstance(event, PromptAccepted):
                            rec.input_tokens = run.prompt_tokens = event.prompt_tokens
                            run.accepted = True
                            ticket.instance.running[rec.request_id] = run
                        elif isinstance(event, TextDelta):
                            if rec.first_token_s is None:
                                rec.first_token_s = self.recorder.now_s()
                            if event.token_id is not None:
                                run.tokens.append(event.token_id)
                        elif isinstance(event, Finished):
                            now = self.recorder.now_s()
                            if rec.first_token_s is None:
                                rec.first_token_s = now
                            rec.finish_s = now
                            rec.output_tokens = event.output.completion_tokens
                            status, reason = "completed", ""
                        yield event
                if following is not None:
                    run.left_source.set()
                stream = following
        except GenerationInputError as exc:
            reason = str(exc)
            raise
        except Exception as exc:
            reason = f"generation failed: {exc}"
            logger.exception("request %d on %s failed", rec.request_id, ticket.instance.instance_id)
            raise
        finally:
            run.end()
            ticket.instance.running.pop(rec.request_id, None)
            if status == "failed" and reason == "client disconnected" and self.abort_reason:
                reason = self.abort_reason
            self._finish(ticket, status, reason)

    def abandon(self, ticket: Ticket, reason: str) -> None:
        """Give back an admitted request that will not run."""
        if not ticket.finished:
            self._finish(ticket, "failed", reason)

    def _finish(self, ticket: Ticket, status: str, reason: str) -> None:
        if ticket.finished:
            return
        ticket.finished = True
        inst, rec = ticket.instance, ticket.record
        dep = inst.deployment
        rec.status, rec.reason = status, reason
        if rec.finish_s is None:
            rec.finish_s = self.recorder.now_s()
        dep.in_flight -= 1
        inst.active -= 1
        self.recorder.finished(rec)
        self.metrics.on_request(dep.name, status, rec.latency_s, rec.ttft_s, rec.input_tokens, rec.output_tokens)
        if inst.active == 0 and inst.phase == Phase.READY:
            self._set_phase(inst, Phase.IDLE)
        self._on_room(inst)

    def _request_gone(self, dep: Deployment, rec: RequestRecord, reason: str) -> None:
        """Account for a queued request that leaves without being served."""
        self._record_unserved(dep, rec, reason)
        self._rescale(dep)
        self._check_drained(dep)

    def _free_instance(self, dep: Deployment) -> Instance | None:
        """The loaded instance with the most room (then the longest-ready), if any has room."""
        best = None
        for inst in dep.instances.values():
            if inst.has_room:
                if best is None or (inst.active, inst.ready_s) < (best.active, best.ready_s):
                    best = inst
        return best

    def _occupy(self, inst: Instance) -> None:
        inst.active += 1
        if inst.phase == Phase.IDLE:
            self._set_phase(inst, Phase.READY)

    def _dispatch(self, dep: Deployment) -> None:
        """Hand queued requests, in arrival order, to instances with room."""
        while dep.queue:
            inst = self._free_instance(dep)
            if inst is None:
                return
            waiter = dep.queue.popleft()
            if waiter.future.done():  # its client went away; admit() accounted for it
                continue
            self._occupy(inst)
            waiter.future.set_result(inst)

    def _on_room(self, inst: Instance) -> None:
        """``inst`` may have room (it loaded, a request finished, a move ended): hand it queued
        requests, rescale its deployment, offer it if idle, and end a drain that is complete."""
        dep = inst.deployment
        self._dispatch(dep)
        self._rescale(dep)
        self._offer_if_idle(inst)
        self._check_drained(dep)

    def _fail_waiters(self, dep: Deployment, reason: str) -> None:
        while dep.queue:
            waiter = dep.queue.popleft()
            if waiter.future.done():
                continue
            self._record_unserved(dep, waiter.record, reason)
            waiter.future.set_exception(LoadFailedError(reason))

    def _record_unserved(self, dep: Deployment, rec: RequestRecord, reason: str) -> None:
        """Record a request that leaves the queue failed, never served, for ``reason``."""
        dep.in_flight -= 1
        rec.status, rec.reason, rec.finish_s = "failed", reason, self.recorder.now_s()
        self.recorder.finished(rec)
        self.metrics.on_request(dep.name, "failed", None, None, 0, 0)

    # --- scaling and placement ------------------------------------------------------------------

    def _rescale(self, dep: Deployment) -> None:
        """Ask the core's autoscaler what ``dep`` needs now, and carry it out."""
        if self._closing or self._deployments.get(dep.name) is not dep:
            return
        now = self.recorder.now_s()
        decision = decide_scaling(self._autoscaler, scheduler_views.scaling_context(dep, now))
        for instance_id in decision.release:
            self._release(dep.instances[instance_id])
        for _ in range(decision.start):
            if not self._start_instance(dep):
                break  # no node has room; retried whenever a slot frees
        if dep.timer is not None:
            dep.timer.cancel()
            dep.timer = None
        if decision.next_check_s is not None:
            dep.timer = self._loop.call_later(max(decision.next_check_s - now, 0.0), self._rescale, dep)

    def _rescale_all(self) -> None:
        for dep in list(self._deployments.values()):
            self._rescale(dep)

    def _offer_if_idle(self, inst: Instance) -> None:
        """With ``reclaim_idle``, an instance that just became idle may be what a waiting model needs:
        let every deployment short of instances try again (without it they retry when a slot frees)."""
        if self.reclaim_idle and inst.phase == Phase.IDLE and not self._closing:
            self._rescale_all()

    def _movable(self, inst: Instance) -> bool:
        """Whether a migration may move ``inst`` now (:func:`live.scheduler_views.movable`)."""
        return scheduler_views.movable(inst, self.recorder.now_s())

    def cluster_view(self) -> ClusterView:
        """The scheduler's snapshot: slots in use, and which deployments' checkpoints each node holds
        (with migration enabled, also the instances each node could move away; with ``reclaim_idle``,
        the idle instances whose slots it could take)."""
        deployments = self._deployments.values()
        running = scheduler_views.running_views(deployments, self.cluster, self._movable) \
            if self.enable_migration else {}
        idle = scheduler_views.idle_views(deployments, self.cluster, self._autoscaler, self.recorder.now_s()) \
            if self.reclaim_idle else {}
        return scheduler_views.cluster_view(self.cluster, self.workers, deployments, self._slots_used, running, idle)

    def _worth_placing(self, model: ModelView, cluster: ClusterView) -> bool:
        """Whether some node can host ``model``, now or after making room: checked before
        :func:`place` so that a model that simply waits for a slot does not log an empty ranking at
        every arrival. Uses no policy state (a random or round-robin policy ranks only in place())."""
        # Migration planning is pure (storage-aware only), so ranking twice changes nothing.
        return worth_attempting(model, cluster, confirm=self._placement if self.enable_migration else None)

    def _start_instance(self, dep: Deployment) -> bool:
        model = scheduler_views.model_view(dep)
        cluster = self.cluster_view()
        if not self._worth_placing(model, cluster):
            return False
        option = place(self._placement, model, cluster, reclaim_idle=self.reclaim_idle)
        if option is None:
            return False
        inst = self._new_instance(dep, option.node_id, dep.config.num_gpus, dep.config.backend_config.max_batch_size,
                                  option.estimate_s, option.tier.value)
        if option.reclaim or (option.migration is not None and option.migration.moves):
            self._make_room(inst, option)
            return True
        self._hold_slots(dep, option.node_id, inst.num_gpus)
        inst.task = self._loop.create_task(self._load(inst))
        return True

    def _new_instance(self, dep: Deployment, node_id: str, num_gpus: int, capacity: int, estimate_s: float,
                      tier_planned: str) -> Instance:
        """A new instance of ``dep`` placed on ``node_id`` now (loading; its slots are the caller's to take)."""
        now = self.recorder.now_s()
        inst = Instance(instance_id=f"{dep.name}-{next(self._instance_ids)}", deployment=dep, node_id=node_id,
                        num_gpus=num_gpus, capacity=capacity, placed_s=now, phase_since_s=now,
                        estimate_s=estimate_s, tier_planned=tier_planned)
        dep.instances[inst.instance_id] = inst
        return inst

    async def _load_checkpoint(self, inst: Instance) -> str | None:
        """Load ``inst``'s model on its node; None when it is loaded, else the reason it failed (the
        instance is then gone and its slots are free)."""
        dep = inst.deployment
        loop = self._loop

        def on_phase(timing) -> None:  # called from the loader's thread
            loop.call_soon_threadsafe(self._on_load_phase, inst, timing)

        try:
            dtype = dep.config.backend_config.torch_dtype
            info = await self.workers[inst.node_id].load(inst.instance_id, dep.store_key, inst.capacity,
                                                         None if dtype == "auto" else dtype, on_phase)
        except Exception as exc:
            reason = f"loading model {dep.name} on node {inst.node_id} failed: {exc}"
            logger.error(reason)
            dep.last_load_error = reason
            self.metrics.on_load_failed(dep.name)
            self._forget(inst)
            self._hold_slots(dep, inst.node_id, -inst.num_gpus)
            return reason
        now = self.recorder.now_s()
        dep.last_load_error = ""
        inst.tier, inst.nbytes, inst.ready_s = info.tier, info.nbytes, now
        self.metrics.on_load(dep.name, info.tier, now - inst.placed_s)
        self._sample(dep, inst.node_id)
        logger.info("instance %s of %s ready on node %s (%s tier, %.3f s)", inst.instance_id, dep.name,
                    inst.node_id, info.tier, now - inst.placed_s)
        return None

    async def _load(self, inst: Instance) -> None:
        dep = inst.deployment
        reason = await self._load_checkpoint(inst)
        if reason is not None:
            self._fail_waiters(dep, reason)
            self._rescale_all()
            self._check_drained(dep)
            return
        self._set_phase(inst, Phase.IDLE)
        self._on_room(inst)

    # --- live migration -------------------------------------------------------------------------

    def _find_instance(self, instance_id: str) -> Instance | None:
        for dep in self._deployments.values():
            inst = dep.instances.get(instance_id)
            if inst is not None:
                return inst
        return None

    def _on_load_phase(self, inst: Instance, timing) -> None:
        phase = Phase(timing.phase)
        tier = getattr(timing, "tier", "")
        inst.load_detail = phase.value
        self._record_phase(inst, phase, self.recorder.run_time_s(timing.start_s),
                           self.recorder.run_time_s(timing.end_s), tier=str(getattr(tier, "value", tier) or ""),
                           nbytes=int(getattr(timing, "nbytes", 0)))

    def _record_phase(self, inst: Instance, phase: Phase, start_s: float, end_s: float, tier: str = "",
                      nbytes: int = 0) -> None:
        self.recorder.phase(inst.instance_id, inst.deployment.name, inst.node_id, phase.value, start_s, end_s,
                            tier=tier, nbytes=nbytes)

    def _set_phase(self, inst: Instance, phase: Phase) -> None:
        """Move ``inst`` to ``phase``, recording the ready/idle (migrating/resuming) period that ends."""
        now = self.recorder.now_s()
        if inst.phase in RECORDED_PHASES:
            self._record_phase(inst, inst.phase, inst.phase_since_s, now, tier=inst.tier)
        inst.phase, inst.phase_since_s = phase, now

    def _forget(self, inst: Instance, tier: str = "", now_s: float | None = None) -> None:
        """Record ``inst``'s zero-length ``released`` phase (now, or at ``now_s``) and drop it from its
        deployment."""
        now = self.recorder.now_s() if now_s is None else now_s
        self._record_phase(inst, Phase.RELEASED, now, now, tier=tier)
        inst.deployment.instances.pop(inst.instance_id, None)

    def _release(self, inst: Instance) -> None:
        self._set_phase(inst, Phase.RELEASING)
        inst.task = self._loop.create_task(self._do_release(inst))

    async def _unload(self, inst: Instance) -> None:
        """Unload ``inst`` on its worker, record its ``released`` phase and forget it; its slots are
        the caller's to hand on."""
        try:
            await self.workers[inst.node_id].release(inst.instance_id)
        except Exception:
            logger.exception("releasing %s failed", inst.instance_id)
        self._forget(inst, tier=inst.tier)

    async def _do_release(self, inst: Instance) -> None:
        dep = inst.deployment
        await self._unload(inst)
        self._hold_slots(dep, inst.node_id, -inst.num_gpus)
        self._rescale_all()  # a freed slot may let another model start
        self._check_drained(dep)

    def _check_drained(self, dep: Deployment) -> None:
        if dep.draining and dep.in_flight == 0 and not dep.instances and not dep.drained.is_set():
            if dep.timer is not None:
                dep.timer.cancel()
            if self._deployments.get(dep.name) is dep:
                del self._deployments[dep.name]
            logger.info("deleted %s", dep.name)
            dep.drained.set()

    def _hold_slots(self, dep: Deployment, node_id: str, gpus: int) -> None:
        """Take ``gpus`` more GPU slots on ``node_id`` for ``dep`` (negative: give them back)."""
        self._slots_used[node_id] += gpus
        self._sample(dep, node_id)

    def _sample(self, dep: Deployment, node_id: str) -> None:
        self.recorder.sample("instances", dep.name, len(dep.instances))
        self.recorder.sample("gpus_busy", node_id, self._slots_used[node_id])
        state = self.workers[node_id].storage_state()
        self.recorder.sample("host_used_bytes", node_id, state.host_used_bytes)
        self.recorder.sample("disk_used_bytes", node_id, state.disk_used_bytes)

    # --- status ---------------------------------------------------------------------------------

    def _model_status(self, dep: Deployment) -> dict:
        return model_status(dep, self.recorder.now_s(), self.workers, self.registry)

    def status(self) -> dict:
        """Nodes (devices, slots, tiers) and models (instances with node and phase) as plain data."""
        return {"nodes": node_status(self.cluster, self.workers, self._slots_used),
                "models": [self._model_status(d) for d in self._deployments.values()]}

    def gauge_state(self) -> GaugeState:
        return gauge_state(self._deployments.values(), self.cluster, self._slots_used)
