"""`strangler report --format html`: one self-contained file that a real browser renders with its route table."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.reports.report_fixtures import Filled, fill

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    filled: Filled = fill(tmp_path_factory, "html")
    target = filled.config.parent / "report.html"
    args = [
        "report",
        "--config",
        str(filled.config),
        "--db",
        str(filled.db),
        "--format",
        "html",
        "--output",
        str(target),
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return target


def test_html_file_is_self_contained(report_html: Path) -> None:
    """The file has no external src/href, no scripts and no stylesheet links: it opens offline."""
    page = report_html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|@import|url\(", page, re.IGNORECASE)
    assert '<table id="routes">' in page
    assert "<svg" in page


def test_html_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    """Headless Chromium loads the file and its DOM holds the route table with the routes and verdicts."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    binary = str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report_html.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=45, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert '<table id="routes">' in dom
    table = dom.split('<table id="routes">', 1)[1].split("</table>", 1)[0]
    for needle in ("customers", "orders-list", "diverging", "ready"):
        assert needle in table, needle
    assert '<svg id="latency-chart"' in dom
