"""HTML and plain-text routes through the real proxy, shadow pipeline and store, judged by `strangler report`: a
volatile footer line is noise (the route is ready), a changed line beside it is real (the route diverges)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from proxy.app import start_proxy
from proxy.config.loader import load_config
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.pipeline import write_config

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
REQUESTS_PER_ROUTE = 24
CONFIG = """\
version: 1
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
store: {path: strangler.db, sample_matches: 100%}
upstreams:
  legacy: {url: http://127.0.0.1:9001}
  new: {url: http://127.0.0.1:9002}
defaults:
  noise: {sample: 1.0}      # every request also goes to legacy twice: the footer is legacy's own noise
  readiness: {min_compared: 20}
routes:
  - {id: html-footer, match: {path: "/html/footer/{id:int}"}, mode: shadow}
  - {id: html-row, match: {path: "/html/row/{id:int}"}, mode: shadow}
  - {id: text-footer, match: {path: "/text/footer/{id:int}"}, mode: shadow}
  - {id: text-row, match: {path: "/text/row/{id:int}"}, mode: shadow}
  - {id: html-long, match: {path: "/html/long/{id:int}"}, mode: shadow}
"""
FOOTER_GROUP = 'text: "<footer>Queries took #ms</footer>"'
HTML_ROW_GROUP = 'text: "<tr><td>pear</td><td>#</td></tr>"'
TEXT_FOOTER_GROUP = 'text: "Queries took #ms"'
TEXT_ROW_GROUP = 'text: "Items in total: #"'  # the reworded line, grouped by its new text

_calls = itertools.count()


def _footer_ms() -> str:
    """A query time that differs on every call, as a real page's would."""
    return f"{0.5 + next(_calls) % 90 / 100:.2f}"


def html_page(order: int, pears: int) -> str:
    """An order page served as one long line, a volatile footer at the end."""
    rows = "".join(
        f"<tr><td>{item}</td><td>{qty}</td></tr>" for item, qty in (("apple", 3), ("pear", pears), ("plum", order))
    )
    return (
        f"<!DOCTYPE html><html><head><title>Order {order}</title></head><body><h1>Order {order}</h1>"
        f"<table><tr><th>item</th><th>qty</th></tr>{rows}</table>"
        f"<footer>Queries took {_footer_ms()}ms</footer></body></html>"
    )


def long_page(total: str) -> str:
    """A job list of 150 rows, each with a volatile time, and a total line after it: more differing lines than
    an exchange stores (compare.MAX_DIFFERENCES)."""
    rows = "".join(f"<tr><td>job {k}</td><td>took {_footer_ms()}ms</td></tr>" for k in range(150))
    return f"<html><body><table>{rows}</table><p>Total: {total}</p></body></html>"


def text_page(order: int, total_line: str, newline: str = "\n", *, extra: Sequence[str] = ()) -> str:
    """A plain-text order with a generation timestamp and a volatile footer."""
    lines = [
        f"Order {order}",
        f"Generated at {datetime.now(UTC).isoformat()}",
        "apple 3",
        "pear 5",
        total_line,
        *extra,
        f"Queries took {_footer_ms()}ms",
    ]
    return newline.join(lines) + newline


def make_app(side: str) -> web.Application:
    """Legacy serves the same pages on every route; new changes the pear row (html-row) or rewords the total line
    (text-row), and sends plain text with CRLF line endings and trailing spaces (no difference by themselves)."""

    async def html(request: web.Request) -> web.Response:
        if request.match_info["variant"] == "long":
            return web.Response(text=long_page("three" if side == "new" else "3"), content_type="text/html")
        pears = 6 if side == "new" and request.match_info["variant"] == "row" else 5
        return web.Response(text=html_page(int(request.match_info["id"]), pears), content_type="text/html")

    async def text(request: web.Request) -> web.Response:
        order, row = int(request.match_info["id"]), request.match_info["variant"] == "row"
        hook = [f"Callback: /hooks?api_key=sk_live_{side}"] if row else []  # a secret that differs
        if side == "legacy":
            body = text_page(order, "Total items: 3", extra=hook)
        else:
            body = text_page(order, "Items in total: 3" if row else "Total items: 3  ", "\r\n", extra=hook)
        return web.Response(text=body, content_type="text/plain")

    application = web.Application()
    application.router.add_get("/html/{variant}/{id}", html)
    application.router.add_get("/text/{variant}/{id}", text)
    return application


async def _serve(application: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def fill_text_store(tmp_path: Path) -> Path:
    """Drive REQUESTS_PER_ROUTE GETs per route through the real proxy; returns the config path."""
    legacy_runner, legacy_url = await _serve(make_app("legacy"))
    new_runner, new_url = await _serve(make_app("new"))
    try:
        config_path = write_config(tmp_path, legacy_url, new_url, CONFIG)
        db_path = load_config(config_path).store.path

        def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
            return [ShadowListener.create(state.config, state.metrics, db_path)]

        running = await start_proxy(
            config_path, host="127.0.0.1", port=0, admin_port=0, listeners_factory=listeners, watch=False
        )
        try:
            base = f"http://127.0.0.1:{running.proxy_port}"
            async with aiohttp.ClientSession() as session:
                for i in range(REQUESTS_PER_ROUTE):
                    for prefix in ("/html/footer", "/html/row", "/text/footer", "/text/row", "/html/long"):
                        async with session.get(f"{base}{prefix}/{i}") as response:
                            assert response.status == 200
                            await response.read()
        finally:
            await running.stop()
    finally:
        await new_runner.cleanup()
        await legacy_runner.cleanup()
    return config_path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return asyncio.run(fill_text_store(tmp_path_factory.mktemp("text-verdicts")))


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


def report_routes(config: Path) -> dict[str, dict[str, Any]]:
    code, out, err = run("report", "--config", config, "--format", "json")
    assert code == 0, err
    return {r["id"]: r for r in json.loads(out)["routes"]}


def fields(route: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in route["fields"]}


def test_volatile_footer_alone_is_ready(config: Path) -> None:
    """A page whose only differing line is a volatile footer is ready: the footer's signature is noise."""
    routes = report_routes(config)
    for rid, footer in (("html-footer", FOOTER_GROUP), ("text-footer", TEXT_FOOTER_GROUP)):
        route = routes[rid]
        assert route["verdict"] == "ready", rid
        assert route["compared"] == REQUESTS_PER_ROUTE
        assert route["mismatched"] == 0
        assert route["noise_only"] == REQUESTS_PER_ROUTE
        assert fields(route)[footer]["noise"] is True
        assert all(f["noise"] for f in route["fields"]), rid  # CRLF and trailing spaces made no real group


def test_changed_line_beside_volatile_footer_diverges(config: Path) -> None:
    """A changed table row (HTML) or a reworded line (text) beside the volatile footer makes the route diverge."""
    routes = report_routes(config)
    for rid, real, footer in (
        ("html-row", HTML_ROW_GROUP, FOOTER_GROUP),
        ("text-row", TEXT_ROW_GROUP, TEXT_FOOTER_GROUP),
    ):
        route = routes[rid]
        assert route["verdict"] == "diverging", rid
        assert route["mismatched"] == REQUESTS_PER_ROUTE
        assert route["noise_only"] == 0
        found = fields(route)
        assert found[real]["count"] == REQUESTS_PER_ROUTE
        assert found[real]["noise"] is False
        assert found[footer]["noise"] is True
        assert not route["suggested_ignore_fields"]
    text_groups = [f["path"] for f in routes["text-row"]["fields"]]
    assert any(g.startswith('text: "Callback: /hooks?api_key=<redacted:') for g in text_groups)
    assert "sk_live" not in json.dumps(routes)  # line signatures are redacted before they are stored


def test_real_line_past_the_storage_cap_diverges(config: Path) -> None:
    """A real change after more volatile lines than an exchange stores still makes the route diverge: the stored
    differences keep one of every group, so the pair is not taken for noise only."""
    route = report_routes(config)["html-long"]
    assert route["verdict"] == "diverging"
    assert route["noise_only"] == 0
    assert fields(route)['text: "<p>Total: three</p>"']["count"] == REQUESTS_PER_ROUTE


def test_flip_gate_refuses_a_diverging_text_route(config: Path, tmp_path: Path) -> None:
    """`routes flip` refuses the HTML route whose row changed and lets the footer-only one through."""
    for item in config.parent.iterdir():  # a private copy: the flip edits routes.yaml and records into the store
        shutil.copy2(item, tmp_path / item.name)
    copy = tmp_path / config.name
    code, _, err = run("routes", "flip", "html-row", "--to", "new", "--config", copy)
    assert code == 1
    assert "diverging" in err
    code, _, err = run("routes", "flip", "html-footer", "--to", "new", "--config", copy)
    assert code == 0, err


def test_text_groups_render_in_every_view(config: Path) -> None:
    """Report formats, `noise suggest` and `diffs list|show` handle line-signature groups (no JSON rule offered)."""
    for fmt in ("table", "markdown", "html", "junit"):
        code, out, err = run("report", "--config", config, "--format", fmt)
        assert code == 0, (fmt, err)
        assert fmt == "junit" or "Queries took #ms" in out, fmt
    code, out, err = run("noise", "suggest", "--config", config, "--format", "json")
    assert code == 0, err
    assert all(not r["ignore_fields"] for r in json.loads(out)["routes"])
    code, out, err = run(
        "diffs", "list", "--config", config, "--route", "html-row", "--field", HTML_ROW_GROUP, "-f", "json"
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == REQUESTS_PER_ROUTE
    code, out, err = run("diffs", "show", str(rows[0]["id"]), "--config", config, "--format", "json")
    assert code == 0, err
    groups = {d["group"] for d in json.loads(out)["differences"]}
    assert groups == {HTML_ROW_GROUP, FOOTER_GROUP}
    code, out, err = run("diffs", "show", str(rows[0]["id"]), "--config", config)
    assert code == 0, err
    assert "body:line 11" in out


def test_diffs_show_html_by_the_lines_compared(config: Path) -> None:
    """`diffs show` on an HTML page served as one line shows the lines the comparison used, one per element."""
    code, out, err = run(
        "diffs", "list", "--config", config, "--route", "html-row", "--field", HTML_ROW_GROUP, "-f", "json"
    )
    assert code == 0, err
    code, out, err = run("diffs", "show", str(json.loads(out)[0]["id"]), "--config", config)
    assert code == 0, err
    lines = [line.strip("│ ") for line in out.splitlines()]
    assert "-<tr><td>pear</td><td>5</td></tr>" in lines
    assert "+<tr><td>pear</td><td>6</td></tr>" in lines
