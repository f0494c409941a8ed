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


def minimal_request_loop(times_s: list[float], service_s: float = 1.0) -> int:
    """The speed target of the simulator: one process and two timeouts per request (its arrival,
    and its completion ``service_s`` later, counted by a callback); returns the requests completed."""
    env = simpy.Environment(initial_time=0.0)
    done = [0]

    def finish(_event) -> None:
        done[0] += 1

    def requests():
        for t in times_s:
            delay = t - env.now
            if delay > 0:
                yield env.timeout(delay)
            env.timeout(service_s).callbacks.append(finish)

    env.process(requests())
    env.run()
    return done[0]
