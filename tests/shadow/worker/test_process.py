"""The shadow side in a worker process: the real proxy with the real `ShadowBridge`, the real `shadow.worker.process`
child, real loopback back ends and a real SQLite file; `strangler serve` as a subprocess; and the wire format on
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import marshal
import os
import pickle
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from types import MappingProxyType

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.app import start_proxy
from proxy.config.loader import load_config
from proxy.config.model import SHADOW_WORKER_NICE
from proxy.events import ExchangeStart, RequestSnapshot, ResponseSnapshot
from proxy.metrics import Counter, Gauge, Histogram, Metrics
from proxy.modes import mirror_for
from shadow.plan import CANDIDATE
from shadow.store.database import StoreError
from shadow.worker.bridge import shadow_worker_listeners
from shadow.worker.supervisor import WORKER_MAIN
from shadow.worker.wire import (
    MAX_FRAME,
    FrameReader,
    Message,
    MetricState,
    WireError,
    apply_metric_changes,
    batch_frame,
    config_message,
    frame,
    metric_changes,
    primary_message,
    read_config,
    start_message,
)
from tests.pipeline import REPO_CONFIG
from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, stop_cleanly
from tests.shadow.shadow_fixtures import SHADOW_ROUTE, backends, closed_port_url, differences, query, write_config
from tests.shadow.worker_fixtures import WAIT, WorkerProxy, children, cmdline, pid_alive, until, worker_proxy

N = 30
SOURCE_ROOT = Path(__file__).resolve().parents[3]


def legacy_doc(path: str, name: str = "legacy-name", price: int = 10) -> dict[str, object]:
    return {"path": path, "name": name, "items": [{"sku": "a", "price": price}, {"sku": "b", "price": price}]}


async def legacy_answer(request: web.Request) -> web.StreamResponse:
    return web.json_response(legacy_doc(request.path))


async def candidate_answer(request: web.Request) -> web.StreamResponse:
    """Like legacy, except under /api/diff/: another name and other prices."""
    if request.path.startswith("/api/diff/"):
        return web.json_response(legacy_doc(request.path, name="new-name", price=11))
    return web.json_response(legacy_doc(request.path))


async def get_legacy(wp: WorkerProxy, path: str) -> None:
    """One GET through the proxy, which must answer exactly what legacy answered."""
    status, body = await wp.get(path)
    assert (status, orjson.loads(body)) == (200, legacy_doc(path))


def outcomes(db: Path, prefix: str) -> list[str]:
    sql = "SELECT outcome FROM exchanges WHERE path LIKE ? ORDER BY id"
    return [r["outcome"] for r in query(db, sql, (prefix + "%",))]


def is_worker(pid: int) -> bool:
    return any("shadow.worker.process" in arg for arg in cmdline(pid))  # the entry point's -c names it


# --- the pipeline through the worker ----------------------------------------------------------------------------


async def test_proxy_accepts_traffic_only_once_the_worker_is_ready(tmp_path: Path) -> None:
    """start_proxy returns after the worker has its store open: its pid is known at once, it runs at a lower CPU
    priority than the proxy, and a burst of 200 concurrent requests sent right away is mirrored whole."""
    async with (
        backends(legacy_answer, legacy_answer) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url) as wp,
    ):
        pid = wp.bridge.worker_pid
        assert pid is not None  # no waiting here: the worker is up when the proxy is
        # ... at a lower CPU priority than the proxy's, so the proxy wins a contended core
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.getpriority(os.PRIO_PROCESS, 0) + SHADOW_WORKER_NICE, 19)
        await asyncio.gather(*(get_legacy(wp, f"/api/burst/{i}") for i in range(200)))
    assert outcomes(wp.db, "/api/burst/") == ["match"] * 200


async def test_worker_stores_matches_and_mismatches(tmp_path: Path) -> None:
    """N shadowed GETs become N match rows; a differing candidate's pairs are mismatch rows with grouped differences."""
    async with backends(legacy_answer, candidate_answer) as (legacy, new):
        async with worker_proxy(tmp_path, legacy.url, new.url) as wp:
            for i in range(N):
                await get_legacy(wp, f"/api/same/{i}")
            for i in range(3):
                await get_legacy(wp, f"/api/diff/{i}")
        assert len(new.seen) == N + 3
    assert outcomes(wp.db, "/api/same/") == ["match"] * N
    assert outcomes(wp.db, "/api/diff/") == ["mismatch"] * 3
    diffs = differences(wp.db)
    mismatched = query(wp.db, "SELECT id FROM exchanges WHERE outcome = 'mismatch'")
    assert {d["exchange_id"] for d in diffs} == {r["id"] for r in mismatched}
    assert {(d["grp"], d["legacy_value"], d["new_value"]) for d in diffs} == {
        ("$.name", '"legacy-name"', '"new-name"'),
        ("$.items[*].price", "10", "11"),
    }
    assert sorted(d["path"] for d in diffs if d["exchange_id"] == mismatched[0]["id"]) == [
        "$.items[0].price",
        "$.items[1].price",
        "$.name",
    ]


async def test_worker_metrics_reach_the_proxy_registry(tmp_path: Path) -> None:
    """The worker's outcome and copy counters show up in the proxy's registry and on the admin /metrics page."""
    match = 'strangler_shadow_total{route="api",pair="candidate",outcome="match",reason=""}'
    sent = 'strangler_shadow_requests_total{route="api",pair="candidate"}'
    async with (
        backends(legacy_answer, candidate_answer) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url) as wp,
    ):
        for i in range(N):
            await get_legacy(wp, f"/api/same/{i}")
        scraped: dict[str, float] = {}

        async def reported() -> bool:
            nonlocal scraped
            async with wp.session.get(wp.admin_url + "/metrics") as r:
                lines = (await r.text()).splitlines()
            scraped = {k: float(v) for k, _, v in (line.rpartition(" ") for line in lines if line[:1] != "#")}
            return scraped.get(match) == N and scraped.get(sent) == N

        with contextlib.suppress(TimeoutError):  # the worker reports every 0.25 s: up to 10 s
            await wait_until(reported, limit=10)
        assert (scraped.get(match), scraped.get(sent)) == (N, N)
        assert wp.shadow("match") == N
        assert wp.metric("strangler_shadow_requests_total", "api", "candidate") == N


async def test_shutdown_flushes_copies_in_flight_and_reaps_the_worker(tmp_path: Path) -> None:
    """Stopping the proxy while every copy is still at the candidate still stores all N rows; the worker exits."""
    release = asyncio.Event()

    async def held_candidate(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return await legacy_answer(request)

    async with backends(legacy_answer, held_candidate) as (legacy, new):
        async with worker_proxy(tmp_path, legacy.url, new.url) as wp:
            pid = await wp.worker_started()
            for i in range(N):
                await get_legacy(wp, f"/api/flush/{i}")
            await until(lambda: len(new.seen) == N, "every copy at the candidate")
            assert wp.shadow("match") == 0  # nothing judged yet: all N are in flight when the proxy stops
            asyncio.get_running_loop().call_later(0.3, release.set)
        assert release.is_set()
    assert outcomes(wp.db, "/api/flush/") == ["match"] * N
    assert query(wp.db, "SELECT SUM(count) AS n FROM traffic")[0]["n"] == N  # the proxy's tally, written there
    assert wp.shadow("match") == N  # the worker's last report arrived before it closed the stream
    assert not pid_alive(pid)  # exited and reaped by the bridge
    assert pid not in children()


async def test_configured_shadow_limits_cap_copies_in_the_worker(tmp_path: Path) -> None:
    """limits.shadow_in_flight 1 and shadow_waiting 0 reach the worker: with one copy held at the candidate, the
    next four are dropped as queue_full (rows written), the candidate never sees two at once, and every client
    still gets legacy's answer."""
    release = asyncio.Event()
    at_once = 0
    most = 0

    async def held_candidate(request: web.Request) -> web.StreamResponse:
        nonlocal at_once, most
        at_once += 1
        most = max(most, at_once)
        try:
            await asyncio.wait_for(release.wait(), 10)
            return await legacy_answer(request)
        finally:
            at_once -= 1

    limits = "limits: {shadow_in_flight: 1, shadow_waiting: 0}"
    async with (
        backends(legacy_answer, held_candidate) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url, top_level=limits) as wp,
    ):
        await get_legacy(wp, "/api/cap/0")
        await until(lambda: len(new.seen) == 1, "the first copy at the candidate")
        await asyncio.gather(*(get_legacy(wp, f"/api/cap/{i}") for i in range(1, 5)))
        await until(lambda: wp.shadow("dropped", "queue_full") == 4, "four copies dropped")
        release.set()
        await until(lambda: wp.shadow("match") == 1, "the held copy judged")
    assert sorted(outcomes(wp.db, "/api/cap/")) == ["dropped"] * 4 + ["match"]
    assert most == 1
    assert len(new.seen) == 1


async def test_sigterm_to_the_worker_too_still_stores_every_row(tmp_path: Path) -> None:
    """SIGTERM reaching the worker as well as the proxy (a service manager stopping the group) loses no rows."""
    release = asyncio.Event()

    async def held_candidate(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return await legacy_answer(request)

    async with (
        backends(legacy_answer, held_candidate) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url) as wp,
    ):
        pid = await wp.worker_started()
        for i in range(5):
            await get_legacy(wp, f"/api/term/{i}")
        await until(lambda: len(new.seen) == 5, "every copy at the candidate")
        os.kill(pid, signal.SIGTERM)  # the proxy is stopped next, as its own SIGTERM handler would
        asyncio.get_running_loop().call_later(0.3, release.set)
    assert outcomes(wp.db, "/api/term/") == ["match"] * 5
    assert wp.restarts() == 0  # the worker outlived the signal; the proxy's close ended it


@pytest.mark.parametrize("framing", ["a frame each", "one batch frame"])
async def test_worker_finishes_its_work_when_the_proxy_goes_away(tmp_path: Path, framing: str) -> None:
    """The worker process (started as the supervisor starts it) fed a config, bad messages, a start and its primary (a
    frame each, or all in one batch frame as the bridge writes a loop iteration's messages), then end of stream
    (no close message): it says it is ready, skips the bad ones, completes the copy, stores the pair, sends its
    last metrics and exits 0."""
    async with backends(legacy_answer, candidate_answer) as (legacy, new):
        config = load_config(write_config(tmp_path, legacy.url, new.url, SHADOW_ROUTE))
        route = config.routes[0]
        path = "/api/solo"
        request = RequestSnapshot("GET", path, "a=1", (("Accept", "*/*"),), b"", None, "req-1", "127.0.0.1", "h")
        start = ExchangeStart(
            config, route, "legacy", "legacy", mirror_for(route, "legacy", "GET"), request, time.time(), 0.0
        )
        json_type = (("Content-Type", "application/json; charset=utf-8"),)
        primary = ResponseSnapshot("legacy", "legacy", 200, json_type, orjson.dumps(legacy_doc(path)), True, 0.001)
        elsewhere = start._replace(route=dataclasses.replace(route, id="not-in-the-config"))
        stream = [
            config_message(config),
            ("bogus",),  # one bad message is logged and skipped; the ones read with it still count
            start_message(6, CANDIDATE, elsewhere),
            start_message(7, CANDIDATE, start),
            primary_message(7, primary),
        ]
        db = tmp_path / "solo.db"
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}  # as the bridge starts it
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WORKER_MAIN, "--fd", str(theirs.fileno()), "--db", str(db),
                pass_fds=(theirs.fileno(),), env=env, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            writer.write(batch_frame(stream) if framing == "one batch frame" else b"".join(frame(m) for m in stream))
            writer.write_eof()  # the proxy process is gone
            received = await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            await writer.wait_closed()
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
            _, stderr = await proc.communicate()
        finally:
            theirs.close()
            ours.close()
        assert [(s.method, s.path_qs) for s in new.seen] == [("GET", "/api/solo?a=1")], stderr.decode()
    rows = query(db, "SELECT route_id, path, query, request_id, outcome FROM exchanges")
    assert [tuple(r) for r in rows] == [("api", path, "a=1", "req-1", "match")]
    metrics = Metrics()
    first, *reports = FrameReader().feed(received)
    assert first == ("ready",)  # sent once its store is open, before any report
    settled: list[int] = []
    for message in reports:
        if message[0] == "settled":  # the starts whose rows are written
            settled.extend(message[1])
            continue
        assert message[0] == "metrics"
        apply_metric_changes(metrics, message)
    assert metrics.shadow.values == {("api", "candidate", "match", ""): 1}
    assert settled == [7]


async def test_killed_worker_is_restarted_and_drops_are_counted(tmp_path: Path) -> None:
    """SIGKILLed worker: clients keep getting legacy's answers, copies are dropped as worker_down (counted, rows
    written by the next worker), a new worker takes over (one restart) and later copies are stored again."""
    async with (
        backends(legacy_answer, candidate_answer) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url) as wp,
    ):
        first = await wp.worker_started()
        assert is_worker(first)
        for i in range(5):
            await get_legacy(wp, f"/api/before/{i}")
        await until(lambda: wp.shadow("match") == 5, "the first worker's report")

        os.kill(first, signal.SIGKILL)
        await until(lambda: wp.bridge.worker_pid is None, "the bridge to notice the dead worker")
        sent_down = 0
        while sent_down < 5 and wp.bridge.worker_pid is None:  # the first restart waits 0.5 s
            await get_legacy(wp, f"/api/down/{sent_down}")
            sent_down += 1
        dropped = wp.shadow("dropped", "worker_down")
        assert dropped >= 1

        second = await wp.worker_started(other_than=first)
        assert is_worker(second)
        assert not pid_alive(first)
        assert wp.restarts() == 1
        for i in range(5):
            await get_legacy(wp, f"/api/after/{i}")
        await until(lambda: wp.shadow("match") >= 5 + 5, "the new worker's report")
    assert outcomes(wp.db, "/api/after/") == ["match"] * 5
    # A copy sent while the worker was down was either dropped (counted, and its row written by the next worker)
    # or, once the restart began, compared and stored.
    down = outcomes(wp.db, "/api/down/")
    assert len(down) == sent_down
    assert down.count("dropped") == dropped
    reasons = query(wp.db, "SELECT DISTINCT reason FROM exchanges WHERE outcome = 'dropped'")
    assert [r["reason"] for r in reasons] == ["worker_down"]
    assert len(outcomes(wp.db, "/api/before/")) <= 5  # rows the killed worker had not flushed are lost
    assert wp.restarts() == 1


async def test_worker_that_stops_reporting_is_replaced(tmp_path: Path) -> None:
    """A worker whose loop is stuck (SIGSTOPped: alive but silent) is killed once it has been silent longer than
    silent_after, a new one takes over, and copies are stored again; clients get legacy's answers throughout."""
    async with (
        backends(legacy_answer, candidate_answer) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url, bridge_options={"silent_after": 1.0}) as wp,
    ):
        stuck = await wp.worker_started()
        # Stays: a live worker (reporting every 0.25 s) outlasting silent_after unharmed is the behaviour under test
        await asyncio.sleep(1.5)
        assert wp.bridge.worker_pid == stuck
        os.kill(stuck, signal.SIGSTOP)
        try:
            await get_legacy(wp, "/api/stuck/0")
            second = await wp.worker_started(other_than=stuck)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
        assert not pid_alive(stuck)
        assert wp.restarts() == 1
        for i in range(3):
            await get_legacy(wp, f"/api/after-stuck/{i}")
        await until(lambda: wp.shadow("match") >= 3, "the new worker's report")
        assert wp.bridge.worker_pid == second
    assert outcomes(wp.db, "/api/after-stuck/") == ["match"] * 3


async def test_reloaded_compare_rules_apply_in_the_worker(tmp_path: Path) -> None:
    """After a reload that adds an ignore_fields rule, the same worker judges the differing pairs as matches."""
    async with backends(legacy_answer, candidate_answer) as (legacy, new):
        async with worker_proxy(tmp_path, legacy.url, new.url) as wp:
            pid = await wp.worker_started()
            for i in range(3):
                await get_legacy(wp, f"/api/diff/before/{i}")
            rules = """
            - id: api
              match: {path: /api/**}
              mode: shadow
              compare: {ignore_fields: [$.name, "$.items[*].price"]}
            """
            write_config(tmp_path, legacy.url, new.url, rules)
            result = await wp.running.reload("test")
            assert result.ok, result.errors
            for i in range(3):
                await get_legacy(wp, f"/api/diff/after/{i}")
            assert wp.bridge.worker_pid == pid  # the rules travel over the stream: no restart
        assert len(new.seen) == 6
    assert outcomes(wp.db, "/api/diff/before/") == ["mismatch"] * 3
    assert outcomes(wp.db, "/api/diff/after/") == ["match"] * 3
    assert wp.restarts() == 0


BIG = bytes(range(256)) * 2048  # 512 KiB: each primary snapshot the worker is sent is about this large


async def test_backlog_past_max_drops_copies_as_worker_busy(tmp_path: Path) -> None:
    """max_backlog=0 and a stopped worker: once the stream backs up, copies are dropped as worker_busy, clients
    still get legacy's answers, and every copy not dropped is stored after the worker resumes."""

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async with backends(big, big) as (legacy, new):
        async with worker_proxy(tmp_path, legacy.url, new.url, bridge_options={"max_backlog": 0}) as wp:
            pid = await wp.worker_started()
            await until(lambda: wp.bridge.backlog() == 0, "the worker to take the config")
            assert await wp.get("/api/warm") == (200, BIG)
            await until(lambda: wp.shadow("match") == 1, "the worker to judge the first pair")
            os.kill(pid, signal.SIGSTOP)
            sent = 0
            try:
                while sent < 100 and wp.shadow("dropped", "worker_busy") < 3:
                    assert await wp.get(f"/api/big/{sent}") == (200, BIG)
                    sent += 1
            finally:
                os.kill(pid, signal.SIGCONT)
            dropped = wp.shadow("dropped", "worker_busy")
            assert dropped == 3
            assert wp.shadow("dropped", "worker_down") == 0
        assert len(legacy.seen) == 1 + sent
    assert outcomes(wp.db, "/api/big/") == ["match"] * (sent - 3)
    assert len(new.seen) == 1 + sent - 3


@pytest.mark.parametrize("where", ["directory", "under_a_file"])
async def test_unusable_store_fails_start_up_before_any_worker(tmp_path: Path, where: str) -> None:
    """ShadowBridge.create on a store path that cannot be a file raises StoreError naming it; no worker starts."""
    if where == "directory":
        db = tmp_path / "shadow.db"
        db.mkdir()
    else:
        (tmp_path / "plain").write_text("not a directory")
        db = tmp_path / "plain" / "shadow.db"
    config = write_config(
        tmp_path, closed_port_url(), closed_port_url(), "- {id: api, match: {path: /api/**}, mode: shadow}"
    )
    with pytest.raises(StoreError, match=str(db)):
        await start_proxy(
            config, port=0, admin_port=0, db=str(db), listeners_factory=shadow_worker_listeners, watch=False
        )
    assert not [pid for pid in children() if is_worker(pid)]


# --- the wire format --------------------------------------------------------------------------------------------

MESSAGES: list[Message] = [
    ("config", b"\x80\x05pickled"),
    ("start", 1, None, True, False, "api", "legacy", "legacy", "GET", "/api/x", "a=1", (("Host", "h"),), b"", None),
    ("primary", 1, "legacy", "legacy", 200, (("Content-Type", "text/plain"),), b"x" * 300, True, 0.004, None),
    ("traffic", ((1, "api", "shadow", "legacy", "GET", "/api/x", 3, 0, 1.5),)),
    ("close",),
]


def test_frame_reader_survives_every_split() -> None:
    """Split anywhere (and fed byte by byte), the stream still yields exactly the messages framed into it."""
    stream = b"".join(frame(m) for m in MESSAGES)
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        assert [*reader.feed(stream[:cut]), *reader.feed(stream[cut:])] == MESSAGES
    reader = FrameReader()
    assert [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])] == MESSAGES


def test_batch_frames_read_back_as_their_messages_in_order_at_every_split() -> None:
    """Batch frames (several messages in one frame, as the bridge writes a loop iteration's) between single frames
    read back as exactly the messages, in order, however the stream is cut."""
    stream = batch_frame(MESSAGES[:3]) + frame(MESSAGES[3]) + batch_frame(MESSAGES[3:]) + batch_frame([MESSAGES[0]])
    expected = [*MESSAGES[:3], MESSAGES[3], *MESSAGES[3:], MESSAGES[0]]
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        assert [*reader.feed(stream[:cut]), *reader.feed(stream[cut:])] == expected
    # One encoding for the whole batch: strings repeated between its messages are written once.
    assert len(batch_frame([MESSAGES[2]] * 8)) < 2 * len(frame(MESSAGES[2]))


def test_frame_reader_joins_a_large_frame_fed_in_socket_sized_reads() -> None:
    """A 3 MiB body frame arriving in 64 KiB reads, with the next frame starting in the last read, yields nothing
    until it is complete, then both messages intact."""
    big = ("primary", 7, "legacy", "legacy", 200, (), os.urandom(3 * 1024 * 1024), True, 0.01, None)
    stream = frame(big) + frame(("close",))
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 64 * 1024):
        got.extend(reader.feed(stream[i : i + 64 * 1024]))
        if i + 64 * 1024 < len(stream) - 16:
            assert got == []
    assert got == [big, ("close",)]


def test_frame_reader_rejects_foreign_streams() -> None:
    """A length over MAX_FRAME, an undecodable payload and a payload that is not a message raise WireError."""
    with pytest.raises(WireError, match="limit"):
        list(FrameReader().feed(struct.pack(">I", MAX_FRAME + 1)))
    with pytest.raises(WireError, match="undecodable"):
        list(FrameReader().feed(struct.pack(">I", 3) + b"\xff\xff\xff"))
    for payload in (marshal.dumps(42), marshal.dumps(()), marshal.dumps((1, "x")), marshal.dumps([("close",), 7])):
        with pytest.raises(WireError, match="not a message"):
            list(FrameReader().feed(struct.pack(">I", len(payload)) + payload))


def test_config_round_trips_over_the_wire() -> None:
    """The repository's routes.yaml, sent as a config message, arrives equal with read-only upstreams."""
    config = load_config(REPO_CONFIG)
    [message] = FrameReader().feed(frame(config_message(config)))
    got = read_config(message)
    assert got == config
    assert got.routes == config.routes
    assert list(got.upstreams) == list(config.upstreams) == ["legacy", "new"]
    assert isinstance(got.upstreams, MappingProxyType)
    with pytest.raises(TypeError):
        got.upstreams["legacy"] = got.upstreams["new"]  # type: ignore[index]
    with pytest.raises(WireError):
        read_config(("config", pickle.dumps({"not": "a config"})))


def _through_the_wire(message: Message | None) -> Message:
    assert message is not None
    [got] = FrameReader().feed(frame(message))
    return got


def test_metric_changes_add_up_on_the_receiving_side() -> None:
    """Two reports add counter and histogram increments, set gauges to the latest value and create unknown metrics;
    an unchanged registry reports nothing."""
    worker, proxy = Metrics(), Metrics()
    last: MetricState = {}
    assert metric_changes(worker, last) is None
    sent = Counter("strangler_shadow_requests_total", "copies", ("route", "pair"))
    depth = Gauge("strangler_test_depth", "a gauge", ("stage",))
    sizes = Histogram("strangler_test_sizes", "a histogram", ("route",), (1.0, 10.0))
    worker.extra += [sent, depth, sizes]
    proxy.shadow.inc(("api", "candidate", "dropped", "worker_down"), 4)  # the proxy's own counts stay
    proxy.shadow_queue.set(("worker_stream",), 7)

    worker.shadow.inc(("api", "candidate", "match", ""), 2)
    worker.compare_time.observe(("api",), 0.003)
    worker.shadow_queue.set(("compare",), 5)
    sent.inc(("api", "candidate"), 2)
    depth.set(("x",), 9)
    sizes.observe(("api",), 0.5)
    apply_metric_changes(proxy, _through_the_wire(metric_changes(worker, last)))
    assert metric_changes(worker, last) is None

    worker.shadow.inc(("api", "candidate", "match", ""), 3)
    worker.shadow.inc(("api", "candidate", "mismatch", ""))
    worker.shadow.inc(("api", "noise", "match", ""), 2)  # legacy vs legacy: arrives under its own label
    worker.compare_time.observe(("api",), 0.2)
    worker.shadow_queue.set(("compare",), 1)
    sent.inc(("api", "candidate"), 4)
    depth.set(("x",), 2)
    sizes.observe(("api",), 5.0)
    sizes.observe(("api",), 50.0)
    apply_metric_changes(proxy, _through_the_wire(metric_changes(worker, last)))
    assert metric_changes(worker, last) is None

    assert proxy.shadow.values == {
        ("api", "candidate", "dropped", "worker_down"): 4,
        ("api", "candidate", "match", ""): 5,
        ("api", "candidate", "mismatch", ""): 1,
        ("api", "noise", "match", ""): 2,
    }
    assert proxy.compare_time.series == worker.compare_time.series
    assert proxy.compare_time.count(("api",)) == 2
    assert proxy.shadow_queue.values == {("worker_stream",): 7, ("compare",): 1}
    by_name = {m.name: m for m in proxy.extra}
    got_sent, got_depth, got_sizes = (by_name[m.name] for m in (sent, depth, sizes))
    assert type(got_sent) is Counter
    assert (got_sent.labelnames, got_sent.values) == (("route", "pair"), {("api", "candidate"): 6})
    assert isinstance(got_depth, Gauge)
    assert got_depth.values == {("x",): 2}
    assert isinstance(got_sizes, Histogram)
    assert (got_sizes.buckets, got_sizes.series) == ((1.0, 10.0), {("api",): [1.0, 1.0, 1.0, 55.5]})
    assert 'strangler_test_sizes_count{route="api"} 3' in proxy.render()


# --- strangler serve --------------------------------------------------------------------------------------------


# The installed entry point when there is one (the venv's), else the same code through the interpreter: this test
# also checks that the console script works.
_ENTRY_POINT = Path(sys.executable).with_name("strangler")
STRANGLER = [str(_ENTRY_POINT)] if _ENTRY_POINT.exists() else [sys.executable, "-c", "from cli.main import run; run()"]


@pytest.mark.parametrize("flag", ["--shadow-worker", "--no-shadow-worker"])
async def test_serve_subprocess_stores_every_request(tmp_path: Path, flag: str) -> None:
    """`strangler serve` (worker or in-process) stores every shadowed request and exits 0 on SIGTERM."""
    db = tmp_path / "served.db"
    port, admin = free_ports(2)
    async with backends(legacy_answer, candidate_answer) as (legacy, new):
        config = write_config(tmp_path, legacy.url, new.url, "- {id: api, match: {path: /api/**}, mode: shadow}")
        argv = ["serve", "-c", str(config), "--db", str(db), "--port", str(port), "--admin-port", str(admin), flag]
        async with child_process([*STRANGLER, *argv]) as proc, aiohttp.ClientSession() as session:
            await wait_until(lambda: ready_while_running(proc, admin), limit=10)  # the interpreter starts and binds
            for i in range(N + 1):
                async with session.get(f"http://127.0.0.1:{port}/api/{i}") as r:
                    assert (r.status, await r.json()) == (200, legacy_doc(f"/api/{i}"))
            if flag == "--shadow-worker":
                await until(lambda: any(is_worker(c) for c in children(proc.pid)), "the worker child")
            workers = [c for c in children(proc.pid) if is_worker(c)]
            assert len(workers) == (1 if flag == "--shadow-worker" else 0)
            assert await stop_cleanly(proc) == 0
            assert not [w for w in workers if pid_alive(w)]  # serve waited for its worker: no orphan left
        assert len(new.seen) == N + 1
    assert outcomes(db, "/api/") == ["match"] * (N + 1)
