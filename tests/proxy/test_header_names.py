"""Header-name kinds cached by exact spelling (`proxy.header_names`): the same kind as the lower-cased lookup,
whatever the case, and a bounded cache."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.header_names import CACHE_SIZE, COPY, MAX_CACHED_LEN, NameKinds
from proxy.headers import upstream_request_headers
from tests.proxy.fwd_fixtures import upstream_at

KINDS = {b"connection": 2, b"via": 5}


def kind_of(names: NameKinds, name: bytes) -> int:
    cached = names.get(name)
    return names.learn(name) if cached is None else cached


@given(st.lists(st.sampled_from([b"Via", b"VIA", b"via", b"Connection", b"CONNECTION", b"X-App", b"x-app"])))
def test_kind_is_the_lower_case_lookups_whatever_the_spelling(names: list[bytes]) -> None:
    """Every spelling of a listed name gets its kind, first time and cached; unlisted names are copied."""
    kinds = NameKinds(KINDS)
    for name in names * 2:
        assert kind_of(kinds, name) == KINDS.get(name.lower(), COPY)


def test_cache_stays_bounded_under_many_distinct_names() -> None:
    """A flood of distinct names never holds more than CACHE_SIZE entries; long names are not kept at all."""
    kinds = NameKinds(KINDS)
    for i in range(CACHE_SIZE * 3):
        assert kind_of(kinds, b"X-Name-%d" % i) == COPY
        assert kinds.get(b"X-Name-%d" % i) == COPY
    assert sum(kinds.get(b"X-Name-%d" % i) is not None for i in range(CACHE_SIZE * 3)) <= CACHE_SIZE
    long_name = b"V" * (MAX_CACHED_LEN + 1)
    assert kind_of(kinds, long_name) == COPY
    assert kinds.get(long_name) is None
    assert kind_of(kinds, b"vIa") == 5


def test_request_header_case_does_not_change_what_is_forwarded() -> None:
    """The same request headers in other spellings, sent twice (so cached), are cleaned alike."""

    def forwarded(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
        return upstream_request_headers(
            raw,
            upstream=upstream_at("http://legacy:8080"),
            client_host="shop.example",
            peer_ip="10.0.0.9",
            scheme="http",
            trusted_proxies=(),
            request_id="rid",
            via="strangler",
            http_version=(1, 1),
        )

    for _ in range(2):
        for spelled in (
            ((b"Connection", b"close, X-Gone"), (b"X-Gone", b"1"), (b"Via", b"1.0 edge"), (b"X-App", b"a")),
            ((b"CONNECTION", b"close, X-Gone"), (b"x-gone", b"1"), (b"VIA", b"1.0 edge"), (b"X-App", b"a")),
        ):
            assert forwarded(spelled) == [
                ("Host", "legacy:8080"),
                ("X-App", "a"),
                ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", "shop.example"),
                ("Via", "1.0 edge, 1.1 strangler"),
                ("X-Request-Id", "rid"),
            ]
