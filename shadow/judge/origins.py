"""`compare.same_origin`: absolute URLs that point at the legacy upstream, the new upstream or the client-facing
host compare as one, so an app that builds links from the Host it was sent does not differ on every pair.

With `host_header: rewrite` each side is sent its own upstream's Host, and most frameworks build absolute URLs
(`Location`, `next_url`, links in pages) from it: `http://10.0.0.5:8000/next` against `http://10.0.0.6:9000/next`
is the same answer. Before comparing, the authority of every such URL is replaced with one placeholder
(`http://{origin}/next`) in both responses: in Location, Content-Location and Link, and in JSON and text bodies
(JSON's escaped `http:\\/\\/` form too). The scheme, path and query are kept, so they are still compared; a URL
on any other host is left as written. The comparison note says when it applied. Pure and thread-safe.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, AnyStr, cast

from yarl import URL

from proxy.config.model import Compare, Config, Route
from proxy.events import ExchangeStart, Headers, ResponseSnapshot
from shadow.judge.normalize import UndecodableBody, body_kind, decode_content
from shadow.values import Comparison, Outcome

PLACEHOLDER = "{origin}"
# Headers whose values are URLs (or hold them, as Link does).
URL_HEADERS = frozenset({"location", "content-location", "link"})
# Client-facing authorities, as the client wrote them: the Host it asked for and what proxies in front forwarded.
_CLIENT_HEADERS = frozenset({"host", "x-forwarded-host"})
_AUTHORITY = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Judged = tuple[Outcome, str | None, Comparison | None]


# One way of writing an authority's URL prefix: the slashes to look for (cheap `in` test), the compiled pattern,
# and what a match becomes.
_Form = tuple[AnyStr, "re.Pattern[AnyStr]", AnyStr]


@dataclass(frozen=True, slots=True)
class Origins:
    """The authorities compared as one for one exchange, and the compiled patterns that find their URLs."""

    authorities: tuple[str, ...]  # lower-case host[:port], sorted
    text: tuple[_Form[str], ...]  # header values
    data: tuple[_Form[bytes], ...]  # decoded bodies

    @property
    def note(self) -> str:
        return f"same_origin: URLs of {', '.join(self.authorities)} compared as one"


def exchange_origins(start: ExchangeStart) -> Origins | None:
    """The origins of a live exchange: its route's two upstreams and the host the client asked for; None when the
    route compares URLs as written (`same_origin: false`) or the exchange has no route."""
    route = start.route
    if route is None:
        return None
    return route_origins(start.config, route, start.request.headers, start.request.host)


def route_origins(config: Config, route: Route, request_headers: Headers, host: str | None = None) -> Origins | None:
    """`origins_for` with the route's legacy and new upstream URLs (live shadowing and replay alike)."""
    urls = [config.upstreams[name].url for name in (route.legacy, route.upstream) if name in config.upstreams]
    return origins_for(route.compare, urls, request_headers, host)


def origins_for(
    rules: Compare, upstream_urls: Iterable[URL], request_headers: Headers, host: str | None = None
) -> Origins | None:
    """The authorities to compare as one: each upstream URL's, plus the client-facing Host and X-Forwarded-Host
    of the request (`host`, and those headers in `request_headers`). None when `rules.same_origin` is off."""
    if not rules.same_origin:
        return None
    client = [host] if host else []
    client += [value for name, value in request_headers if name.lower() in _CLIENT_HEADERS]
    return _origins(tuple(upstream_urls), tuple(client))


@functools.lru_cache(maxsize=1024)
def _origins(upstream_urls: tuple[URL, ...], client: tuple[str, ...]) -> Origins | None:
    """`origins_for` once the client-facing values are read: the same few per route, so cached (every mirrored
    pair asks; a client sending many X-Forwarded-Host values only cycles the bounded cache)."""
    found: set[str] = set()
    for url in upstream_urls:
        found.update(_url_authorities(url))
    for value in client:
        for part in value.split(","):
            authority = part.strip().lower()
            if authority and _AUTHORITY.match(authority):
                found.add(authority)
    return _compiled(tuple(sorted(found))) if found else None


@functools.lru_cache(maxsize=256)
def _url_authorities(url: URL) -> frozenset[str]:
    """host:port of an upstream URL, and the bare host too when the port is the scheme's default."""
    host = (url.raw_host or "").lower()
    if not host:
        return frozenset()
    if ":" in host:
        host = f"[{host}]"
    forms = {f"{host}:{url.port}"}
    if url.port == _DEFAULT_PORTS.get(url.scheme):
        forms.add(host)
    return frozenset(forms)


@functools.lru_cache(maxsize=256)
def _compiled(authorities: tuple[str, ...]) -> Origins:
    # Each pattern starts with the literal slashes, which lets `re` skip ahead fast (a leading look-behind or a
    # case-insensitive scheme would not); the scheme is then checked behind them. Longest authority first, so
    # host:port wins over host; the look-ahead stops `host` matching `host:8080` or `host.evil`.
    alternatives = "|".join(re.escape(a) for a in sorted(authorities, key=len, reverse=True))
    text: list[_Form[str]] = []
    for slashes in ("//", "\\/\\/"):  # as written, and JSON's escaped form (http:\/\/host)
        quoted = re.escape(slashes)
        behind = "|".join(f"(?<={scheme}:{quoted})" for scheme in ("http", "https"))
        pattern = f"{quoted}(?:{behind})(?:{alternatives})(?![A-Za-z0-9._~%:-])"
        text.append((slashes, re.compile(pattern, re.IGNORECASE), slashes + PLACEHOLDER))
    data = [(s.encode(), re.compile(p.pattern.encode(), re.IGNORECASE), r.encode()) for s, p, r in text]
    return Origins(authorities, tuple(text), tuple(data))


def _rewrite(value: AnyStr, forms: tuple[_Form[AnyStr], ...]) -> AnyStr:
    for needle, pattern, replacement in forms:
        # find, not `in`: bytes' `in` first tries its operand as an int and raises and clears a TypeError. Through
        # Any: mypyc's own type check does not pair `needle` with `value` under the constrained AnyStr.
        if cast(Any, value).find(needle) >= 0:
            value = pattern.sub(replacement, value)
    return value


def unify_pair(
    legacy: ResponseSnapshot, new: ResponseSnapshot, origins: Origins
) -> tuple[ResponseSnapshot, ResponseSnapshot, bool]:
    """Both responses with their known-origin URLs rewritten to the placeholder, and whether anything changed.

    Identical responses come back as they are: rewriting both the same way cannot change how they compare.
    """
    if legacy.headers == new.headers and legacy.body == new.body:
        return legacy, new, False
    a, b = unify_response(legacy, origins), unify_response(new, origins)
    return a, b, a is not legacy or b is not new


def unify_response(snap: ResponseSnapshot, origins: Origins) -> ResponseSnapshot:
    """One response with its known-origin URLs rewritten (the same object when there were none).

    A rewritten body is stored decoded, and its Content-Encoding dropped (never compared: it is volatile).
    """
    headers = _unify_headers(snap.headers, origins)
    body, decoded = _unify_body(snap, origins)
    if headers is None and body is None:
        return snap
    new_headers = headers if headers is not None else snap.headers
    if decoded:
        new_headers = tuple((k, v) for k, v in new_headers if k.lower() != "content-encoding")
    return ResponseSnapshot(
        snap.side,
        snap.upstream,
        snap.status,
        new_headers,
        body if body is not None else snap.body,
        snap.body_complete,
        snap.latency,
        snap.error,
    )


def _unify_headers(headers: Headers, origins: Origins) -> Headers | None:
    """The headers with URL header values rewritten, or None when none changed (the common case: no copy)."""
    out: list[tuple[str, str]] | None = None
    for index, (name, value) in enumerate(headers):
        if name.lower() in URL_HEADERS:
            rewritten = _rewrite(value, origins.text)
            if rewritten != value:
                out = list(headers) if out is None else out
                out[index] = (name, rewritten)
    return None if out is None else tuple(out)


def _unify_body(snap: ResponseSnapshot, origins: Origins) -> tuple[bytes | None, bool]:
    """The rewritten body (None: unchanged) and whether it had to be decoded for that."""
    body = snap.body
    if not body or not snap.body_complete:
        return None, False
    content_type = encoding = None
    for name, value in snap.headers:
        key = name.lower()
        if key == "content-type" and content_type is None:
            content_type = value
        elif key == "content-encoding" and encoding is None:
            encoding = value
    if body_kind(content_type) == "binary":
        return None, False
    try:
        data = decode_content(encoding, body)
    except UndecodableBody:
        return None, False  # compared as bytes anyway
    rewritten = _rewrite(data, origins.data)
    if rewritten == data:
        return None, False
    return rewritten, data is not body


def noted(judged: Judged, origins: Origins) -> Judged:
    """A judgement made on unified responses, with the note saying so on its comparison."""
    outcome, reason, comparison = judged
    if comparison is None:
        return judged
    note = origins.note if comparison.note is None else f"{origins.note}; {comparison.note}"
    return outcome, reason, comparison._replace(note=note)
