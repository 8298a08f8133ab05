"""`strangler progress` and the HTML report's progress chart on a store the real proxy pipeline filled, after a flip
recorded by `strangler routes flip`; the chart checked in headless Chromium (skipped when it is not installed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from shadow.store.database import Store
from tests.cli.test_html_chromium import chromium_binary, png_size, run_chromium
from tests.reports.report_fixtures import Filled, fill

ENV = {"COLUMNS": "140", "NO_COLOR": "1", "TERM": "dumb"}

# Lays the page out and writes the progress chart's figures into the DOM for --dump-dom (a copy of the page only).
PROBE = """<script>
(() => {
  const svg = document.getElementById("progress-chart");
  const box = svg.getBoundingClientRect();
  const lines = [...svg.querySelectorAll("polyline")].map((l) => l.getBoundingClientRect().width);
  const flips = [...svg.querySelectorAll("g.flip line")].map((l) => l.getBoundingClientRect().left - box.left);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({svgWidth: box.width, svgHeight: box.height, lines, flips});
  document.body.appendChild(out);
})();
</script>"""


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """The report store, then orders-list flipped to new (forced), so the audit trail has a flip in the window."""
    filled = fill(tmp_path_factory, "progress")
    code, out, err = run(
        "routes", "flip", "orders-list", "--to", "new", "--force", "--reason", "progress test", "-c", filled.config
    )
    assert code == 0, out + err
    return filled


def test_progress_json_shares_match_the_traffic(flipped: Filled) -> None:
    """Overall new_share is requests served by new over all requests (unrouted included); per route likewise;
    the flip is listed."""
    code, out, err = run("progress", "--config", flipped.config, "--db", flipped.db, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    with Store.open_readers([flipped.db]) as store:
        traffic = store.traffic_by_mode()
    total = sum(t.count for t in traffic)
    new = sum(t.count for t in traffic if t.served_by == "new")
    assert len(doc["periods"]) == 31  # 30 days back, both ends included
    assert sum(p["requests"] for p in doc["periods"]) == total
    today = doc["periods"][-1]
    assert today["requests"] == total
    assert today["new_share"] == pytest.approx(new / total, abs=1e-6)
    assert doc["routes"]["reports"][-1]["new_share"] == 1.0  # mode new
    assert doc["routes"]["orders-read"][-1]["new_share"] == 0.0  # mode shadow: legacy serves
    assert [(f["route"], f["to_mode"]) for f in doc["flips"]] == [("orders-list", "new")]


def test_progress_table_has_a_bar_and_a_sparkline_per_route(flipped: Filled) -> None:
    """The terminal view shows the overall bar and one row per route with its sparkline, and the flip."""
    code, out, err = run("progress", "--config", flipped.config, "--db", flipped.db, "--by", "hour", "--since", "6h")
    assert code == 0, err
    assert out.startswith("Served by new █")
    assert re.search(r"reports\s+·*█\s+100%", out), out
    assert re.search(r"orders-read\s+·*▁\s+0%", out), out
    assert "orders-list: flip shadow → new" in out


def test_html_report_has_the_progress_chart_in_chromium(flipped: Filled, tmp_path: Path) -> None:
    """`report --format html` holds the inline SVG progress chart with the flip marked; Chromium lays it out with
    its lines and the flip mark inside the chart, and takes a screenshot."""
    page = tmp_path / "report.html"
    code, out, err = run("report", "--config", flipped.config, "--db", flipped.db, "--format", "html", "-o", page)
    assert code == 0, out + err
    text = page.read_text()
    assert '<svg id="progress-chart"' in text
    assert 'class="flip"' in text
    assert "orders-list → new" in text
    binary = chromium_binary()
    probed = tmp_path / "probe.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = run_chromium(binary, tmp_path / "profile", 1000, "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    figures = json.loads(found.group(1).replace("&quot;", '"'))
    assert figures["svgWidth"] > 600
    assert figures["lines"]
    assert all(0 < x < figures["svgWidth"] for x in figures["flips"]), figures
    shot = tmp_path / "report.png"
    run_chromium(binary, tmp_path / "profile-shot", 1000, f"--screenshot={shot}", page.as_uri())
    assert png_size(shot)[0] == 1000
