"""A fast checkpoint loader: big parallel reads into one host buffer, a model built on the meta device.

``from_pretrained`` memory-maps a safetensors file and moves it tensor by tensor, so a cold file is
read by page faults as tensors are touched, and a GPU load makes one small copy per tensor from
pageable memory. Serving systems load faster by treating a checkpoint as bytes: ServerlessLLM
(Fu et al., OSDI 2024) reads large chunks in parallel into pinned host memory and copies them to
the GPU in bulk. This module does the same with plain Python I/O:

1. :func:`read_checkpoint` parses the safetensors headers (a little-endian u64 length, then JSON)
   and reads every file's data section with large ``preadv`` calls, several in flight, into one
   contiguous host buffer (pinned when the target is a CUDA device), which a caller may reuse
   between loads. Tensors are views into that buffer: no per-tensor allocation or copy.
2. :func:`to_device` copies the whole buffer to the device in one transfer and views it again.
3. :func:`build_model` constructs the transformers model with its parameters on the meta device
   (no allocation, no random init), assigns the tensors with ``load_state_dict(assign=True)`` and
   ties the weights.

:func:`load_model` chains the three for a folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sllmsim.errors import SllmsimError

#: Bytes per read call: large enough that per-call overhead vanishes, small enough to spread a
#: checkpoint over several reads in flight.
READ_CHUNK_BYTES = 16 * 1024**2
#: Reads in flight at once (see :func:`_read_files`).
READ_THREADS = 4
#: Alignment of each file's data section inside the host buffer (a page, so any dtype view is aligned).
_ALIGN_BYTES = 4096
#: A header longer than this is not a safetensors header (real ones are well under 1 MiB per shard).
_MAX_HEADER_BYTES = 100 * 1024**2

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                     ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)


class CheckpointError(SllmsimError):
    """A checkpoint folder that cannot be loaded: missing, truncated or malformed files, or tensors
    that do not fit the model's config."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a host buffer."""

    offset_bytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)


@dataclass(frozen=True)
class _FilePlan:
    path: Path
    data_start_bytes: int
    """Offset of the data section in the file (8 + header length)."""
    data_bytes: int
    buffer_offset_bytes: int
    """Where the data section goes in the host buffer."""


@dataclass
class HostCheckpoint:
    """A checkpoint's tensors in one host buffer: ``tensors`` are views into ``buffer``."""

    buffer: torch.Tensor
    """uint8 host buffer; may be longer than ``nbytes`` when it was reused from a larger load."""
    entries: dict[str, TensorEntry]
    tensors: dict[str, torch.Tensor]
    nbytes: int
    """Bytes of the buffer that hold checkpoint data (including alignment padding between files)."""


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, in load order (an index file's shards, else all)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        files = []
        for name in names:
            path = folder / name
            if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
                raise CheckpointError(f"{index}: shard {name!r} is missing from {folder}")
            files.append(path)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{folder}: no .safetensors files (save the model with save_pretrained(), which writes safetensors)")
    return files


def read_header(path: Path) -> tuple[int, dict[str, TensorEntry], int]:
    """Parse one safetensors file's header: (data start, entries relative to the data section, data bytes).

    Every field is checked against the file size, so a truncated or corrupt file fails here with its
    name instead of later with a cryptic tensor error.
    """
    try:
        file_bytes = path.stat().st_size
        with open(path, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{path}: file is too short to be safetensors ({file_bytes} bytes)")
            (header_bytes,) = struct.unpack("<Q", raw_len)
            if header_bytes == 0 or header_bytes > _MAX_HEADER_BYTES or 8 + header_bytes > file_bytes:
                raise CheckpointError(f"{path}: corrupt safetensors header length {header_bytes} "
                                      f"(file has {file_bytes} bytes)")
            raw = fh.read(header_bytes)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    data_start = 8 + header_bytes
    data_bytes = file_bytes - data_start
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except KeyError as exc:
            if isinstance(info, dict) and "dtype" in info and info["dtype"] not in _DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}") from None
            raise CheckpointError(f"{path}: tensor {name!r} lacks {exc}") from None
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        entry = TensorEntry(begin, dtype, shape)
        if min(shape, default=1) < 0 or not 0 <= begin <= end <= data_bytes or end - begin != entry.nbytes:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({info['dtype']} {list(shape)}) at bytes {begin}..{end} does not fit the "
                f"{data_bytes}-byte data section (truncated or corrupt file)")
        entries[name] = entry
    return data_start, entries, data_bytes


def plan_checkpoint(folder: Path) -> tuple[list[_FilePlan], dict[str, TensorEntry], int]:
    """Lay a checkpoint's files out in one buffer: (file plans, entries by buffer offset, buffer bytes)."""
    plans: list[_FilePlan] = []
    entries: dict[str, TensorEntry] = {}
    cursor = 0
    for path in checkpoint_files(folder):
        data_start, file_entries, data_bytes = read_header(path)
        plans.append(_FilePlan(path, data_start, data_bytes, cursor))
        for name, e in file_entries.items():
            if name in entries:
                raise CheckpointError(f"{path}: tensor {name!r} appears in two shards")
            entries[name] = TensorEntry(cursor + e.offset_bytes, e.dtype, e.shape)
        cursor += -(-data_bytes // _ALIGN_BYTES) * _ALIGN_BYTES
    return plans, entries, cursor


def _read_range(path: Path, fd: int, view: memoryview, file_offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``file_offset`` (looping over short reads)."""
    done = 0
    while done < len(view):
        try:
            n = os.preadv(fd, [view[done:]], file_offset + done)
        except OSError as exc:
            raise CheckpointError(f"{path}: read failed ({exc.strerror})") from None
        if n <= 0:
            raise CheckpointError(f"{path}: file ended at byte {file_offset + done}, before its data section did")
        done += n


def _read_files(plans: list[_FilePlan], whole: memoryview, threads: int) -> None:
    """Read every file's data section into its place in ``whole``, ``threads`` chunks in flight.

    Each chunk is one large ``preadv``; several in flight keep a fast disk's queue busy (one
    synchronous reader leaves an NVMe drive mostly idle) and, from the page cache, use several
    cores for the copy. ``preadv`` releases the GIL, so plain threads suffice.
    """
    fds: list[int] = []
    try:
        jobs = []
        for plan in plans:
            fd = os.open(plan.path, os.O_RDONLY)
            fds.append(fd)
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window
            base = plan.buffer_offset_bytes
            for off in range(0, plan.data_bytes, READ_CHUNK_BYTES):
                n = min(READ_CHUNK_BYTES, plan.data_bytes - off)
                jobs.append((plan.path, fd, whole[base + off:base + off + n], plan.data_start_bytes + off))
        if threads <= 1 or len(jobs) <= 1:
            for job in jobs:
                _read_range(*job)
            return
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix="ckpt-read") as pool:
            for future in [pool.submit(_read_range, *job) for job in jobs]:
                future.result()
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint file: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)


def allocate_host_buffer(nbytes: int, pin: bool) -> torch.Tensor:
    """A uint8 host buffer of ``nbytes``; page-locked when ``pin`` (needs CUDA) for fast device copies."""
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=pin)


def views(buffer: torch.Tensor, entries: dict[str, TensorEntry]) -> dict[str, torch.Tensor]:
    """Tensors viewing ``buffer`` at each entry's offset (no copy)."""
    out = {}
    for name, e in entries.items():
        out[name] = buffer[e.offset_bytes:e.offset_bytes + e.nbytes].view(e.dtype).view(e.shape)
    return out


def read_checkpoint(folder: str | Path, allocate: Callable[[int], torch.Tensor] | None = None,
                    threads: int | None = None) -> HostCheckpoint:
    """Read every safetensors file of ``folder`` into one host buffer and view its tensors.

    ``allocate(nbytes)`` supplies the buffer (e.g. a reused pinned one, at least ``nbytes`` long);
    by default a fresh unpinned buffer is allocated. ``threads`` reads run at once (default
    :data:`READ_THREADS`).
    """
    threads = READ_THREADS if threads is None else threads
    plans, entries, total = plan_checkpoint(Path(folder))
    buffer = (allocate or (lambda n: allocate_host_buffer(n, pin=False)))(total)
    if buffer.dtype != torch.uint8 or buffer.dim() != 1 or buffer.numel() < total or buffer.device.type != "cpu":
        raise ValueError(f"allocate() must return a 1-D uint8 host tensor of at least {total} bytes")
    _read_files(plans, memoryview(buffer.numpy()).cast("B"), threads)
    return HostCheckpoint(buffer=buffer, entries=entries, tensors=views(buffer, entries), nbytes=total)


def to_device(ckpt: HostCheckpoint, device: str | torch.device, dtype: torch.dtype | None = None,
              copy: bool = True) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors on ``device``: one bulk copy of the buffer, then views.

    ``dtype`` converts floating-point tensors (integer and bool tensors keep theirs). With
    ``copy=False`` on a CPU device the host tensors themselves are returned (no copy at all).
    The copy is complete when this returns (CUDA is synchronised), so timings around it are real.
    """
    device = torch.device(device)
    if device.type == "cpu" and not copy and dtype is None:
        return dict(ckpt.tensors)
    non_blocking = device.type == "cuda" and ckpt.buffer.is_pinned()
    on_device = torch.empty(max(ckpt.nbytes, 1), dtype=torch.uint8, device=device)
    on_device.copy_(ckpt.buffer[:max(ckpt.nbytes, 1)], non_blocking=non_blocking)
    tensors = views(on_device, ckpt.entries)
    if dtype is not None:
        # Converting on the device is faster than on the host; the bulk buffer is freed afterwards.
        tensors = {k: (t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t) for k, t in tensors.items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return tensors


# --- building the model -------------------------------------------------------------------------------

_meta_local = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0
_original_register_parameter = nn.Module.register_parameter


def _register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _original_register_parameter(self, name, param)
    if param is not None and getattr(_meta_local, "active", False):
        p = self._parameters[name]
        self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)


#: In-place elementwise ops that weight initialisers use. On a meta tensor they compute nothing, yet
#: torch runs their meta decompositions in Python (milliseconds each); skipping them keeps the tensor
#: exactly as it would have been (same shape, dtype, device); building a 1 GB OPT went from ~0.3 s to ~0.15 s.
_INIT_OPS = frozenset({
    "normal_", "uniform_", "zero_", "zeros_", "ones_", "fill_", "copy_", "constant_", "trunc_normal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "eye_",
    "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "exponential_", "random_", "bernoulli_", "sqrt_",
})


class _SkipInitOnMeta(TorchFunctionMode):
    """Within this (thread-local) mode, initialiser ops whose target is a meta tensor are no-ops."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_OPS:
            # torch.nn.init functions pass their target as ``tensor=``; tensor methods as ``self``.
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within this block, in this thread only, new module parameters go to the meta device.

    Unlike ``with torch.device("meta")``, buffers stay real: non-persistent buffers such as rotary
    frequencies are computed by the module's own ``__init__`` and are not in the checkpoint, so they
    must not be lost. (Accelerate's ``init_empty_weights(include_buffers=False)`` works the same way.)
    The patch of ``nn.Module.register_parameter`` is installed while any thread needs it and only
    changes behaviour for threads inside this block; so does skipping initialisers on meta tensors
    (a torch function mode, which is thread-local).
    """
    global _patch_users
    with _patch_lock:
        if _patch_users == 0:
            nn.Module.register_parameter = _register_parameter
        _patch_users += 1
    _meta_local.active = True
    try:
        with _SkipInitOnMeta():
            yield
    finally:
        _meta_local.active = False
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                nn.Module.register_parameter = _original_register_parameter


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _rename_for_model(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Add or strip the base-model prefix (``model.``) where the checkpoint was saved from the other class."""
    expected = set(model.state_dict().keys())
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or all(k in expected for k in tensors):
        return tensors
    renamed = {}
    for key, t in tensors.items():
        if key not in expected and f"{prefix}.{key}" in expected:
            key = f"{prefix}.{key}"
        elif key not in expected and key.startswith(prefix + ".") and key[len(prefix) + 1:] in expected:
            key = key[len(prefix) + 1:]
        renamed[key] = t
    return renamed


def build_model(folder: str | Path, tensors: dict[str, torch.Tensor], device: str | torch.device,
                dtype: torch.dtype | None = None) -> nn.Module:
    """Build the causal LM of ``folder``'s config with ``tensors`` as its weights, in eval mode.

    The tensors must already be on ``device``; they become the parameters themselves (no copy).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    folder = Path(folder)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot read config.json ({exc})") from None
    if dtype is None:
        dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    dtype_kw = "dtype" if _transformers_major() >= 5 else "torch_dtype"
    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, **{dtype_kw: dtype})
    tensors = _rename_for_model(tensors, model)
    try:
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: tensors do not match config.json ({exc})") from None
    model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise CheckpointError(f"{folder}: checkpoint lacks {len(still_meta)} tensor(s) the model needs, "
                              f"e.g. {', '.join(still_meta[:3])}")
    if result.unexpected_keys:
        raise CheckpointError(f"{folder}: checkpoint has tensor(s) the model does not know, "
                              f"e.g. {', '.join(result.unexpected_keys[:3])}")
    model.to(device)  # moves only the buffers: the parameters already live there
    model.requires_grad_(False)
    if (folder / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    return model.eval()


def load_model(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               allocate: Callable[[int], torch.Tensor] | None = None, threads: int | None = None) -> nn.Module:
    """Read ``folder`` with :func:`read_checkpoint` and build its model on ``device``.

    On a CPU device the parameters are views of the host buffer (no second copy).
    """
    ckpt = read_checkpoint(folder, allocate, threads)
    return build_model(folder, to_device(ckpt, device, dtype, copy=False), device, dtype)
