"""The two proxy listeners, `fast` (proxy/listener.py) and `aiohttp` (proxy/server.py), are identical on the wire.

Both are kept side by side for one release so they can be compared; this file is what keeps them the same. The
corpus is test_hostile.py's refused and tolerated requests plus accepted and edge cases of its own. Each case sends
the same raw bytes to a proxy of each kind (each with its own three raw back ends, as in test_hostile.py) on a fresh
connection, reads until the proxy closes it, and compares what the client got (every response: status line, headers
in order, body), whether the proxy closed the connection, and what each back end received (whether it was
contacted, and every complete request down to its headers and body). Only values that legitimately vary are masked:
Date, generated request ids, the proxy's own websocket key, and the loopback ports of each side.

Left out as timing-dependent: how much of an aborted or over-limit upload reaches a back end before the drop, and
any case where the proxy closes with client bytes still unread (the kernel may then reset the connection and
discard the answer before the client reads it), so an over-max_body request sends its head only.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import pprint
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import read_until_closed, running_proxy, write_config
from tests.proxy.test_hostile import POST, REFUSED, ROUTES, TOLERATED, UPSTREAMS, Backends, RawBackend, Seen, get

LIMIT = 5.0  # seconds a proxy gets to answer and close; every read is bounded by it
MAX_BODY = 1024
LIMITS = f"limits: {{max_body: {MAX_BODY}}}\n"  # small, so an over-limit body is cheap to send
REQUEST_ID = re.compile(rb"\b[0-9a-f]{32}\b")
SERVERS = ("fast", "aiohttp")
DROPPED = frozenset({"date"})  # response headers whose value is the clock
RANDOM = frozenset({"sec-websocket-key"})  # the nonce the proxy's own websocket client makes up per handshake


@dataclass(frozen=True, slots=True)
class Side:
    """One proxy and the three back ends only it forwards to."""

    proxy: RunningProxy
    backends: Backends

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.proxy.proxy_port, self.proxy.admin_port, *(b.port for b in self.backends.all))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one listener did with one case, normalized so the two listeners' outcomes compare equal."""

    responses: tuple[tuple[str, tuple[tuple[str, str], ...], bytes], ...]  # status line, headers, body
    closed: bool
    backends: tuple[tuple[str, bool, tuple[tuple[str, str, tuple[tuple[str, str], ...], bytes], ...]], ...]


def mask(data: bytes, ports: tuple[int, ...]) -> bytes:
    """`data` with generated request ids and this side's loopback ports replaced by fixed placeholders."""
    data = REQUEST_ID.sub(b"<request-id>", data)
    for port in ports:
        data = re.sub(rb"(?<![0-9])%d(?![0-9])" % port, b"<port>", data)
    return data


def split_responses(data: bytes) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    """The raw bytes a client got, cut into responses: status line, headers (lower-case names, order and repeats
    kept) and body, raw chunked framing included. A Content-Length head followed at once by another status line or
    the end is bodiless (the answer to HEAD); a head with no framing takes the rest (close-delimited)."""
    responses: list[tuple[str, list[tuple[str, str]], bytes]] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:  # a cut-off head: keep it as it came, so a difference still shows
            responses.append((data.decode("latin-1"), [], b""))
            break
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        framing = dict(headers)
        code = status.split(" ", 2)[1] if status.count(" ") else ""
        if code.startswith("1") or code in ("204", "304") or rest.startswith(b"HTTP/1.") or not rest:
            end = 0
        elif "content-length" in framing:
            end = int(framing["content-length"])
        elif framing.get("transfer-encoding") == "chunked":
            end = chunked_end(rest)
        else:
            end = len(rest)
        responses.append((status, headers, rest[:end]))
        data = rest[end:]
    return responses


def chunked_end(data: bytes) -> int:
    """Where the chunked body at the start of `data` ends (its last chunk and trailer included), or len(data)."""
    at = 0
    while (eol := data.find(b"\r\n", at)) >= 0:
        size = data[at:eol].split(b";")[0].strip()
        if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
            break
        if int(size, 16) == 0:
            end = data.find(b"\r\n\r\n", eol)
            return len(data) if end < 0 else end + 4
        at = eol + 2 + int(size, 16) + 2
    return len(data)


def normalize(received: bytes, closed: bool, backends: tuple[RawBackend, ...], ports: tuple[int, ...]) -> Outcome:
    """What a client received (`received`, `closed`) and what each back end got, masked and made comparable."""

    def fields(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        lowered = ((n.lower(), v) for n, v in headers)
        return tuple(
            (n, "<random>" if n in RANDOM else mask(v.encode("latin-1"), ports).decode("latin-1"))
            for n, v in lowered
            if n not in DROPPED
        )

    responses = tuple((s, fields(h), mask(b, ports)) for s, h, b in split_responses(received))
    seen = tuple(
        (
            b.name,
            not b.untouched,
            tuple((r.method, r.target, fields(r.headers), mask(r.body, ports)) for r in b.requests),
        )
        for b in backends
    )
    return Outcome(responses, closed, seen)


@pytest.fixture
async def sides(tmp_path: Path) -> AsyncIterator[dict[str, Side]]:
    """A `fast` and an `aiohttp` proxy, side by side, each in front of its own public, admin and legacy back ends."""
    async with contextlib.AsyncExitStack() as stack:
        result: dict[str, Side] = {}
        for server in SERVERS:
            group = Backends(RawBackend("public"), RawBackend("admin"), RawBackend("legacy"))
            for backend in group.all:
                await backend.start()
                stack.push_async_callback(backend.aclose)
            path = write_config(
                tmp_path / f"{server}.yaml",
                legacy=group.legacy.port,
                new=group.legacy.port,
                routes=ROUTES,
                settings=UPSTREAMS.format(public=group.public.port, admin=group.admin.port) + LIMITS,
            )
            running = await stack.enter_async_context(running_proxy(path, watch=False, server=server))
            assert running.listener == server  # the caller's choice wins over $STRANGLER_SERVER and routes.yaml
            result[server] = Side(running, group)
        yield result


def head(line: bytes, *fields: bytes, close: bool = True) -> bytes:
    """A request head: `line`, Host: a, the given header lines and (unless `close` is False) Connection: close."""
    return line + b"\r\nHost: a\r\n" + b"".join(fields) + (b"Connection: close\r\n" if close else b"") + b"\r\n"


WS = (b"Upgrade: websocket\r\n", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"Sec-WebSocket-Version: 13\r\n")
CHUNKS = b'5;name=value\r\nhello\r\n6;q="a"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n'

# Requests the proxy accepts (or refuses only after parsing, by its own rules); each ends with the connection closing.
ACCEPTED: dict[str, bytes] = {
    "get-close": get(b"/public/x"),
    "get-legacy-default": get(b"/other/thing"),
    "get-client-request-id": get(b"/public/x", b"X-Request-Id: client-chosen-1\r\n"),
    "http10-close": b"GET /public/x HTTP/1.0\r\nHost: a\r\n\r\n",
    "http10-no-host": b"GET /admin/x HTTP/1.0\r\n\r\n",
    "http10-keep-alive": head(b"GET /public/a HTTP/1.0", b"Connection: keep-alive\r\n", close=False)
    + b"GET /public/b HTTP/1.0\r\nHost: a\r\n\r\n",
    # RawBackend sends its body after a HEAD answer too: the answer is passed on, that back-end connection closed.
    "head": head(b"HEAD /public/x HTTP/1.1"),
    "options": head(b"OPTIONS /admin/x HTTP/1.1"),
    "delete": head(b"DELETE /admin/x HTTP/1.1"),
    "pipelined-2": head(b"GET /public/a HTTP/1.1", close=False) + get(b"/admin/b"),
    "pipelined-3-with-post": head(b"GET /admin/one HTTP/1.1", close=False)
    + POST
    + b"Content-Length: 3\r\n\r\nabc"
    + get(b"/other/three"),
    "post-length": POST + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    "post-empty": POST + b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    "post-chunked-ext-trailer": POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + CHUNKS,
    "expect-100-continue": POST + b"Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "get-chunked-zero": head(b"GET /public/x HTTP/1.1", b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    "te-gzip-chunked": POST + b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    "absolute-form": head(b"GET http://a/public/x HTTP/1.1"),
    "path-encoded-slash": get(b"/public/..%2Fadmin/x"),
    "path-encoded-dot-dot": get(b"/public/%2e%2e/admin/x"),
    "path-double-slash": get(b"//admin//x"),
    "path-params": get(b"/admin;jsessionid=1/secret"),
    "path-trailing-dot": get(b"/admin./x"),
    "path-upper-case": get(b"/PUBLIC/Mixed/X"),
    "path-semicolon-dot-dot": get(b"/public/..;/admin/x"),
    "bad-path-then-next": head(b"GET /public/..%2Fadmin/x HTTP/1.1", close=False) + get(b"/admin/ok"),
    "query-odd": get(b"/public/x?a=%zz&b=%2F&c=&&d=e=f&g=+%20~!$'()*,;:@/?"),
    "bad-host": get(b"/public/x", b"X-A: 1\r\n").replace(b"Host: a", b"Host: a@b"),
    "hop-by-hop": get(
        b"/public/x",
        b"Connection: X-Foo, keep-alive\r\n",
        b"X-Foo: 1\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Proxy-Connection: keep-alive\r\n",
        b"TE: trailers\r\n",
        b"Trailer: X-T\r\n",
        b"Proxy-Authorization: Basic eDp5\r\n",
    ),
    "upgrade-h2c": get(
        b"/public/x",
        b"Connection: Upgrade, HTTP2-Settings\r\n",
        b"Upgrade: h2c\r\n",
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    ),
    "upgrade-h2c-pipelined": head(
        b"GET /public/a HTTP/1.1", b"Connection: Upgrade\r\n", b"Upgrade: h2c\r\n", close=False
    )
    + get(b"/public/b"),
    "websocket-not-switched": head(b"GET /public/ws HTTP/1.1", b"Connection: Upgrade\r\n", *WS, close=False)
    + get(b"/public/after"),
    "duplicate-headers": get(
        b"/public/x", b"Accept: a/b\r\n", b"X-Dup: 1\r\n", b"accept: c/d\r\n", b"X-Dup: 2\r\n", b"X_Dup: 3\r\n"
    ),
    "forwarded-from-client": get(
        b"/public/x", b"X-Forwarded-For: 10.0.0.1\r\n", b"Forwarded: for=10.0.0.1\r\n", b"X-Real-IP: 10.0.0.2\r\n"
    ),
    "long-header": get(b"/public/x", b"X-Long: " + b"a" * 7000 + b"\r\n"),
    "buffered-get": get(b"/buffered/x"),
    "buffered-post": b"POST /buffered/y HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
    "over-max-body-head-only": POST + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1),
    "unknown-method": head(b"BREW /public/x HTTP/1.1"),
    "extension-method": head(b"PROPFIND /public/x HTTP/1.1"),
    "lower-case-method": head(b"get /public/x HTTP/1.1"),
    "http10-post-no-length": b"POST /public/x HTTP/1.0\r\nHost: a\r\n\r\n",
    "max-headers-exactly": get(b"/public/x", *(b"X-%d: v\r\n" % i for i in range(98))),
    "buffered-post-chunked": head(b"POST /buffered/z HTTP/1.1", b"Transfer-Encoding: chunked\r\n") + CHUNKS,
    # Read whole before any upstream is contacted, so nothing reaches a back end whatever the timing.
    "buffered-chunked-over-max-body": head(b"POST /buffered/z HTTP/1.1", b"Transfer-Encoding: chunked\r\n")
    + b"%x\r\n%b\r\n0\r\n\r\n" % (MAX_BODY + 1, b"b" * (MAX_BODY + 1)),
}

CASES = [pytest.param(f"refused-{name}", data, id=f"refused-{name}") for name, (data, _) in REFUSED.items()]
CASES += [pytest.param(name, data, id=name) for name, data in ACCEPTED.items()]
# test_hostile's tolerated framings: a POST head missing its end, and the framing the back end must get.
TOLERATED_BODY = {"content-length": b"hello", "transfer-encoding": b"5\r\nhello\r\n0\r\n\r\n"}
CASES += [
    pytest.param(
        f"tolerated-{name}", start + b"Connection: close\r\n\r\n" + TOLERATED_BODY[te[0][0]], id=f"tolerated-{name}"
    )
    for name, (start, te) in TOLERATED.items()
]


def diff(case: str, fast: Outcome, other: Outcome) -> str:
    """A readable message naming the case and showing both outcomes as a unified diff."""
    left, right = (pprint.pformat(o, width=118).splitlines() for o in (fast, other))
    lines = difflib.unified_diff(left, right, fromfile="fast", tofile="aiohttp", lineterm="")
    return f"{case}: the listeners differ\n" + "\n".join(lines)


@pytest.mark.parametrize(("case", "data"), CASES)
async def test_both_listeners_answer_and_forward_alike(sides: dict[str, Side], case: str, data: bytes) -> None:
    """The same bytes get the same answers, the same closing and the same back-end requests from both listeners."""
    got = await asyncio.gather(*(read_until_closed(sides[s].proxy.proxy_port, data, limit=LIMIT) for s in SERVERS))
    fast, other = (normalize(*g, sides[s].backends.all, sides[s].ports) for s, g in zip(SERVERS, got, strict=True))
    assert fast == other, diff(case, fast, other)
    assert fast.closed, f"{case}: neither listener closed the connection within {LIMIT} s"
    assert fast.responses, f"{case}: neither listener answered"


def response(date: bytes = b"Mon", rid: bytes = b"a" * 32, port: int = 40001, tail: bytes = b"") -> bytes:
    """A raw response from loopback `port` with a Date and an X-Request-Id, then `tail` (framing and body)."""
    head = b"HTTP/1.1 200 OK\r\nDate: %b\r\nX-Request-Id: %b\r\nLocation: http://127.0.0.1:%d/\r\n"
    return head % (date, rid, port) + (tail or b"Content-Length: 2\r\n\r\nok")


def outcome(data: bytes, *seen: Seen, port: int = 40001, closed: bool = True) -> Outcome:
    """The normalized outcome of a client receiving `data` while the one back end received `seen`."""
    backend = RawBackend("public")
    backend.requests.extend(seen)
    return normalize(data, closed, (backend,), (port,))


@pytest.mark.unit
def test_normalizing_masks_only_what_legitimately_varies() -> None:
    """Date, request ids and ports are masked; a framing header, a body, closing or a forwarded request still differ."""
    one = outcome(response())
    assert one == outcome(response(b"Tue", b"b" * 32, 40002), port=40002)
    assert one != outcome(response(tail=b"Content-Length: 2\r\nConnection: close\r\n\r\nok"))
    assert one != outcome(response(tail=b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"))
    assert one != outcome(response(tail=b"Content-Length: 2\r\n\r\nno"))
    assert one != outcome(response(), closed=False)
    assert one != outcome(response() + response())

    def post(port: int, framing: str = "Content-Length", body: bytes = b"ok") -> Seen:
        return Seen("POST", "/public/x", (("Via", f"1.1 127.0.0.1:{port}"), (framing, "2")), body)

    assert outcome(b"", post(40001)) == outcome(b"", post(40002), port=40002)
    assert outcome(b"", post(40001)) != outcome(b"", post(40001, "Transfer-Encoding"))
    assert outcome(b"", post(40001)) != outcome(b"", post(40001, body=b"no"))
    assert mask(b"id " + b"0123456789abcdef" * 2 + b" :8080 :18080", (8080,)) == b"id <request-id> :<port> :18080"
