"""Rebuild ``sllmsim/data/catalog.json`` by instantiating each architecture on the meta device.

No weights are downloaded: each model is described by its published architecture hyper-parameters
(the ``config.json`` of its Hugging Face repository), built with ``transformers`` on ``torch.device("meta")``
and its parameters counted (tied embeddings counted once). Run with ``sllmsim catalog build``.
"""

from __future__ import annotations

import json
from pathlib import Path

# name -> (config class name, config kwargs). Values are from each repository's config.json.
_OPT = dict(vocab_size=50272, max_position_embeddings=2048)
_LLAMA2 = dict(vocab_size=32000, max_position_embeddings=4096)
_LLAMA3 = dict(vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)
_QWEN_SMALL = dict(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
_QWEN = dict(vocab_size=152064, tie_word_embeddings=False, max_position_embeddings=32768)


def _opt(h: int, layers: int, heads: int, **kw) -> tuple[str, dict]:
    return "OPTConfig", dict(_OPT, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                             ffn_dim=4 * h, word_embed_proj_dim=kw.pop("proj", h), **kw)


def _llama(base: dict, h: int, layers: int, heads: int, kv: int, inter: int, **kw) -> tuple[str, dict]:
    return "LlamaConfig", dict(base, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                               num_key_value_heads=kv, intermediate_size=inter, **kw)


def _qwen(base: dict, h: int, layers: int, heads: int, kv: int, inter: int) -> tuple[str, dict]:
    return "Qwen2Config", dict(base, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                               num_key_value_heads=kv, intermediate_size=inter)


ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "facebook/opt-125m": _opt(768, 12, 12),
    "facebook/opt-350m": _opt(1024, 24, 16, proj=512, do_layer_norm_before=False),
    "facebook/opt-1.3b": _opt(2048, 24, 32),
    "facebook/opt-2.7b": _opt(2560, 32, 32),
    "facebook/opt-6.7b": _opt(4096, 32, 32),
    "facebook/opt-13b": _opt(5120, 40, 40),
    "facebook/opt-30b": _opt(7168, 48, 56),
    "facebook/opt-66b": _opt(9216, 64, 72),
    "meta-llama/Llama-2-7b-hf": _llama(_LLAMA2, 4096, 32, 32, 32, 11008),
    "meta-llama/Llama-2-13b-hf": _llama(_LLAMA2, 5120, 40, 40, 40, 13824),
    "meta-llama/Llama-2-70b-hf": _llama(_LLAMA2, 8192, 80, 64, 8, 28672),
    "meta-llama/Meta-Llama-3-8B": _llama(_LLAMA3, 4096, 32, 32, 8, 14336),
    "meta-llama/Meta-Llama-3-70B": _llama(_LLAMA3, 8192, 80, 64, 8, 28672),
    "meta-llama/Llama-3.1-8B": _llama(_LLAMA3, 4096, 32, 32, 8, 14336),
    "meta-llama/Llama-3.1-70B": _llama(_LLAMA3, 8192, 80, 64, 8, 28672),
    "meta-llama/Llama-3.2-1B": _llama(_LLAMA3, 2048, 16, 32, 8, 8192, tie_word_embeddings=True),
    "meta-llama/Llama-3.2-3B": _llama(_LLAMA3, 3072, 28, 24, 8, 8192, tie_word_embeddings=True),
    "meta-llama/Llama-3.3-70B-Instruct": _llama(_LLAMA3, 8192, 80, 64, 8, 28672),
    "Qwen/Qwen2.5-0.5B": _qwen(_QWEN_SMALL, 896, 24, 14, 2, 4864),
    "Qwen/Qwen2.5-1.5B": _qwen(_QWEN_SMALL, 1536, 28, 12, 2, 8960),
    "Qwen/Qwen2.5-3B": _qwen(_QWEN_SMALL, 2048, 36, 16, 2, 11008),
    "Qwen/Qwen2.5-7B": _qwen(_QWEN, 3584, 28, 28, 4, 18944),
    "Qwen/Qwen2.5-14B": _qwen(_QWEN, 5120, 48, 40, 8, 13824),
    "Qwen/Qwen2.5-32B": _qwen(_QWEN, 5120, 64, 40, 8, 27648),
    "Qwen/Qwen2.5-72B": _qwen(_QWEN, 8192, 80, 64, 8, 29568),
    "mistralai/Mistral-7B-v0.1": ("MistralConfig", dict(
        vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=14336)),
    "tiiuae/falcon-7b": ("FalconConfig", dict(
        vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
        multi_query=True, parallel_attn=True, bias=False, new_decoder_architecture=False)),
    "tiiuae/falcon-40b": ("FalconConfig", dict(
        vocab_size=65024, hidden_size=8192, num_hidden_layers=60, num_attention_heads=128,
        num_kv_heads=8, parallel_attn=True, bias=False, new_decoder_architecture=True)),
    "openai-community/gpt2": ("GPT2Config", dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257)),
}

#: Short aliases users type in deploy configs ("opt-2.7b", "llama-2-7b", ...).
ALIASES: dict[str, str] = {name.split("/")[-1].lower(): name for name in ARCHITECTURES}


def count_parameters(config_class: str, kwargs: dict) -> dict:
    """Instantiate one architecture on the meta device and describe it."""
    import torch
    import transformers

    config = getattr(transformers, config_class)(**kwargs)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    num_params = sum(p.numel() for p in model.parameters())
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or getattr(text, "num_kv_heads", None) or heads
    if getattr(text, "multi_query", False):
        kv_heads = 1
    return {
        "architecture": type(model).__name__,
        "num_params": int(num_params),
        "hidden_size": int(text.hidden_size),
        "num_layers": int(text.num_hidden_layers),
        "num_attention_heads": int(heads),
        "num_kv_heads": int(kv_heads),
        "vocab_size": int(text.vocab_size),
    }


def build_catalog(out_path: Path) -> dict:
    """Count every architecture and write the catalog JSON to ``out_path``."""
    models = {name: count_parameters(cls, kwargs) for name, (cls, kwargs) in ARCHITECTURES.items()}
    data = {
        "_about": "Written by `sllmsim catalog build` (sllmsim/tools/build_catalog.py): parameter counts "
                  "of each architecture instantiated on the meta device with transformers.",
        "models": models,
        "aliases": ALIASES,
    }
    out_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data
