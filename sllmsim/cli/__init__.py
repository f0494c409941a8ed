"""The ``sllmsim`` command line. Subcommands live in their own modules and are imported lazily, so
that ``sllmsim run`` never pays for importing live mode's torch and FastAPI."""

from __future__ import annotations

import importlib
import sys

import click

from sllmsim.errors import SllmsimError

#: command name -> "module:attribute" of its click command. One line per command.
COMMANDS: dict[str, str] = {
    "catalog": "sllmsim.cli.catalog:catalog",
    "run": "sllmsim.cli.run:run",
    "live": "sllmsim.cli.live:live",
    "deploy": "sllmsim.cli.client:deploy",
    "update": "sllmsim.cli.client:update",
    "delete": "sllmsim.cli.client:delete",
    "status": "sllmsim.cli.client:status",
    "make-tiny-model": "sllmsim.cli.make_tiny_model:make_tiny_model",
    "import": "sllmsim.cli.store_import:import_model",
    "experiment": "sllmsim.cli.experiment:experiment",
    "trace": "sllmsim.cli.trace:trace",
    "compare": "sllmsim.cli.compare:compare",
    "calibrate": "sllmsim.cli.calibrate:calibrate",
    "validate": "sllmsim.cli.validate:validate",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sllmsim")
def cli() -> None:
    """Simulate and serve serverless LLM clusters with storage-aware scheduling."""


#: Packages of the ``live`` extra: a command that needs one says how to install it.
_LIVE_EXTRA_MODULES = frozenset({"torch", "transformers", "safetensors", "tokenizers", "fastapi", "uvicorn",
                                 "pydantic", "httpx", "prometheus_client", "starlette"})


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and reports input errors as one line, never a traceback."""
    try:
        cli.main(args=argv, prog_name="sllmsim", standalone_mode=False)
    except SllmsimError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _LIVE_EXTRA_MODULES:
            raise
        click.echo(f"error: this command needs live mode's packages ({exc.name} is missing): "
                   "pip install -c constraints.txt -e \".[live]\"", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
