"""The discrete-event simulator (the only package that imports simpy).

:func:`simulate` replays a validated trace and returns the run's records; see
:mod:`sllmsim.sim.engine` for what happens to each request.
"""

from __future__ import annotations

from collections.abc import Callable

from sllmsim.config.trace import TraceConfig
from sllmsim.records import RunResult


def simulate(trace: TraceConfig, progress: bool | Callable[[int, int], None] = False) -> RunResult:
    """Replay ``trace`` and return its records; the same trace (and seed) gives the same records.

    ``progress``: ``True`` draws a progress bar on stderr; a callable receives
    ``(requests arrived, total requests)`` a few hundred times per run.
    """
    from sllmsim.sim.engine import Simulation

    if progress is True:
        return _with_progress_bar(trace)
    return Simulation(trace, progress=progress or None).run()


def _with_progress_bar(trace: TraceConfig) -> RunResult:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sllmsim.sim.engine import Simulation

    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulate", total=len(trace.requests))

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done)

        return Simulation(trace, progress=update).run()


__all__ = ["simulate"]
