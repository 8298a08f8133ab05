"""`strangler report --format html`: one self-contained file that a real browser renders with its route table, that
fits an 800 px and a 1400 px window without sideways scrolling, whose latency chart keeps every label inside it,
and that names why pairs were not compared. Skipped, with the reason, when chromium is not installed."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from tests.reports.report_fixtures import Filled, fill
from tests.shadow.shadow_fixtures import Handler, backends, shadow_proxy

CHROMIUM = Path("/usr/bin/chromium")
LONG_ROUTE = "orders-by-customer-and-region-with-a-long-route-id"
WIDTHS = (800, 1400)

# Measures the page once laid out and writes the figures into the DOM, which --dump-dom then prints. Injected into
# a copy of the report only: the report itself has no scripts.
PROBE = """<script>
(() => {
  const root = document.documentElement;
  const svg = document.getElementById("latency-chart");
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll("text")].map((t) => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left - box.left, right: r.right - box.left};
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({innerWidth: window.innerWidth, scrollWidth: root.scrollWidth,
    clientWidth: root.clientWidth, svgWidth: box.width, texts});
  document.body.appendChild(out);
})();
</script>"""


def chromium_binary() -> str:
    """The chromium executable, or a skip saying how to install it."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


def run_chromium(binary: str, profile: Path, width: int, *args: str) -> str:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--window-size={width},1200", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=45, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def report(config: Path, db: Path, target: Path) -> Path:
    args = ["report", "--config", str(config), "--db", str(db), "--format", "html", "--output", str(target)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    filled: Filled = fill(tmp_path_factory, "html")
    return report(filled.config, filled.db, filled.config.parent / "report.html")


# Routes for the layout checks: a long route id (the chart's longest label), a route whose new side fails (candidate
# errors by kind) and whose POSTs are not mirrored (skipped by reason).
LAYOUT_ROUTES = f"""
- id: {LONG_ROUTE}
  match: {{path: /api/orders/**}}
  mode: shadow
- id: search
  match: {{path: /api/search}}
  mode: shadow
"""


def _serving(status: Mapping[str, int]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"path": request.path, "rows": [1, 2, 3]}, status=status.get(request.path, 200))

    return handler


@pytest.fixture(scope="module")
def layout_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report from the real pipeline over LAYOUT_ROUTES."""
    tmp = tmp_path_factory.mktemp("html-layout")

    async def fill_layout() -> None:
        async with (
            backends(_serving({}), _serving({"/api/search": 500})) as (legacy, new),
            shadow_proxy(tmp, legacy.url, new.url, LAYOUT_ROUTES) as sp,
        ):
            for i in range(6):
                await sp.request("GET", f"/api/orders/{i}")
            for _ in range(3):
                await sp.request("GET", "/api/search")
            for _ in range(2):
                await sp.request("POST", "/api/search", data=b"{}")

    asyncio.run(fill_layout())
    return report(tmp / "routes.yaml", tmp / "shadow.db", tmp / "report.html")


def probe(binary: str, page: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """The layout figures of `page` in a `width`-pixel window."""
    probed = tmp_path / f"probe-{width}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(binary, tmp_path / f"profile-{width}", width, "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    figures: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return figures


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_html_file_is_self_contained(report_html: Path) -> None:
    """The file has no external src/href, no scripts and no stylesheet links: it opens offline."""
    page = report_html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|@import|url\(", page, re.IGNORECASE)
    assert '<table id="routes">' in page
    assert "<svg" in page


def test_html_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    """Headless Chromium loads the file and its DOM holds the route table with the routes and verdicts."""
    binary = chromium_binary()
    dom = run_chromium(binary, tmp_path / "profile", 1400, "--dump-dom", report_html.as_uri())
    assert '<table id="routes">' in dom
    table = dom.split('<table id="routes">', 1)[1].split("</table>", 1)[0]
    for needle in ("customers", "orders-list", "diverging", "ready"):
        assert needle in table, needle
    assert '<svg id="latency-chart"' in dom


@pytest.mark.parametrize("width", WIDTHS)
def test_html_fits_the_window_and_the_chart_keeps_its_labels(layout_html: Path, tmp_path: Path, width: int) -> None:
    """At 800 and 1400 px the page does not scroll sideways and every chart label, the longest route id and the
    longest value among them, lies inside the chart; a screenshot of that width is taken."""
    binary = chromium_binary()
    figures = probe(binary, layout_html, width, tmp_path)
    assert figures["innerWidth"] == width
    assert figures["scrollWidth"] <= figures["clientWidth"], figures
    texts = figures["texts"]
    assert any(LONG_ROUTE in t["text"] for t in texts)
    for t in texts:
        assert t["left"] >= -0.5, t
        assert t["right"] <= figures["svgWidth"] + 0.5, (t, figures["svgWidth"])
    shot = tmp_path / f"report-{width}.png"
    run_chromium(binary, tmp_path / f"profile-shot-{width}", width, f"--screenshot={shot}", layout_html.as_uri())
    assert png_size(shot)[0] == width


def test_html_names_why_pairs_were_not_compared(layout_html: Path) -> None:
    """The per-route reasons the table report prints (candidate errors by kind, skipped by reason) are in the page."""
    page = layout_html.read_text()
    assert '<table id="reasons"' in page
    reasons = page.split('<table id="reasons"', 1)[1].split("</table>", 1)[0]
    text = re.sub(r"<[^>]+>", " ", reasons)
    assert "search" in text
    assert "status_500 3" in text
    assert "method_not_mirrored 2" in text
