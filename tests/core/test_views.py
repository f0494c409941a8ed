"""build_node_view: the same NodeView as the dataclass constructor, built without its __init__."""

import dataclasses
import random

from sllmsim.core.snapshot import NodeView
from sllmsim.core.views import build_node_view


def _random_args(rng: random.Random) -> tuple:
    names = [f"m{i}" for i in range(20)]
    total = rng.randint(1, 8)
    return (str(rng.randint(0, 999)), total, rng.randint(0, total), frozenset(rng.sample(names, rng.randint(0, 5))),
            frozenset(rng.sample(names, rng.randint(0, 10))), rng.choice([0.0, rng.random() * 100]),
            rng.random() * 1e10, rng.random() * 1e10, rng.random() * 1e11, rng.random(), rng.random() * 0.01)


def test_equal_to_the_constructor_on_random_arguments():
    rng = random.Random(12)
    for _ in range(500):
        args = _random_args(rng)
        built = build_node_view(*args)
        expected = NodeView(*args)
        assert type(built) is NodeView
        assert built == expected
        assert hash(built) == hash(expected)
        # Field by field too, with identity of the sets (the engine shares its cached frozensets).
        for f in dataclasses.fields(NodeView):
            assert getattr(built, f.name) is getattr(expected, f.name) or getattr(built, f.name) == getattr(expected, f.name)
        assert built.host_models is args[3] and built.disk_models is args[4]


def test_sets_every_field_of_node_view():
    # A field added to NodeView must be added to build_node_view too: the builder sets the slots
    # it knows and a missing one would raise AttributeError on read.
    built = build_node_view(*_random_args(random.Random(0)))
    assert [f.name for f in dataclasses.fields(NodeView)] == [
        "node_id", "total_gpus", "free_gpus", "host_models", "disk_models", "io_backlog_s",
        "disk_bandwidth_bytes_per_s", "network_bandwidth_bytes_per_s", "host_to_gpu_bytes_per_s",
        "load_overhead_s", "load_overhead_per_layer_s", "running", "idle"]
    for f in dataclasses.fields(NodeView):
        getattr(built, f.name)
    assert built.running == () and built.idle == ()


def test_still_frozen():
    built = build_node_view(*_random_args(random.Random(1)))
    try:
        built.free_gpus = 0
    except dataclasses.FrozenInstanceError:
        return
    raise AssertionError("a built NodeView accepted an assignment")
