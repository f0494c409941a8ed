"""The on-disk format of a checkpoint folder in the live model store, and the errors of the store.

A checkpoint folder is a Hugging Face safetensors folder (weights, ``config.json``, tokenizer files)
plus a manifest, written last, that lists its files with their sizes and SHA-256 hashes: a folder
without a readable manifest is not a complete copy. This module reads and writes such folders
(listing what belongs to a checkpoint, copying with hashing and optional throttling, installing a
finished copy in place) and checks model names, which may contain ``/`` (as hub names do) but never
lead outside the folder they are stored under. Where the folders sit is :mod:`live.store`'s business.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from sllmsim.errors import SllmsimError

from live.state_file import fsync_dir, write_bytes_durably

MANIFEST = ".sllmsim-manifest.json"
#: Weight formats other than safetensors are left behind on import: the loader reads safetensors only,
#: and hub folders often hold the same weights twice (``pytorch_model.bin`` next to ``model.safetensors``).
SKIPPED_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".gguf", ".ot"})
_COPY_CHUNK_BYTES = 8 * 1024**2
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_MAX_NAME_CHARS = 200

#: progress(bytes_done, bytes_total)
Progress = Callable[[int, int], None]


class StoreError(SllmsimError):
    """A model store operation failed; the message says what to do."""


class InvalidModelNameError(StoreError):
    """A model name that is not a safe relative path inside the store."""


class ModelNotFoundError(StoreError):
    """A model that is neither a local folder nor in the store."""


class StorageFullError(StoreError):
    """A node's disk (``disk_size``) cannot hold a checkpoint even after evicting unused ones."""


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a safe store name (``opt-1.3b``, ``facebook/opt-1.3b``), else raise.

    Rejects absolute paths, ``..`` and ``.`` segments, backslashes, hidden segments and anything
    outside ``[A-Za-z0-9._+-]`` so that a name can never point outside its folder.
    """
    if not isinstance(name, str) or not name:
        raise InvalidModelNameError(f"model name must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME_CHARS:
        raise InvalidModelNameError(f"model name is longer than {_MAX_NAME_CHARS} characters: {name[:40]!r}...")
    if name.startswith(("/", "~")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise InvalidModelNameError(f"model name {name!r} is an absolute path; a store name is relative, "
                                    "like 'opt-1.3b' or 'facebook/opt-1.3b'")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidModelNameError(f"model name {name!r} has an empty, '.' or '..' segment; it would "
                                        "leave the store folder")
        if not _NAME_PART.match(part):
            raise InvalidModelNameError(f"model name {name!r}: segment {part!r} must be letters, digits and "
                                        "'._+-', not starting with '.'")
    return name


def nested_name(root: Path, name: str) -> str | None:
    """A model stored under ``root`` whose folder would nest with ``name``'s (``a`` and ``a/b``), if any.

    Names are folders: had both been stored, removing ``a`` would delete ``a/b``'s files.
    """
    parts = PurePosixPath(name).parts
    for depth in range(1, len(parts)):
        if (root.joinpath(*parts[:depth]) / MANIFEST).exists():
            return "/".join(parts[:depth])
    folder = root.joinpath(*parts)
    if folder.is_dir():
        for manifest in folder.rglob(MANIFEST):
            if manifest.parent != folder:
                return manifest.parent.relative_to(root).as_posix()
    return None


def model_folder(root: Path, name: str) -> Path:
    """The folder of model ``name`` under ``root`` (a store root, import area or node disk), the name
    validated so that it cannot lead outside ``root``."""
    path = root.joinpath(*PurePosixPath(validate_model_name(name)).parts)
    # Belt and braces: the name rules already forbid escaping, this guards against symlinked roots.
    if not path.resolve().is_relative_to(root.resolve()):
        raise InvalidModelNameError(f"model name {name!r} resolves outside the store folder {root}")
    return path


def _link_roots(folder: Path) -> tuple[Path, ...]:
    """Where the links of a checkpoint folder may point: inside it, and for a Hugging Face cache
    snapshot (``<repo>/snapshots/<revision>``) into its repository's ``blobs`` folder."""
    real = folder.resolve()
    roots = [real]
    if real.parent.name == "snapshots":
        roots.append(real.parent.parent / "blobs")
    return tuple(roots)


def checkpoint_listing(folder: Path) -> dict[str, int]:
    """The files a store copy of ``folder`` holds: relative posix path -> size in bytes.

    Only what belongs to the checkpoint is listed: file links are followed where they resolve
    inside the folder (or, for a Hugging Face cache snapshot, into its ``blobs``); a link that leads
    anywhere else is an error naming it; folder links are never followed (no loops, no copying a
    whole tree by accident). Hidden files and non-safetensors weight formats are skipped.
    """
    roots = _link_roots(folder)
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in list(dirnames):
            if (here / name).is_symlink():
                target = (here / name).resolve()
                if not any(target.is_relative_to(r) for r in roots):
                    raise StoreError(f"{here / name}: a link to {target}, outside the checkpoint folder; "
                                     "remove it or copy what it points to into the folder")
        # Folder links are not followed: one inside the folder names files listed anyway.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink())
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix in SKIPPED_SUFFIXES:
                continue
            path = here / fname
            if path.is_symlink():
                target = path.resolve()
                if not any(target.is_relative_to(r) for r in roots):
                    raise StoreError(f"{path}: a link to {target}, outside the checkpoint folder; remove it or "
                                     "copy what it points to into the folder")
            if path.is_file():
                out[path.relative_to(folder).as_posix()] = path.stat().st_size
    return out


def check_finite_weights(folder: Path) -> None:
    """Raise :class:`StoreError` naming the first floating-point tensor holding NaN or infinity.

    Run once per import (a full read of the weights): such a checkpoint loads without complaint and
    then answers garbage, so it is refused before it enters the store.
    """
    import torch
    from safetensors import safe_open

    from live.loader import checkpoint_files

    for path in checkpoint_files(folder):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = fh.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise StoreError(f"{path}: tensor {name!r} holds NaN or infinite values; the checkpoint is "
                                     "damaged")


class CorruptCopyError(StoreError):
    """A copy whose bytes differ from what was imported (a truncated or changed source)."""


def check_checkpoint_folder(folder: Path) -> None:
    """Raise a clear :class:`StoreError` unless ``folder`` looks like a loadable safetensors checkpoint."""
    from live.loader import CheckpointError, checkpoint_files, read_header

    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: folder does not exist")
    if not (folder / "config.json").is_file():
        raise StoreError(f"{folder}: no config.json; expected a Hugging Face model folder "
                         "(as written by save_pretrained)")
    try:
        for path in checkpoint_files(folder):
            read_header(path)
    except CheckpointError as exc:
        raise StoreError(str(exc)) from None


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete store copy, or None when ``folder`` is not one."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            return data
    except (OSError, ValueError):
        pass
    return None


def manifest_bytes(manifest: Mapping) -> int:
    """The checkpoint bytes a manifest lists."""
    return sum(int(v) for v in manifest["files"].values())


def source_stamp_ns(folder: Path, listing: Mapping[str, int]) -> dict[str, int]:
    """``{relative path: modification time in ns}`` of the listed files of ``folder``."""
    # Modification times tell a regenerated folder from an identical one (sizes alone often match).
    return {rel: (folder / rel).stat().st_mtime_ns for rel in listing}


def copy_checkpoint(src: Path, dst: Path, bandwidth_bytes_per_s: float | None = None,
                    progress: Progress | None = None, source_stamp: bool = False,
                    expected: Mapping | None = None, max_bytes: int | None = None) -> int:
    """Copy checkpoint folder ``src`` to the new folder ``dst`` (real bytes) and write its manifest.

    The manifest records each file's size and SHA-256 (hashed while copying, so an import reads each
    byte once). With ``expected`` (the source's manifest, for a copy between store tiers) the copy
    must match it, file for file, in size and hash, else :class:`CorruptCopyError`: a bad copy is
    never blessed with a manifest of its own. Files keep their permission bits. ``max_bytes`` caps the
    checkpoint's size (checked before copying).

    With ``bandwidth_bytes_per_s`` the copy is throttled: after each chunk it sleeps until the bytes
    sent so far would have taken that long, so it never finishes before size / bandwidth seconds.
    Returns the bytes copied.
    """
    listing = checkpoint_listing(src)
    if expected is not None:
        missing = sorted(set(expected["files"]) - set(listing))
        if missing:
            raise CorruptCopyError(f"{src}: {', '.join(missing[:3])} missing from the stored copy")
        listing = {rel: listing[rel] for rel in expected["files"]}
    total = sum(listing.values())
    if max_bytes is not None and total > max_bytes:
        raise StorageFullError(f"{src}: the checkpoint's {total} bytes exceed the largest node disk "
                               f"({max_bytes} bytes); it could never be placed")
    chunk = _COPY_CHUNK_BYTES
    if bandwidth_bytes_per_s:
        # About 20 sleeps per second keeps a throttled transfer smooth rather than bursty.
        chunk = int(min(_COPY_CHUNK_BYTES, max(64 * 1024, bandwidth_bytes_per_s / 20)))
    buf = memoryview(bytearray(chunk))
    dst.mkdir(parents=True)
    start = time.monotonic()
    done = 0
    hashes: dict[str, str] = {}
    if progress:
        progress(0, total)
    for rel in listing:
        out_path = dst / rel
        out_path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(src / rel, "rb", buffering=0) as fin, open(out_path, "wb", buffering=0) as fout:
            os.fchmod(fout.fileno(), stat.S_IMODE(os.fstat(fin.fileno()).st_mode))
            while n := fin.readinto(buf):
                view = buf[:n]
                digest.update(view)
                while view:
                    view = view[fout.write(view):]
                done += n
                if bandwidth_bytes_per_s:
                    wait_s = start + done / bandwidth_bytes_per_s - time.monotonic()
                    if wait_s > 0:
                        time.sleep(wait_s)
                if progress:
                    progress(done, total)
            os.fsync(fout.fileno())  # on the disk before the manifest says the copy is complete
        hashes[rel] = digest.hexdigest()
    sizes = {rel: (dst / rel).stat().st_size for rel in listing}
    if expected is not None:
        for rel, size in sizes.items():
            want_hash = expected.get("sha256", {}).get(rel)
            if size != int(expected["files"][rel]) or (want_hash is not None and want_hash != hashes[rel]):
                what = f"{size} bytes, imported as {expected['files'][rel]}" if size != int(expected["files"][rel]) \
                    else "its content hash differs from the imported one"
                raise CorruptCopyError(f"{src / rel}: {what}; the stored copy is damaged (re-import the model)")
    manifest = {"files": sizes, "sha256": hashes, "source": str(src)}
    if source_stamp:
        manifest["source_mtime_ns"] = source_stamp_ns(src, listing)
    write_bytes_durably(dst / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return done


def install_folder(tmp: Path, final: Path) -> None:
    """Move a completed copy into place, replacing an old one (which is deleted)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(trash)
    tmp.rename(final)
    fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Delete empty folders from ``path`` up to (not including) ``stop`` (``org/`` of ``org/name``)."""
    path = path.parent
    while path != stop and path.is_relative_to(stop):
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
