"""Access log lines as pure functions: one `AccessEntry` per request becomes one JSON object or one Apache/nginx
"combined" line, with secret query values redacted and control characters escaped (no log injection).

Escaping: every control character (C0, DEL, C1, U+2028/U+2029), a lone surrogate (a byte that was not UTF-8) and the
backslash are written as `\\xHH` (`\\uHHHH` above 0xFF), in both formats; the combined format also escapes `"`, as
nginx does. A logged line therefore never holds a line break, and what was escaped is unambiguous.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, NamedTuple

import orjson

from proxy.query_redact import redact_query

REDACTED: Final = "<redacted>"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AccessEntry(NamedTuple):
    """What one request's line says. A NamedTuple, not a frozen dataclass: one is built per logged request and a
    tuple is the cheapest immutable value to make."""

    time: float  # wall clock (seconds since the epoch) when the response was finished
    request_id: str
    client: str  # the peer address
    method: str | None  # None: the request line could not be parsed
    path: str | None  # the request target as received, query included, secret values redacted
    route: str | None  # route id; None when no route matched (or the request was refused before routing)
    mode: str | None  # the route's mode
    upstream: str | None  # the upstream that served; None when no back end was asked
    status: int
    bytes_in: int  # request body bytes received
    bytes_out: int  # bytes sent to the client, response head included
    duration_us: int
    fallback: bool  # the new side failed and legacy answered
    shadow: str | None  # "mirrored", or why the route did not mirror this request; None when it mirrors nothing
    version: str = "HTTP/1.1"  # for the combined format's request line
    referer: str | None = None
    user_agent: str | None = None


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _needs_escape(char: str, quote: bool) -> bool:
    code = ord(char)
    return (
        code < 0x20
        or 0x7F <= code < 0xA0
        or char in "\\\u2028\u2029"
        or (quote and char == '"')
        or 0xD800 <= code <= 0xDFFF
    )


def escape_field(value: str, *, quote: bool = False) -> str:
    """`value` with control characters, lone surrogates and backslashes (and `"` when `quote`) escaped."""
    if value.isascii() and value.isprintable() and "\\" not in value and not (quote and '"' in value):
        return value  # the common case: nothing to escape, no copy
    return "".join(_escape_char(c) if _needs_escape(c, quote) else c for c in value)


def _redact(value: str) -> str:
    return REDACTED


def logged_path(raw_path: str, secret: frozenset[str]) -> str:
    """The request target as logged: the values of secret query parameters (lower-case names, `redact.query`)
    replaced by `<redacted>` (`proxy.query_redact`, the rule the store's redaction uses)."""
    path, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    return path + "?" + redact_query(query, secret, _redact)


class _SecondCache:
    """Formats of the current second, made once per second rather than once per line."""

    __slots__ = ("combined", "rfc3339", "second")

    def __init__(self) -> None:
        self.second = -1
        self.rfc3339 = ""
        self.combined = ""

    def at(self, second: int) -> _SecondCache:
        if second != self.second:
            t = time.gmtime(second)
            self.rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%S", t)
            self.combined = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"
            self.second = second
        return self


_SECONDS = _SecondCache()


# ".000Z" to ".999Z": a lookup per line where formatting the milliseconds was a method call (1.4% of a logged
# pass-through request's CPU under perf).
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


def rfc3339(when: float) -> str:
    """UTC with milliseconds, e.g. 2026-12-06T15:24:13.123Z."""
    second = int(when)
    return _SECONDS.at(second).rfc3339 + _MILLIS[int((when - second) * 1000)]


def combined_time(when: float) -> str:
    """The combined format's time, e.g. 06/Dec/2026:15:24:13 +0000 (UTC)."""
    return _SECONDS.at(int(when)).combined


def json_line(entry: AccessEntry) -> bytes:
    """One JSON object and a newline; keys in a fixed order. Only the request id and the path are escaped: the
    other strings cannot hold a control character (a socket address, an HTTP token, names the config validated)."""
    path = entry.path
    return (
        orjson.dumps(
            {
                "time": rfc3339(entry.time),
                "request_id": escape_field(entry.request_id),
                "client": entry.client,
                "method": entry.method,
                "path": None if path is None else escape_field(path),
                "route": entry.route,
                "mode": entry.mode,
                "upstream": entry.upstream,
                "status": entry.status,
                "bytes_in": entry.bytes_in,
                "bytes_out": entry.bytes_out,
                "duration_us": entry.duration_us,
                "fallback": entry.fallback,
                "shadow": entry.shadow,
            }
        )
        + b"\n"
    )


def _quoted(value: str | None) -> str:
    return "-" if not value else escape_field(value, quote=True)


def combined_line(entry: AccessEntry) -> bytes:
    """Apache/nginx combined format, then the request id in quotes:
    `client - - [time] "METHOD path HTTP/1.1" status bytes_out "referer" "user-agent" "request_id"`.
    An unparsed request line is logged as `"-"`, missing values as `-`."""
    if entry.method is None or entry.path is None:
        request = "-"
    else:
        request = f"{entry.method} {_quoted(entry.path)} {entry.version}"
    line = (
        f"{entry.client} - - [{combined_time(entry.time)}] "
        f'"{request}" {entry.status} {entry.bytes_out} '
        f'"{_quoted(entry.referer)}" "{_quoted(entry.user_agent)}" "{_quoted(entry.request_id)}"\n'
    )
    return line.encode("utf-8", "backslashreplace")


FORMATS: dict[str, Callable[[AccessEntry], bytes]] = {"json": json_line, "combined": combined_line}
