"""Content-Type compared as a media type (issue 8 item 15): in `shadow.judge.normalize`, in compare, and through the
proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from proxy.config.model import Compare
from proxy.events import ResponseSnapshot
from shadow.judge.compare import compare_responses, is_fast_match
from shadow.judge.normalize import same_media_type
from tests.shadow.shadow_fixtures import backends, exchanges, shadow_proxy


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("application/json", "application/json; charset=utf-8"),
        ("application/json; charset=UTF-8", "Application/JSON"),
        ('application/problem+json; charset="utf-8"', "application/problem+json"),
        ("text/html; charset=utf-8", "TEXT/HTML; Charset=UTF-8"),
        ("text/plain; format=flowed; charset=utf-8", "text/plain;charset=utf-8;format=flowed"),
        ("application/json;charset=utf-8", "application/json ; charset = utf-8"),
    ],
)
def test_same_media_types(a: str, b: str) -> None:
    """Type, subtype and parameter names ignore case; charset=utf-8 on JSON is the same as no charset."""
    assert same_media_type(a, b)
    assert same_media_type(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("application/json", "application/json; charset=iso-8859-1"),
        ("application/json", "text/json"),
        ("text/html", "text/html; charset=utf-8"),  # text/* has no charset by its RFC: the parameter matters
        ("text/plain; format=flowed", "text/plain; format=fixed"),
        ("application/json; profile=a", "application/json; profile=A"),  # values other than charset keep case
        ("application/json; v=1", "application/json"),
    ],
)
def test_different_media_types(a: str, b: str) -> None:
    """Another type, another charset (or one added outside JSON), or another parameter value is a difference."""
    assert not same_media_type(a, b)
    assert not same_media_type(b, a)


def _snap(content_type: str, side: str) -> ResponseSnapshot:
    return ResponseSnapshot(
        side="legacy" if side == "legacy" else "new",
        upstream=side,
        status=200,
        headers=(("Content-Type", content_type),),
        body=b'{"id": 1}',
        body_complete=True,
        latency=0.01,
    )


def test_json_charset_parameter_is_no_difference_in_compare() -> None:
    """A JSON pair differing only by `charset=utf-8` matches, on the fast path and in compare_responses."""
    legacy, new = _snap("application/json; charset=utf-8", "legacy"), _snap("application/json", "new")
    assert is_fast_match(legacy, new, Compare())
    result = compare_responses(legacy, new, Compare())
    assert (result.outcome, result.differences) == ("match", ())


def test_other_media_type_is_reported_with_both_values() -> None:
    """A real media type change is one header.content-type difference showing each side's header as sent."""
    legacy, new = _snap("application/json; charset=utf-8", "legacy"), _snap("application/vnd.api+json", "new")
    assert not is_fast_match(legacy, new, Compare())
    (diff,) = compare_responses(legacy, new, Compare()).differences
    assert (diff.path, diff.kind) == ("header.content-type", "changed")
    assert (diff.legacy, diff.new) == ('"application/json; charset=utf-8"', '"application/vnd.api+json"')


async def test_charset_only_difference_matches_through_the_proxy(tmp_path: Path) -> None:
    """Through the real proxy and shadow listener, legacy's `charset=utf-8` against new's bare JSON type matches."""

    async def legacy_app(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"name": "jane"}', headers={"Content-Type": "application/json; charset=utf-8"})

    async def new_app(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"name":"jane"}', headers={"Content-Type": "application/json"})

    async with backends(legacy_app, new_app) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        for i in range(3):
            status, _, _, _ = await sp.request("GET", f"/api/profile/{i}")
            assert status == 200
    assert [r["outcome"] for r in exchanges(sp.db)] == ["match"] * 3
