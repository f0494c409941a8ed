"""What exists in a simulated cluster: deployments, nodes, instances, migrations in progress.

The entities of :mod:`sllmsim.sim.engine` (which holds what happens to them), named as live mode
names the same concepts (``live/state.py``): a :class:`Deployment` has :class:`Instance` objects,
each with ``instance_id``, ``deployment``, ``node_id``, ``phase``, ``phase_since_s``, ``active``,
``capacity``, ``placed_s``, ``ready_s`` and ``tier``. Their methods only compute from their own
fields; records, timers and decisions stay in the engine. Every class has ``__slots__``: the
engine reads these fields on every event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from heapq import heappop, heappush

from sllmsim import catalog
from sllmsim.config.hardware import GpuType
from sllmsim.core.autoscale import IdleInstance
from sllmsim.core.snapshot import ModelView, NodeView
from sllmsim.core.views import build_node_view, static_figures
from sllmsim.records import Phase, RequestRecord
from sllmsim.sim.links import Link
from sllmsim.sim.roofline import Roofline, decode_steps
from sllmsim.sim.storage import TierStore

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
LOAD_PHASES = (DOWNLOADING, LOADING_TO_HOST, LOADING_TO_GPU)

#: Slack for comparing simulated instants computed along different float paths.
TIME_EPS = 1e-9
#: Slack for token counts derived from continuous decode progress (a whole token is not 0.999…).
TOKEN_EPS = 1e-9


class Deployment:
    """One deployed model's runtime state: its config, instances, queue and in-flight count."""

    __slots__ = ("name", "cfg", "size_bytes", "num_params", "arch", "num_layers", "dtype_bytes", "num_gpus",
                 "capacity", "asc", "view", "allowed", "instances", "ready", "by_id", "idle", "queue", "in_flight",
                 "counter", "unplaced", "pending", "fail_reason", "rooflines", "version", "check_at", "moving",
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
        self.capacity = cfg.backend_config.max_batch_size
        """Requests each of its instances serves at once (``backend_config.max_batch_size``)."""
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
        self.pending: dict[Instance, None] = {}
        """Its instances waiting for GPUs (in the engine's waiting list), oldest first."""
        self.fail_reason = ""
        self.rooflines: dict[tuple[GpuType, float], Roofline] = {}
        self.version = 0
        self.check_at: float | None = None
        self.moving = 0
        """Destination instances of migrations in progress (they replace a source, so the autoscaler
        does not count them as extra instances)."""
        self.preempted_requests = 0
        self.preempted_tokens = 0
        self.holds: tuple[int, int, int, int] | None = None
        """(low, high, instances, surplus) from :func:`~sllmsim.core.autoscale.decision_holds_until`
        after the last decision: while the in-flight count is in [low, high] and the instance count
        is ``instances``, re-deciding keeps the desired count, starts nothing and leaves ``surplus``
        instances beyond it (which only idle instances past their keep-alive can change)."""

    def roofline(self, node: NodeState) -> Roofline:
        """This model's execution-time model on ``node``."""
        spec = node.spec
        fixed_s = spec.forward_fixed_s(self.num_layers)
        sequence_s = spec.decode_sequence_s(self.num_layers)
        # Keyed by the whole GPU type (a node may override a named type's bandwidth or FLOP/s) and
        # by this model's fixed costs per forward pass and per extra sequence of a step there.
        key = (spec.gpu, fixed_s, sequence_s)
        roof = self.rooflines.get(key)
        if roof is None:
            roof = Roofline.build(self.num_params, self.dtype_bytes, self.arch, spec.gpu, self.num_gpus, fixed_s,
                                  sequence_s)
            self.rooflines[key] = roof
        return roof

    def new_instance(self, now: float) -> Instance:
        """A new (queued, unplaced) instance, numbered in creation order and counted as not released."""
        inst = Instance(f"{self.name}-{self.counter}", self, now)
        self.counter += 1
        self.instances.append(inst)
        self.by_id[inst.instance_id] = inst
        return inst

    def unservable(self) -> str:
        """Why no instance of this deployment can ever be placed, or ``""``."""
        if not self.allowed:
            return "no node is allowed by placement_config.target_nodes"
        if not any(n.spec.num_gpus >= self.num_gpus for n in self.allowed):
            most = max(n.spec.num_gpus for n in self.allowed)
            return f"model needs {self.num_gpus} GPUs but no allowed node has more than {most}"
        fits = [n for n in self.allowed
                if n.spec.num_gpus >= self.num_gpus and n.spec.gpu.memory_bytes * self.num_gpus >= self.size_bytes]
        if not fits:
            return (f"checkpoint ({self.size_bytes} bytes) does not fit in the memory of {self.num_gpus} GPU(s) "
                    "on any allowed node")
        return ""


class NodeState:
    """One server's runtime state: GPUs, tier stores, links, and its cached scheduler view."""

    __slots__ = ("spec", "node_id", "index", "free_gpus", "disk", "host", "net_link", "disk_link", "pcie_link",
                 "loading", "view", "_static")

    def __init__(self, spec, index: int = 0):
        self.spec = spec
        self.node_id = spec.node_id
        self.index = index
        """Its position in the cluster (and in the scheduler's snapshot)."""
        self.free_gpus = spec.num_gpus
        self.disk = TierStore(spec.disk_size_bytes)
        self.host = TierStore(spec.host_size_bytes)
        self.net_link = Link(f"{spec.node_id}:network", spec.network_bandwidth_bytes_per_s)
        # One read gets disk_bandwidth; several share the aggregate where the disk has one.
        self.disk_link = Link(f"{spec.node_id}:disk",
                              spec.disk_aggregate_bandwidth_bytes_per_s or spec.disk_bandwidth_bytes_per_s,
                              spec.disk_bandwidth_bytes_per_s)
        self.pcie_link = Link(f"{spec.node_id}:host_to_gpu", spec.host_to_gpu_bytes_per_s)
        self.loading = 0
        """Loads in progress; while any is, the view's backlog changes with time and is rebuilt."""
        self.view: NodeView | None = None
        self._static = static_figures(spec)

    def backlog_s(self, now: float) -> float:
        """Seconds until the loads on this node drain (the reference's loading-queue time)."""
        if not self.loading:
            return 0.0
        # max() of the three written out, idle links skipped: the same value (the first of the
        # largest; an idle link's backlog is 0.0).
        link = self.net_link
        backlog = link.backlog_s(now) if link.flows else 0.0
        link = self.disk_link
        if link.flows:
            other = link.backlog_s(now)
            if other > backlog:
                backlog = other
        link = self.pcie_link
        if link.flows:
            other = link.backlog_s(now)
            if other > backlog:
                backlog = other
        return backlog

    def make_view(self, now: float) -> NodeView:
        """This node's scheduler view at ``now``, kept as :attr:`view` (the engine rebuilds it only
        after the node changed, or while it loads)."""
        spec = self.spec
        self.view = view = build_node_view(spec.node_id, spec.num_gpus, self.free_gpus, self.host.models(),
                                           self.disk.models(), self.backlog_s(now), *self._static)
        return view


class Instance:
    """One instance of a deployment: its lifecycle phase and, once loaded, its batch.

    Decode bookkeeping: ``steps`` counts decode steps since the batch last emptied; a request that
    joined at step ``s`` with ``i`` prompt tokens holds ``i + 1 + (steps - s)`` context tokens, so the
    batch's total context is ``ctx_offset + batch * steps``. The heap holds each decoding request
    under the step count at which it finishes.
    """

    __slots__ = ("instance_id", "deployment", "node", "node_id", "phase", "phase_since_s", "tier", "ready_s",
                 "active", "capacity", "prefill_queue", "prefill_end", "prefill_wake", "heap", "batch", "steps",
                 "ctx_offset", "seg_start", "base_s", "kv_s", "roof", "version", "placed_s", "migration",
                 "waiting_gpus", "request_overhead_s", "arriving")

    def __init__(self, instance_id: str, deployment: Deployment, now: float):
        self.instance_id = instance_id
        self.deployment = deployment
        self.node: NodeState | None = None
        self.node_id = ""
        self.phase = QUEUED
        self.phase_since_s = now
        self.tier = ""
        self.ready_s = math.inf
        self.active = 0
        """Requests admitted and not finished (waiting to prefill, prefilling or decoding)."""
        self.capacity = deployment.capacity
        """Requests it serves at once (its deployment's ``backend_config.max_batch_size``)."""
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
        self.migration: Migration | None = None
        """The migration this instance is the source or the destination of, while it runs."""
        self.waiting_gpus = 0
        """GPUs it still waits for on its node while running instances there make room."""

    def place_on(self, node: NodeState) -> None:
        """Bind it to ``node``: its execution-time model and per-request overhead are that node's."""
        self.node = node
        self.node_id = node.node_id
        self.roof = roof = self.deployment.roofline(node)
        self.kv_s = roof.kv_s_per_token
        self.request_overhead_s = node.spec.request_overhead_s

    def steps_at(self, now: float) -> float:
        """The batch's decode step count at ``now``: decode progress is continuous between batch
        changes, and never passes the step at which the first request finishes."""
        steps = self.steps
        heap = self.heap
        if heap and now > self.seg_start:
            k = self.batch
            done = decode_steps(now - self.seg_start, self.base_s, self.kv_s, self.ctx_offset + k * steps, k)
            left = heap[0][0] - steps
            steps += done if done < left else left
        return steps

    def request_tokens(self, now: float) -> list[tuple[int, float]]:
        """(request id, prompt tokens + tokens generated so far) of each request it serves at
        ``now``: what another node must re-compute to resume it. Decode progress is continuous, so
        the counts can be fractional."""
        steps = self.steps_at(now)
        out = []
        for fin, rid, rec in self.heap:
            tokens = rec.input_tokens
            if rec.first_token_s <= now:  # a request whose prefill is still running has only its prompt
                tokens += rec.output_tokens - (fin - steps)
            out.append((rid, tokens))
        for rec in self.prefill_queue:
            out.append((rec.request_id, rec.input_tokens))
        for _, rec in self.arriving:
            out.append((rec.request_id, rec.input_tokens))
        return out


class Migration:
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


class Retry:
    """The timer of the next placement retry while room-making waits for an instance to become movable."""

    __slots__ = ("version", "at")

    def __init__(self):
        self.version = 0
        self.at = math.inf


class WaitingIndex:
    """Instances waiting for GPUs, grouped by the GPUs each needs, each group in waiting order.

    A release of GPUs can only place instances that need at most the freest node's free GPUs;
    walking :meth:`fitting` visits those in the order of the engine's waiting list without looking
    at the others. An instance that stops waiting (placed or cancelled, :meth:`left`) is dropped
    from its group lazily, when the group is next walked: from the front at once, from the middle
    once such entries are half the group, so a walk costs about what still waits.
    """

    __slots__ = ("_groups", "_left", "_seq", "_walking")

    def __init__(self):
        self._groups: dict[int, list[tuple[int, Instance]]] = {}
        """GPUs needed -> (position in the waiting order, instance), oldest first."""
        self._left: dict[int, int] = {}
        """GPUs needed -> entries of that group whose instance no longer waits."""
        self._seq = 0
        self._walking = 0
        """Walks in progress: groups are compacted only when none is (a walk holds indices into them)."""

    def add(self, inst: Instance) -> None:
        """``inst`` starts waiting, after every instance added before it (no instance waits twice)."""
        gpus = inst.deployment.num_gpus
        group = self._groups.get(gpus)
        if group is None:
            group = self._groups[gpus] = []
            self._left[gpus] = 0
        group.append((self._seq, inst))
        self._seq += 1

    def left(self, inst: Instance) -> None:
        """``inst`` no longer waits (it is placed, or cancelled and released)."""
        self._left[inst.deployment.num_gpus] += 1

    def fitting(self, fits: Callable[[int], bool]) -> Iterator[Instance]:
        """The instances still waiting whose GPU count ``fits``, in the order they were added.

        ``fits`` is asked again before each instance, so the caller may place instances meanwhile;
        but once ``fits(n)`` is false it must stay false for the rest of the walk (placements only
        take GPUs), because a group that stops fitting is dropped whole. Instances added during the
        walk are not visited.
        """
        heads: list[tuple[int, int, int, int]] = []  # (position, GPUs, index, end) of each group's next
        groups = self._groups
        for gpus, group in groups.items():
            if fits(gpus):
                if not self._walking:
                    self._compact(gpus, group)
                if group:
                    heads.append((group[0][0], gpus, 0, len(group)))
        heads.sort()
        self._walking += 1
        try:
            while heads:
                _, gpus, index, end = heappop(heads)
                if not fits(gpus):
                    continue
                group = groups[gpus]
                inst = group[index][1]
                index += 1
                if index < end:
                    heappush(heads, (group[index][0], gpus, index, end))
                if inst.node is None and inst.phase != RELEASED:
                    yield inst
        finally:
            self._walking -= 1

    def _compact(self, gpus: int, group: list[tuple[int, Instance]]) -> None:
        gone = 0
        for _, inst in group:
            if inst.node is None and inst.phase != RELEASED:
                break
            gone += 1
        left = self._left[gpus] - gone
        if gone:
            del group[:gone]
        if 2 * left > len(group):
            group[:] = [entry for entry in group if entry[1].node is None and entry[1].phase != RELEASED]
            left = 0
        self._left[gpus] = left
