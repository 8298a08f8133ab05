"""`strangler replay`: stored requests sent again to both sides, compared, stored, and summarized before → after."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from typer.testing import CliRunner, Result

from cli.demo.legacy_app import make_legacy_app
from cli.demo.new_app import make_new_app
from cli.main import app
from proxy.app import start_proxy
from proxy.config.loader import load_config, parse_config
from proxy.config.model import Mirror, Upstream
from proxy.events import Headers
from reports.gate import route_figures
from reports.replay import REPLAY_PREFIX, Replayer, ReplayTarget, select_targets, stored_request
from shadow.fetch import REPLAY_HEADER, copy_headers
from shadow.redact import Redactor
from shadow.runner import shadow_listeners
from shadow.store.database import Store
from shadow.store.types import ReplayItem
from shadow.values import ExchangeRecord, StoredBody
from tests.pipeline import REPO_CONFIG, fill_store, write_config
from tests.proxy.app_fixtures import wait_until
from tests.shadow.shadow_fixtures import Seen, backends, json_handler


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "160"}).invoke(app, list(args))


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store filled once by the demo pipeline (copied into each test, which replays into it)."""
    folder = tmp_path_factory.mktemp("demo")
    asyncio.run(fill_store(folder, requests=200))
    return folder


def copy_demo(demo_files: Path, tmp_path: Path) -> Path:
    for source in demo_files.iterdir():
        shutil.copy2(source, tmp_path / source.name)
    return tmp_path / "routes.yaml"


async def replay_against(
    tmp_path: Path,
    demo_files: Path,
    aiohttp_server: AiohttpServer,
    *,
    fixed: bool,
    extra: tuple[str, ...] = (),
) -> Result:
    """Replay the demo store's orders-read mismatches ($.currency) against the demo legacy app and either the demo
    new app or a fixed one (answering as legacy does)."""
    config = copy_demo(demo_files, tmp_path)
    legacy = await aiohttp_server(make_legacy_app())
    new = await aiohttp_server(make_legacy_app() if fixed else make_new_app())
    write_config(tmp_path, f"http://127.0.0.1:{legacy.port}", f"http://127.0.0.1:{new.port}")
    args = ("replay", "--route", "orders-read", "--outcome", "mismatch", "-c", str(config), *extra)
    return await asyncio.to_thread(invoke, *args)


async def test_replay_turns_a_fixed_mismatch_into_a_match(
    tmp_path: Path, demo_files: Path, aiohttp_server: AiohttpServer
) -> None:
    """After the new side is fixed, every replayed former mismatch matches, per route and per field."""
    result = await replay_against(tmp_path, demo_files, aiohttp_server, fixed=True, extra=("--format", "json"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    [route] = doc["routes"]
    assert route["route_id"] == "orders-read"
    assert route["mismatched_before"] > 0
    assert (route["fixed"], route["mismatched_after"]) == (route["mismatched_before"], 0)
    currency = next(f for f in doc["fields"] if f["group"] == "$.currency")
    assert (currency["before"], currency["after"], currency["fixed"]) == (route["replayed"], 0, route["replayed"])
    with Store.open_readers([tmp_path / "strangler.db"]) as store:
        replays = store.list_exchanges("orders-read", limit=1000, pair="replay")
        originals = {e.id: e for e in store.list_exchanges("orders-read", limit=1000, pair="candidate")}
        for replayed in replays:
            detail = store.get_exchange(replayed.id)
            assert detail is not None
            assert detail.record.replay_of in originals
            assert replayed.request_id == REPLAY_PREFIX + originals[detail.record.replay_of].request_id
    assert len(replays) == route["replayed"]
    assert {e.outcome for e in replays} == {"match"}


def report_json(config: Path) -> dict[str, Any]:
    result = invoke("report", "-c", str(config), "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


LIVE_FIGURES = ("compared", "matched", "mismatched", "noise_only", "candidate_errors", "dropped", "skipped",
                "match_rate", "latency", "fields", "field_groups", "verdict", "checks")  # fmt: skip


async def test_replays_never_count_toward_readiness_and_show_apart_in_the_report(
    tmp_path: Path, demo_files: Path, aiohttp_server: AiohttpServer
) -> None:
    """A replay leaves every route's compared count, figures and verdict (and the flip gate's figures) as they were;
    the report shows the replays in their own section, before → after per route and field."""
    config = copy_demo(demo_files, tmp_path)
    legacy = await aiohttp_server(make_legacy_app())
    new = await aiohttp_server(make_legacy_app())  # fixed: answers as legacy does
    write_config(tmp_path, f"http://127.0.0.1:{legacy.port}", f"http://127.0.0.1:{new.port}")
    before = await asyncio.to_thread(report_json, config)
    with Store.open(tmp_path / "strangler.db") as store:
        gate_before = route_figures(store, load_config(config), "orders-read")

    args = ("replay", "--route", "orders-read", "-c", str(config), "--format", "json", "--limit", "1000")
    result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.stderr
    replayed = json.loads(result.stdout)
    after = await asyncio.to_thread(report_json, config)

    def live(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: r[k] for k in ("id", *LIVE_FIGURES)} for r in doc["routes"]]

    assert live(after) == live(before)
    assert after["verdicts"] == before["verdicts"]
    with Store.open(tmp_path / "strangler.db") as store:
        assert route_figures(store, load_config(config), "orders-read") == gate_before
    assert before["replay"] == {"replayed": 0, "fixed": 0, "routes": [], "fields": []}
    [change] = after["replay"]["routes"]
    orders = next(r for r in before["routes"] if r["id"] == "orders-read")
    assert change["route_id"] == "orders-read"
    assert change["replayed"] == replayed["routes"][0]["replayed"] == orders["compared"] + orders["candidate_errors"]
    assert change["mismatched_before"] == orders["mismatched"] + orders["noise_only"] > 0
    assert (change["fixed"], change["mismatched_after"]) == (change["mismatched_before"], 0)
    assert after["replay"]["fields"] == replayed["fields"]
    currency = next(f for f in after["replay"]["fields"] if f["group"] == "$.currency")
    assert (currency["before"], currency["after"]) == (change["mismatched_before"], 0)


async def test_a_second_replay_counts_once_and_lists_apart(
    tmp_path: Path, demo_files: Path, aiohttp_server: AiohttpServer
) -> None:
    """Replaying the same exchanges twice never selects the replays themselves; the report counts each original
    once (its newest replay) and `diffs list --pair replay` lists only replays."""
    first = await replay_against(tmp_path, demo_files, aiohttp_server, fixed=False, extra=("--format", "json"))
    assert first.exit_code == 0, first.stderr
    config = tmp_path / "routes.yaml"
    second = await asyncio.to_thread(
        invoke, "replay", "--route", "orders-read", "--outcome", "mismatch", "-c", str(config), "--format", "json"
    )
    assert second.exit_code == 0, second.stderr
    n = json.loads(first.stdout)["routes"][0]["replayed"]
    assert json.loads(second.stdout)["routes"][0]["replayed"] == n  # the originals again, not the first replays
    doc = await asyncio.to_thread(report_json, config)
    assert doc["replay"]["routes"][0]["replayed"] == n
    listed = await asyncio.to_thread(
        invoke, "diffs", "list", "-c", str(config), "--pair", "replay", "--limit", "1000", "--format", "json"
    )
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 * n
    assert {r["pair"] for r in rows} == {"replay"}
    for fmt in ("table", "markdown", "html"):
        shown = await asyncio.to_thread(invoke, "report", "-c", str(config), "--format", fmt)
        assert shown.exit_code == 0, shown.stderr
        assert "Replays (not counted above): before → after" in shown.stdout, fmt
        assert "$.currency" in shown.stdout.split("Replays (not counted above)")[1], fmt


async def test_replay_table_says_how_many_mismatches_now_match(
    tmp_path: Path, demo_files: Path, aiohttp_server: AiohttpServer
) -> None:
    """The table shows mismatches before → after and one line per route with the fixed count."""
    result = await replay_against(tmp_path, demo_files, aiohttp_server, fixed=True)
    assert result.exit_code == 0, result.stderr
    assert "Replay: before → after" in result.stdout
    assert "$.currency" in result.stdout
    line = next(x for x in result.stdout.splitlines() if "former mismatches now match" in x)
    n = line.split(": ", 1)[1].split(" of ")[0]
    assert line.strip() == f"orders-read: {n} of {n} former mismatches now match"
    assert int(n) > 0


async def test_replay_without_a_fix_still_differs(
    tmp_path: Path, demo_files: Path, aiohttp_server: AiohttpServer
) -> None:
    """Against the unchanged new side the same field still differs: nothing is reported fixed."""
    result = await replay_against(tmp_path, demo_files, aiohttp_server, fixed=False, extra=("--format", "json"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    [route] = doc["routes"]
    assert route["fixed"] == 0
    assert route["mismatched_after"] == route["mismatched_before"] > 0
    currency = next(f for f in doc["fields"] if f["group"] == "$.currency")
    assert currency["before"] == currency["after"] == route["replayed"]


def stored(t: float, **changes: object) -> ExchangeRecord:
    base = ExchangeRecord(
        time=t, route_id="orders-read", mode="shadow", pair="candidate", method="GET", template="/api/orders/{id:int}",
        path="/api/orders/1", query="", request_id=f"req-{t}", served_by="legacy", outcome="mismatch", reason=None,
        legacy_status=200, legacy_latency_ms=1.0, legacy_size=2, new_status=200, new_latency_ms=1.0, new_size=2,
    )  # fmt: skip
    return base._replace(**changes)  # type: ignore[arg-type]


def test_selection_skips_unsafe_methods_noise_pairs_and_earlier_replays(tmp_path: Path) -> None:
    """Only candidate exchanges are replayed, never earlier replays; unsafe methods only with allow_unsafe."""
    config = parse_config(REPO_CONFIG.read_text(encoding="utf-8"), tmp_path / "routes.yaml")
    now = time.time()
    body = StoredBody(b'{"qty": 1}', 10, False)
    with Store.open(tmp_path / "strangler.db") as store:
        store.write_batch(
            [
                stored(now - 5),
                stored(now - 4, pair="noise"),
                stored(now - 3, pair="replay", request_id=f"{REPLAY_PREFIX}req"),
                stored(now - 2, method="POST", request_body=body),
                stored(now - 1, route_id="gone"),
            ]
        )
        safe, skipped = select_targets(store, config, outcome="mismatch")
        assert [t.item.time for t in safe] == [now - 5]
        assert sorted((s.route_id, s.reason) for s in skipped) == [
            ("gone", "route_not_in_config"),
            ("orders-read", "unsafe_method"),
        ]
        unsafe, _ = select_targets(store, config, allow_unsafe=True)
        assert [(t.item.method, t.item.body) for t in unsafe] == [("POST", b'{"qty": 1}'), ("GET", None)]


def test_replay_without_a_store_fails(tmp_path: Path) -> None:
    """With no store file there is nothing to replay: one error line, exit 1."""
    config = tmp_path / "routes.yaml"
    config.write_text(REPO_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    result = invoke("replay", "-c", str(config))
    assert result.exit_code == 1
    assert "no such store file" in result.stderr


def replayed_headers(stored: Headers, upstream: Upstream, mirror: Mirror, method: str) -> list[tuple[str, str]]:
    """The headers `strangler replay` sends for a stored request with these headers: the send path's own."""
    item = ReplayItem(1, 0, 0.0, "orders-read", method, "/api/orders", "", stored, None)
    return copy_headers(stored_request(item, REPLAY_PREFIX + "req"), upstream, mirror, replay=True)


@pytest.mark.parametrize(
    ("side_effects", "method", "marked"),
    [("dry_run", "POST", True), ("dry_run", "GET", False), ("allow", "POST", False)],
)
def test_replayed_writes_carry_the_dry_run_mark_like_live_shadowing(
    side_effects: str, method: str, marked: bool
) -> None:
    """Replay marks unsafe methods X-Strangler-Dry-Run: 1 on dry_run routes, drops client copies, and sets Host."""
    from yarl import URL

    mirror = Mirror(side_effects=side_effects)  # type: ignore[arg-type]
    stored = (("Host", "old"), ("X-Strangler-Dry-Run", "0"), ("Content-Type", "application/json"))
    out = dict(replayed_headers(stored, Upstream("new", URL("http://127.0.0.1:9002")), mirror, method))
    assert out.get("X-Strangler-Dry-Run") == ("1" if marked else None)
    assert out["Host"] == "127.0.0.1:9002"
    assert out["X-Strangler-Shadow"] == "1"


def test_replayed_bodies_go_without_their_original_content_encoding() -> None:
    """A request that arrived gzip-encoded is stored decoded, so its replay carries no Content-Encoding: gzip
    (the new service would fail to inflate plain bytes); other headers are kept."""
    from yarl import URL

    from proxy.config.model import Redact
    from shadow.records import stored_body
    from shadow.redact import Redactor

    stored = (("Host", "old"), ("Content-Type", "application/json"), ("Content-Encoding", "gzip"))
    body = stored_body(stored, gzip.compress(b'{"qty": 2}'), Redactor(b"k" * 32, Redact()), 1024)
    assert body is not None
    assert body.data == b'{"qty": 2}'  # what replay will send
    out = replayed_headers(stored, Upstream("new", URL("http://127.0.0.1:9002")), Mirror(side_effects="allow"), "POST")
    assert [k.lower() for k, _ in out].count("content-encoding") == 0
    assert ("Content-Type", "application/json") in out


@pytest.mark.parametrize(("host_header", "expected"), [("rewrite", "127.0.0.1:9002"), ("preserve", "shop.example")])
def test_replayed_host_follows_the_upstreams_host_header_rule(host_header: str, expected: str) -> None:
    """A replay sends Host as live shadowing does: the upstream's own, or the client's stored Host under
    host_header: preserve (never both)."""
    from yarl import URL

    # As stored: the headers forwarded to the primary, whose upstream rewrote Host; the client's is in XFH.
    stored = (("Host", "legacy.internal:8000"), ("Accept", "*/*"), ("X-Forwarded-Host", "shop.example"))
    upstream = Upstream("new", URL("http://127.0.0.1:9002"), host_header=host_header)  # type: ignore[arg-type]
    out = replayed_headers(stored, upstream, Mirror(), "GET")
    assert [v for k, v in out if k.lower() == "host"] == [expected]


SEND_PATH_CONFIG = """\
version: 1
listen: {{host: 127.0.0.1, port: 8080}}
admin: {{host: 127.0.0.1, port: 8081}}
store: {{path: shadow.db}}
upstreams:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}", host_header: {host_header}}}
routes:
  - id: api
    match: {{path: /api/**}}
    mode: shadow
    shadow: {{methods: [GET, POST], side_effects: dry_run}}
"""


def _as_received(seen: Seen) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """What a back end received, header order and case included; X-Request-Id left out (compared apart)."""
    headers = [(k, v) for k, v in seen.headers.items() if k.lower() != "x-request-id"]
    return seen.method, seen.path_qs, headers, seen.body


@pytest.mark.parametrize("host_header", ["rewrite", "preserve"])
async def test_live_and_replayed_copies_of_one_request_are_the_same_request(tmp_path: Path, host_header: str) -> None:
    """A request mirrored live and the same stored request replayed reach the candidate identically (method, target,
    headers in order, body), apart from the replay mark and the request id, which names the replay."""
    async with backends(json_handler({"side": "legacy"}), json_handler({"side": "new"})) as (legacy, new):
        text = SEND_PATH_CONFIG.format(legacy=legacy.url, new=new.url, host_header=host_header)
        config = tmp_path / "routes.yaml"
        config.write_text(text, encoding="utf-8")
        running = await start_proxy(
            config, host="127.0.0.1", port=0, admin_port=0, listeners_factory=shadow_listeners, watch=False
        )
        spoofed = {"X-Strangler-Shadow": "spoofed", "X-Strangler-Replay": "spoofed", "X-Strangler-Dry-Run": "0"}
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{running.proxy_port}"
                get = {"Accept": "application/json", "X-Custom": "one", **spoofed}
                async with session.get(base + "/api/orders/7?b=2&a=1", headers=get) as r:
                    assert r.status == 200
                post = {"Content-Type": "application/json", "X-Custom": "two", **spoofed}
                async with session.post(base + "/api/orders", data=b'{"qty": 3}', headers=post) as r:
                    assert r.status == 200
                await wait_until(lambda: len(new.seen) == 2)
        finally:
            await running.stop()
        live = sorted(new.seen, key=lambda s: s.method)
        args = ("replay", "-c", str(config), "--allow-unsafe", "--format", "json")
        result = await asyncio.to_thread(invoke, *args)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["routes"][0]["replayed"] == 2
        replayed = sorted(new.seen[2:], key=lambda s: s.method)
    assert [s.method for s in live] == [s.method for s in replayed] == ["GET", "POST"]
    for copy, again in zip(live, replayed, strict=True):
        assert again.headers.getall(REPLAY_HEADER) == ["1"]
        assert REPLAY_HEADER not in copy.headers  # a client's own replay mark never reaches a live copy
        del again.headers[REPLAY_HEADER]
        assert _as_received(again) == _as_received(copy)
        assert again.headers["X-Request-Id"] == REPLAY_PREFIX + copy.headers["X-Request-Id"]
        assert copy.headers.getall("X-Strangler-Shadow") == ["1"]
    assert live[1].headers["X-Strangler-Dry-Run"] == "1"
    assert "X-Strangler-Dry-Run" not in live[0].headers
    client_host = f"127.0.0.1:{running.proxy_port}"
    assert live[0].headers["Host"] == (client_host if host_header == "preserve" else new.url.removeprefix("http://"))


async def test_a_replayed_copy_past_its_timeout_is_a_timeout(tmp_path: Path) -> None:
    """A side that answers later than the mirror's timeout ends that replay as a "timeout" candidate error, as a
    live copy does; the replay goes on to record it."""
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"side": "new"})

    async with backends(json_handler({"side": "legacy"}), stalls) as (legacy, new):
        text = SEND_PATH_CONFIG.format(legacy=legacy.url, new=new.url, host_header="rewrite")
        config = parse_config(text.replace("side_effects: dry_run", "timeout: 200ms"), tmp_path / "routes.yaml")
        route = config.route("api")
        assert route is not None
        item = ReplayItem(1, 0, time.time(), "api", "GET", "/api/orders/1", "", (("Accept", "*/*"),), None)
        replayer = Replayer(config, Redactor(b"k" * 32, config.store.redact))
        try:
            [result] = await replayer.run([ReplayTarget(item, route, "mismatch", frozenset(), "req-1")])
        finally:
            release.set()
            await replayer.aclose()
    assert [s.path_qs for s in new.seen] == ["/api/orders/1"]
    record = result.record
    assert (record.outcome, record.reason, record.legacy_status) == ("candidate_error", "timeout", 200)
