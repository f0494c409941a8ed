"""Log plumbing of one simulation run: keep the scheduler's lines, stamp them with simulated time."""

from __future__ import annotations

import logging

import simpy

from sllmsim.core.placement import logger as scheduler_logger


class SchedulerLog(logging.Handler):
    """Keeps the scheduler's log lines of one run, and stops placement logging after ``limit``."""

    def __init__(self, limit: int):
        super().__init__(logging.INFO)
        self.limit = limit
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if len(self.lines) >= self.limit:
            # Formatting a large cluster's option list is costly; past the limit nobody reads it.
            scheduler_logger.setLevel(logging.WARNING)


class SimTime(logging.Filter):
    """Stamps scheduler log records with the simulated time (``record.sim_time_s``)."""

    def __init__(self, env: simpy.Environment):
        super().__init__()
        self.env = env

    def filter(self, record: logging.LogRecord) -> bool:
        record.sim_time_s = self.env.now
        return True
