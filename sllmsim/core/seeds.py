"""The named random streams of a run, spawned from its one seed (a trace's ``seed``).

Each subsystem draws from its own child of the run seed, so adding draws to one never shifts
another's. Both runtimes derive their streams here.
"""

from __future__ import annotations

import numpy as np

#: Named random streams spawned from the run seed, in this order (adding one at the end keeps the
#: earlier streams unchanged).
SEED_STREAMS = ("placement", "workloads")


def seed_stream(seed: int, stream: str) -> np.random.SeedSequence:
    """The named child (see :data:`SEED_STREAMS`) of the run seed ``seed``."""
    return np.random.SeedSequence(seed).spawn(len(SEED_STREAMS))[SEED_STREAMS.index(stream)]
