"""The simulated side of a validation: the trace as the live run actually replayed it.

The simulator gets the same inputs the live server saw, so that what remains is the simulator's own
error: the calibrated hardware JSON instead of the trace's, each checkpoint's size as stored live
(the tiny models are not in the catalog) and its depth (the per-layer fixed costs need it), each
request's arrival as the live server recorded it (client send jitter included) and its token counts
as live mode tokenized and generated them, and ``loading: sequential`` — live mode finishes each
tier's copy before it starts the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sllmsim.catalog import config_num_layers
from sllmsim.config.deploy import deploy_config_to_dict
from sllmsim.config.trace import TraceConfig, parse_trace
from sllmsim.errors import ConfigError
from sllmsim.fidelity.join import rank_requests
from sllmsim.traces.request_arrays import RequestArrays


def realized_requests(planned: RequestArrays, live_requests: pd.DataFrame) -> pd.DataFrame:
    """The planned requests with the live run's arrival times and token counts (canonical columns).

    Pairs by ``(model, rank)`` as :func:`~sllmsim.fidelity.join.join_requests` does. Live times are
    shifted by one offset, the smallest (live arrival − planned time) over the pairs, so the run
    starts where the trace starts. A request with no live record (refused before admission) keeps its
    planned values; a failed one keeps its planned token counts.
    """
    plan = pd.DataFrame({"time": planned.time_s, "model": planned.model, "input_tokens": planned.input_tokens,
                         "output_tokens": planned.output_tokens})
    plan["arrival_s"] = plan["time"]
    plan["request_id"] = np.arange(len(plan))
    plan = rank_requests(plan)
    live = rank_requests(live_requests)[["model", "rank", "arrival_s", "input_tokens", "output_tokens", "status"]]
    both = plan.merge(live, on=["model", "rank"], how="left", suffixes=("", "_live"))
    seen = both["arrival_s_live"].notna()
    offset = float((both.loc[seen, "arrival_s_live"] - both.loc[seen, "time"]).min()) if seen.any() else 0.0
    out = pd.DataFrame({"time": both["time"], "model": both["model"], "input_tokens": both["input_tokens"],
                        "output_tokens": both["output_tokens"]})
    out.loc[seen, "time"] = both.loc[seen, "arrival_s_live"] - offset
    ok = seen & (both["status"] == "completed")
    got_prompt = seen & (both["input_tokens_live"] > 0)
    out.loc[got_prompt, "input_tokens"] = both.loc[got_prompt, "input_tokens_live"]
    # A model may end its answer at once (end-of-sequence first): the simulator needs one token at least.
    out.loc[ok, "output_tokens"] = both.loc[ok, "output_tokens_live"].clip(lower=1)
    out = out.astype({"input_tokens": "int64", "output_tokens": "int64"})
    return out.sort_values("time", kind="stable").reset_index(drop=True)


def read_trace_mapping(path: str | Path) -> dict:
    """The trace file as a plain mapping (to be edited and re-validated with :func:`parse_trace`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), "", f"cannot read the trace: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "expected a YAML mapping")
    return raw


def model_depths(trace: TraceConfig, recipes: dict[str, dict] | None = None,
                 measured: dict[str, int] | None = None) -> dict[str, int]:
    """Each model's depth where something knows it: the live run's record of the loaded model, its
    recipe, or the ``config.json`` of a local model folder (a ``num_layers`` in the deploy config or
    the catalog is read by the simulator itself)."""
    out = {}
    for cfg in trace.models:
        path = cfg.backend_config.pretrained_model_name_or_path
        depth = (measured or {}).get(cfg.model)
        if depth is None and recipes and path in recipes:
            depth = recipes[path].get("num_layers")
        if depth is None and Path(path).is_dir():
            depth = config_num_layers(path)
        if depth is not None:
            out[cfg.model] = int(depth)
    return out


def simulated_trace(trace_path: str | Path, trace: TraceConfig, hardware_path: str | Path,
                    sizes_bytes: dict[str, int], requests: pd.DataFrame,
                    layers: dict[str, int] | None = None) -> TraceConfig:
    """``trace`` with the calibrated hardware, the stored sizes, the models' depths (where the deploy
    configs do not give them), the realized requests and sequential loading."""
    trace_path = Path(trace_path)
    raw = read_trace_mapping(trace_path)
    models = []
    for cfg in trace.models:
        entry = deploy_config_to_dict(cfg)
        if cfg.model in sizes_bytes:
            entry["checkpoint_size"] = int(sizes_bytes[cfg.model])
        if layers and cfg.model in layers and "num_layers" not in entry:
            entry["num_layers"] = int(layers[cfg.model])
        models.append(entry)
    raw["hardware"] = str(Path(hardware_path).resolve())
    raw["models"] = models
    raw.pop("requests_csv", None)
    raw.pop("workloads", None)
    raw["requests"] = [{"time": float(r.time), "model": str(r.model), "input_tokens": int(r.input_tokens),
                        "output_tokens": int(r.output_tokens)} for r in requests.itertuples(index=False)]
    simulation = dict(raw.get("simulation") or {})
    simulation["loading"] = "sequential"
    simulation.pop("until_s", None)
    raw["simulation"] = simulation
    raw["name"] = f"{trace.name}-simulated"
    return parse_trace(raw, trace_path.parent, source=f"{trace_path} (as replayed live)")
