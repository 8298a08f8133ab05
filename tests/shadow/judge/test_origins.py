"""compare.same_origin: absolute URLs on the legacy, new or client-facing authority compare as one. End to end
through the real proxy, shadow listener and store, and the rewriting itself (shadow.judge.origins) case by case."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from typer.testing import CliRunner
from yarl import URL

from cli.main import app
from proxy.config.model import Compare
from proxy.events import ResponseSnapshot, Side
from shadow.judge.compare import Unjudged, judge_pair, judge_pair_quick, judge_rest
from shadow.judge.origins import Judged, Origins, origins_for, unify_pair, unify_response
from shadow.store.database import Store
from tests.shadow.shadow_fixtures import backends, differences, exchanges, shadow_proxy


async def _redirect_to_own_host(request: web.Request) -> web.StreamResponse:
    """An app that builds absolute URLs from the Host it was sent (as most frameworks do)."""
    own = f"http://{request.host}"
    return web.json_response(
        {"id": 7, "next_url": f"{own}/api/orders?page=2", "links": [f"{own}/api/orders/7", "http://elsewhere/x"]},
        status=302,
        headers={"Location": f"{own}/next"},
    )


def _route(same_origin: str = "") -> str:
    compare = f"\n  compare: {{same_origin: {same_origin}}}" if same_origin else ""
    return f"- id: api\n  match: {{path: /api/**}}\n  mode: shadow{compare}"


async def test_redirects_and_urls_on_each_sides_own_host_match(tmp_path: Path) -> None:
    """A 302 whose Location and JSON URLs point at each back end's own host (Host rewritten per upstream) is a
    match, and the stored note says that same_origin applied and to which authorities."""
    async with (
        backends(_redirect_to_own_host, _redirect_to_own_host) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, _route(), store="sample_matches: 1.0") as sp,
    ):
        status, headers, _, _ = await sp.request("GET", "/api/orders", allow_redirects=False)
        assert status == 302
        assert headers["Location"] == f"{legacy.url}/next"  # the client gets legacy's answer untouched
    [row] = exchanges(sp.db)
    assert row["outcome"] == "match"
    assert row["note"].startswith("same_origin: URLs of ")
    for url in (legacy.url, new.url, sp.url):
        assert url.removeprefix("http://") in row["note"]
    with Store.open(sp.db, create=False) as store:
        detail = store.get_exchange(row["id"])
    assert detail is not None
    assert detail.record.legacy_body is not None
    assert detail.record.new_body is not None
    # The stored bodies are the responses as each side sent them; only the comparison saw them unified.
    assert legacy.url in detail.record.legacy_body.data.decode()
    assert new.url in detail.record.new_body.data.decode()


async def test_same_origin_false_compares_the_urls_as_written(tmp_path: Path) -> None:
    """With compare.same_origin: false the same pair is a mismatch on Location and on every URL in the body."""
    async with (
        backends(_redirect_to_own_host, _redirect_to_own_host) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, _route("false")) as sp,
    ):
        await sp.request("GET", "/api/orders", allow_redirects=False)
    [row] = exchanges(sp.db)
    assert row["outcome"] == "mismatch"
    assert row["note"] is None or "same_origin" not in row["note"]
    assert {d["path"] for d in differences(sp.db)} == {"header.location", "$.next_url", "$.links[0]"}


# --- the rewriting, case by case ---------------------------------------------------------------------------------

LEGACY, NEW = URL("http://10.0.0.5:8000"), URL("http://new.internal")
JSON = ("Content-Type", "application/json")


def _origins(*headers: tuple[str, str], host: str | None = "shop.example.com", **rules: Any) -> Origins:
    origins = origins_for(Compare(**rules), [LEGACY, NEW], headers, host)
    assert origins is not None
    return origins


def _snap(body: bytes, *headers: tuple[str, str], side: Side = "legacy") -> ResponseSnapshot:
    return ResponseSnapshot(side, side, 200, headers or (JSON,), body, True, 0.01)


def _unified(body: bytes, *headers: tuple[str, str], origins: Origins | None = None) -> bytes:
    snap = unify_response(_snap(body, *headers), origins or _origins())
    assert snap.body is not None
    return snap.body


def test_authorities_are_both_upstreams_and_the_client_facing_host() -> None:
    """Each upstream's host:port (and the bare host on a default port), the client's Host and X-Forwarded-Host."""
    origins = _origins(("X-Forwarded-Host", "Public.Example.com"), ("Host", "10.0.0.5:8000"))
    assert origins.authorities == (
        "10.0.0.5:8000",
        "new.internal",
        "new.internal:80",
        "public.example.com",
        "shop.example.com",
    )
    assert origins.note == f"same_origin: URLs of {', '.join(origins.authorities)} compared as one"


def test_each_exchange_gets_the_authorities_of_its_own_client_host() -> None:
    """Origins are cached per upstream URLs and client-facing values: an exchange for another Host or
    X-Forwarded-Host gets that authority, never the one a previous exchange was given."""
    rules = Compare()
    first = origins_for(rules, [LEGACY, NEW], (), "shop.example.com")
    other = origins_for(rules, [LEGACY, NEW], (("X-Forwarded-Host", "admin.example.com"),), "shop.example.com")
    again = origins_for(rules, [LEGACY, NEW], (), "shop.example.com")
    assert first is not None
    assert other is not None
    assert again is not None
    assert "admin.example.com" in other.authorities
    assert "admin.example.com" not in first.authorities
    assert again.authorities == first.authorities
    assert origins_for(rules, [LEGACY], (), "shop.example.com") != first  # another route's upstreams


def test_same_origin_false_means_no_origins() -> None:
    """With same_origin off nothing is unified."""
    assert origins_for(Compare(same_origin=False), [LEGACY, NEW], (), "shop.example.com") is None


def test_urls_on_known_authorities_become_the_placeholder_and_keep_scheme_path_and_query() -> None:
    """The authority is replaced; scheme, path and query stay, and are still compared."""
    body = b'{"a": "http://10.0.0.5:8000/x?p=1", "b": "HTTPS://New.Internal/y", "c": "http://shop.example.com"}'
    assert _unified(body) == b'{"a": "http://{origin}/x?p=1", "b": "HTTPS://{origin}/y", "c": "http://{origin}"}'


def test_other_hosts_and_longer_names_are_left_alone() -> None:
    """A URL on another host, another port, or a host that merely starts like a known one is not rewritten."""
    body = (
        b'["http://10.0.0.5:80001/x", "http://new.internal:8080/", "http://new.internal.evil.com/",'
        b' "http://elsewhere/", "ftp://10.0.0.5:8000/", "10.0.0.5:8000/bare"]'
    )
    snap = _snap(body)
    assert unify_response(snap, _origins()) is snap


def test_json_escaped_slashes_are_rewritten_too() -> None:
    r"""PHP-style JSON writes `http:\/\/host`; it is recognised as well."""
    assert _unified(b'{"u": "http:\\/\\/10.0.0.5:8000\\/x"}') == b'{"u": "http:\\/\\/{origin}\\/x"}'


def test_url_headers_are_rewritten_and_other_headers_kept() -> None:
    """Location, Content-Location and Link are rewritten; other headers are left as they are."""
    snap = _snap(
        b"",
        ("Location", "http://new.internal/next"),
        ("Link", '<http://new.internal:80/p2>; rel="next"'),
        ("X-Origin", "http://new.internal/"),
    )
    assert unify_response(snap, _origins()).headers == (
        ("Location", "http://{origin}/next"),
        ("Link", '<http://{origin}/p2>; rel="next"'),
        ("X-Origin", "http://new.internal/"),
    )


def test_encoded_text_bodies_are_rewritten_decoded_and_binary_bodies_never() -> None:
    """A gzip HTML body is decoded to be rewritten (its Content-Encoding dropped); an image is left as bytes."""
    html = b'<a href="http://10.0.0.5:8000/p">next</a>'
    snap = _snap(gzip.compress(html), ("Content-Type", "text/html"), ("Content-Encoding", "gzip"))
    unified = unify_response(snap, _origins())
    assert unified.body == b'<a href="http://{origin}/p">next</a>'
    assert unified.headers == (("Content-Type", "text/html"),)
    image = _snap(b"GIF89a http://10.0.0.5:8000/", ("Content-Type", "image/gif"))
    assert unify_response(image, _origins()) is image


def test_pair_reports_whether_anything_was_unified() -> None:
    """Identical responses, or responses without known URLs, come back untouched and unflagged."""
    origins = _origins()
    same = _snap(b'{"u": "http://10.0.0.5:8000/"}')
    assert unify_pair(same, same, origins) == (same, same, False)
    plain_a, plain_b = _snap(b'{"a": 1}'), _snap(b'{"a": 2}', side="new")
    assert unify_pair(plain_a, plain_b, origins) == (plain_a, plain_b, False)
    legacy = _snap(b'{"u": "http://10.0.0.5:8000/n"}')
    new = _snap(b'{"u": "http://new.internal/n"}', side="new")
    a, b, unified = unify_pair(legacy, new, origins)
    assert unified
    assert a.body == b.body == b'{"u": "http://{origin}/n"}'


def test_judge_pair_notes_same_origin_only_when_it_applied() -> None:
    """judge_pair with origins matches the unified pair and says so in the note; without known URLs, no note."""
    origins = _origins()
    legacy = _snap(b'{"u": "http://10.0.0.5:8000/n"}')
    new = _snap(b'{"u": "http://new.internal/n"}', side="new")
    outcome, _, comparison = judge_pair(legacy, new, Compare(), origins=origins)
    assert outcome == "match"
    assert comparison is not None
    assert comparison.note == origins.note
    outcome, _, comparison = judge_pair(_snap(b'{"a": 1}'), _snap(b'{"a": 2}', side="new"), Compare(), origins=origins)
    assert outcome == "mismatch"
    assert comparison is not None
    assert comparison.note is None


async def test_replay_unifies_origins_like_live_shadowing(tmp_path: Path) -> None:
    """A pair stored as a mismatch with same_origin off matches when replayed after the key is removed: replay
    judges with the same origins as live shadowing (the route's upstreams and the stored request's Host)."""
    async with backends(_redirect_to_own_host, _redirect_to_own_host) as (legacy, new):
        async with shadow_proxy(tmp_path, legacy.url, new.url, _route("false")) as sp:
            await sp.request("GET", "/api/orders", allow_redirects=False)
        assert [row["outcome"] for row in exchanges(sp.db)] == ["mismatch"]
        config = tmp_path / "routes.yaml"
        config.write_text(config.read_text().replace("\n    compare: {same_origin: false}", ""))
        args = ["replay", "--route", "api", "--outcome", "mismatch", "-c", str(config), "--format", "json"]
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    [route] = json.loads(result.stdout)["routes"]
    assert (route["mismatched_before"], route["fixed"], route["mismatched_after"]) == (1, 1, 0)


def _pairs_to_judge() -> list[tuple[ResponseSnapshot, ResponseSnapshot]]:
    legacy_url, new_url = b'{"u": "http://10.0.0.5:8000/n", "a": 1}', b'{"u": "http://new.internal/n", "a": 2}'
    failed = ResponseSnapshot("new", "new", 0, (), None, False, 0.01, "connect")
    return [
        (_snap(b'{"a": 1}'), _snap(b'{"a": 1}', side="new")),  # match
        (_snap(b'{"a": 1}'), _snap(b'{"a": 2}', side="new")),  # mismatch
        (_snap(legacy_url), _snap(new_url, side="new")),  # a mismatch once the URLs are unified
        (_snap(b'{"u": "http://10.0.0.5:8000/n"}'), _snap(b'{"u": "http://new.internal/n"}', side="new")),
        (_snap(b'{"a": 1}'), _snap(b'{"a": 1}', side="new")._replace(status=503)),  # 5xx candidate
        (_snap(b'{"a": 1}'), failed),
    ]


def _timeless(judged: Judged) -> Judged:
    outcome, reason, comparison = judged
    return outcome, reason, None if comparison is None else comparison._replace(seconds=0.0)


def test_quick_judge_then_the_rest_is_judge_pair() -> None:
    """What the loop's quick judge decides, or leaves (`Unjudged`, URLs already unified) for the compare thread to
    finish with `judge_rest`, is exactly what `judge_pair` decides, notes included; the thread unifies nothing
    again."""
    origins = _origins()
    for legacy, new in _pairs_to_judge():
        quick = judge_pair_quick(legacy, new, Compare(), origins=origins)
        whole = judge_pair(legacy, new, Compare(), origins=origins)
        if isinstance(quick, Unjudged):
            assert _timeless(judge_rest(quick, Compare())) == _timeless(whole)
            # Left as compared: the known-origin URLs already replaced (nothing for the thread to rewrite).
            assert b"10.0.0.5" not in (quick.primary.body or b"")
        else:
            assert _timeless(quick) == _timeless(whole)
    legacy, new = _pairs_to_judge()[2]
    quick = judge_pair_quick(legacy, new, Compare(), origins=origins)
    assert isinstance(quick, Unjudged)
    assert quick.origins is origins  # the note comes with the judgement
    outcome, _, comparison = judge_rest(quick, Compare())
    assert outcome == "mismatch"
    assert comparison is not None
    assert comparison.note == origins.note
