"""How the CLI talks: data on stdout as a rich table or JSON, errors as one red line on stderr.

Error handling lives in one place, `ErrorReportingGroup`: every command may raise a domain error (`CliError`,
`ConfigError`, an `OSError` on a file) and it becomes `Error: ...` on stderr with exit code 1. Tracebacks are shown
only with the global `--debug` option. Usage errors stay click's (exit code 2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from typer.core import TyperGroup

from proxy.config.model import ConfigError
from shadow.store.database import StoreError

PIPE_WIDTH = 120  # rich assumes 80 columns off a terminal, which truncates the report's wide tables


def stdout_console() -> Console:
    """A console on the current sys.stdout, sized from the current COLUMNS (so CliRunner's env applies); output
    to a pipe or a file without COLUMNS gets PIPE_WIDTH columns."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class OutputFormat(StrEnum):
    """`--format`: a human table, or JSON for scripts and CI."""

    table = "table"
    json = "json"


class CliError(Exception):
    """A domain error the user can fix: shown as `Error: <message>` (one line per entry in `details`), exit 1."""

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


@dataclass(slots=True)
class CliState:
    """Global options, stored on the root click context by the app callback."""

    debug: bool = False


# Options every command spells the same way.
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The routes file.", envvar="STRANGLER_CONFIG", dir_okay=False)
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output as a table or as JSON.")]


def error_lines(exc: BaseException) -> list[str]:
    """The lines to show for a domain error; an empty list means "not a domain error"."""
    if isinstance(exc, ConfigError):
        return [str(issue) for issue in exc.issues] or [str(exc)]
    if isinstance(exc, CliError):
        return [str(exc), *exc.details]
    if isinstance(exc, StoreError):  # its message names the file
        return [str(exc)]
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return [f"{where}{exc.strerror or exc}"]
    return []


def print_error(message: str) -> None:
    stderr_console().print(f"[red]Error:[/red] {escape(message)}", soft_wrap=True)


def print_json(value: Any) -> None:
    """Plain JSON on stdout: no colour, no wrapping, so it can be piped into jq."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_line(message: str) -> None:
    """One line of human output; `message` is rich markup, so escape any user text in it."""
    stdout_console().print(message, soft_wrap=True)


def print_renderable(renderable: RenderableType) -> None:
    """A rich table or other renderable on stdout."""
    stdout_console().print(renderable)


def _debug_enabled(ctx: typer.Context) -> bool:
    state = ctx.find_root().obj
    return isinstance(state, CliState) and state.debug


class ErrorReportingGroup(TyperGroup):
    """The root command group: turns exceptions raised by any command into a red error line and exit 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context; Any keeps the override compatible
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exit codes and usage errors (exit 2) are typer's to report
        except Exception as exc:  # the last line of defence: no traceback unless --debug
            if _debug_enabled(ctx):
                raise
            lines = error_lines(exc) or [f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)"]
            for line in lines:
                print_error(line)
            raise typer.Exit(1) from exc
