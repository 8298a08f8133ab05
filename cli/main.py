"""The strangler command line: the only place that wires packages together and prints."""

from __future__ import annotations

import typer

app = typer.Typer(help="strangler: a strangler-pattern migration proxy.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """strangler: route, shadow, compare and flip endpoints from a legacy back end to a new service."""


def run() -> None:
    app()
