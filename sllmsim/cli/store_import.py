"""``sllmsim import``: put a local checkpoint folder into a live-mode store under a (hub) name."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("import")
@click.argument("name")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--storage", type=click.Path(path_type=Path), required=True,
              help="the store folder that `sllmsim live --storage` serves from")
def import_model(name: str, folder: Path, storage: Path) -> None:
    """Import FOLDER (a Hugging Face safetensors model folder) into the store as NAME.

    Deploy configs can then name it in pretrained_model_name_or_path (e.g. the spec's
    "facebook/opt-2.7b") without any hub access. Importing an unchanged folder again copies nothing.
    """
    # Imported here: live mode pulls in torch, which other commands never pay for.
    from live.store import StoreRegistry

    nbytes = StoreRegistry(storage).import_model(name, folder.absolute())
    click.echo(f"imported {name} ({nbytes / 1024**2:.1f} MiB) into {storage}")
