"""WaitingIndex: a release looks only at the waiting instances that can fit, in the same order as a
scan of the whole waiting list."""

from __future__ import annotations

import random
from types import SimpleNamespace

from sllmsim.sim.state import QUEUED, RELEASED, WaitingIndex


def _instance(num, gpus):
    return SimpleNamespace(num=num, deployment=SimpleNamespace(num_gpus=gpus), node=None, phase=QUEUED)


def _walk(rng, free, visit_all):
    """Drive one walk: each visited instance is placed with probability 1/2 (taking its GPUs from
    the freest node's count, as a placement does), else it stays waiting (say target_nodes)."""
    visited = []

    def on_visit(inst):
        visited.append(inst.num)
        if rng.random() < 0.5:
            free[0] -= inst.deployment.num_gpus
            return True
        return False

    visit_all(lambda gpus: gpus <= free[0], on_visit)
    return visited


def test_walks_visit_what_a_full_scan_visits_in_the_same_order():
    rng = random.Random(7)
    for trial in range(200):
        index = WaitingIndex()
        pending = []  # the engine's waiting list, scanned in full by the reference
        count = 0
        for _step in range(rng.randint(1, 60)):
            op = rng.random()
            if op < 0.5:
                inst = _instance(count, rng.choice((1, 1, 1, 2, 4, 8)))
                count += 1
                pending.append(inst)
                index.add(inst)
            elif op < 0.6 and pending:
                inst = rng.choice(pending)  # cancelled (an unplaced start the autoscaler drops)
                pending.remove(inst)
                index.left(inst)
                inst.phase = RELEASED
            else:
                free = rng.randint(0, 8)
                seed = rng.random()

                def full_scan(fits, on_visit):
                    for inst in list(pending):
                        if fits(inst.deployment.num_gpus) and inst.node is None and inst.phase != RELEASED:
                            if on_visit(inst):
                                pending.remove(inst)
                                inst.node = "placed"

                def indexed(fits, on_visit):
                    for inst in index.fitting(fits):
                        if on_visit(inst):
                            pending.remove(inst)
                            index.left(inst)
                            inst.node = "placed"

                # Both walks see the same placements: run the reference on copies first.
                saved = [(inst, inst.node, inst.phase) for inst in pending]
                before = list(pending)
                expected = _walk(random.Random(seed), [free], full_scan)
                for inst, node, phase in saved:
                    inst.node, inst.phase = node, phase
                pending[:] = before
                got = _walk(random.Random(seed), [free], indexed)
                assert got == expected, trial
        assert [i.num for i in index.fitting(lambda gpus: True)] == [i.num for i in pending]


def test_a_walk_skips_groups_that_no_longer_fit_and_stays_small_after_many_placements():
    index = WaitingIndex()
    insts = [_instance(i, 1 + i % 2) for i in range(1000)]
    for inst in insts:
        index.add(inst)
    for inst in insts[:900]:
        inst.node = "placed"
        index.left(inst)
    assert [i.num for i in index.fitting(lambda gpus: gpus == 2)] == [i.num for i in insts[900:] if i.num % 2]
    assert len(index._groups[2]) == 50 and len(index._groups[1]) == 500  # only a walked group is compacted
    assert [i.num for i in index.fitting(lambda gpus: True)] == [i.num for i in insts[900:]]
    assert sum(len(group) for group in index._groups.values()) == 100  # placed entries were dropped
