"""Startup errors are one line (issue 11, item 10): bad node ids and sizes in the hardware JSON (for
the simulator too), an unusable ``--storage``, a ``--scheduler`` that is not a policy class."""

from __future__ import annotations

import json

import pytest

from sllmsim import cli
from sllmsim.config.hardware import parse_hardware
from sllmsim.errors import ConfigError

NODE = {"host_size": "32GB", "host_bandwidth": "24GB/s", "disk_size": "128GB", "disk_bandwidth": "5GB/s",
        "network_bandwidth": "10Gbps"}


@pytest.mark.parametrize("node_id", ["a/b", "..", "_import", "", ".", "a b", "../x", "x" * 65])
def test_node_ids_that_cannot_name_a_folder_are_refused(node_id):
    with pytest.raises(ConfigError, match="node id"):
        parse_hardware({node_id: NODE}, "hw.json")


@pytest.mark.parametrize("node_id", ["0", "gpu-node.1", "A_2"])
def test_ordinary_node_ids_are_accepted(node_id):
    assert parse_hardware({node_id: NODE}, "hw.json").node_ids == (node_id,)


@pytest.mark.parametrize("field, value", [("disk_size", 1.5e400), ("disk_size", "1.5e400GB"),
                                          ("host_bandwidth", float("nan")), ("network_bandwidth", "1e999Gbps")])
def test_sizes_and_bandwidths_must_be_finite(field, value):
    with pytest.raises(ConfigError, match=f"0.{field}"):
        parse_hardware({"0": dict(NODE, **{field: value})}, "hw.json")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _hardware(tmp_path, raw: str, name: str = "hw.json") -> str:
    path = tmp_path / name
    path.write_text(raw)
    return str(path)


def test_the_simulator_reports_a_bad_node_id_in_one_line(tmp_path, capsys):
    hw = _hardware(tmp_path, json.dumps({"a/b": NODE}))
    trace = tmp_path / "t.yaml"
    trace.write_text(f"hardware: {hw}\nmodels: []\nrequests: []\n")
    assert cli.main(["run", str(trace), "--out", str(tmp_path / "out")]) == 2
    assert "node id" in _one_line_error(capsys)


def test_live_startup_errors_are_one_line(tmp_path, capsys):
    pytest.importorskip("fastapi")
    ok = _hardware(tmp_path, json.dumps({"0": NODE}))
    # A JSON number too large for a float is read as infinity.
    huge = _hardware(tmp_path, '{"0": ' + json.dumps(NODE).replace('"128GB"', "1.5e400") + "}",
                     "huge.json")
    cases = [
        (["--hardware-config", huge, "--storage", str(tmp_path / "s")], "disk_size"),
        (["--hardware-config", ok, "--storage", "/proc/sllmsim-store"], "--storage"),
        (["--hardware-config", ok, "--storage", str(tmp_path / "s"), "--scheduler", "os:system"], "not a class"),
    ]
    for args, expected in cases:
        assert cli.main(["live", *args, "--devices", "0=cpu"]) == 2
        assert expected in _one_line_error(capsys)
