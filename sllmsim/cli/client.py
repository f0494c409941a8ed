"""Client commands for a running ``sllmsim live`` server: ``deploy``, ``update``, ``delete``, ``status``.

They talk HTTP to ``$LLM_SERVER_URL`` (default ``http://127.0.0.1:8343/``), as the reference
system's ``sllm-cli`` does, and need neither torch nor FastAPI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from sllmsim.config.deploy import load_deploy_config
from sllmsim.errors import SllmsimError

DEFAULT_URL = "http://127.0.0.1:8343/"


class ServerError(SllmsimError):
    """The server could not be reached or refused the command; the message carries its reason."""


class Client:
    """A thin HTTP client for the live server's management routes."""

    def __init__(self, url: str, api_key: str | None = None):
        self.url = url.rstrip("/") + "/"
        self.api_key = api_key

    def call(self, method: str, path: str, payload: dict | None = None, timeout_s: float | None = 30.0) -> dict:
        try:
            import httpx
        except ImportError:
            raise ServerError("the client commands need httpx: pip install -e '.[live]'") from None
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.request(method, self.url + path.lstrip("/"), json=payload, headers=headers,
                                     timeout=timeout_s)
        except httpx.ConnectError:
            raise ServerError(f"cannot reach the sllmsim server at {self.url} (is `sllmsim live` running? "
                              "set LLM_SERVER_URL to its address)") from None
        except httpx.HTTPError as exc:
            raise ServerError(f"{method} {self.url}{path.lstrip('/')} failed: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text.strip() or response.reason_phrase
            raise ServerError(f"server answered {response.status_code}: {message}")
        return response.json()


_url_option = click.option("--url", envvar="LLM_SERVER_URL", default=DEFAULT_URL, show_default=True,
                           help="Server address (env LLM_SERVER_URL).")
_key_option = click.option("--api-key", envvar="SLLMSIM_API_KEY", default=None,
                           help="Bearer token, when the server runs with --api-key (env SLLMSIM_API_KEY).")


def _read_config(path: str) -> dict:
    """The deploy config as the server should get it: validated here first, so errors name the file.

    A ``pretrained_model_name_or_path`` that is a folder relative to the current directory is sent as
    an absolute path, since the server may run elsewhere on this machine.
    """
    load_deploy_config(path)  # raises ConfigError naming the file and field
    raw = json.loads(Path(path).read_text())
    backend = raw.get("backend_config")
    if isinstance(backend, dict):
        local = backend.get("pretrained_model_name_or_path")
        if isinstance(local, str) and not os.path.isabs(local) and Path(local).expanduser().is_dir():
            backend["pretrained_model_name_or_path"] = str(Path(local).expanduser().resolve())
    return raw


@click.command("deploy")
@click.option("--config", "configs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Deploy config JSON (the spec's format); repeat to deploy several.")
@_url_option
@_key_option
def deploy(configs: tuple[str, ...], url: str, api_key: str | None) -> None:
    """Deploy models on the live server (a local checkpoint folder is imported into its store)."""
    client = Client(url, api_key)
    for path in configs:
        raw = _read_config(path)
        # Importing a large checkpoint takes a while: no client-side timeout.
        info = client.call("POST", "register", raw, timeout_s=None)
        click.echo(f"deployed {info['model']} ({info['store_key']}, {info['size_bytes']} bytes)")


@click.command("update")
@click.option("--config", "configs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Deploy config JSON with the new autoscaling/placement settings.")
@_url_option
@_key_option
def update(configs: tuple[str, ...], url: str, api_key: str | None) -> None:
    """Change deployed models' autoscaling and placement settings."""
    client = Client(url, api_key)
    for path in configs:
        info = client.call("POST", "update", _read_config(path))
        click.echo(f"updated {info['model']}")


@click.command("delete")
@click.argument("models", nargs=-1, required=True)
@_url_option
@_key_option
def delete(models: tuple[str, ...], url: str, api_key: str | None) -> None:
    """Delete deployments (by name or by pretrained_model_name_or_path), after their requests finish."""
    info = Client(url, api_key).call("POST", "delete", {"models": list(models)}, timeout_s=None)
    for name in info["deleted"]:
        click.echo(f"deleted {name}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the server's status JSON instead of tables.")
@_url_option
@_key_option
def status(as_json: bool, url: str, api_key: str | None) -> None:
    """Show deployed models with their instances (node, phase) and the nodes' slots and tiers."""
    data = Client(url, api_key).call("GET", "status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    models = Table(title="Models")
    for column in ("model", "state", "in flight", "queued", "instance", "node", "device", "phase", "active",
                   "tier"):
        models.add_column(column)
    for m in data["models"]:
        head = [m["model"], m["state"], str(m["in_flight"]), str(m["queued"])]
        if not m["instances"]:
            models.add_row(*head, "-", "-", "-", "scaled to zero", "-", "-")
        for i, inst in enumerate(m["instances"]):
            phase = inst["phase"] + (f" ({inst['load_phase']})" if inst.get("load_phase") else "")
            models.add_row(*(head if i == 0 else [""] * 4), inst["instance_id"], inst["node"], inst["device"],
                           phase, str(inst["active_requests"]), inst["tier"] or "-")
    nodes = Table(title="Nodes")
    for column in ("node", "device", "GPUs used", "on disk", "in host memory", "I/O backlog (s)"):
        nodes.add_column(column)
    for n in data["nodes"]:
        nodes.add_row(n["node"], n["device"], f"{n['gpus_used']}/{n['gpus']}", ", ".join(n["disk_models"]) or "-",
                      ", ".join(n["host_models"]) or "-", f"{n['io_backlog_s']:.3f}")
    console = Console()
    console.print(models)
    console.print(nodes)
