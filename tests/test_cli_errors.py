"""The CLI reports bad input and missing optional packages as one line, never a traceback."""

from __future__ import annotations

import click
import pytest

from sllmsim import cli


def _command_missing(module_name: str) -> click.Command:
    @click.command("needs-extra")
    def needs_extra() -> None:
        raise ModuleNotFoundError(f"No module named '{module_name}'", name=module_name)

    return needs_extra


def test_a_missing_live_package_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(cli.LazyGroup, "get_command", lambda self, ctx, name: _command_missing("torch"))
    assert cli.main(["needs-extra"]) == 2
    err = capsys.readouterr().err
    assert "torch is missing" in err and 'pip install -c constraints.txt -e ".[live]"' in err


def test_other_missing_modules_are_real_bugs_and_propagate(monkeypatch):
    monkeypatch.setattr(cli.LazyGroup, "get_command", lambda self, ctx, name: _command_missing("sllmsim_typo"))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["needs-extra"])


def test_unknown_trace_file_is_one_line(capsys, tmp_path):
    assert cli.main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.yaml'}: trace file not found"
