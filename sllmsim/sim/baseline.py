"""The speed baseline of the benchmark: a bare SimPy loop that only schedules arrivals."""

from __future__ import annotations

import simpy


def bare_arrival_loop(times_s: list[float]) -> float:
    """Schedule one SimPy timeout per arrival time (sorted) and nothing else; returns the end time."""
    env = simpy.Environment(initial_time=0.0)

    def arrivals():
        for t in times_s:
            delay = t - env.now
            if delay > 0:
                yield env.timeout(delay)

    env.process(arrivals())
    env.run()
    return env.now
