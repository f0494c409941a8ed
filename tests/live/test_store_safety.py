"""The store (issue 11, items 5-8): names that cannot nest, one server per store, state that survives."""

from __future__ import annotations

import pytest

from live.store import InvalidModelNameError


@pytest.mark.parametrize("first, second", [("a", "a/b"), ("a/b", "a"), ("org/a", "org/a/b/c")])
def test_a_name_that_nests_with_a_stored_one_is_refused(spec_store, tiny_model_dir, first, second):
    spec_store.import_model(first, tiny_model_dir, ["0"])
    with pytest.raises(InvalidModelNameError, match="nests with"):
        spec_store.import_model(second, tiny_model_dir)
    # Siblings that merely share a prefix of characters are fine.
    spec_store.import_model(first + "x", tiny_model_dir)
    assert spec_store.is_imported(first) and spec_store.is_imported(first + "x")


def test_removing_a_model_leaves_others_intact(spec_store, tiny_model_dir):
    spec_store.import_model("org/a", tiny_model_dir, ["0"])
    spec_store.import_model("org/b", tiny_model_dir, ["0"])
    spec_store.remove_model("org/a")
    assert spec_store.is_imported("org/b") and "org/b" in spec_store.node("0").disk_models()
