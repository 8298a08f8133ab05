"""`strangler store pull`: fetch each replica's store snapshot from its admin API and merge them into one file
(`shadow.store.pull`, `shadow.store.merge`), which `report --db` and every other command then read."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.output import CliError, FormatOption, OutputFormat, print_json, print_line, print_renderable
from reports.fmt import size
from shadow.store.pull import Pulled, PullError, pull_all

DEFAULT_TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"

store_app = typer.Typer(
    help="Work with store files: pull and merge replicas' stores.\n\n"
    "Example: [bold]strangler store pull --admin http://10.0.0.5:8081 --admin http://10.0.0.6:8081 "
    "--into merged.db[/bold]",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    """Add the `store` command group to the root app (called once by cli.main)."""
    app.add_typer(store_app, name="store")


def _document(into: Path, pulled: list[Pulled], failed: list[PullError]) -> dict[str, Any]:
    return {
        "into": str(into),
        "replicas": [
            {
                "admin": p.admin,
                "bytes": p.size,
                "store_id": p.contribution.store_id,
                "exchanges": p.contribution.exchanges,
                "flips_added": p.contribution.flips_added,
                "replaced": p.contribution.replaced,
            }
            for p in pulled
        ],
        "failed": [str(exc) for exc in failed],
    }


def _table(pulled: list[Pulled]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("replica", "fetched", "store id", "exchanges", "flips added", "merge"):
        table.add_column(column, justify="right" if column in ("fetched", "exchanges", "flips added") else "left")
    for p in pulled:
        c = p.contribution
        table.add_row(
            escape(p.admin), size(p.size), escape(c.store_id[:12]), f"{c.exchanges:,}", f"{c.flips_added:,}",
            "replaced earlier pull" if c.replaced else "new",
        )  # fmt: skip
    return table


@store_app.command("pull")
def pull(
    admin: Annotated[
        list[str],
        typer.Option("--admin", help="A replica's admin URL (http://host:8081); repeat for each replica."),
    ],
    into: Annotated[
        Path,
        typer.Option("--into", help="The merged store file: created, or one an earlier pull made.", dir_okay=False),
    ],
    token_env: Annotated[
        str, typer.Option("--token-env", help="The environment variable holding the replicas' admin token.")
    ] = DEFAULT_TOKEN_ENV,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Fetch a consistent snapshot of each replica's store from its admin API and merge them into one file.

    Exchanges, bodies and differences are copied with new ids; traffic and rollups are summed; flips are added
    once. Pulling a replica again replaces what it gave before (replicas are known by their store id), so nothing
    counts twice. The replicas need an admin token (admin.token_env); this command reads the same token from
    --token-env. A replica that fails is named with what failed, the others are still merged, and the exit code
    is 1.

    Example: [bold]STRANGLER_ADMIN_TOKEN=... strangler store pull --admin http://10.0.0.5:8081 --admin
    http://10.0.0.6:8081 --into merged.db && strangler report --db merged.db[/bold]
    """
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise CliError(f"set {token_env} to the replicas' admin token (or name another variable with --token-env)")
    if not into.parent.is_dir():
        raise CliError(f"{into.parent}: no such directory for --into")
    pulled, failed = asyncio.run(pull_all(list(admin), token, into))
    if fmt is OutputFormat.json:
        print_json(_document(into, pulled, failed))
    elif pulled:
        print_renderable(_table(pulled))
        print_line(f"merged {len(pulled)} of {len(admin)} replicas into {escape(str(into))}")
    if failed:
        raise CliError(f"{len(failed)} of {len(admin)} replicas failed", tuple(str(exc) for exc in failed))
