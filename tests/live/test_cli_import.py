"""`sllmsim import`: a local folder enters the store under a hub name, so the spec's deploy files work offline."""

from __future__ import annotations

from live.checkpoint_format import ModelNotFoundError
from live.store import StoreRegistry
from sllmsim.cli import main


def test_import_makes_a_hub_name_resolvable(tiny_model_dir, tmp_path, capsys):
    storage = tmp_path / "store"
    with_hint = StoreRegistry(storage)
    try:
        with_hint.resolve("facebook/opt-2.7b")
    except ModelNotFoundError as exc:
        assert "sllmsim import facebook/opt-2.7b DIR --storage" in str(exc)
    else:
        raise AssertionError("an empty store resolved a hub name")

    assert main(["import", "facebook/opt-2.7b", str(tiny_model_dir), "--storage", str(storage)]) == 0
    assert "imported facebook/opt-2.7b" in capsys.readouterr().out
    source = StoreRegistry(storage).resolve("facebook/opt-2.7b")
    assert source.in_store and (source.path / "config.json").is_file()


def test_import_rejects_names_escaping_the_store(tiny_model_dir, tmp_path, capsys):
    assert main(["import", "../x", str(tiny_model_dir), "--storage", str(tmp_path)]) == 2
    assert "would leave the store folder" in capsys.readouterr().err


def test_import_of_a_non_model_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["import", "m", str(tmp_path / "empty"), "--storage", str(tmp_path / "s")]) == 2
    assert "no config.json" in capsys.readouterr().err
