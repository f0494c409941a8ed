"""Running every point of an experiment: locally in processes, or as Ray tasks; cached by configuration.

Points are independent, so they run in parallel: :class:`concurrent.futures.ProcessPoolExecutor`
by default (``jobs`` workers, default the CPU count), or as Ray tasks on an existing cluster
(``ray_address``; ``ray`` is the optional ``sllmsim[ray]`` extra). Workers return plain data and
the driver writes each point's result to the cache folder, ``<out>/cache/<key>/``, where ``key`` is
:func:`sllmsim.experiments.points.point_key`. A point whose key is already cached is not re-run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sllmsim.errors import SllmsimError
from sllmsim.experiments.points import PointOutcome, PointTask, build_trace, point_key, run_point
from sllmsim.experiments.spec import ExperimentSpec, Point

CACHE_DIR = "cache"
_SUMMARY = "summary.json"
_POINT = "point.json"
_REQUESTS = "requests.parquet"
_TIMESERIES = "timeseries.parquet"


@dataclass
class ExperimentRun:
    """The points of an experiment and their outcomes, in point order."""

    spec: ExperimentSpec
    points: list[Point]
    outcomes: list[PointOutcome]
    ran: int = 0
    """Points simulated in this invocation (the rest came from the cache)."""
    wall_s: list[float] = field(default_factory=list)

    @property
    def violations(self) -> list[tuple[Point, str]]:
        return [(p, v) for p, o in zip(self.points, self.outcomes) for v in o.violations]


def make_tasks(spec: ExperimentSpec) -> tuple[list[Point], list[PointTask]]:
    """Expand the spec into points, validate each distinct configuration once, and key every point."""
    points = spec.points()
    tasks = []
    checked: set[tuple] = set()
    for point in points:
        inputs = spec.inputs(point)
        if point.params not in checked:
            # Validate each configuration here, so a bad value fails before any worker starts; the
            # request converter runs fully once (its parameters vary less than the trace's).
            build_trace(inputs, spec.trace_base_dir, draw=not checked)
            checked.add(point.params)
        tasks.append(PointTask(index=point.index, label=point.label, seed=point.seed, inputs=inputs,
                               base_dir=str(spec.trace_base_dir), key=point_key(inputs)))
    return points, tasks


def run_experiment(spec: ExperimentSpec, out_dir: Path, jobs: int | None = None, ray_address: str | None = None,
                   use_cache: bool = True, progress: bool = True) -> ExperimentRun:
    """Run (or fetch from the cache) every point of ``spec``; results are cached under ``out_dir/cache``."""
    out_dir = Path(out_dir)
    cache = out_dir / CACHE_DIR
    points, tasks = make_tasks(spec)
    todo = [t for t in tasks if not (use_cache and is_cached(cache, t.key))]
    unique: dict[str, PointTask] = {}
    for t in todo:  # two points with identical inputs (e.g. a case equal to the baseline) run once
        unique.setdefault(t.key, t)
    todo = list(unique.values())
    walls = []
    if todo:
        if ray_address is not None:
            stream = _run_ray(todo, ray_address)
        elif (jobs or os.cpu_count() or 1) <= 1 or len(todo) == 1:
            stream = (run_point(t) for t in todo)
        else:
            stream = _run_local(todo, jobs or os.cpu_count() or 1)
        for outcome in _with_progress(stream, len(todo), f"{spec.name}: {len(tasks) - len(todo)} cached", progress):
            write_cached(cache, outcome)
            walls.append(outcome.wall_s)
    outcomes = [read_cached(cache, t.key, t.index) for t in tasks]
    return ExperimentRun(spec=spec, points=points, outcomes=outcomes, ran=len(todo), wall_s=walls)


def _run_local(tasks: list[PointTask], jobs: int) -> Iterator[PointOutcome]:
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        pending = {pool.submit(run_point, t) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()


def _run_ray(tasks: list[PointTask], address: str) -> Iterator[PointOutcome]:
    try:
        import ray
    except ImportError:
        raise SllmsimError("--ray needs Ray: install the extra with `pip install 'sllmsim[ray]'`") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SllmsimError(f"--ray {address}: cannot connect to a Ray cluster: {exc}") from None
    remote = ray.remote(run_point)
    pending = [remote.remote(t) for t in tasks]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield ray.get(ref)


def _with_progress(stream: Iterator[PointOutcome], total: int, what: str, enabled: bool) -> Iterator[PointOutcome]:
    if not enabled:
        yield from stream
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"{what}, running", total=total)
        for outcome in stream:
            bar.advance(task)
            yield outcome


# --------------------------------------------------------------------------- cache


def is_cached(cache: Path, key: str) -> bool:
    """True when the point with this key has a complete cached result."""
    folder = cache / key
    return all((folder / name).is_file() for name in (_SUMMARY, _POINT, _REQUESTS, _TIMESERIES))


def write_cached(cache: Path, outcome: PointOutcome) -> Path:
    """Store one outcome under ``cache/<key>/`` (written to a temporary folder first, then renamed)."""
    folder = cache / outcome.key
    tmp = cache / f".{outcome.key}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / _SUMMARY).write_text(json.dumps(outcome.summary, indent=1, sort_keys=False) + "\n")
    (tmp / _POINT).write_text(json.dumps({"violations": outcome.violations, "wall_s": outcome.wall_s,
                                          **outcome.meta}, indent=1) + "\n")
    outcome.requests.to_parquet(tmp / _REQUESTS, index=False)
    outcome.timeseries.to_parquet(tmp / _TIMESERIES, index=False)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def read_cached(cache: Path, key: str, index: int) -> PointOutcome:
    """Load a cached outcome (``index`` is the point it is read for)."""
    folder = cache / key
    meta = json.loads((folder / _POINT).read_text())
    return PointOutcome(index=index, key=key, summary=json.loads((folder / _SUMMARY).read_text()),
                        violations=list(meta.pop("violations")), requests=pd.read_parquet(folder / _REQUESTS),
                        timeseries=pd.read_parquet(folder / _TIMESERIES), wall_s=float(meta.pop("wall_s")),
                        meta=meta)


def prune_cache(cache: Path, keep: set[str]) -> int:
    """Remove cached points whose key is not in ``keep``; returns how many were removed."""
    if not cache.is_dir():
        return 0
    removed = 0
    for folder in cache.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder)
            removed += 1
    return removed

