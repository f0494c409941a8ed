"""What the live controller keeps: deployments, their instances, and the requests waiting for or
holding a place on one (the controller, :mod:`live.controller`, changes them).

Lifecycle of an instance (its ``phase``, a member of :class:`~sllmsim.records.Phase`): ``loading``
→ ``idle`` ⇄ ``ready`` (serving at least one request) → ``releasing`` → gone; in a live migration
the source is ``migrating`` and the destination ``resuming`` until the hand-over. The time spent
``ready``, ``idle``, ``migrating`` or ``resuming`` is recorded as a phase when it ends; ``loading``
is recorded as its load phases, and ``releasing`` as the zero-length ``released`` at the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from sllmsim.config.deploy import DeployConfig
from sllmsim.records import Phase, RequestRecord

from live.migration import RunningRequest

#: Phases whose period is recorded (start and end) when the instance leaves them.
RECORDED_PHASES = frozenset({Phase.READY, Phase.IDLE, Phase.MIGRATING, Phase.RESUMING})


@dataclass(eq=False)
class Instance:
    """One loaded (or loading) copy of a deployment's model on one node."""

    instance_id: str
    deployment: Deployment
    node_id: str
    num_gpus: int
    capacity: int
    """Requests it serves at once (``backend_config.max_batch_size``)."""
    placed_s: float
    phase: Phase = Phase.LOADING
    """``loading``, ``idle``, ``ready``, ``releasing``; in a migration ``migrating`` (source) or
    ``resuming`` (destination)."""
    phase_since_s: float = 0.0
    active: int = 0
    """Requests admitted onto it and not finished."""
    tier: str = ""
    nbytes: int = 0
    ready_s: float | None = None
    estimate_s: float = 0.0
    """The scheduler's startup estimate when it was placed."""
    load_detail: str = ""
    """The last load phase that finished (for status)."""
    task: asyncio.Task | None = None
    running: dict[int, RunningRequest] = field(default_factory=dict)
    """Its requests that are decoding, by request id."""
    migration_failed: bool = False
    """A move of this instance failed: it is not offered for migration again."""
    slots_held: int | None = None
    """For an instance waiting for a migration to free its node: the GPU slots it holds so far
    (None for an instance placed on free slots, which holds all of them from the start)."""
    tier_planned: str = ""
    """The tier the scheduler expected it to load from."""
    moves_in: int = 0
    """Requests still being moved onto it: until they arrive it takes no other request, is not
    released and is not moved itself."""

    @property
    def alive(self) -> bool:
        """Not (being) released: it counts towards its deployment's instances."""
        return self.phase != Phase.RELEASING

    @property
    def has_room(self) -> bool:
        """Loaded, serving, and able to take one more request now."""
        return (self.phase in (Phase.IDLE, Phase.READY) and self.active < self.capacity
                and not self.moves_in)


@dataclass(eq=False)
class Waiter:
    """A request waiting for an instance with room."""

    future: asyncio.Future
    record: RequestRecord


@dataclass(eq=False)
class Deployment:
    """A deployed model: its config, where its checkpoint lives in the store, and its instances."""

    config: DeployConfig
    raw: dict
    """The deploy config as the user sent it (persisted as is)."""
    store_key: str
    size_bytes: int
    num_layers: int = 0
    """Depth the placement estimates price the per-layer load cost with (0: unknown)."""
    instances: dict[str, Instance] = field(default_factory=dict)
    queue: deque[Waiter] = field(default_factory=deque)
    in_flight: int = 0
    draining: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    last_load_error: str = ""
    """Why its last load failed ("" once one succeeds): shown in status."""

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def queued(self) -> int:
        """Requests waiting for an instance (not counting those whose client has gone)."""
        return sum(1 for w in self.queue if not w.future.done())

    def alive_instances(self) -> list[Instance]:
        """Its instances that are not being released."""
        return [i for i in self.instances.values() if i.alive]


@dataclass(eq=False)
class Ticket:
    """A request admitted onto an instance; :meth:`~live.controller.Controller.generate` runs it."""

    record: RequestRecord
    instance: Instance
    cold_start: bool
    started: bool = False
    finished: bool = False
