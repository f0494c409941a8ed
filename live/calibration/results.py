"""What `sllmsim calibrate` measured and what it derives: samples, model and serving profiles, the
hardware JSON and the sidecar (:func:`calibration_to_json`)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from live.calibration.fresh_memory import FreshMemory
from sllmsim.config.hardware import GPU_TYPES
from sllmsim.fidelity.batch_fit import BatchFit, BatchPoint, fit_batch_steps
from sllmsim.fidelity.pass_fit import LoadFit, PassFit, fit_construction, fit_forward_passes
from sllmsim.units import parse_bandwidth_bytes_per_s, rate_text, size_text

_GiB = 1024**3


@dataclass(frozen=True)
class Measurement:
    """One measured quantity: its samples (one per repeat) and what it means."""

    key: str
    label: str
    unit: str
    """``bytes/s``, ``s`` or ``FLOP/s``."""
    samples: tuple[float, ...]
    note: str = ""

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def low(self) -> float:
        return float(min(self.samples))

    @property
    def high(self) -> float:
        return float(max(self.samples))

    @property
    def spread(self) -> float:
        """(max − min) / median: how much the repeats disagree."""
        med = self.median
        return (self.high - self.low) / med if med else math.nan

    def to_json(self) -> dict:
        return {"key": self.key, "label": self.label, "unit": self.unit, "median": self.median,
                "min": self.low, "max": self.high, "spread": self.spread, "samples": list(self.samples),
                "note": self.note}


@dataclass(frozen=True)
class ModelProfile:
    """One model's measured load overheads and execution speed."""

    name: str
    path: str
    weights_bytes: int
    """Bytes of the model's parameters and buffers on the device."""
    dtype_bytes: int
    prompt_tokens: int
    num_layers: int
    """Transformer layers (the config's ``num_hidden_layers``): the per-pass fixed cost follows them."""
    to_device_s: Measurement
    construct_s: Measurement
    """Building the model around its tensors plus loading the tokenizer."""
    warmup_s: Measurement
    """First prefill of a freshly built model minus the steady prefill."""
    prefill_s: Measurement
    decode_step_s: Measurement
    """Mean gap between consecutive tokens of one request, per repeat (served through live mode's
    server when :func:`measure_served_steps` ran, else timed in the generation loop directly)."""
    direct_decode_step_s: Measurement | None = None
    """The decode steps timed in the generation loop directly, when ``decode_step_s`` is the served one."""

    @property
    def num_params(self) -> float:
        return self.weights_bytes / self.dtype_bytes

    @property
    def flops_per_s(self) -> float:
        """Effective FLOP/s of the prefill: ``2 · params · prompt tokens / prefill time``."""
        return 2.0 * self.num_params * self.prompt_tokens / self.prefill_s.median

    @property
    def memory_bytes_per_s(self) -> float:
        """Effective memory bandwidth of a decode step: ``weights bytes / step time``."""
        return self.weights_bytes / self.decode_step_s.median

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "weights_bytes": self.weights_bytes,
                "dtype_bytes": self.dtype_bytes, "prompt_tokens": self.prompt_tokens, "num_layers": self.num_layers,
                "effective_flops_per_s": self.flops_per_s, "effective_memory_bytes_per_s": self.memory_bytes_per_s,
                "to_device_s": self.to_device_s.to_json(), "construct_s": self.construct_s.to_json(),
                "warmup_s": self.warmup_s.to_json(), "prefill_s": self.prefill_s.to_json(),
                "decode_step_s": self.decode_step_s.to_json(),
                "direct_decode_step_s": self.direct_decode_step_s.to_json() if self.direct_decode_step_s else None}


@dataclass
class Calibration:
    """Everything one `sllmsim calibrate` measured, and the hardware values derived from it."""

    device: str
    device_name: str
    torch_threads: int
    measurements: dict[str, Measurement]
    models: list[ModelProfile]
    network_bandwidth_bytes_per_s: float
    """The network bandwidth written (configured, or achieved when the machine is slower)."""
    host_size_bytes: int
    disk_size_bytes: int
    notes: list[str] = field(default_factory=list)
    load_average_1min: list[float] = field(default_factory=list)
    """The machine's one-minute load average when the calibration started and ended."""
    serving: ServingProfile | None = None
    """Warm requests through the real server (the source of ``request_overhead_s``)."""
    small_checkpoint: dict[str, Measurement] = field(default_factory=dict)
    """Fixed costs of reading and downloading a whole (small) model folder, reported only."""
    batch_points: list[BatchPoint] = field(default_factory=list)
    """Each model's decode step at each batch size of the sweep (:mod:`live.calibration.batch_sweep`)."""
    batch_samples: list[Measurement] = field(default_factory=list)
    """The samples behind :attr:`batch_points`."""
    num_gpus: int = 1
    """``num_gpus`` written for every node (chosen, not measured: live mode's nodes share the device)."""
    fresh_memory: FreshMemory | None = None
    """The fresh-device-memory term (:mod:`live.calibration.fresh_memory`); None on CUDA or where no chunk was slow."""

    @property
    def batch_fit(self) -> BatchFit | None:
        """The per-extra-sequence decode cost fitted to the sweep (None when it did not run)."""
        return fit_batch_steps(self.batch_points) if self.batch_points else None

    @property
    def fit(self) -> PassFit:
        """The forward-pass constants fitted to the models (see :func:`fit_forward_passes`)."""
        return fit_forward_passes(self.models)

    @property
    def request_overhead_s(self) -> float | None:
        """Median over warm served requests of TTFT minus the modelled prefill (0 when negative:
        the server then costs less than the fit's own error); None when serving was not measured."""
        if self.serving is None:
            return None
        return max(0.0, self.serving.request_overhead_s.median)

    @property
    def load_fit(self) -> LoadFit:
        """The fixed load cost fitted to the models' constructions (see :func:`fit_construction`)."""
        return fit_construction(self.models)

    @property
    def load_overhead_s(self) -> float:
        """Fixed seconds of every load beyond the per-layer part: measured through the server where it
        was (the served loads' fixed part less the per-layer cost of the model's layers), else the
        intercept of the construction fit."""
        fit, sv = self.load_fit, self.serving
        if sv is not None and sv.load_fixed_s is not None:
            return max(0.0, sv.load_fixed_s.median - fit.load_overhead_per_layer_s * sv.num_layers)
        return fit.load_overhead_s

    @property
    def warmup_s(self) -> float:
        return float(np.median([m.warmup_s.median for m in self.models]))

    def gpu_type(self) -> str:
        return gpu_type_for(self.device, self.device_name)

    def hardware(self, node_ids: Sequence[str] = ("0", "1")) -> dict:
        """The hardware JSON (spec keys plus the simulator's optional ones), one entry per node."""
        m = self.measurements
        node = {
            "host_size": size_text(self.host_size_bytes),
            "host_bandwidth": rate_text(m["host_to_device_bytes_per_s"].median),
            "disk_size": size_text(self.disk_size_bytes),
            "disk_bandwidth": rate_text(m["disk_read_bytes_per_s"].median),
            "network_bandwidth": rate_text(self.network_bandwidth_bytes_per_s),
            "num_gpus": self.num_gpus,
            "gpu": self.gpu_type(),
        }
        aggregate = disk_aggregate_text(m)
        if aggregate is not None:
            node["disk_aggregate_bandwidth"] = aggregate
        if self.models:
            load, fit = self.load_fit, self.fit
            node["load_overhead_s"] = round(self.load_overhead_s, 5)
            node["load_overhead_per_layer_s"] = round(load.load_overhead_per_layer_s, 6)
            node["gpu_memory_bandwidth"] = rate_text(fit.memory_bytes_per_s)
            node["gpu_flops"] = float(f"{fit.flops_per_s:.4g}")
            node["forward_overhead_s"] = round(fit.forward_overhead_s, 6)
            node["forward_overhead_per_layer_s"] = round(fit.forward_overhead_per_layer_s, 7)
        if self.request_overhead_s is not None:
            node["request_overhead_s"] = round(self.request_overhead_s, 5)
        batch = self.batch_fit
        if batch is not None:
            node["decode_overhead_per_sequence_s"] = round(batch.decode_overhead_per_sequence_s, 7)
            per_layer = batch.decode_overhead_per_sequence_per_layer_s
            node["decode_overhead_per_sequence_per_layer_s"] = round(per_layer, 8)
        if self.fresh_memory is not None:
            node["fresh_memory_bandwidth"] = rate_text(self.fresh_memory.fresh_bytes_per_s)
            node["warm_memory_size"] = size_text(self.fresh_memory.warm_bytes)
        return {str(n): dict(node) for n in node_ids}


def disk_aggregate_text(measurements: dict[str, Measurement]) -> str | None:
    """``disk_aggregate_bandwidth`` for the hardware JSON: the median rate in all of two reads at once,
    where it is above one read's (as written, so the file parses); None where it is not, or was not
    measured (the disk's bandwidth is then shared as one)."""
    pair = measurements.get("disk_pair_read_bytes_per_s")
    if pair is None:
        return None
    single_text, pair_text = rate_text(measurements["disk_read_bytes_per_s"].median), rate_text(pair.median)
    if parse_bandwidth_bytes_per_s(pair_text) <= parse_bandwidth_bytes_per_s(single_text):
        return None
    return pair_text


def gpu_type_for(device: str, device_name: str) -> str:
    """The GPU table entry closest to the device: ``CPU`` for the CPU, else by name (H100, A100…)."""
    if torch.device(device).type != "cuda":
        return "CPU"
    name = device_name.upper()
    for key in ("H100", "A100", "A40", "A5000", "L4"):
        if key in name:
            matches = [g for g in GPU_TYPES if g.startswith(key)]
            if key == "A100" and len(matches) > 1:
                total = torch.cuda.get_device_properties(torch.device(device)).total_memory
                return "A100-80GB" if total > 48 * _GiB else "A100-40GB"
            return matches[0]
    return "H100-80GB"  # an unknown CUDA GPU: the calibrated bandwidth and FLOP/s replace the table's anyway


def sample(key: str, label: str, unit: str, samples: list[float], note: str = "") -> Measurement:
    """A :class:`Measurement` of ``samples`` (as floats)."""
    return Measurement(key, label, unit, tuple(float(s) for s in samples), note)




@dataclass(frozen=True)
class ServingProfile:
    """Warm requests to one model through live mode's real server, against the fitted pass model."""

    name: str
    weights_bytes: int
    ttft_s: Measurement
    """Time to first token of each warm request as the server records it (arrival to first token)."""
    modelled_prefill_s: tuple[float, ...]
    """Each request's prefill as the fit prices it (its recorded prompt tokens)."""
    request_overhead_s: Measurement
    """``ttft_s − modelled_prefill_s`` per request: serving time the pass model does not price."""
    decode_step_s: Measurement
    """Mean gap between tokens of each request, through the server."""
    modelled_step_s: float
    num_layers: int = 0
    load_s: Measurement | None = None
    """Loads of the model from host memory through the server (its records' load phases)."""
    load_fixed_s: Measurement | None = None
    """``load_s − bytes / host_bandwidth`` per load: the fixed part of a load as the server pays it."""

    def to_json(self) -> dict:
        return {"name": self.name, "weights_bytes": self.weights_bytes, "num_layers": self.num_layers,
                "ttft_s": self.ttft_s.to_json(), "modelled_prefill_s": list(self.modelled_prefill_s),
                "request_overhead_s": self.request_overhead_s.to_json(),
                "decode_step_s": self.decode_step_s.to_json(), "modelled_step_s": self.modelled_step_s,
                "load_s": self.load_s.to_json() if self.load_s else None,
                "load_fixed_s": self.load_fixed_s.to_json() if self.load_fixed_s else None}



def roofline_check(cal: Calibration) -> dict:
    """Each model's prefill, decode step and construction as the simulator prices them with the written
    constants, next to the measurement: how well the fixed costs, one FLOP/s and one bandwidth describe
    every model."""
    fit, load = cal.fit, cal.load_fit
    out = {}
    for p in cal.models:
        prefill = fit.prefill_s(p.num_params, p.prompt_tokens, p.weights_bytes, p.num_layers)
        step = fit.step_s(p.weights_bytes, p.num_layers)
        construct = load.fixed_s(p.num_layers)
        out[p.name] = {"num_layers": p.num_layers,
                       "prefill_measured_s": p.prefill_s.median, "prefill_model_s": prefill,
                       "prefill_error": prefill / p.prefill_s.median - 1.0,
                       "decode_step_measured_s": p.decode_step_s.median, "decode_step_model_s": step,
                       "decode_step_error": step / p.decode_step_s.median - 1.0,
                       "construct_measured_s": p.construct_s.median, "construct_model_s": construct,
                       "construct_error": construct / p.construct_s.median - 1.0}
    return out


def calibration_to_json(cal: Calibration, node_ids: Sequence[str] = ("0", "1")) -> dict:
    """The sidecar: every sample, the derived hardware values and where each came from."""
    fit = cal.fit if cal.models else None
    serving = cal.serving
    return {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": cal.device,
                    "device_name": cal.device_name, "torch": torch.__version__, "torch_threads": cal.torch_threads,
                    "load_average_1min": list(cal.load_average_1min)},
        "torch_threads": cal.torch_threads,
        "device": cal.device,
        "hardware": cal.hardware(node_ids),
        "derived": {
            "host_bandwidth": "median of host_to_device_bytes_per_s",
            "disk_bandwidth": "median of disk_read_bytes_per_s",
            "disk_aggregate_bandwidth": "median of disk_pair_read_bytes_per_s, written only where it is above "
                                        "disk_bandwidth (two readers got more than one)",
            "fresh_memory_bandwidth": "kept probe-size allocations after a pause (fresh_memory.rates_bytes_per_s): "
                                      "the slow chunks' median rate less the copy host_bandwidth prices",
            "warm_memory_size": "the bytes allocated before the first chunk under half of host_bandwidth",
            "network_bandwidth": "configured value (live mode throttles its copies to it), checked by "
                                 "network_copy_bytes_per_s",
            "load_overhead_s": "median over the smallest model's loads from host memory through live mode's server "
                               "(serving.load_fixed_s: load − bytes / host_bandwidth) less load_overhead_per_layer_s "
                               "× its layers; without serving, the intercept of the construction fit (load_fit)",
            "load_overhead_per_layer_s": "fit construct_s = fixed + layers · load_overhead_per_layer_s over the models "
                                         "(non-negative relative least squares; see load_fit.method)",
            "forward_overhead_s": "fit decode_step_s = forward_overhead_s + layers · forward_overhead_per_layer_s + "
                                  "weights bytes / gpu_memory_bandwidth over the models (non-negative relative least "
                                  "squares; see pass_fit.method)",
            "forward_overhead_per_layer_s": "the same fit's per-layer coefficient",
            "gpu_memory_bandwidth": "one over the same fit's weights coefficient",
            "gpu_flops": "geometric mean over the models of 2 · params · prompt tokens / (prefill_s − the fit's "
                         "fixed cost for the model's layers)",
            "request_overhead_s": "median over warm requests served by live mode's server (serving) of time to "
                                  "first token minus the prefill the written constants price",
            "decode_overhead_per_sequence_s": "fit over the batch sweep (batch_sweep.points): each model's decode "
                                              "step with k requests together = its step alone + the roofline's own "
                                              "growth + (k − 1) · (decode_overhead_per_sequence_s + layers · "
                                              "decode_overhead_per_sequence_per_layer_s) (non-negative relative "
                                              "least squares; see batch_sweep.fit.method)",
            "decode_overhead_per_sequence_per_layer_s": "the same fit's per-layer coefficient",
            "warmup_s_not_modelled": cal.warmup_s if cal.models else None,
        },
        "measurements": [m.to_json() for m in cal.measurements.values()],
        "models": [p.to_json() for p in cal.models],
        "pass_fit": fit.to_json() if fit else None,
        "load_fit": cal.load_fit.to_json() if fit else None,
        "roofline_check": roofline_check(cal) if fit else {},
        "serving": serving.to_json() if serving else None,
        "small_checkpoint": {k: m.to_json() for k, m in cal.small_checkpoint.items()},
        "fresh_memory": None if cal.fresh_memory is None else cal.fresh_memory.to_json(),
        "batch_sweep": _batch_sweep_json(cal),
        "notes": list(cal.notes),
    }


def _batch_sweep_json(cal: Calibration) -> dict | None:
    """The sweep's points with the fit's prediction for each, the fit and every sample."""
    fit = cal.batch_fit
    if fit is None:
        return None
    points = [{**pt.to_json(), "model_step_s": fit.step_s(pt), "error": fit.step_s(pt) / pt.step_s - 1.0}
              for pt in cal.batch_points]
    return {"fit": fit.to_json(), "points": points, "samples": [m.to_json() for m in cal.batch_samples]}
