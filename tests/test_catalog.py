"""Checkpoint sizes come from architecture parameter counts, never from guesses."""

from __future__ import annotations

import pytest

from sllmsim import catalog
from sllmsim.config.deploy import parse_deploy_config
from sllmsim.errors import ConfigError

# Parameter counts published with the models (model cards / papers), checked against the catalog built
# on the meta device.
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "facebook/opt-2.7b": 2_651_596_800,
}


@pytest.mark.parametrize("name, params", PUBLISHED.items())
def test_catalog_matches_published_parameter_counts(name, params):
    assert catalog.lookup(name).num_params == params


def test_catalog_covers_the_issue_families():
    names = set(catalog.known_models())
    for required in ["facebook/opt-125m", "facebook/opt-66b", "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-3.1-8B",
                     "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-72B", "tiiuae/falcon-7b", "tiiuae/falcon-40b"]:
        assert required in names


def test_alias_lookup_and_dtype_bytes():
    cfg = parse_deploy_config({"model": "opt-2.7b", "backend_config": {"torch_dtype": "float32"}})
    size = catalog.model_size(cfg)
    assert size.size_bytes == 2_651_596_800 * 4
    assert size.arch.name == "facebook/opt-2.7b"


def test_unknown_model_needs_an_explicit_size():
    with pytest.raises(ConfigError, match="checkpoint_size"):
        catalog.model_size(parse_deploy_config({"model": "my-private-llm"}, "cfg.json"))
    cfg = parse_deploy_config({"model": "my-private-llm", "checkpoint_size": "13GB"}, "cfg.json")
    assert catalog.model_size(cfg).size_bytes == 13 * 1024**3
