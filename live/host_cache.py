"""A node's host-memory cache of loaded checkpoints: LRU, never over its capacity, buffers reused.

Each cached checkpoint owns one contiguous host buffer (page-locked when the node's device is a
CUDA GPU, so device copies run at full PCIe speed). Allocating and pinning a large buffer is itself
slow, so buffers of evicted checkpoints go to a free pool and are handed to the next load that fits
them. Cached entries, buffers reserved by loads in progress and pooled buffers all count against the
capacity: the memory the cache holds never exceeds ``capacity_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from live.loader import HostCheckpoint, allocate_host_buffer

#: A pooled buffer is reused only for a load that fills at least this share of it, so one huge
#: buffer does not sit under a small model while the capacity it holds is wanted elsewhere.
_MIN_REUSE_FILL = 0.5


def _size(buffer: torch.Tensor) -> int:
    return buffer.numel()


class HostCache:
    """LRU cache ``model -> HostCheckpoint`` capped at ``capacity_bytes``; thread-safe.

    A load calls :meth:`allocate` for a buffer (evicting least-recently-used entries that no load is
    using), reads into it, then :meth:`insert` s the checkpoint (or :meth:`abandon` s the buffer on
    failure). Readers :meth:`acquire` an entry, which protects it from eviction until :meth:`unuse`.
    """

    def __init__(self, capacity_bytes: int, pin: bool = False):
        self.capacity_bytes = int(capacity_bytes)
        self.pin = pin
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, HostCheckpoint] = OrderedDict()  # oldest first
        self._users: dict[str, int] = {}
        self._reserved_bytes = 0
        self._pool: list[torch.Tensor] = []

    # --- what is cached -----------------------------------------------------------------------------------
    def models(self) -> frozenset[str]:
        """Models whose checkpoint is cached."""
        with self._lock:
            return frozenset(self._entries)

    def __contains__(self, model: str) -> bool:
        with self._lock:
            return model in self._entries

    @property
    def used_bytes(self) -> int:
        """Bytes held: cached entries, buffers of loads in progress and pooled free buffers."""
        with self._lock:
            return self._used_locked()

    @property
    def cached_bytes(self) -> int:
        """Bytes held by cached entries only."""
        with self._lock:
            return sum(_size(c.buffer) for c in self._entries.values())

    def _used_locked(self) -> int:
        return (sum(_size(c.buffer) for c in self._entries.values()) + self._reserved_bytes
                + sum(_size(b) for b in self._pool))

    # --- reading ------------------------------------------------------------------------------------------
    def acquire(self, model: str) -> HostCheckpoint | None:
        """The cached checkpoint (now most recently used and safe from eviction), or None."""
        with self._lock:
            ckpt = self._entries.get(model)
            if ckpt is not None:
                self._entries.move_to_end(model)
                self._users[model] = self._users.get(model, 0) + 1
            return ckpt

    def unuse(self, model: str) -> None:
        """End a use begun by :meth:`acquire` (or by :meth:`insert` with ``use=True``)."""
        with self._lock:
            n = self._users.get(model, 0) - 1
            if n > 0:
                self._users[model] = n
            else:
                self._users.pop(model, None)

    # --- filling ------------------------------------------------------------------------------------------
    def allocate(self, nbytes: int) -> torch.Tensor | None:
        """A host buffer of at least ``nbytes`` reserved against the capacity, or None if it cannot fit
        even after evicting every unused entry (the caller then loads without caching)."""
        nbytes = max(int(nbytes), 1)
        if nbytes > self.capacity_bytes:
            return None
        with self._lock:
            while True:
                buffer = self._take_pooled_locked(nbytes)
                if buffer is not None:
                    self._reserved_bytes += _size(buffer)
                    return buffer
                if self.capacity_bytes - self._used_locked() >= nbytes:
                    self._reserved_bytes += nbytes
                    break
                if self._pool:
                    # No pooled buffer fits this load: give back the largest one's memory.
                    self._pool.remove(max(self._pool, key=_size))
                    continue
                victim = next((m for m in self._entries if m not in self._users), None)
                if victim is None:
                    return None
                self._pool.append(self._entries.pop(victim).buffer)
        try:
            # Allocated outside the lock: pinning gigabytes takes a while.
            return allocate_host_buffer(nbytes, self.pin)
        except BaseException:
            with self._lock:
                self._reserved_bytes -= nbytes
            raise

    def _take_pooled_locked(self, nbytes: int) -> torch.Tensor | None:
        fits = [b for b in self._pool if nbytes <= _size(b) and nbytes >= _MIN_REUSE_FILL * _size(b)]
        if not fits:
            return None
        best = min(fits, key=_size)
        self._pool.remove(best)
        return best

    def insert(self, model: str, ckpt: HostCheckpoint, use: bool = False) -> None:
        """Cache ``ckpt``, whose buffer came from :meth:`allocate`; ``use`` also acquires it."""
        with self._lock:
            self._reserved_bytes -= _size(ckpt.buffer)
            old = self._entries.pop(model, None)
            if old is not None:
                self._pool.append(old.buffer)
            self._entries[model] = ckpt
            if use:
                self._users[model] = self._users.get(model, 0) + 1

    def abandon(self, buffer: torch.Tensor) -> None:
        """Return a buffer from :meth:`allocate` that will not be cached (a failed load)."""
        with self._lock:
            self._reserved_bytes -= _size(buffer)
            self._pool.append(buffer)

    def evict(self, model: str) -> bool:
        """Drop ``model`` (e.g. its disk copy was deleted); False if absent or in use."""
        with self._lock:
            if model not in self._entries or model in self._users:
                return False
            self._pool.append(self._entries.pop(model).buffer)
            return True

    def clear_pool(self) -> None:
        """Free the pooled buffers' memory now."""
        with self._lock:
            self._pool.clear()
