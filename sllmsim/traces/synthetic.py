"""Synthetic request arrivals: Poisson or bursty Gamma arrivals per model, Zipf model popularity.

Pure, vectorised functions: each takes a seeded :class:`numpy.random.Generator` and returns arrays,
so a million arrivals take a fraction of a second. Nothing here reads a clock or a global RNG.

The entry point for trace YAML ``workloads:`` entries is :func:`generate_workload` (one entry) and
:func:`generate_workloads` (a list of entries, one independent random stream each). Both return the
canonical request stream (:data:`sllmsim.traces.canonical.COLUMNS`) as a DataFrame sorted by time.

A workload entry (every key but ``rate_per_s`` and ``duration_s`` and one of ``model``/``models``
is optional; defaults are in :data:`WORKLOAD_DEFAULTS`)::

    model: opt-1.3b           # one model ...
    models: [a, b, c]         # ... or several, sharing the rate by Zipf popularity
    zipf_s: 1.0               # Zipf exponent for ``models`` (0 = equal shares)
    rate_per_s: 2.0           # mean total arrival rate of this entry
    duration_s: 600           # arrivals fall in [start_s, start_s + duration_s)
    start_s: 0
    arrival: poisson          # or gamma (a renewal process with Gamma inter-arrival gaps)
    cv: 1.0                   # coefficient of variation of the gaps (gamma only; 1 = Poisson)
    input_tokens: 128         # an integer, [low, high] (uniform, inclusive), or a mapping
    output_tokens: 128        #   {distribution: lognormal, mean: 500, cv: 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sllmsim.errors import ConfigError, check_keys
from sllmsim.traces.canonical import COLUMNS, sort_stream

#: Defaults of the optional workload keys; defined here only.
WORKLOAD_DEFAULTS: dict[str, object] = {
    "start_s": 0.0,
    "arrival": "poisson",
    "cv": 1.0,
    "zipf_s": 1.0,
    "input_tokens": 128,
    "output_tokens": 128,
}
WORKLOAD_KEYS = (
    "model", "models", "zipf_s", "rate_per_s", "duration_s", "start_s", "arrival", "cv",
    "input_tokens", "output_tokens",
)
ARRIVALS = ("poisson", "gamma")


def poisson_arrivals(rng: np.random.Generator, rate_per_s: float, duration_s: float,
                     start_s: float = 0.0) -> np.ndarray:
    """Arrival times of a homogeneous Poisson process of ``rate_per_s`` over ``[start_s, start_s + duration_s)``.

    Drawn as a Poisson count followed by that many sorted uniform times, which is exactly the
    Poisson process conditioned on its count and needs no loop.
    """
    if rate_per_s < 0 or duration_s < 0:
        raise ValueError("rate_per_s and duration_s must be non-negative")
    n = int(rng.poisson(rate_per_s * duration_s))
    times = rng.uniform(0.0, duration_s, size=n)
    times.sort()
    return times + start_s


def gamma_arrivals(rng: np.random.Generator, rate_per_s: float, duration_s: float, cv: float,
                   start_s: float = 0.0) -> np.ndarray:
    """Arrival times of a renewal process with Gamma-distributed gaps of mean ``1/rate_per_s`` and CV ``cv``.

    ``cv > 1`` gives bursts separated by long quiet periods (the shape BurstGPT and AlpaServe use
    for bursty serving workloads); ``cv = 1`` is the Poisson process; ``cv < 1`` is more regular.
    The gap shape is ``1/cv**2`` and its scale ``cv**2/rate``. The first arrival comes one gap
    after ``start_s`` (the process starts fresh at ``start_s``, not in equilibrium).
    """
    if rate_per_s < 0 or duration_s < 0:
        raise ValueError("rate_per_s and duration_s must be non-negative")
    if cv <= 0:
        raise ValueError("cv must be positive")
    if rate_per_s == 0 or duration_s == 0:
        return np.empty(0)
    shape = 1.0 / cv**2
    scale = cv**2 / rate_per_s
    expected = rate_per_s * duration_s
    # Draw gaps in a few vectorised batches sized to overshoot the window with high probability.
    chunks: list[np.ndarray] = []
    total = 0.0
    batch = int(expected + 6.0 * cv * np.sqrt(expected) + 16)
    while total < duration_s:
        gaps = rng.gamma(shape, scale, size=batch)
        cum = np.cumsum(gaps) + total
        chunks.append(cum)
        total = float(cum[-1])
        batch = max(16, batch // 4)
    times = np.concatenate(chunks)
    times = times[times < duration_s]
    return times + start_s


def zipf_weights(num_models: int, s: float = 1.0) -> np.ndarray:
    """Zipf popularity shares: model of rank ``r`` (1-based) gets a share proportional to ``r**-s``."""
    if num_models < 1:
        raise ValueError("num_models must be at least 1")
    if s < 0:
        raise ValueError("the Zipf exponent s must be non-negative")
    weights = np.arange(1, num_models + 1, dtype=float) ** (-s)
    return weights / weights.sum()


def assign_models(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """Indices into the model list for ``n`` arrivals, each drawn independently with ``weights``."""
    return rng.choice(len(weights), size=n, p=weights)


def token_counts(rng: np.random.Generator, n: int, spec: object, source: str = "<workload>",
                 field: str = "tokens") -> np.ndarray:
    """``n`` token counts (int64, at least 1) from a spec: an int, ``[low, high]`` or a distribution mapping.

    Mappings: ``{distribution: constant, value}``, ``{distribution: uniform, low, high}`` (inclusive),
    ``{distribution: lognormal, mean, cv}`` (rounded, mean and CV of the un-rounded values).
    """
    if isinstance(spec, bool):
        raise ConfigError(source, field, f"expected a token count, [low, high] or a distribution mapping, got {spec!r}")
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, float) and float(spec).is_integer()):
        value = int(spec)
        if value < 1:
            raise ConfigError(source, field, f"expected a positive token count, got {spec!r}")
        return np.full(n, value, dtype=np.int64)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 2:
            raise ConfigError(source, field, f"expected [low, high], got {spec!r}")
        return token_counts(rng, n, {"distribution": "uniform", "low": spec[0], "high": spec[1]}, source, field)
    if isinstance(spec, Mapping):
        dist = spec.get("distribution")
        if dist == "constant":
            check_keys(spec, ("distribution", "value"), source, f"{field}.")
            return token_counts(rng, n, _positive_int(spec, "value", source, field), source, field)
        if dist == "uniform":
            check_keys(spec, ("distribution", "low", "high"), source, f"{field}.")
            low = _positive_int(spec, "low", source, field)
            high = _positive_int(spec, "high", source, field)
            if high < low:
                raise ConfigError(source, f"{field}.high", f"must be >= low ({low}), got {high}")
            return rng.integers(low, high + 1, size=n, dtype=np.int64)
        if dist == "lognormal":
            check_keys(spec, ("distribution", "mean", "cv"), source, f"{field}.")
            mean = _positive_number(spec, "mean", source, field)
            cv = _positive_number(spec, "cv", source, field)
            sigma2 = np.log1p(cv**2)
            mu = np.log(mean) - sigma2 / 2
            values = np.rint(rng.lognormal(mu, np.sqrt(sigma2), size=n))
            return np.maximum(values, 1).astype(np.int64)
        raise ConfigError(source, f"{field}.distribution",
                          f"expected one of constant, uniform, lognormal, got {dist!r}")
    raise ConfigError(source, field, f"expected a token count, [low, high] or a distribution mapping, got {spec!r}")


def generate_workload(spec: Mapping, rng: np.random.Generator, source: str = "<workload>") -> pd.DataFrame:
    """One trace-YAML ``workloads:`` entry as the canonical request stream (columns :data:`COLUMNS`, sorted).

    ``source`` names the entry in error messages (e.g. ``"trace.yaml: workloads[0]"``). Every bad key
    or value raises :class:`~sllmsim.errors.ConfigError`. The same ``spec`` and generator state give
    the same rows.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(source, "", f"expected a mapping of workload keys, got {type(spec).__name__}")
    check_keys(spec, WORKLOAD_KEYS, source)
    opts = {**WORKLOAD_DEFAULTS, **spec}

    if ("model" in spec) == ("models" in spec):
        raise ConfigError(source, "model", "give exactly one of 'model' (a name) or 'models' (a list of names)")
    if "model" in spec:
        if not isinstance(spec["model"], str) or not spec["model"]:
            raise ConfigError(source, "model", f"expected a model name, got {spec['model']!r}")
        names = [spec["model"]]
    else:
        names = spec["models"]
        if (not isinstance(names, Sequence) or isinstance(names, str) or not names
                or not all(isinstance(m, str) and m for m in names)):
            raise ConfigError(source, "models", f"expected a non-empty list of model names, got {names!r}")
        names = list(names)

    for key in ("rate_per_s", "duration_s"):
        if key not in spec:
            raise ConfigError(source, key, "required")
    rate = _non_negative_number(opts, "rate_per_s", source)
    duration = _non_negative_number(opts, "duration_s", source)
    start = _non_negative_number(opts, "start_s", source)
    zipf_s = _non_negative_number(opts, "zipf_s", source)
    arrival = opts["arrival"]
    if arrival not in ARRIVALS:
        raise ConfigError(source, "arrival", f"expected one of {', '.join(ARRIVALS)}, got {arrival!r}")
    cv = _positive_number(opts, "cv", source)
    if arrival == "poisson" and "cv" in spec and cv != 1.0:
        raise ConfigError(source, "cv", "only meaningful with arrival: gamma (a Poisson process has cv 1)")

    # Separate streams for times, model choice and tokens: changing the token spec must not move arrivals.
    r_times, r_models, r_in, r_out = rng.spawn(4)
    if arrival == "poisson":
        times = poisson_arrivals(r_times, rate, duration, start)
    else:
        times = gamma_arrivals(r_times, rate, duration, cv, start)
    n = len(times)
    if len(names) == 1:
        model_idx = np.zeros(n, dtype=np.int64)
    else:
        model_idx = assign_models(r_models, n, zipf_weights(len(names), zipf_s))
    inp = token_counts(r_in, n, opts["input_tokens"], source, "input_tokens")
    out = token_counts(r_out, n, opts["output_tokens"], source, "output_tokens")
    models = np.asarray(names, dtype=object)[model_idx]
    return pd.DataFrame({"time": times, "model": models,
                         "input_tokens": inp, "output_tokens": out}, columns=COLUMNS)


def generate_workloads(specs: Sequence[Mapping], rng: np.random.Generator,
                       source: str = "<trace>") -> pd.DataFrame:
    """Several ``workloads:`` entries merged into one canonical stream, sorted by time.

    Entry ``i`` draws from its own child of ``rng`` (``rng.spawn``), so adding an entry at the end
    leaves the earlier entries' arrivals unchanged.
    """
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise ConfigError(source, "workloads", f"expected a list of workload mappings, got {type(specs).__name__}")
    children = rng.spawn(len(specs)) if specs else []
    frames = [generate_workload(spec, child, f"{source}: workloads[{i}]")
              for i, (spec, child) in enumerate(zip(specs, children))]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(COLUMNS, ("float64", "object", "int64", "int64"))})
    return sort_stream(pd.concat(frames, ignore_index=True))


def _number(spec: Mapping, key: str, source: str, field_prefix: str = "") -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(source, f"{field_prefix}{key}", f"expected a number, got {value!r}")
    if not np.isfinite(value):
        raise ConfigError(source, f"{field_prefix}{key}", f"expected a finite number, got {value!r}")
    return float(value)


def _non_negative_number(spec: Mapping, key: str, source: str) -> float:
    value = _number(spec, key, source)
    if value < 0:
        raise ConfigError(source, key, f"expected a non-negative number, got {spec[key]!r}")
    return value


def _positive_number(spec: Mapping, key: str, source: str, field: str = "") -> float:
    prefix = f"{field}." if field else ""
    if key not in spec:
        raise ConfigError(source, f"{prefix}{key}", "required")
    value = _number(spec, key, source, prefix)
    if value <= 0:
        raise ConfigError(source, f"{prefix}{key}", f"expected a positive number, got {spec[key]!r}")
    return value


def _positive_int(spec: Mapping, key: str, source: str, field: str) -> int:
    value = _positive_number(spec, key, source, field)
    if not float(value).is_integer():
        raise ConfigError(source, f"{field}.{key}", f"expected a whole number of tokens, got {spec[key]!r}")
    return int(value)
