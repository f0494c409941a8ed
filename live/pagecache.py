"""Dropping files from the operating system's page cache, so that a read really comes from the disk.

Linux keeps recently read or written file pages in memory; a "disk" load of a checkpoint that was
just written (by an import, a download or a previous run) is then a memory copy. Both `sllmsim
calibrate` (to measure the disk) and `sllmsim validate` (to start the live run with cold disks, as the
simulator assumes) drop the files first with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no
privileges. Only clean pages can be dropped, so each file is ``fsync``-ed first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def drop_file(path: str | Path) -> bool:
    """Ask the kernel to forget ``path``'s cached pages; False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped; write them back first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def drop_tree(roots: Iterable[str | Path]) -> int:
    """Drop every regular file under ``roots`` (files or folders) from the page cache; returns the count."""
    dropped = 0
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in paths:
            dropped += drop_file(path)
    return dropped
