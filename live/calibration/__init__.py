"""`sllmsim calibrate`: measure this machine so that the simulator can stand in for it.

Every quantity the simulator's load and execution models need is measured here through the code
paths live mode itself uses (:mod:`live.loader`, :func:`live.store.copy_checkpoint`,
:func:`live.generation.generate`), each repeated ``repeats`` times and kept as its samples so that
the spread is reported next to the median:

* **disk read** — a probe checkpoint on the store's filesystem, dropped from the page cache
  (``posix_fadvise DONTNEED``) before every read, read by :func:`live.loader.read_checkpoint` into a
  fresh host buffer → ``disk_bandwidth``. A read of the same file from the page cache is reported too.
* **host memory copy** — a bulk copy between two host buffers that are already touched: the machine's
  plain memory bandwidth (reported, not written: the spec has no key for it).
* **host → device** — :func:`live.loader.to_device` of a host buffer (pinned when the device is CUDA)
  to the device, allocation included as in a live load → ``host_bandwidth`` (the spec's host-memory →
  GPU link). On a CPU-only machine the "device" is the CPU and this is the copy live mode makes.
* **network** — live mode has no network between its nodes: a download is a local copy throttled
  to the hardware config's ``network_bandwidth``. Calibration therefore *chooses* that value
  (``network_bandwidth``, default 1 Gbps) and measures that a throttled copy achieves it; the
  configured value is written unless the machine cannot copy that fast, in which case the achieved
  rate is written instead (and said so).
* **per-load overhead** — per model: building it around its tensors (on the meta device, then
  ``load_state_dict(assign=True)``) and loading its tokenizer, fitted over the models with
  ``load_overhead_s + layers · load_overhead_per_layer_s`` (:func:`fit_construction`); and the
  first-request warm-up (the first prefill of a freshly built model minus a later one), reported
  separately because the simulator has no place for it yet.
* **execution speed** — per model: prefill of a prompt of ``prompt_tokens`` tokens timed inside
  :func:`live.generation.generate`, and the decode steps after it (the mean gap between tokens) as
  live mode's server delivers them (:func:`measure_served_steps`; the steps timed in the generation
  loop alone are kept as ``direct_decode_step_s``). The simulator prices a forward pass at
  ``forward_overhead_s + L · forward_overhead_per_layer_s + max(2·P·T / FLOPs, W / B)``
  (:mod:`sllmsim.sim.roofline` plus the node's fixed per-pass costs), so the decode steps of models of
  different widths and depths are fitted with ``forward_overhead_s + L · forward_overhead_per_layer_s
  + W / B`` (:func:`fit_forward_passes`:
  the fixed cost is the framework's work per pass — Python, one dispatch per operator and a dozen
  operators per layer — which dominates small models), and ``gpu_flops`` prices each prefill on top of
  the same fixed cost. The probe models vary width and depth independently so that the two fixed terms
  and the bandwidth can be told apart.
* **per-request serving cost** — the smallest model served by live mode's own server
  (:func:`live.server.create_app`, over HTTP, in this process): warm requests' time to first token
  as the server records it, minus the prefill the fit prices → ``request_overhead_s`` (median).
  The decode steps seen through the server are reported next to the fit's.
* **decode steps against batch size** — every model served by live mode's server with 1, 2, 4 and
  8 requests sent together (its engine runs one forward pass per step for all of them,
  :mod:`live.batching`): the step beyond the same model's step alone and beyond the roofline's own
  batch term is fitted with ``(k − 1) · (decode_overhead_per_sequence_s + L ·
  decode_overhead_per_sequence_per_layer_s)`` (:mod:`sllmsim.fidelity.batch_fit`,
  :mod:`~live.calibration.batch_sweep`).
* **small checkpoints** — a whole model folder's disk read and throttled download beyond
  ``size / bandwidth`` (file opens and creations; reported only).

The result is a hardware JSON in the spec's format (plus the optional keys the simulator reads) with
the same values for every node — live mode's nodes all share this machine — and a sidecar with every
sample, written by :func:`calibration_to_json`.

The package, by concern: :mod:`~live.calibration.recipes` (random-weight probe models),
:mod:`~live.calibration.probes` (storage and copy bandwidths), :mod:`~live.calibration.profiles`
(each model loaded and timed), :mod:`~live.calibration.serving` (the same models through live mode's
server), :mod:`~live.calibration.batch_sweep` (their decode steps against batch size),
:mod:`~live.calibration.results` (what was measured, the hardware JSON and the sidecar) and
:mod:`~live.calibration.run` (the whole calibration, in order). The fits themselves are pure analysis
and live in :mod:`sllmsim.fidelity.pass_fit` and :mod:`sllmsim.fidelity.batch_fit`.
"""

from __future__ import annotations

from live.calibration.recipes import PROBE_MODELS, ModelRecipe, build_model_folder
from live.calibration.results import (Calibration, Measurement, ModelProfile, ServingProfile, calibration_to_json,
                                      gpu_type_for, roofline_check)
from live.calibration.run import PROBE_DIR, calibrate, default_sizes, default_threads, torch_threads
from sllmsim.fidelity.pass_fit import LoadFit, PassFit, fit_construction, fit_forward_passes

__all__ = ["PROBE_DIR", "PROBE_MODELS", "Calibration", "LoadFit", "Measurement", "ModelProfile", "ModelRecipe",
           "PassFit", "ServingProfile", "build_model_folder", "calibrate", "calibration_to_json", "default_sizes",
           "default_threads", "fit_construction", "fit_forward_passes", "gpu_type_for", "roofline_check",
           "torch_threads"]
