"""The record format shared by the simulator and live mode.

Both runtimes emit one :class:`RequestRecord` per request and one :class:`PhaseRecord` per instance
lifecycle phase; :mod:`sllmsim.metrics` turns them into DataFrames and summaries. All times are in
seconds from the start of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from operator import attrgetter
from enum import Enum
from pathlib import Path

from sllmsim.record_csv import write_csv


class Phase(str, Enum):
    """Lifecycle phases of an instance, in order; each is recorded with a start and an end (except
    ``loading`` and ``releasing``: live mode's coarse states, never recorded)."""

    QUEUED = "queued"
    """Waiting for the node's loading queue (or a free GPU)."""
    DOWNLOADING = "downloading"
    """Fetching the checkpoint over the network to local disk."""
    LOADING_TO_HOST = "loading_to_host"
    """Reading the checkpoint from local disk into host memory."""
    LOADING_TO_GPU = "loading_to_gpu"
    """Copying the checkpoint from host memory to the device."""
    READY = "ready"
    """Serving at least one request."""
    IDLE = "idle"
    """Loaded, serving nothing, waiting out its keep-alive."""
    RELEASED = "released"
    """Unloaded; the GPUs are free again (a zero-length phase marking the end)."""
    MIGRATING = "migrating"
    """Live migration source: still serving its requests while another node loads the model and
    resumes them; ends at the hand-over, when the instance is released."""
    RESUMING = "resuming"
    """Live migration destination, loaded: re-computing the KV cache of the migrated requests from
    their tokens, in catch-up rounds; ends at the hand-over, when it starts serving them."""
    PREEMPTED = "preempted"
    """Stopped to free its GPUs for another model; its requests were re-queued (a zero-length phase
    just before ``released``)."""
    # Live mode's coarse states of an instance (live/state.py): an instance in them is between
    # recorded phases, so no record carries them and nothing iterates them into a report.
    LOADING = "loading"
    """Live mode: placed and starting; its recorded phases meanwhile are ``queued`` and the load phases."""
    RELEASING = "releasing"
    """Live mode: chosen for release and unloading; ``released`` is recorded when it is gone."""


@dataclass(slots=True)
class RequestRecord:
    """One request's life. Columns of ``requests.csv``."""

    request_id: int
    model: str
    arrival_s: float
    input_tokens: int
    output_tokens: int
    status: str = "completed"
    """``completed`` or ``failed``."""
    reason: str = ""
    """Why a failed request failed."""
    queued_until_s: float | None = None
    """When an instance started serving it (its prefill began)."""
    first_token_s: float | None = None
    finish_s: float | None = None
    node: str = ""
    instance_id: str = ""
    cold_start: bool = False
    """True when the request had to wait for an instance to load."""
    tier: str = ""
    """Where the serving instance's checkpoint came from: gpu (warm), host, disk or network."""
    migrated: bool = False

    @property
    def latency_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s


@dataclass(slots=True)
class PhaseRecord:
    """One lifecycle phase of one instance. Columns of ``instances.csv``."""

    instance_id: str
    model: str
    node: str
    phase: str
    start_s: float
    end_s: float
    tier: str = ""
    bytes: int = 0


#: Columns of requests.csv: the record's fields plus the derived latency_s and ttft_s.
REQUEST_COLUMNS = [
    "request_id", "model", "arrival_s", "input_tokens", "output_tokens", "status", "reason",
    "queued_until_s", "first_token_s", "finish_s", "latency_s", "ttft_s", "node", "instance_id",
    "cold_start", "tier", "migrated",
]
PHASE_COLUMNS = [f.name for f in fields(PhaseRecord)]


def request_row(rec: RequestRecord) -> dict:
    """One request as a mapping of the requests.csv columns (derived columns included)."""
    return dict(zip(REQUEST_COLUMNS, _REQUEST_GETTER(rec)))


# attrgetter reads every column in one C call; asdict() per row made the writers 3x slower.
_REQUEST_GETTER = attrgetter(*REQUEST_COLUMNS)
_PHASE_GETTER = attrgetter(*PHASE_COLUMNS)


def _write_csv(path: Path, columns: list[str], getter: attrgetter, records: Iterable) -> None:
    # Byte-identical to csv.writer over plain_field() of every value (tests/test_record_csv.py).
    write_csv(path, columns, getter, records)


def write_requests_csv(path: Path, records: Iterable[RequestRecord]) -> None:
    """Write ``requests.csv`` with the documented columns."""
    _write_csv(path, REQUEST_COLUMNS, _REQUEST_GETTER, records)


def write_phases_csv(path: Path, records: Iterable[PhaseRecord]) -> None:
    """Write ``instances.csv`` with the documented columns."""
    _write_csv(path, PHASE_COLUMNS, _PHASE_GETTER, records)


@dataclass(slots=True)
class TimeseriesRecord:
    """One sample of a cluster quantity, written whenever it changes. Rows of ``timeseries.csv``.

    ``metric`` is one of ``instances`` (key = model: instances not released), ``gpus_busy``
    (key = node), ``host_used_bytes`` (key = node) or ``disk_used_bytes`` (key = node); runs that
    preempt also write the running totals ``preempted_requests`` (key = model: requests stopped and
    re-queued) and ``preempted_tokens`` (key = model: prompt and generated tokens they had computed).
    """

    time_s: float
    metric: str
    key: str
    value: float


TIMESERIES_COLUMNS = [f.name for f in fields(TimeseriesRecord)]


def write_timeseries_csv(path: Path, records: Iterable[TimeseriesRecord]) -> None:
    """Write ``timeseries.csv`` with the documented columns."""
    _write_csv(path, TIMESERIES_COLUMNS, attrgetter(*TIMESERIES_COLUMNS), records)


@dataclass
class RunResult:
    """Everything one run (simulated or live) produced; :mod:`sllmsim.output` writes it as a run folder."""

    name: str
    requests: list[RequestRecord]
    phases: list[PhaseRecord]
    timeseries: list[TimeseriesRecord]
    resolved_config: dict
    """The fully resolved inputs (hardware, deploy configs, scheduler, seed, options) as plain data."""
    mode: str = "sim"
    """``sim`` or ``live``."""
    scheduler_log: list[str] = field(default_factory=list)
    """The scheduler's log lines (``Sorted scheduling options: ...``) in order."""
