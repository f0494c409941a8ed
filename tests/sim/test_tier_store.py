"""TierStore keeps its complete-model set and pinned bytes as it goes; a plain LRU list that
recomputes both from scratch must agree with it after every operation, on random sequences."""

import random

from sllmsim.sim.storage import TierStore


class PlainStore:
    """The straightforward store: an LRU list of [model, size, pins, complete], scanned each time."""

    def __init__(self, capacity_bytes):
        self.capacity_bytes = capacity_bytes
        self.entries = []

    def _find(self, model):
        return next((e for e in self.entries if e[0] == model), None)

    def used(self):
        return sum(e[1] for e in self.entries)

    def models(self):
        return frozenset(e[0] for e in self.entries if e[3])

    def pin(self, model):
        e = self._find(model)
        e[2] += 1
        self.entries.remove(e)
        self.entries.append(e)

    def reserve(self, model, size):
        if self._find(model) is not None:
            self.pin(model)
            return True, []
        free = self.capacity_bytes - self.used()
        if size > free + sum(e[1] for e in self.entries if e[2] == 0):
            return False, []
        evicted = []
        for e in list(self.entries):
            if self.capacity_bytes - self.used() >= size:
                break
            if e[2] == 0:
                self.entries.remove(e)
                evicted.append(e[0])
        self.entries.append([model, size, 1, False])
        return True, evicted

    def finish(self, model):
        e = self._find(model)
        e[2] -= 1
        e[3] = True


def test_tier_store_matches_a_plain_lru_store_on_random_operations():
    rng = random.Random(7)
    for _ in range(200):
        capacity = rng.randint(5, 40)
        fast, plain = TierStore(capacity), PlainStore(capacity)
        names = [f"m{i}" for i in range(rng.randint(2, 12))]
        sizes = {n: rng.randint(1, 12) for n in names}
        writing, reading = [], []
        for name in rng.sample(names, rng.randint(0, len(names))):
            if plain.used() + sizes[name] <= capacity:
                fast.place(name, sizes[name])
                plain.entries.append([name, sizes[name], 0, True])
        for _ in range(60):
            op = rng.random()
            if op < 0.4:
                name = rng.choice(names)
                assert fast.reserve(name, sizes[name]) == plain.reserve(name, sizes[name])
                if plain._find(name) is not None:
                    writing.append(name)
            elif op < 0.6 and writing:
                name = writing.pop(rng.randrange(len(writing)))
                fast.finish(name)
                plain.finish(name)
            elif op < 0.8:
                present = sorted(plain.models())
                if present:
                    name = rng.choice(present)
                    assert fast.has(name)
                    fast.pin(name)
                    plain.pin(name)
                    reading.append(name)
            elif reading:
                name = reading.pop(rng.randrange(len(reading)))
                fast.unpin(name)
                plain._find(name)[2] -= 1
            assert fast.models() == plain.models()
            assert fast.used_bytes == plain.used() <= capacity
            assert fast.used_bytes - fast._pinned_bytes == sum(e[1] for e in plain.entries if e[2] == 0)
