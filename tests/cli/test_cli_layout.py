"""The cli package stays in small modules, each saying what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "cli"
MAX_LINES = 400


@pytest.mark.parametrize("module", sorted(CLI.rglob("*.py")), ids=lambda p: str(p.relative_to(CLI)))
def test_cli_module_is_small_and_documented(module: Path) -> None:
    """Every cli module has at most 400 lines and a module docstring."""
    text = module.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    assert ast.get_docstring(ast.parse(text)), f"{module.name} has no docstring"
