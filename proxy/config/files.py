"""Where a file named in routes.yaml lives: the one rule for every path key (store.path, access_log.path, the TLS
files). Relative paths resolve against the config file's directory, not the working directory, so the same
routes.yaml means the same files whoever starts the proxy and from wherever."""

from __future__ import annotations

from pathlib import Path


def resolve(written: str | Path, source: Path) -> Path:
    """A path as written in the file: `~` expanded, relative ones against the config file's directory."""
    path = Path(written).expanduser()
    return path if path.is_absolute() else source.absolute().parent / path
