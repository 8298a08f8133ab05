"""`serve`'s process options: which listener (`--server`), how many proxy workers to run (`--workers N|auto`, else
the config's `workers:`), and the command line each worker runs under the supervisor (`proxy.supervisor`): this
same `serve`, with one worker and its place."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import typer

from proxy.config.loader import load_config
from proxy.config.model import SERVERS, ConfigError, Server, server_named
from proxy.config.units import BadValue, parse_workers, workers_for
from proxy.worker_role import WorkerRole

WORKER_ENTRY = "from cli.main import run; run()"


def worker_count(flag: str | None, config: Path) -> int:
    """The flag's count when given, else the config file's `workers:`; 1 when the file does not load (then `serve`
    reports why, as before). A bad flag is a usage error."""
    if flag is not None:
        try:
            return workers_for(parse_workers(flag))
        except BadValue as exc:
            raise typer.BadParameter(str(exc), param_hint="--workers") from exc
    try:
        return workers_for(load_config(config).workers)
    except (ConfigError, OSError):
        return 1


def server_choice(value: str | None) -> Server | None:
    """--server's value as a listener name; anything else is a usage error naming the known ones."""
    if value is None:
        return None
    server = server_named(value)
    if server is not None:
        return server
    raise typer.BadParameter(f"unknown server {value!r} (known: {', '.join(SERVERS)})", param_hint="--server")


def worker_role(directory: Path | None, index: int) -> WorkerRole | None:
    """The place a worker was started in (hidden options only its supervisor passes), or None for a lone proxy."""
    return WorkerRole.in_directory(directory, index) if directory is not None else None


def worker_command(
    role: WorkerRole,
    *,
    config: Path,
    host: str | None,
    port: int,
    db: Path | None,
    shadow_worker: bool,
    server: Server | None = None,
) -> Sequence[str]:
    """One worker's command line: `serve` with one worker, quiet (the supervisor prints for all), in its place."""
    index = role.admin_socket.stem.removeprefix("worker-")
    command = [sys.executable, "-c", WORKER_ENTRY, "serve", "--config", str(config), "--port", str(port)]
    command += ["--workers", "1", "--quiet", "--worker-dir", str(role.admin_socket.parent), "--worker-index", index]
    command += ["--shadow-worker" if shadow_worker else "--no-shadow-worker"]
    if host is not None:
        command += ["--host", host]
    if db is not None:
        command += ["--db", str(db)]
    if server is not None:
        command += ["--server", server]
    return command


def serve_supervised(
    count: int,
    config: Path,
    host: str | None,
    port: int | None,
    admin_port: int | None,
    db: Path | None,
    *,
    shadow_worker: bool,
    quiet: bool,
    server: Server | None = None,
) -> int:
    """Run `count` workers under the supervisor until SIGTERM/SIGINT; the exit code."""
    from proxy.supervisor import SupervisorPlan, supervise

    plan = SupervisorPlan(
        config_path=config,
        workers=count,
        command=lambda role, bound: worker_command(
            role, config=config, host=host, port=bound, db=db, shadow_worker=shadow_worker, server=server
        ),
        host=host,
        port=port,
        admin_port=admin_port,
        store=str(db) if db else None,
        shadow="one worker process per proxy worker" if shadow_worker else "in-process",
        quiet=quiet,
        server=server,
    )
    return supervise(plan)
