"""Live mode's entities, deployments file and status views, without a model or a worker thread.

The controller keeps its instances' phases as :class:`~sllmsim.records.Phase` members; what leaves
the process (status JSON, Prometheus labels, records) must still carry the plain strings, since
``str()`` of a ``(str, Enum)`` member is ``Phase.READY``, not ``ready``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from live.controller import Controller
from live.deployments import DEPLOYMENTS_FILE, check_update, save_deployments, saved_deployments
from live.metrics_prom import LiveMetrics
from live.records import LiveRecorder
from live.state import Deployment, Instance, Waiter
from live.state_file import StateWriteError
from live.status import gauge_state, model_status
from sllmsim.config.deploy import parse_deploy_config
from sllmsim.config.hardware import parse_hardware
from sllmsim.errors import ConfigError
from sllmsim.records import Phase
from test_server import spec_config

LIVE = Path(__file__).resolve().parents[2] / "live"
ONE_NODE = {"0": {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB", "disk_bandwidth": "5GB/s",
                  "network_bandwidth": "10Gbps"}}


def _deployment(tmp_path: Path, **changes) -> Deployment:
    raw = spec_config("opt-2.7b", tmp_path, **changes)
    return Deployment(config=parse_deploy_config(raw, "test"), raw=raw, store_key="opt-2.7b", size_bytes=1000)


def _instance(dep: Deployment, number: int, phase: Phase, active: int = 0) -> Instance:
    inst = Instance(instance_id=f"{dep.name}-{number}", deployment=dep, node_id="0", num_gpus=1, capacity=2,
                    placed_s=0.0, phase=phase, active=active)
    dep.instances[inst.instance_id] = inst
    return inst


def test_room_aliveness_and_queue_follow_the_phase(tmp_path):
    dep = _deployment(tmp_path)
    loading = _instance(dep, 0, Phase.LOADING)
    idle = _instance(dep, 1, Phase.IDLE)
    full = _instance(dep, 2, Phase.READY, active=2)
    releasing = _instance(dep, 3, Phase.RELEASING)
    assert [i.has_room for i in (loading, idle, full, releasing)] == [False, True, False, False]
    idle.moves_in = 1  # requests being moved onto it come first
    assert not idle.has_room
    assert dep.alive_instances() == [loading, idle, full]

    async def queue() -> int:
        loop = asyncio.get_running_loop()
        gone, waiting = loop.create_future(), loop.create_future()
        gone.cancel()  # its client left: still in the deque, no longer queued
        dep.queue.extend([Waiter(gone, None), Waiter(waiting, None)])
        return dep.queued

    assert asyncio.run(queue()) == 1


def test_status_and_gauges_carry_plain_phase_strings(tmp_path):
    dep = _deployment(tmp_path)
    _instance(dep, 0, Phase.LOADING).load_detail = Phase.LOADING_TO_HOST.value
    _instance(dep, 1, Phase.READY, active=1)
    _instance(dep, 2, Phase.RELEASING)
    workers = {"0": SimpleNamespace(device="cpu", storage_state=lambda: SimpleNamespace(disk_models={"opt-2.7b"}))}
    registry = SimpleNamespace(is_imported=lambda key: True)

    status = model_status(dep, 5.0, workers, registry)
    phases = [(i["phase"], i["load_phase"]) for i in status["instances"]]
    assert phases == [("loading", "loading_to_host"), ("ready", ""), ("releasing", "")]
    assert all(type(p) is str for p, _ in phases)
    assert json.loads(json.dumps(status))["instances"][1]["phase"] == "ready"

    cluster = parse_hardware(ONE_NODE, "test")
    gauges = gauge_state([dep], cluster, {"0": 1})
    assert all(type(phase) is str for _, phase in gauges.instances)
    assert gauges.instances == {("opt-2.7b", "loading"): 1, ("opt-2.7b", "ready"): 1, ("opt-2.7b", "idle"): 0,
                                ("opt-2.7b", "migrating"): 0, ("opt-2.7b", "resuming"): 0}
    text = LiveMetrics(lambda: gauges).render()[0].decode()
    assert 'sllmsim_instances{model="opt-2.7b",phase="loading"} 1.0' in text
    assert "Phase." not in text


def test_saving_deployments_keeps_those_not_being_deleted_and_rolls_back_on_failure(tmp_path):
    kept = SimpleNamespace(raw={"model": "a"}, store_key="a-key", draining=False)
    leaving = SimpleNamespace(raw={"model": "b"}, store_key="b-key", draining=True)
    undone = []
    save_deployments(tmp_path, [kept, leaving], undo=lambda: undone.append(True))
    assert json.loads((tmp_path / DEPLOYMENTS_FILE).read_text()) == {
        "version": 1, "deployments": [{"config": {"model": "a"}, "store_key": "a-key"}]}
    assert saved_deployments(tmp_path) == (tmp_path / DEPLOYMENTS_FILE, [({"model": "a"}, "a-key")])
    assert not undone

    blocked = tmp_path / "blocked"
    (blocked / DEPLOYMENTS_FILE).mkdir(parents=True)  # a folder where the file should be: unwritable
    with pytest.raises(StateWriteError, match=DEPLOYMENTS_FILE):
        save_deployments(blocked, [kept], undo=lambda: undone.append(True))
    assert undone == [True]


def test_an_update_may_not_change_the_checkpoint_or_backend(tmp_path):
    old = parse_deploy_config(spec_config("opt-2.7b", tmp_path), "deploy")
    scaled = parse_deploy_config(spec_config("opt-2.7b", tmp_path, auto_scaling_config__max_instances=3), "update")
    check_update(old, scaled, "update")  # autoscaling may change
    other = parse_deploy_config(spec_config("opt-2.7b", tmp_path / "elsewhere"), "update")
    with pytest.raises(ConfigError, match="backend_config.pretrained_model_name_or_path"):
        check_update(old, other, "update")


def test_restoring_skips_saved_entries_that_are_not_deployments(tmp_path, caplog):
    # Entries that are not objects used to end the server's start with an AttributeError.
    (tmp_path / DEPLOYMENTS_FILE).write_text(json.dumps({"version": 1, "deployments": ["junk", 3, {}]}))
    assert saved_deployments(tmp_path)[1] == [(None, None), (None, None), (None, None)]
    controller = Controller(parse_hardware(ONE_NODE, "test"), {}, None, tmp_path, LiveRecorder())

    async def start_and_close() -> None:
        await controller.start()
        await controller.close()

    with caplog.at_level(logging.ERROR, logger="sllmsim.live"):
        asyncio.run(start_and_close())
    assert sum("could not restore a deployment" in r.getMessage() for r in caplog.records) == 3
    assert controller.deployed_models() == []

    (tmp_path / DEPLOYMENTS_FILE).write_text(json.dumps({"version": 1, "deployments": {"a": 1}}))
    with caplog.at_level(logging.ERROR, logger="sllmsim.live"):
        assert saved_deployments(tmp_path)[1] == []
    assert any("holds no list of deployments" in r.getMessage() for r in caplog.records)


_PHASE_NAMES = frozenset(p.value for p in Phase)


def _phase_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants naming a phase where live code compares or sets an instance's phase."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "phase" for s in sides):
                for side in sides:
                    for const in ast.walk(side):
                        if isinstance(const, ast.Constant) and const.value in _PHASE_NAMES:
                            found.append((node.lineno, const.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("_set_phase", "_record_phase", "phase"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and arg.value in _PHASE_NAMES:
                    found.append((node.lineno, arg.value))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "phase"
                                                 for t in node.targets):
            if isinstance(node.value, ast.Constant) and node.value.value in _PHASE_NAMES:
                found.append((node.lineno, node.value.value))
    return sorted(found)


def test_live_code_names_phases_by_the_shared_enum():
    assert _phase_literals(ast.parse('inst.phase == "idle"\nself._set_phase(i, "ready")\ni.phase = "loading"')) \
        == [(1, "idle"), (2, "ready"), (3, "loading")]  # the check sees what it looks for
    offending = {path.name: found for path in sorted(LIVE.glob("*.py"))
                 if (found := _phase_literals(ast.parse(path.read_text())))}
    assert offending == {}
