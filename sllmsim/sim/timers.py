"""The engine's one kind of timer: a SimPy event that a newer timer of the same target supersedes."""

from __future__ import annotations

from heapq import heappush

import simpy
from simpy.events import NORMAL, Event


class Wake(Event):
    """A timer for one instance, deployment, migration or retry; ignored when ``target.version``
    has moved on (rescheduling bumps the version instead of cancelling the event)."""

    __slots__ = ("target", "version")
    # Constant for every wake; class attributes save per-event assignments on the hot path.
    _ok = True
    _value = None

    def __init__(self, env: simpy.Environment, target, callback, delay: float):
        self.env = env
        self.callbacks = [callback]
        self.target = target
        self.version = target.version
        # What env.schedule(self, NORMAL, delay) does, without its call (one per timer).
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))
