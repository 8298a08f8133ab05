"""The package layout the rest of the project relies on."""

import importlib


def test_packages_import() -> None:
    """Every top-level package imports on its own."""
    for name in ("proxy", "shadow", "reports", "cli"):
        assert importlib.import_module(name).__doc__
