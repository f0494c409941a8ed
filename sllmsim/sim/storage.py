"""A node's checkpoint store in one tier (local disk or host memory): LRU, never over capacity.

Space for a checkpoint is reserved when a load starts writing it, so concurrent loads cannot
overcommit the tier; the entry counts as *present* (visible to the scheduler) only once the copy is
complete. Entries being read or written are pinned and never evicted. When a checkpoint cannot fit
even after evicting every unpinned entry, the load streams through without keeping a copy.
"""

from __future__ import annotations

from collections import OrderedDict


class _Entry:
    __slots__ = ("size_bytes", "pins", "complete")

    def __init__(self, size_bytes: int, complete: bool):
        self.size_bytes = size_bytes
        self.pins = 0
        self.complete = complete


class TierStore:
    """Checkpoints held in one tier of one node, least recently used first."""

    __slots__ = ("capacity_bytes", "used_bytes", "_entries", "_complete", "_models", "_pinned_bytes")

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._complete: set[str] = set()
        """Models with a complete copy here, kept as entries complete and leave (scanning every
        entry for each new scheduler view was a large part of a placement on many models)."""
        self._models: frozenset[str] | None = frozenset()
        """:meth:`models` until the set changes (None: to rebuild)."""
        self._pinned_bytes = 0
        """Bytes of the entries with at least one pin (what no eviction may free)."""

    def has(self, model: str) -> bool:
        """True when a complete copy of ``model`` is here."""
        entry = self._entries.get(model)
        return entry is not None and entry.complete

    def models(self) -> frozenset[str]:
        """Models with a complete copy here."""
        models = self._models
        if models is None:
            models = self._models = frozenset(self._complete)
        return models

    def place(self, model: str, size_bytes: int) -> None:
        """Put a complete copy here at time 0 (the caller has checked the capacity)."""
        if model not in self._entries:
            self._entries[model] = _Entry(size_bytes, complete=True)
            self.used_bytes += size_bytes
            self._completed(model)

    def pin(self, model: str) -> None:
        """Mark ``model`` as in use (being read) and most recently used."""
        entry = self._entries[model]
        if not entry.pins:
            self._pinned_bytes += entry.size_bytes
        entry.pins += 1
        self._entries.move_to_end(model)

    def unpin(self, model: str) -> None:
        """One reader or writer of ``model`` is done with it."""
        entry = self._entries[model]
        entry.pins -= 1
        if not entry.pins:
            self._pinned_bytes -= entry.size_bytes

    def reserve(self, model: str, size_bytes: int) -> tuple[bool, list[str]]:
        """Reserve space for a copy of ``model`` being written, pinned; evicts LRU unpinned entries.

        Returns (reserved, evicted models). When a copy is already here or being written, it is
        pinned (no second copy). When the copy cannot fit, nothing is evicted and nothing reserved.
        """
        entry = self._entries.get(model)
        if entry is not None:
            self.pin(model)
            return True, []
        free = self.capacity_bytes - self.used_bytes
        if size_bytes > free:
            evictable = self.used_bytes - self._pinned_bytes
            if size_bytes > free + evictable:
                return False, []
        evicted = []
        if size_bytes > free:
            # The least recently used unpinned entries until the copy fits, found without copying
            # the whole store (it holds hundreds of checkpoints on many models), then removed.
            short = size_bytes - free
            entries = self._entries
            for name, victim in entries.items():
                if not victim.pins:
                    evicted.append(name)
                    short -= victim.size_bytes
                    if short <= 0:
                        break
            for name in evicted:
                victim = entries.pop(name)
                self.used_bytes -= victim.size_bytes
                if victim.complete:
                    self._complete.discard(name)
        entry = _Entry(size_bytes, complete=False)
        entry.pins = 1
        self._entries[model] = entry
        self.used_bytes += size_bytes
        self._pinned_bytes += size_bytes
        if evicted:
            self._models = None
        return True, evicted

    def finish(self, model: str) -> None:
        """The copy being written is complete; unpins the writer."""
        self.unpin(model)
        entry = self._entries[model]
        if not entry.complete:
            entry.complete = True
            self._completed(model)

    def _completed(self, model: str) -> None:
        self._complete.add(model)
        self._models = None
