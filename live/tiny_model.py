"""Tiny random-weight causal LMs with a locally trained tokenizer, for tests and demos with no network.

A tiny model is an ordinary Hugging Face checkpoint folder (``model.safetensors``, ``config.json``,
``generation_config.json`` and a fast tokenizer with a chat template), so ``AutoModelForCausalLM`` and
``AutoTokenizer`` load it from disk exactly as they load a hub model. The weights are random (the
text it writes is gibberish); the point is to exercise the real loading and serving code paths in
well under a second. The same seed gives byte-identical files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from sllmsim.errors import ConfigError

ARCHS = ("opt", "llama", "gpt2")
DTYPES = ("float32", "float16", "bfloat16")

BOS, EOS, PAD = "<s>", "<|end|>", "<pad>"
#: Role markers of the chat template; registered as special tokens so a role never splits.
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

#: A plain chat format: ``<s><|user|>Hi<|end|><|assistant|>``. The model ends its turn with ``<|end|>``,
#: which is also the tokenizer's (and the generation config's) end-of-sequence token.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Words for the tokenizer's training corpus; any English-looking text makes a usable byte-level BPE.
_WORDS = (
    "the a an of to and in is it you that he was for on are with as I his they be at one have this from or "
    "had by hot word but what some we can out other were all there when up use your how said each she which "
    "do their time if will way about many then them write would like so these her long make thing see him "
    "two has look more day could go come did number sound no most people my over know water than call first "
    "who may down side been now find any new work part take get place made live where after back little only "
    "round man year came show every good me give our under name very through just form sentence great think "
    "say help low line differ turn cause much mean before move right boy old too same tell does set three want "
    "air well also play small end put home read hand port large spell add even land here must big high such "
    "model server request token memory disk network load cache GPU node cluster latency storage schedule "
    "assistant user system helpful answer question hello what is your name"
).split()

_HIDDEN = 64
_LAYERS = 2
_HEADS = 4
_POSITIONS = 512


def _corpus(rng: np.random.Generator, n_lines: int = 2000) -> list[str]:
    """Seeded pseudo-sentences, plus the chat markers in context so merges around them are learned."""
    lines = []
    for _ in range(n_lines):
        words = rng.choice(_WORDS, size=int(rng.integers(4, 16)))
        sentence = " ".join(words)
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ","]))
    return lines


def train_tokenizer(seed: int = 0, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on a seeded synthetic corpus, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=_POSITIONS,
    )


def tiny_config(arch: str, vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    """The transformers config of a tiny ``arch`` model (2 layers, width 64)."""
    from transformers import GPT2Config, LlamaConfig, OPTConfig

    ids = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if arch == "opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=_HIDDEN, num_hidden_layers=_LAYERS, ffn_dim=4 * _HIDDEN,
                         num_attention_heads=_HEADS, max_position_embeddings=_POSITIONS,
                         word_embed_proj_dim=_HIDDEN, **ids)
    if arch == "llama":
        # Untied input/output embeddings (llama's default) so the loader's untied path is exercised too.
        return LlamaConfig(vocab_size=vocab_size, hidden_size=_HIDDEN, intermediate_size=3 * _HIDDEN,
                           num_hidden_layers=_LAYERS, num_attention_heads=_HEADS, num_key_value_heads=_HEADS // 2,
                           max_position_embeddings=_POSITIONS, tie_word_embeddings=False, **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=_HIDDEN, n_layer=_LAYERS, n_head=_HEADS,
                          n_positions=_POSITIONS, **ids)
    raise ConfigError("make-tiny-model", "arch", f"expected one of {', '.join(ARCHS)}, got {arch!r}")


def make_tiny_model(out_dir: str | Path, arch: str = "opt", seed: int = 0, dtype: str = "float32",
                    vocab_size: int = 1024, overwrite: bool = False) -> Path:
    """Write a tiny random-weight ``arch`` model with its tokenizer to ``out_dir``; return the folder.

    The folder is written next to its final place and renamed into it, so a crash never leaves a
    half-written model behind. An existing non-empty ``out_dir`` is an error unless ``overwrite``.
    """
    if arch not in ARCHS:
        raise ConfigError("make-tiny-model", "arch", f"expected one of {', '.join(ARCHS)}, got {arch!r}")
    if dtype not in DTYPES:
        raise ConfigError("make-tiny-model", "dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise ConfigError(str(out), "", "output folder exists and is not empty (pass --force to replace it)")

    tokenizer = train_tokenizer(seed, vocab_size)
    config = tiny_config(arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                         tokenizer.pad_token_id)
    model = random_weight_model(config, seed, dtype, max_new_tokens=32)
    return save_model_folder(model, tokenizer, out)


def random_weight_model(config, seed: int, dtype: str, **generation_kwargs):
    """A transformers causal LM built from ``config`` with weights drawn from ``seed`` (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    weight_seed = int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1)[0])
    # fork_rng keeps the caller's global torch RNG untouched while init draws from a seeded one.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weight_seed)
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        **generation_kwargs,
    )
    return model


def save_model_folder(model, tokenizer, out: Path) -> Path:
    """Save a model folder atomically: an interrupted save leaves nothing half-written at ``out``."""
    from transformers.utils import logging as hf_logging

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-shard "Writing model shards" bar is noise here
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is ordinary data
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return out
