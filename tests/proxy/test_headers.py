"""Header hygiene as pure functions: what reaches the upstream and what reaches the client."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from proxy.config.model import Upstream
from proxy.headers import (
    _VALID_HOST,
    end_to_end_response_headers,
    new_request_id,
    response_headers_with,
    unsupported_transfer_coding,
    upstream_request_headers,
    valid_host,
    valid_request_id,
)

LEGACY = Upstream(name="legacy", url=URL("http://legacy.internal:8001"))
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def raw(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode(), v.encode()) for n, v in pairs)


def build(
    *pairs: tuple[str, str],
    upstream: Upstream = LEGACY,
    peer: str = "10.1.2.3",
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    client_host: str = "shop.example",
) -> list[tuple[str, str]]:
    return upstream_request_headers(
        raw(*pairs),
        upstream=upstream,
        client_host=client_host,
        peer_ip=peer,
        scheme="https",
        trusted_proxies=trusted,
        request_id="rid-1",
        via="strangler",
        http_version=(1, 1),
    )


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n.lower() for n, _ in headers]


def test_hop_by_hop_and_framing_headers_are_dropped() -> None:
    """Every fixed hop-by-hop header, Content-Length and Expect are stripped from the upstream request."""
    out = build(
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9v"),
        ("Proxy-Authenticate", "Basic"),
        ("Content-Length", "12"),
        ("Expect", "100-continue"),
        ("Accept", "*/*"),
    )
    assert names(out) == [
        "host",
        "accept",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
    ]


def test_connection_named_headers_are_dropped_wherever_they_appear() -> None:
    """Headers listed in Connection are dropped even when they come before the Connection header."""
    out = build(("X-Secret", "1"), ("Connection", "close, X-Secret , x-other"), ("X-Other", "2"), ("X-Kept", "3"))
    assert "x-secret" not in names(out)
    assert "x-other" not in names(out)
    assert ("X-Kept", "3") in out


def test_order_case_and_duplicates_are_kept() -> None:
    """End-to-end headers keep their order, original spelling and repeated occurrences."""
    out = build(("accept", "a"), ("X-Dup", "1"), ("Cookie", "c=1"), ("X-Dup", "2"))
    middle = [h for h in out if h[0] in ("accept", "X-Dup", "Cookie")]
    assert middle == [("accept", "a"), ("X-Dup", "1"), ("Cookie", "c=1"), ("X-Dup", "2")]


def test_host_rewritten_to_upstream_authority() -> None:
    """host_header rewrite sends the upstream's host and non-default port instead of the client's Host."""
    out = build(("Host", "shop.example"))
    assert out[0] == ("Host", "legacy.internal:8001")
    assert names(out).count("host") == 1


def test_host_rewrite_omits_default_port() -> None:
    """A default port is not written in the rewritten Host."""
    upstream = Upstream(name="new", url=URL("https://new.internal/base"))
    assert build(("Host", "shop.example"), upstream=upstream)[0] == ("Host", "new.internal")


def test_host_preserved_when_configured() -> None:
    """host_header preserve forwards the Host the client sent."""
    upstream = Upstream(name="legacy", url=URL("http://legacy.internal:8001"), host_header="preserve")
    out = build(("Host", "shop.example"), upstream=upstream)
    assert out[0] == ("Host", "shop.example")


def test_forwarded_headers_from_untrusted_peer_are_replaced() -> None:
    """A client outside trusted_proxies cannot spoof X-Forwarded-For/Proto/Host or Forwarded."""
    out = build(
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6"),
        peer="10.1.2.3",
        trusted=LOOPBACK,
    )
    got = dict(out)
    assert got["X-Forwarded-For"] == "10.1.2.3"
    assert got["X-Forwarded-Proto"] == "https"
    assert got["X-Forwarded-Host"] == "shop.example"
    assert "forwarded" not in names(out)


def test_forwarded_headers_from_trusted_peer_are_extended() -> None:
    """A trusted proxy's X-Forwarded-For is appended to and its Proto/Host are believed."""
    out = build(
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("X-Forwarded-For", "3.3.3.3"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "edge.example"),
        ("Forwarded", "for=1.1.1.1"),
        peer="127.0.0.9",
        trusted=LOOPBACK,
    )
    got = dict(out)
    assert got["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.9"
    assert got["X-Forwarded-Proto"] == "http"
    assert got["X-Forwarded-Host"] == "edge.example"
    assert got["Forwarded"] == "for=1.1.1.1"


def test_unparseable_peer_is_not_trusted() -> None:
    """A peer that is not an IP address (unix socket) is never trusted."""
    out = build(("X-Forwarded-For", "6.6.6.6"), peer="", trusted=LOOPBACK)
    assert "x-forwarded-for" not in names(out)


def test_via_is_appended_with_the_client_version() -> None:
    """Via keeps earlier hops and adds "<version> <pseudonym>" for this one."""
    out = upstream_request_headers(
        raw(("Via", "1.1 cdn")),
        upstream=LEGACY,
        client_host="shop.example",
        peer_ip="10.0.0.1",
        scheme="http",
        trusted_proxies=(),
        request_id="r",
        via="strangler",
        http_version=(1, 0),
    )
    assert dict(out)["Via"] == "1.1 cdn, 1.0 strangler"


def test_request_id_replaces_incoming() -> None:
    """X-Request-Id is set exactly once, to the id the caller chose."""
    out = build(("X-Request-Id", "client-id"), ("x-request-id", "other"))
    assert [v for n, v in out if n.lower() == "x-request-id"] == ["rid-1"]


def test_response_headers_strip_hop_by_hop_and_framing() -> None:
    """Upstream response hop-by-hop, Connection-named and framing headers never reach the client."""
    cleaned = end_to_end_response_headers(
        raw(
            ("Content-Type", "text/plain"),
            ("Connection", "keep-alive, X-Internal"),
            ("X-Internal", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        )
    )
    assert cleaned == [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_client_response_headers_add_via_request_id_and_extra() -> None:
    """The client response gets Via appended, X-Request-Id set and extra headers applied."""
    headers = response_headers_with(
        end_to_end_response_headers(raw(("Via", "1.1 backend"), ("X-Request-Id", "upstream-made"), ("ETag", '"v1"'))),
        request_id="rid-9",
        via="strangler",
        extra=(("X-Strangler-Route", "orders"),),
    )
    assert headers["Via"] == "1.1 backend, 1.1 strangler"
    assert headers.getall("X-Request-Id") == ["rid-9"]
    assert headers["X-Strangler-Route"] == "orders"
    assert headers["ETag"] == '"v1"'


def test_non_ascii_header_bytes_survive_round_trip() -> None:
    """Header bytes that are not valid UTF-8 come back unchanged when re-encoded the aiohttp way."""
    out = upstream_request_headers(
        ((b"X-Name", b"caf\xe9 \xc3\xa9"),),
        upstream=LEGACY,
        client_host="",
        peer_ip="10.0.0.1",
        scheme="http",
        trusted_proxies=(),
        request_id="r",
        via="s",
        http_version=(1, 1),
    )
    value = dict(out)["X-Name"]
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9 \xc3\xa9"


def test_new_request_ids_are_unique_hex() -> None:
    """Generated request ids are 32 hex digits and do not repeat."""
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        (None, False),
        ("has space", False),
        ("tab\tinside", False),
        ("né", False),
    ],
)
def test_valid_request_id(value: str | None, ok: bool) -> None:
    """Incoming ids are kept only when short, printable ASCII and without spaces."""
    assert valid_request_id(value) is ok


def test_header_names_with_underscores_are_dropped() -> None:
    """Names holding '_' never reach the upstream, whatever they spell; names with '-' are kept."""
    out = build(("X_Forwarded_For", "6.6.6.6"), ("My_Header", "v"), ("X-Kept", "k"), ("x_real_ip", "6.6.6.6"))
    assert [n for n, _ in out if "_" in n] == []
    assert ("X-Kept", "k") in out
    assert dict(out)["X-Forwarded-For"] == "10.1.2.3"


def test_an_underscored_name_is_dropped_again_once_its_spelling_is_cached() -> None:
    """The second request with the same underscored spelling (answered from the name cache) drops it too; a long
    name, never cached, is dropped every time."""
    long_name = "X_" + "a" * 100
    for _ in range(3):
        out = build(("Cached_Name", "v"), (long_name, "v"), ("X-Kept", "k"))
        assert {"cached_name", long_name.lower()}.isdisjoint(names(out))
        assert ("X-Kept", "k") in out


def test_x_real_ip_from_untrusted_peer_is_the_peer_address() -> None:
    """A client's X-Real-IP is replaced with the peer's address; none is added when the client sent none."""
    assert [v for n, v in build(("X-Real-IP", "6.6.6.6")) if n.lower() == "x-real-ip"] == ["10.1.2.3"]
    assert "x-real-ip" not in names(build(("Accept", "*/*")))


def test_x_real_ip_from_trusted_peer_is_kept() -> None:
    """From a peer inside trusted_proxies the incoming X-Real-IP is passed on (its first value)."""
    out = build(("X-Real-IP", "203.0.113.9"), ("X-Real-IP", "6.6.6.6"), peer="127.0.0.1", trusted=LOOPBACK)
    assert [v for n, v in out if n.lower() == "x-real-ip"] == ["203.0.113.9"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("a", True),
        ("shop.example:8080", True),
        ("shop.example:", True),
        ("127.0.0.1:80", True),
        ("[::1]", True),
        ("[2001:db8::1]:443", True),
        ("a%41b", True),
        ("a@b", False),
        ("a b", False),
        ("evil.example/admin?x", False),
        ("a#b", False),
        ("a:b:c", False),
        ("a:8x", False),
        ("[::1", False),
        ("::1", False),
        ("a%zz", False),
        ("a\\b", False),
        ("a\tb", False),
    ],
)
def test_valid_host(value: str, ok: bool) -> None:
    """Host is uri-host[:port]: reg-name, IPv4 or a bracketed IPv6 literal, an optional numeric port."""
    assert valid_host(value) is ok


@pytest.mark.parametrize(
    ("value", "unsupported"),
    [
        ("chunked", False),
        ("Chunked", False),
        ("identity, chunked", False),
        ("gzip, chunked", True),
        ("deflate,chunked", True),
        ("x-custom, chunked", True),
        ("chunked, gzip", True),
    ],
)
def test_unsupported_transfer_coding(value: str, unsupported: bool) -> None:
    """Only chunked (and the no-op identity) are understood; any other coding in the list is unsupported."""
    assert unsupported_transfer_coding(value) is unsupported


@given(st.text(alphabet="aZ09-._~!$&'()*+,;=%:[]@/ #Ff", max_size=12))
def test_host_check_is_the_rfc_grammar(value: str) -> None:
    """valid_host's fast path for plain names decides exactly as the full RFC 3986 host[:port] grammar."""
    assert valid_host(value) is (_VALID_HOST(value) is not None)
