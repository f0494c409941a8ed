"""Hand-built /proc/stat-style CPU samples for the fidelity tests."""

from __future__ import annotations


def cpu_samples(other_cores_per_s: list[float], own_cores: float = 1.0, step_s: float = 0.5):
    """Samples every ``step_s`` where other processes keep the given cores busy in each interval."""
    out, busy, own = [(0.0, 100.0, 10.0)], 100.0, 10.0
    for i, other in enumerate(other_cores_per_s):
        busy += (other + own_cores) * step_s
        own += own_cores * step_s
        out.append(((i + 1) * step_s, busy, own))
    return out
