"""The running proxy's access log: the current settings (format, sample, redacted query names) in front of the
writer (`proxy.access.writer`), and the step that turns one finished request into a line.

`RuntimeState.access_log` holds one `AccessLog`, or None when the config has no `access_log:` (then the request path
pays one None check). A reload builds a new front from the new settings (`configure`) and keeps the writer while
the path is unchanged; a new path gets a new writer and the old one finishes its lines and closes.
"""

from __future__ import annotations

import logging
import random
import time

from aiohttp import web

from proxy.access.lines import FORMATS, AccessEntry, logged_path
from proxy.access.writer import LineSink
from proxy.clock import duration_clock
from proxy.config.model import AccessLog as AccessLogSettings
from proxy.config.model import Config
from proxy.exchange import ARRIVED_KEY, Exchange
from proxy.metrics import Counter
from proxy.modes import mirror_decision
from proxy.tuples import new_tuple

log = logging.getLogger("strangler.proxy")

MIRRORED = "mirrored"


class AccessLog:
    """One config's access log settings and the writer they write to."""

    __slots__ = ("_combined", "_format", "_random", "sample", "secret", "settings", "sink")

    def __init__(self, settings: AccessLogSettings, secret: frozenset[str], sink: LineSink) -> None:
        self.settings = settings
        self.sample = settings.sample
        self.secret = frozenset(name.lower() for name in secret)
        self.sink = sink
        self._format = FORMATS[settings.format]
        self._combined = settings.format == "combined"  # only that format reads the version, referer, user agent
        self._random = random.Random()

    def record(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        ex: Exchange | None,
        *,
        mirroring: bool,
        parsed: bool = True,
    ) -> None:
        """Log one finished request (when sampled). `ex` is None for a request the handler never saw (refused by
        the parser); `parsed` is False when its request line could not be read; `mirroring` whether a shadow
        listener is attached."""
        sample = self.sample
        if sample < 1.0 and (sample <= 0.0 or self._random.random() >= sample):
            return
        entry = entry_for(request, response, ex, self.secret, mirroring=mirroring, parsed=parsed)
        if self._combined:
            headers, version = request.headers, request.version
            entry = entry._replace(
                version=f"HTTP/{version.major}.{version.minor}",
                referer=headers.get("Referer"),
                user_agent=headers.get("User-Agent"),
            )
        self.sink.put(self._format(entry))

    def reopen(self) -> None:
        self.sink.reopen()


def entry_for(
    request: web.BaseRequest,
    response: web.StreamResponse,
    ex: Exchange | None,
    secret: frozenset[str],
    *,
    mirroring: bool,
    parsed: bool,
) -> AccessEntry:
    """What the JSON line of one finished request says, from the request, its response (written: the bytes sent
    are the request writer's count) and the handler's record."""
    route = mode = upstream = shadow = None
    fallback = False
    arrived = request.get(ARRIVED_KEY)
    duration = 0 if arrived is None else int((duration_clock() - arrived) * 1_000_000)
    request_id = client = None
    if ex is not None:
        request_id, client = ex.request_id, ex.peer_ip
        route_obj = getattr(ex, "route", None)  # unset when refused before routing
        upstream = getattr(ex, "upstream_name", None)  # unset before a side was chosen
        if route_obj is not None:
            route, mode = route_obj.id, route_obj.mode
        if upstream is not None:
            fallback = ex.side != ex.chosen_side
            if route_obj is not None:
                decision = mirror_decision(route_obj, ex.chosen_side, request.method)
                shadow = (MIRRORED if mirroring else None) if decision.options is not None else decision.skip
    # Every field in order, defaults included (`new_tuple`, proxy.tuples): one per logged request, without the
    # NamedTuple's Python-level __new__.
    entry: AccessEntry = new_tuple(
        AccessEntry,
        (
            time.time(),
            request_id or response.headers.get("X-Request-Id") or "-",
            client or request.remote or "-",
            request.method if parsed else None,
            logged_path(request.raw_path, secret) if parsed else None,
            route,
            mode,
            upstream,
            response.status,
            request.content.total_bytes,
            request.writer.output_size,
            duration,
            fallback,
            shadow,
            "HTTP/1.1",  # version, referer and user agent: the combined format's, set by `record`
            None,
            None,
        ),
    )
    return entry


def configure(current: AccessLog | None, config: Config, dropped: Counter) -> AccessLog | None:
    """The access log for `config`: None when it has none; the current writer when the path is unchanged, else a
    new one (the old one writes what it holds and closes by itself). Raises OSError when a new path cannot be
    opened (the caller keeps the current log)."""
    settings = config.access_log
    if settings is None:
        if current is not None:
            current.sink.close(timeout=0)
        return None
    secret = config.store.redact.query
    if current is not None and current.sink.path == settings.path:
        return AccessLog(settings, secret, current.sink)
    sink = LineSink(settings.path, dropped)
    if current is not None:
        current.sink.close(timeout=0)
    return AccessLog(settings, secret, sink)
