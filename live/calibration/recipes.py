"""Random-weight probe models built from a recipe (width, depth, seed): the calibration's probe models
and the validation traces' models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sllmsim.errors import ConfigError


@dataclass(frozen=True)
class ModelRecipe:
    """A random-weight OPT model of a chosen width and depth, with the tiny models' tokenizer.

    Parameters ≈ 12·hidden²·layers plus the embeddings (vocabulary 1024 and ``max_positions``).
    """

    hidden_size: int
    num_layers: int
    seed: int = 0
    dtype: str = "float32"
    max_positions: int = 1024

    @property
    def name(self) -> str:
        return f"opt-{self.hidden_size}x{self.num_layers}-s{self.seed}"


#: Probe models of ``sllmsim calibrate`` when no ``--models`` are given: 3 to 230 MB of float32 weights,
#: the tiny-to-small models a 2-core CPU serves in seconds. Width and depth vary independently (two
#: 2-layer models of different widths, two 128-wide ones of different depths) so that the fits can
#: tell the per-layer fixed cost from the fixed cost and the bandwidth.
PROBE_MODELS = (ModelRecipe(128, 2), ModelRecipe(128, 12), ModelRecipe(384, 6), ModelRecipe(640, 2),
                ModelRecipe(768, 8))


def build_model_folder(out_dir: str | Path, recipe: ModelRecipe, overwrite: bool = False) -> Path:
    """Write ``recipe``'s model (safetensors, config, tokenizer) to ``out_dir``; reuse it if present.

    The same recipe gives byte-identical weights. Written next to its place and renamed into it, so
    an interrupted build leaves nothing half-written.
    """
    from transformers import OPTConfig

    from live.tiny_model import random_weight_model, save_model_folder, train_tokenizer

    out = Path(out_dir)
    if (out / "config.json").is_file() and not overwrite:
        return out
    if recipe.hidden_size % 64 or recipe.hidden_size <= 0 or recipe.num_layers <= 0:
        raise ConfigError("model recipe", "hidden_size", f"expected a positive multiple of 64 and at least one "
                          f"layer, got {recipe.hidden_size}x{recipe.num_layers}")
    tokenizer = train_tokenizer(recipe.seed)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                       num_hidden_layers=recipe.num_layers, ffn_dim=4 * recipe.hidden_size,
                       num_attention_heads=recipe.hidden_size // 64, max_position_embeddings=recipe.max_positions,
                       word_embed_proj_dim=recipe.hidden_size, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return save_model_folder(random_weight_model(config, recipe.seed, recipe.dtype), tokenizer, out)
