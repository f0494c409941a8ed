"""The tiny-model fixture: loadable by transformers from disk alone, small, deterministic per seed."""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from live.tiny_model import EOS, make_tiny_model
from sllmsim.cli import main
from sllmsim.errors import ConfigError


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
def test_transformers_loads_it_offline_and_chats(tiny_model_factory, arch):
    folder = tiny_model_factory(arch)
    total_bytes = sum(p.stat().st_size for p in folder.iterdir())
    assert total_bytes < 4 * 1024**2
    assert (folder / "model.safetensors").exists()

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "What is your name?"}],
        add_generation_prompt=True, tokenize=False)
    assert prompt == "<s><|system|>You are a helpful assistant.<|end|><|user|>What is your name?<|end|><|assistant|>"
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    # Role markers are single tokens, and text round-trips through the byte-level BPE.
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") == ids["input_ids"][0, -1].item()
    assert tokenizer.decode(ids["input_ids"][0]) == prompt
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(EOS)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = make_tiny_model(tmp_path / "a", "llama", seed=7)
    b = make_tiny_model(tmp_path / "b", "llama", seed=7)
    c = make_tiny_model(tmp_path / "c", "llama", seed=8)
    assert _digests(a) == _digests(b)
    assert _digests(a)["model.safetensors"] != _digests(c)["model.safetensors"]


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "m"
    make_tiny_model(out, "gpt2")
    with pytest.raises(ConfigError, match="not empty"):
        make_tiny_model(out, "gpt2")
    make_tiny_model(out, "gpt2", seed=1, overwrite=True)
    with pytest.raises(ConfigError, match="arch"):
        make_tiny_model(tmp_path / "x", "bert")


def test_cli_command(tmp_path, capsys):
    out = tmp_path / "cli-model"
    assert main(["make-tiny-model", str(out), "--arch", "gpt2", "--dtype", "float16"]) == 0
    assert "wrote tiny gpt2 model" in capsys.readouterr().out
    assert AutoModelForCausalLM.from_pretrained(out, local_files_only=True).dtype == torch.float16
    assert main(["make-tiny-model", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
