"""Durable state files of the live server's store: atomic, fsynced writes that keep the previous
version, and a lock so that one server at a time uses a store.

A state file is written to a temporary file, flushed to the disk, then renamed over the old one
(whose previous content is kept next to it as ``<name>.bak``); the folder is fsynced so the rename
itself survives a crash. A reader that finds the file unreadable falls back to the ``.bak`` copy and
keeps the bad file (renamed ``<name>.corrupt``) for the operator instead of overwriting it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from sllmsim.errors import SllmsimError

logger = logging.getLogger("sllmsim.live")

#: File in the store folder that the running server holds locked.
LOCK_FILE = ".sllmsim-server.lock"


class StoreLockedError(SllmsimError):
    """Another server uses the store folder."""


class StateWriteError(SllmsimError):
    """A state file could not be written (full disk, read-only folder); nothing was changed (HTTP 500)."""


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(path: Path, data: bytes) -> None:
    """Write ``path`` so that a crash leaves either the old content or the new, never a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_state(path: Path, data: dict) -> None:
    """Write the JSON state file ``path`` durably, keeping its previous content as ``<name>.bak``.

    Raises :class:`StateWriteError` with the reason.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(data, indent=2).encode()
        if path.exists():
            write_bytes_durably(path.with_name(path.name + ".bak"), path.read_bytes())
        write_bytes_durably(path, payload)
    except OSError as exc:
        raise StateWriteError(f"cannot save the server's state to {path.name}: {exc.strerror or exc}") from None


def read_state(path: Path) -> dict | None:
    """The JSON object in ``path`` (None when there is none); an unreadable file is set aside as
    ``<name>.corrupt`` and its ``.bak`` copy used instead (logged)."""
    backup = path.with_name(path.name + ".bak")
    for candidate in (path, backup):
        if not candidate.exists():
            continue
        try:
            data = json.loads(candidate.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if candidate is backup:
                logger.warning("using the previous state file %s", backup)
            return data
        except (OSError, ValueError) as exc:
            kept = candidate.with_name(candidate.name + ".corrupt")
            logger.error("cannot read %s (%s); kept as %s", candidate, exc, kept.name)
            try:
                os.replace(candidate, kept)
            except OSError:
                pass
    return None


class StoreLock:
    """An exclusive lock on a store folder, held while a server uses it (released by :meth:`release`
    or when the process ends, however it ends)."""

    def __init__(self, storage_dir: str | Path):
        folder = Path(storage_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise StoreLockedError(f"the store {folder} is in use by another sllmsim live server (pid {holder}); "
                                   "stop it or use another --storage") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
