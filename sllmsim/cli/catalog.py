"""``sllmsim catalog``: list the model catalog, or rebuild it from the architectures."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def catalog() -> None:
    """The model catalog (checkpoint sizes from architectures)."""


@catalog.command("list")
@click.option("--dtype", default="float16", show_default=True, help="dtype for the checkpoint size column")
def list_models(dtype: str) -> None:
    """Print every catalogued model with its parameter count and checkpoint size."""
    from rich.console import Console
    from rich.table import Table

    from sllmsim import catalog as cat
    from sllmsim.config.deploy import DTYPE_BYTES
    from sllmsim.errors import ConfigError
    from sllmsim.units import format_bytes

    if dtype not in DTYPE_BYTES:
        raise ConfigError("--dtype", "", f"expected one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    table = Table(title=f"sllmsim model catalog ({dtype})")
    for col in ("model", "architecture", "parameters", "checkpoint"):
        table.add_column(col, justify="right" if col in ("parameters", "checkpoint") else "left")
    for name in cat.known_models():
        arch = cat.lookup(name)
        table.add_row(name, arch.architecture, f"{arch.num_params:,}", format_bytes(arch.num_params * DTYPE_BYTES[dtype]))
    Console().print(table)


@catalog.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="where to write the catalog JSON (default: the packaged sllmsim/data/catalog.json)")
def build(out: Path | None) -> None:
    """Recount parameters by instantiating each architecture on the meta device (needs transformers)."""
    try:
        from sllmsim.tools.build_catalog import build_catalog
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise click.ClickException(f"catalog build needs the live extras (torch, transformers): {exc}")
    out = out or Path(__file__).resolve().parent.parent / "data" / "catalog.json"
    data = build_catalog(out)
    click.echo(f"wrote {len(data['models'])} models to {out}")
