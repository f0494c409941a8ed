"""The live server's records, in the shared format of :mod:`sllmsim.records`.

One :class:`LiveRecorder` per server collects a :class:`~sllmsim.records.RequestRecord` per request,
a :class:`~sllmsim.records.PhaseRecord` per instance phase (the loader's real timings included),
timeseries samples and the scheduler's log lines, with times in seconds since the server started,
so that a live run lines up with a simulated one. ``GET /records`` serves them as JSON;
:func:`run_result_from_json` turns that JSON back into a :class:`~sllmsim.records.RunResult`.

The recorder is not thread-safe on purpose: the controller only touches it from the event loop
(loader threads hand their timings over with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

from sllmsim.records import PhaseRecord, RequestRecord, RunResult, TimeseriesRecord, request_row


class _SchedulerLogCapture(logging.Handler):
    """Keeps the scheduler's log lines emitted from one thread (the server's event loop), so that two
    servers in one process (tests) do not see each other's lines."""

    def __init__(self, sink: list[str], thread_id: int):
        super().__init__(logging.INFO)
        self.sink = sink
        self.thread_id = thread_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.sink.append(record.getMessage())


class LiveRecorder:
    """Collects one live run's records; ``now_s()`` is seconds since construction (server start)."""

    def __init__(self, clock=time.monotonic, journal: Path | None = None):
        self._clock = clock
        self._journal = None
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: each finished request is in the file as soon as it ends, so that a server
            # killed before it can write its run folder loses none of them.
            self._journal = open(journal, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._t0 = clock()
        self.requests: list[RequestRecord] = []
        self.phases: list[PhaseRecord] = []
        self.timeseries: list[TimeseriesRecord] = []
        self.scheduler_log: list[str] = []
        self._next_request_id = 0
        self._capture: _SchedulerLogCapture | None = None
        self._last_sample: dict[tuple[str, str], float] = {}

    def now_s(self) -> float:
        """Seconds since the server started."""
        return self._clock() - self._t0

    def run_time_s(self, clock_value: float) -> float:
        """A reading of the recorder's clock (``time.monotonic`` by default) as seconds since start."""
        return clock_value - self._t0

    def new_request(self, model: str) -> RequestRecord:
        """A record for a request arriving now; ids count up from 0 per server."""
        # "running" until the controller records how it ended (completed or failed).
        rec = RequestRecord(request_id=self._next_request_id, model=model, arrival_s=self.now_s(),
                            input_tokens=0, output_tokens=0, status="running")
        self._next_request_id += 1
        self.requests.append(rec)
        return rec

    def finished(self, rec: RequestRecord) -> None:
        """Note that ``rec`` has ended (completed or failed): appended to the journal, if any, as one
        JSON line of the shared request row."""
        if self._journal is not None:
            self._journal.write(json.dumps(request_row(rec), default=str) + "\n")

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def phase(self, instance_id: str, model: str, node: str, phase: str, start_s: float, end_s: float,
              tier: str = "", nbytes: int = 0) -> None:
        """Record one finished lifecycle phase of an instance."""
        self.phases.append(PhaseRecord(instance_id=instance_id, model=model, node=node, phase=phase,
                                       start_s=start_s, end_s=end_s, tier=tier, bytes=nbytes))

    def sample(self, metric: str, key: str, value: float) -> None:
        """Record a timeseries sample when the value changed since the last one for ``(metric, key)``."""
        if self._last_sample.get((metric, key)) == value:
            return
        self._last_sample[(metric, key)] = value
        self.timeseries.append(TimeseriesRecord(time_s=self.now_s(), metric=metric, key=key, value=float(value)))

    def capture_scheduler_log(self, logger_name: str = "sllmsim.scheduler") -> None:
        """Start keeping the scheduler's log lines emitted from the calling thread."""
        logger = logging.getLogger(logger_name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        self._capture = _SchedulerLogCapture(self.scheduler_log, threading.get_ident())
        logger.addHandler(self._capture)

    def stop_capture(self, logger_name: str = "sllmsim.scheduler") -> None:
        if self._capture is not None:
            logging.getLogger(logger_name).removeHandler(self._capture)
            self._capture = None

    def to_json(self) -> dict:
        """Everything recorded so far as plain data (``GET /records``)."""
        return {
            "requests": [request_row(r) for r in self.requests],
            "phases": [asdict(p) for p in self.phases],
            "timeseries": [asdict(t) for t in self.timeseries],
            "scheduler_log": list(self.scheduler_log),
        }

    def run_result(self, name: str, resolved_config: dict) -> RunResult:
        """The records as a :class:`RunResult` with ``mode="live"``."""
        return RunResult(name=name, requests=list(self.requests), phases=list(self.phases),
                         timeseries=list(self.timeseries), resolved_config=resolved_config, mode="live",
                         scheduler_log=list(self.scheduler_log))


_REQUEST_FIELDS = [f.name for f in fields(RequestRecord)]


def run_result_from_json(data: dict, name: str, resolved_config: dict | None = None) -> RunResult:
    """Rebuild a :class:`RunResult` from the JSON of ``GET /records`` (e.g. on the client side)."""
    requests = [RequestRecord(**{k: row[k] for k in _REQUEST_FIELDS if k in row}) for row in data["requests"]]
    phases = [PhaseRecord(**row) for row in data["phases"]]
    timeseries = [TimeseriesRecord(**row) for row in data["timeseries"]]
    return RunResult(name=name, requests=requests, phases=phases, timeseries=timeseries,
                     resolved_config=resolved_config or data.get("resolved_config", {}), mode="live",
                     scheduler_log=list(data.get("scheduler_log", [])))
