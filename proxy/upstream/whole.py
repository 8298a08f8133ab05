"""A small response that arrived whole in one read, parsed without llhttp: the upstream client's fast path.

Why: through aiohttp's C parser, a small fixed-length response costs about 4 µs of the proxy's CPU (run 21's profile:
8.7% of a pass-through request), nearly all of it in the Python objects its callbacks build: a `StreamReader` fed
and ended, a multidict of the fields, a message object. Most responses behind a migration proxy are exactly that:
one read holding the head and a `Content-Length` body. `parse_whole` checks the head with one regular expression and
splits its field lines, and `WholeResponse` is both the head and the body reader (`h1_protocol.BodyReader`), so
nothing is fed or queued. The fields are decoded into a multidict only if something asks for them.

It accepts a strict subset of what llhttp accepts, and for that subset it yields what llhttp yields (the same
status, reason, version, fields, keep-alive and body; tests/proxy/upstream/test_whole.py checks both on generated
responses). Everything else is `None`, and llhttp parses the bytes as before: so every refusal, limit and framing
rule stays llhttp's. Not accepted: a head or body split over reads, any byte past the body, no or more than one
Content-Length, Transfer-Encoding, Upgrade, Proxy-Connection, Sec-WebSocket-Key1, a Connection field other than one
`close` or `keep-alive`, 1xx, 204 and 304 (whose framing differs), non-ASCII or control bytes in the head, a line
past the parser's limits, and everything while aiohttp runs in its debug mode (see ENABLED).
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import hdrs
from aiohttp.helpers import DEBUG
from aiohttp.http_writer import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy, istr

# In its debug mode (python -X dev, PYTHONASYNCIODEBUG) aiohttp parses responses strictly (a repeated Server or
# Content-Type is refused): then llhttp reads every response, so the two never differ.
ENABLED = not DEBUG
# The upstream response parser's limits, here because both readers apply them: `h1_protocol.new_parser` configures
# llhttp with them, and past them `parse_whole` leaves the response to llhttp (which refuses it). Upstream heads are
# trusted more than client heads, but a cookie-heavy back end still needs room.
MAX_LINE_SIZE: Final = 8190  # the status line (aiohttp's default)
MAX_FIELD_SIZE: Final = 2**16
MAX_HEADERS: Final = 256

# The status line and every field line, up to the empty line. Field names are RFC 9110 tokens; values (and the
# reason) are visible ASCII, space and tab. A folded line (starting with a space) or a bare LF does not match.
_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([2-5][0-9][0-9])(?: ([\x20-\x7e]*))?\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n)*)\r\n"
)
# Fields whose presence sends a response to llhttp: framing and protocol switches it decides, and the old WebSocket
# draft's key, which aiohttp refuses.
_DECLINED = frozenset((b"transfer-encoding", b"upgrade", b"proxy-connection", b"sec-websocket-key1"))
# The lengths of the names parse_whole lowers and compares (every other name is kept without looking at it), as bits
# of one int: a name's length is tested with a shift rather than a set lookup (past the top bit the shift gives 0).
_SPECIAL_LENGTHS: Final = sum(1 << n for n in {len(name) for name in (*_DECLINED, b"content-length", b"connection")})
_SP: Final = 32
_HT: Final = 9
_CR: Final = 13
_COLON: Final = 58
# aiohttp's parser spells a field name it knows (every name `aiohttp.hdrs` declares) as `hdrs` does, whatever the case
# it arrived in, and keeps the others as they came; `WholeResponse.headers` does the same.
_KNOWN: dict[bytes, str] = {
    name.lower().encode("ascii"): name for key, name in vars(hdrs).items() if isinstance(name, istr) and key.isupper()
}


class WholeResponse:
    """A final response read whole: its head (`proxy.upstream.h1_protocol.ResponseMessage`) and its body, read as a
    `StreamReader` that has ended would be read (`proxy.upstream.h1_protocol.BodyReader`)."""

    __slots__ = ("_body", "_exc", "_headers", "code", "length", "raw_headers", "reason", "should_close", "version")

    def __init__(
        self,
        version: HttpVersion,
        code: int,
        reason: str,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        should_close: bool,
        body: bytes,
    ) -> None:
        self.version = version
        self.code = code
        self.reason = reason
        self.raw_headers = raw_headers
        self.should_close = should_close
        self.length = len(body)  # its Content-Length
        self._body = body
        self._exc: BaseException | None = None
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The fields as aiohttp's parser gives them; built on first use (the fast path reads `raw_headers`)."""
        headers = self._headers
        if headers is None:
            fields: CIMultiDict[str] = CIMultiDict()
            for name, value in self.raw_headers:
                fields.add(_KNOWN.get(name.lower()) or name.decode("ascii"), value.decode("ascii"))
            headers = self._headers = CIMultiDictProxy(fields)
        return headers

    # The body, as a StreamReader read: what is left of it, then b"".

    def is_eof(self) -> bool:
        return True

    def at_eof(self) -> bool:
        return not self._body

    def exception(self) -> BaseException | None:
        return self._exc

    def set_exception(self, exc: BaseException) -> None:
        self._exc = exc

    def read_nowait(self) -> bytes:
        if self._exc is not None:
            raise self._exc
        body = self._body
        self._body = b""
        return body

    async def readany(self) -> bytes:
        return self.read_nowait()


def parse_whole(data: bytes) -> WholeResponse | None:
    """`data`, the first read of an exchange, as a whole response; None when llhttp must read it (see the module)."""
    match = _HEAD.match(data) if ENABLED else None
    if match is None:
        return None
    version, status, reason = match.group(1, 2, 3)
    code = int(status)
    if code == 204 or code == 304 or match.start(4) > MAX_LINE_SIZE:
        return None
    close = version == b"0"  # HTTP/1.0 closes unless it asks to keep the connection
    length = -1
    connection = False
    fields: list[tuple[bytes, bytes]] = []
    # The field lines, walked by index: `_HEAD` matched them, so each holds a colon after a non-empty name and ends
    # in CRLF with no CR before it, which bounds every inner loop. Indexing bytes is native in the compiled module,
    # where a method call (split, partition, strip) per line cost about twice as much.
    at, end = match.start(4), match.end(4)
    while at < end:
        colon = at + 1
        while data[colon] != _COLON:
            colon += 1
        start = colon + 1
        while data[start] == _SP or data[start] == _HT:
            start += 1
        eol = start
        while data[eol] != _CR:
            eol += 1
        stop = eol
        while stop > start and (data[stop - 1] == _SP or data[stop - 1] == _HT):
            stop -= 1
        if eol - at > MAX_FIELD_SIZE:
            return None
        name, value = data[at:colon], data[start:stop]
        size = colon - at
        if (_SPECIAL_LENGTHS >> size) & 1:  # only these few names are lowered and compared
            lower = name.lower()
            if lower == b"content-length":
                if length >= 0 or not value.isdigit() or len(value) > 15:
                    return None
                length = int(value)
            elif lower == b"connection":
                token = value.lower()
                if connection or (token != b"close" and token != b"keep-alive"):
                    return None
                connection = True
                close = token == b"close"
            elif lower in _DECLINED:
                return None
        fields.append((name, value))
        at = eol + 2
    if len(fields) > MAX_HEADERS or length < 0 or len(data) - match.end() != length:
        return None
    return WholeResponse(
        HttpVersion11 if version == b"1" else HttpVersion10,
        code,
        reason.decode("ascii") if reason is not None else "",
        tuple(fields),
        close,
        data[match.end() :],
    )


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,15})[ \t]*\r\n", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)


def leading_response_end(data: bytes, with_body: bool) -> int | None:
    """Where a whole final response at the start of `data` ends, when bytes follow it: its head (all of a HEAD answer,
    `with_body` False) or its head and one Content-Length body. None when there is no such response, or nothing after
    it. The upstream client reads only that far when llhttp refused the whole read, so bytes that belong to no exchange
    (a body sent after a HEAD answer, data past the body) do not cost the response in front of them."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"HTTP/1.") or data[9:10] == b"1":  # no head, or an interim (1xx) one
        return None
    cut = end + 4
    if with_body:
        head = data[: end + 2]
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) != 1 or _TRANSFER_ENCODING.search(head):
            return None
        cut += int(lengths[0])
    return cut if cut < len(data) else None
