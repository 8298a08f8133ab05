"""Access log lines as pure functions: the JSON keys, the combined format, redaction and escaping."""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.access.lines import AccessEntry, combined_line, escape_field, json_line, logged_path, rfc3339

SECRET = frozenset({"token", "password"})
# Apache/nginx combined, then the request id: what log parsers (GoAccess, ELK grok COMBINEDAPACHELOG) read.
COMBINED = re.compile(
    r"^(?P<client>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'"(?P<request_id>[^"]*)"\n$'
)


def _entry(**changes: Any) -> AccessEntry:
    entry = AccessEntry(
        time=1_796_569_453.1234,  # 2026-12-06T15:04:13.123Z
        request_id="abc123",
        client="127.0.0.1",
        method="GET",
        path="/api/orders/7?x=1",
        route="orders",
        mode="shadow",
        upstream="legacy",
        status=200,
        bytes_in=0,
        bytes_out=153,
        duration_us=812,
        fallback=False,
        shadow="mirrored",
        referer="https://example.test/",
        user_agent="curl/8.5",
    )
    return entry._replace(**changes)


def test_json_line_has_exactly_the_documented_keys_in_order() -> None:
    """A JSON line is one object ending in a newline, with the issue's keys in order and typed values."""
    line = json_line(_entry())
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    doc = orjson.loads(line)
    assert list(doc) == [
        "time", "request_id", "client", "method", "path", "route", "mode", "upstream",
        "status", "bytes_in", "bytes_out", "duration_us", "fallback", "shadow",
    ]  # fmt: skip
    assert doc["time"] == "2026-12-06T15:04:13.123Z"
    assert (doc["status"], doc["bytes_out"], doc["duration_us"], doc["fallback"]) == (200, 153, 812, False)
    assert (doc["route"], doc["mode"], doc["upstream"], doc["shadow"]) == ("orders", "shadow", "legacy", "mirrored")


def test_unmatched_and_unparsed_requests_log_nulls() -> None:
    """No route: route, mode and upstream are null; an unparsed request line: method and path are null."""
    doc = orjson.loads(json_line(_entry(route=None, mode=None, upstream=None, shadow=None, method=None, path=None)))
    assert [doc[k] for k in ("route", "mode", "upstream", "shadow", "method", "path")] == [None] * 6


def test_rfc3339_is_utc_with_milliseconds() -> None:
    """Times are UTC, millisecond precision, with a Z suffix."""
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_796_569_453.9999) == "2026-12-06T15:04:13.999Z"


def test_combined_line_parses_with_the_combined_regex() -> None:
    """The combined line is Apache/nginx combined followed by the quoted request id."""
    line = combined_line(_entry()).decode()
    found = COMBINED.match(line)
    assert found is not None, line
    assert found["client"] == "127.0.0.1"
    assert found["time"] == "06/Dec/2026:15:04:13 +0000"
    assert found["request"] == "GET /api/orders/7?x=1 HTTP/1.1"
    assert (found["status"], found["bytes"]) == ("200", "153")
    assert (found["referer"], found["agent"], found["request_id"]) == ("https://example.test/", "curl/8.5", "abc123")


def test_combined_line_writes_missing_values_as_dashes() -> None:
    """No referer or user agent: "-"; an unparsed request line: "-"."""
    line = combined_line(_entry(referer=None, user_agent=None, method=None, path=None)).decode()
    found = COMBINED.match(line)
    assert found is not None, line
    assert (found["request"], found["referer"], found["agent"]) == ("-", "-", "-")


def test_secret_query_values_are_redacted() -> None:
    """Values of redact.query parameters never reach the log; other parameters and the path stay as sent."""
    assert logged_path("/login?user=ann&token=s3cr3t&Password=hunter2", SECRET) == (
        "/login?user=ann&token=<redacted>&Password=<redacted>"
    )
    assert logged_path("/p?to%6Ben=s3cr3t", SECRET) == "/p?to%6Ben=<redacted>"  # percent-encoded name
    assert logged_path("/plain", SECRET) == "/plain"


def test_control_characters_are_escaped_in_both_formats() -> None:
    """A newline, an escape sequence, DEL, a C1 control, U+2028, a raw non-UTF-8 byte and a backslash are written as
    \\xHH or \\uHHHH, so a logged field can never start a forged line."""
    hostile = "/a\nb\x1b[31m\x7f\x85\u2028\udcff\\"
    escaped = "/a\\x0ab\\x1b[31m\\x7f\\x85\\u2028\\xff\\x5c"
    assert escape_field(hostile) == escaped
    line = json_line(_entry(path=hostile, user_agent=hostile))
    assert line.count(b"\n") == 1
    assert orjson.loads(line)["path"] == escaped
    combined = combined_line(_entry(path=hostile, user_agent='evil" "x'))
    assert combined.count(b"\n") == 1
    found = COMBINED.match(combined.decode())
    assert found is not None
    assert found["agent"] == "evil\\x22 \\x22x"


def test_printable_ascii_is_kept_as_is() -> None:
    """The common case is not copied or changed."""
    value = "/api/orders/7?q=a+b&x=%20"
    assert escape_field(value) is value
