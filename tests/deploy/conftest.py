"""Fixtures for the deploy recipe tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.loader import load_config
from proxy.config.model import Config
from tests.deploy.recipes import routes_yaml_text


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The ConfigMap's routes.yaml, loaded by the real loader."""
    path = tmp_path / "etc" / "routes.yaml"
    path.parent.mkdir()
    path.write_text(routes_yaml_text(), encoding="utf-8")
    return load_config(path)
