"""Tests for shadow.judge.normalize: body decoding, body kinds, header views, field paths."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from proxy.config.model import Compare
from shadow.judge import normalize
from shadow.judge.jsonpath import apply_ignores, order_blind
from shadow.judge.normalize import UndecodableBody, body_kind, decode_body, header_view, parse_json

PAYLOAD = b'{"hello": "world", "n": [1, 2, 3]}' * 20


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("gzip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)),
        ("br", brotli.compress(PAYLOAD)),
        ("identity", PAYLOAD),
    ],
)
def test_decode_body_undoes_each_content_encoding(coding: str, encoded: bytes) -> None:
    """gzip, deflate (zlib), br and identity bodies decode to the original bytes."""
    assert decode_body((("Content-Encoding", coding),), encoded) == PAYLOAD


def test_decode_body_accepts_raw_deflate() -> None:
    """A raw (headerless) deflate stream, as some servers send, is decoded too."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(PAYLOAD) + compressor.flush()
    assert decode_body((("content-encoding", "deflate"),), raw) == PAYLOAD


def test_decode_body_undoes_stacked_codings_last_first() -> None:
    """`Content-Encoding: gzip, br` means gzip was applied first, so br is undone first."""
    encoded = brotli.compress(gzip.compress(PAYLOAD))
    assert decode_body((("Content-Encoding", "gzip, br"),), encoded) == PAYLOAD


def test_decode_body_handles_multi_member_gzip() -> None:
    """Concatenated gzip members decode to the concatenated payloads."""
    encoded = gzip.compress(b"abc") + gzip.compress(b"def")
    assert decode_body((("Content-Encoding", "gzip"),), encoded) == b"abcdef"


def test_decode_body_without_encoding_returns_input() -> None:
    """No Content-Encoding leaves the body untouched."""
    assert decode_body((("Content-Type", "text/plain"),), b"plain") == b"plain"


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        ("gzip", b"not gzip at all"),
        ("br", b"\xff\xff\xff\xff"),
        ("zstd", b"whatever"),
        ("gzip", gzip.compress(PAYLOAD)[:-12]),
    ],
)
def test_decode_body_rejects_corrupt_unknown_or_truncated(coding: str, data: bytes) -> None:
    """Corrupt, truncated or unsupported codings raise UndecodableBody (compared as bytes instead)."""
    with pytest.raises(UndecodableBody):
        decode_body((("Content-Encoding", coding),), data)


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_decode_body_caps_output_size(coding: str) -> None:
    """A body that would decode past MAX_DECODED (a bomb) is refused rather than inflated."""
    big = b"\0" * (normalize.MAX_DECODED + 1024)
    encoded = gzip.compress(big) if coding == "gzip" else brotli.compress(big, quality=1)
    with pytest.raises(UndecodableBody, match="larger than"):
        decode_body((("Content-Encoding", coding),), encoded)


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("application/problem+json", "json"),
        ("Application/VND.API+JSON", "json"),
        ("text/html; charset=utf-8", "text"),
        ("text/plain", "text"),
        ("application/xml", "text"),
        ("application/atom+xml", "text"),
        ("application/javascript", "text"),
        ("application/x-www-form-urlencoded", "text"),
        ("image/png", "binary"),
        ("application/octet-stream", "binary"),
        (None, "binary"),
        ("", "binary"),
    ],
)
def test_body_kind_by_content_type(content_type: str | None, kind: str) -> None:
    """JSON types (and +json) compare as JSON, text-like types as text, the rest as bytes."""
    assert body_kind(content_type) == kind


def test_parse_json_falls_back_for_what_orjson_refuses() -> None:
    """NaN still parses (standard library fallback); garbage raises ValueError."""
    assert parse_json(b'{"a": 1}') == {"a": 1}
    nan = parse_json(b"[NaN]")
    assert isinstance(nan, list)
    assert nan[0] != nan[0]
    with pytest.raises(ValueError, match="not JSON"):
        parse_json(b"<html>")


def test_header_view_keeps_allow_list_minus_volatile_and_ignored() -> None:
    """Only allow-listed headers are compared; built-in volatile ones and ignore_headers are dropped."""
    rules = Compare(
        headers=frozenset({"content-type", "date", "x-api-version", "cache-control"}),
        ignore_headers=frozenset({"cache-control"}),
    )
    headers = (
        ("Content-Type", "application/json"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("X-API-Version", "1"),
        ("x-api-version", "2"),
        ("Cache-Control", "no-store"),
        ("X-Other", "not compared"),
    )
    assert header_view(headers, rules) == {"content-type": "application/json", "x-api-version": "1, 2"}


def test_header_view_lists_cookie_names_never_values() -> None:
    """Set-Cookie contributes sorted cookie names only; ignoring set-cookie drops even the names."""
    headers = (("Set-Cookie", "sid=SECRET1; Path=/; HttpOnly"), ("set-cookie", "theme=dark"), ("Set-Cookie", "sid=x"))
    view = header_view(headers, Compare())
    assert view["set-cookie"] == "sid, theme"
    assert "SECRET1" not in repr(view)
    assert "set-cookie" not in header_view(headers, Compare(ignore_headers=frozenset({"set-cookie"})))


def test_apply_ignores_removes_addressed_fields_without_mutating() -> None:
    """Named, wildcard, indexed and quoted paths are removed; the input document is untouched."""
    doc = {
        "meta": {"generated_at": "now", "v": 1},
        "items": [{"id": 1, "updated_at": "a"}, {"id": 2, "updated_at": "b"}],
        "weird key": 1,
        "list": [{"x": 1, "y": 1}, {"x": 2, "y": 2}],
    }
    before = repr(doc)
    out = apply_ignores(
        doc, ("$.meta.generated_at", "$.items[*].updated_at", "$['weird key']", "$.list[0].x", "$.missing.path")
    )
    assert out == {
        "meta": {"v": 1},
        "items": [{"id": 1}, {"id": 2}],
        "list": [{"y": 1}, {"x": 2, "y": 2}],
    }
    assert repr(doc) == before


def test_apply_ignores_in_place_edits_the_document() -> None:
    """in_place=True removes fields from the given document itself (for freshly parsed ones)."""
    doc = {"a": [{"x": 1, "y": 2}], "b": 1}
    assert apply_ignores(doc, ("$.a[*].x", "$.b", "$.a[5]"), in_place=True) is doc
    assert doc == {"a": [{"y": 2}]}


def test_order_blind_sorts_only_named_arrays_or_all() -> None:
    """A tuple of paths sorts just those arrays; True sorts every array, nested ones included."""
    doc = {"tags": ["b", "a"], "ids": [2, 1], "nested": [{"l": [2, 1]}]}
    assert order_blind(doc, ("$.tags",)) == {"tags": ["a", "b"], "ids": [2, 1], "nested": [{"l": [2, 1]}]}
    assert order_blind(doc, True) == {"tags": ["a", "b"], "ids": [1, 2], "nested": [{"l": [1, 2]}]}
    assert order_blind(doc, False) is doc
    assert doc == {"tags": ["b", "a"], "ids": [2, 1], "nested": [{"l": [2, 1]}]}  # copies unless in_place
    mixed = {"m": [{"k": 1}, None, "s", 2, True, [1]]}
    assert order_blind(mixed, True) == order_blind({"m": [[1], True, 2, "s", None, {"k": 1}]}, True)
