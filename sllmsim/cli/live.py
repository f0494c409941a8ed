"""``sllmsim live``: serve the deployed models for real, placed by the simulator's scheduler core.

Imported only when the command runs (the CLI loads subcommands lazily), so ``sllmsim run`` never
imports torch or FastAPI.
"""

from __future__ import annotations

import ipaddress
import logging

import click

from sllmsim.config.hardware import load_hardware
from sllmsim.core.registry import DEFAULT_AUTOSCALE, DEFAULT_PLACEMENT
from sllmsim.errors import ConfigError

LOG_FORMAT = "%(levelname)s %(asctime)s %(name)s] %(message)s"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_storage(storage: str) -> None:
    """The store folder must be creatable and writable (checked before the server starts)."""
    import tempfile
    from pathlib import Path

    try:
        Path(storage).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=storage):
            pass
    except OSError as exc:
        raise ConfigError("--storage", "", f"cannot use {storage!r} as the model store: "
                          f"{exc.strerror or exc}") from None


@click.command("live")
@click.option("--hardware-config", "hardware_config", required=True, type=click.Path(dir_okay=False),
              help="Hardware JSON of the storage-aware scheduling spec (one entry per node).")
@click.option("--storage", required=True, type=click.Path(file_okay=False),
              help="Model store folder: the import area, each node's disk, and the saved deployments.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8343, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--devices", default=None,
              help="Node-to-device map such as '0=cuda:0,1=cuda:1' or '0=cpu,1=cpu'. Default: node i on "
                   "cuda:i when there are at least as many GPUs as nodes, else every node on the CPU.")
@click.option("--api-key", default=None, envvar="SLLMSIM_API_KEY",
              help="Require 'Authorization: Bearer KEY' on every route but /health (env SLLMSIM_API_KEY).")
@click.option("--scheduler", default=DEFAULT_PLACEMENT, show_default=True,
              help="Placement policy name (storage_aware, serverlessllm, first_fit, random, round_robin or "
                   "module:Class).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Run seed, as a trace's seed: a seeded policy (random) places as the simulator does "
                   "for a trace with this seed.")
@click.option("--autoscale", default=DEFAULT_AUTOSCALE, show_default=True,
              help="Autoscaling policy name (as a trace's scheduler.autoscale: concurrency or module:Class).")
@click.option("--enable-migration", is_flag=True, default=False,
              help="Let the storage-aware scheduler free the node that would start a model fastest by "
                   "live-migrating running requests to other nodes (token-based; streams continue).")
@click.option("--reclaim-idle", is_flag=True, default=False,
              help="When no node has a free GPU slot for a model, release idle instances of other models "
                   "(longest idle first) before their keep-alive ends. Default: an idle instance keeps its "
                   "slot for its whole keep_alive, as in the reference system.")
@click.option("--max-body-bytes", default=8 * 1024**2, show_default=True, type=click.IntRange(1024),
              help="Largest request body accepted (bytes); a larger one is answered 413 without being read.")
@click.option("--drain-timeout", default=20.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds that running requests may take to finish after SIGTERM or Ctrl-C; then (or at a "
                   "second signal) they end with an error (streams: an error event and [DONE]) and are "
                   "recorded as failed. Keep it below your supervisor's grace period.")
@click.option("--import-from", "import_roots", multiple=True, type=click.Path(file_okay=False),
              help="Folder under which deploy requests may name local checkpoint folders to import "
                   "(repeatable). Default: any folder the server can read. `sllmsim import` is not limited.")
@click.option("--out", "run_dir", default=None, type=click.Path(file_okay=False),
              help="When the server stops, write the run's records there as a run folder (requests.csv, "
                   "instances.csv, summary.json, plots), comparable with a simulated run.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Server log level.")
def live(hardware_config: str, storage: str, host: str, port: int, devices: str | None, api_key: str | None,
         scheduler: str, seed: int, autoscale: str, enable_migration: bool, reclaim_idle: bool, max_body_bytes: int,
         drain_timeout: float, import_roots: tuple[str, ...], run_dir: str | None, log_level: str) -> None:
    """Serve an OpenAI-compatible API on HOST:PORT; deploy models with `sllmsim deploy`."""
    cluster = load_hardware(hardware_config)

    from sllmsim.core.placement import make_placement_policy

    # An unknown policy name, or migration with a policy that cannot migrate, fails here, before anything starts.
    try:
        make_placement_policy(scheduler)
    except TypeError as exc:  # a class that is not a placement policy
        raise ConfigError("--scheduler", "", f"{scheduler!r} cannot be built as a placement policy: {exc}") from None
    from sllmsim.core.autoscale import make_autoscale_policy
    from sllmsim.errors import SllmsimError

    try:
        make_autoscale_policy(autoscale)
    except SllmsimError as exc:
        raise ConfigError("--autoscale", "", str(exc)) from None
    if enable_migration:
        try:
            make_placement_policy(scheduler, enable_migration=True)
        except ConfigError:
            raise ConfigError("--enable-migration", "--scheduler", f"placement policy {scheduler!r} cannot migrate; "
                              "use --scheduler storage_aware or drop --enable-migration") from None
    from live.worker import default_devices, parse_devices

    node_devices = parse_devices(devices, cluster) if devices else default_devices(cluster)
    _check_storage(storage)
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key", "", "the API key must not be empty")
    if not _is_loopback(host) and api_key is None:
        click.echo(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True)

    from live.server import create_app, make_server
    from live.state_file import StoreLock

    store_lock = StoreLock(storage)  # a second server on the same store stops here, in one line

    logging.basicConfig(level=getattr(logging, log_level.upper()), format=LOG_FORMAT, datefmt="%m-%d %H:%M:%S")
    app = create_app(cluster, storage, devices=node_devices, api_key=api_key, placement=scheduler, run_dir=run_dir,
                     enable_migration=enable_migration, reclaim_idle=reclaim_idle, max_body_bytes=max_body_bytes, store_lock=store_lock,
                     import_roots=list(import_roots) or None, autoscale=autoscale, seed=seed)
    click.echo(f"sllmsim live: http://{host}:{port}/  (export LLM_SERVER_URL=http://{host}:{port}/)", err=True)
    make_server(app, host=host, port=port, drain_s=drain_timeout, log_level=log_level, log_config=None).run()
