"""``sllmsim make-tiny-model``: write a tiny random-weight model folder for tests and demos."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("make-tiny-model")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--arch", type=click.Choice(["opt", "llama", "gpt2"]), default="opt", show_default=True,
              help="transformers architecture of the model")
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, byte-identical files")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
              show_default=True, help="dtype of the saved weights")
@click.option("--force", is_flag=True, help="replace OUT if it exists")
def make_tiny_model(out: Path, arch: str, seed: int, dtype: str, force: bool) -> None:
    """Write a tiny ARCH model (random weights, locally trained tokenizer with a chat template) to OUT.

    The folder loads with transformers' AutoModelForCausalLM/AutoTokenizer with no network, and
    can be deployed with `sllmsim deploy` by naming it in pretrained_model_name_or_path.
    """
    # Imported here: live mode pulls in torch and transformers, which other commands never pay for.
    from live.tiny_model import make_tiny_model as build

    path = build(out, arch=arch, seed=seed, dtype=dtype, overwrite=force)
    size_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    click.echo(f"wrote tiny {arch} model ({size_bytes / 1024**2:.1f} MiB) to {path}")
