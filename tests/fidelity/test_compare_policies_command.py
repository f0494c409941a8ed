"""`sllmsim validate --compare-policies` end to end on two tiny models (CPU, no network, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("httpx")

from sllmsim.cli import main  # noqa: E402
from test_commands import _NODE, _deploy  # noqa: E402  (the tiny CPU cluster of the validate tests)

pytestmark = pytest.mark.slow


def test_compare_policies_end_to_end(tmp_path: Path, capsys):
    (tmp_path / "hw.json").write_text(json.dumps({"0": _NODE, "1": _NODE}))
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "models.yaml").write_text(yaml.safe_dump({
        "tiny-a": {"hidden_size": 64, "num_layers": 1, "seed": 1},
        "tiny-b": {"hidden_size": 64, "num_layers": 1, "seed": 2}}))
    trace = tmp_path / "tiny.yaml"
    trace.write_text(yaml.safe_dump({
        "hardware": "hw.json", "models": [_deploy("tiny-a", ["0"]), _deploy("tiny-b", ["1"])],
        "requests": [{"time": 0.0, "model": "tiny-a", "input_tokens": 8, "output_tokens": 4},
                     {"time": 1.5, "model": "tiny-b", "input_tokens": 8, "output_tokens": 4}]}, sort_keys=False))
    out = tmp_path / "cmp"
    code = main(["validate", str(trace), "--hardware", str(tmp_path / "hw.json"), "--out", str(out),
                 "--models-dir", str(tmp_path / "models"), "--threads", "1",
                 "--compare-policies", "storage_aware,first_fit"])
    assert code == 0, capsys.readouterr().err
    for policy in ("storage_aware", "first_fit"):
        assert (out / policy / "live-run.json").is_file()
    result = json.loads((out / "comparison.json").read_text())
    assert result["requests"] == 2 and result["policies"] == ["storage_aware", "first_fit"]
    for stat in ("mean", "p99"):
        e = result["stats"][stat]
        assert all(v > 0 for side in ("live", "sim") for v in e[side].values())
        assert e["same_winner"] in (True, False)
    report = (out / "report.md").read_text()
    assert "## Relative difference against storage_aware" in report and "--compare-policies" in report

    # The saved live runs re-simulate to the same comparison.
    again = tmp_path / "again"
    assert main(["validate", str(trace), "--hardware", str(tmp_path / "hw.json"), "--out", str(again),
                 "--compare-policies", "storage_aware,first_fit", "--reuse-live", str(out)]) == 0
    assert json.loads((again / "comparison.json").read_text()) == result
