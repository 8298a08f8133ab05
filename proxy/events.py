"""What the proxy core tells listeners about each exchange: the only types shared with `shadow/`.

The core never knows who listens (mitmproxy's hook/addon split). For every request it calls
`ExchangeListener.request_received` once the route is chosen and before the primary upstream is contacted, so a
listener can start a candidate request at the same moment; if the listener returns an `ExchangeObserver`, the core
calls `primary_done` once the primary response has been fully streamed to the client (or failed), and the observer
reads that response through `ResponseSnapshot.decoded()` (the core may pass its headers on undecoded). A listener
that also has the `RequestCounter` members is called only for the requests it wants, and counted cheaply for the rest.

Both calls run on the event loop in the request's task: they must return at once (no I/O, no awaiting); a listener
that raises is logged and ignored, never allowed to affect the client's response. Optional coroutine members,
looked up by name: `ready()` is awaited (bounded) before the proxy accepts traffic, `aclose()` after it drained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from proxy.config.model import Config, Mirror, Route
from proxy.errors import ErrorKind
from proxy.headers import decode_pairs
from proxy.tuples import new_tuple

Side = Literal["legacy", "new"]
Headers = tuple[tuple[str, str], ...]
RawHeaders = tuple[tuple[bytes, bytes], ...]  # header pairs as received, before decoding


# The three exchange values are NamedTuples, not frozen dataclasses: they are built for every mirrored request on
# the event loop, and a tuple is built by one C call (`tuple.__new__`: `proxy.tuples.new_tuple`) where a frozen
# slotted dataclass pays one descriptor call per field (callgrind: about 17,700 instructions for a request snapshot
# and its ExchangeStart before, about 3,000 after). They stay immutable and typed, and the shadow worker's wire
# (`shadow.worker.wire`) sends a snapshot as the plain tuple of its fields.


class RequestSnapshot(NamedTuple):
    """The request as forwarded to the primary upstream (after header hygiene, canonical path)."""

    method: str
    path: str  # canonical, percent-encoded form; exactly what was forwarded
    query_string: str  # raw query string without '?'
    headers: Headers  # end-to-end headers as forwarded (no hop-by-hop), original case
    body: bytes | None  # captured body when the route mirrors it; None when not captured
    body_note: str | None  # why body is None: "not_mirrored", "too_large"; None when captured
    request_id: str
    client_ip: str
    host: str  # the Host the client asked for


class ResponseSnapshot(NamedTuple):
    """How one side answered: a primary (what the client got) or a candidate (what was compared)."""

    side: Side
    upstream: str
    status: int  # 0 when there was no response (error)
    headers: Headers
    body: bytes | None  # captured body (capped); None when not captured
    body_complete: bool  # False when the capture was cut at the cap or the upstream broke mid-body
    latency: float  # seconds from sending the request to the last body byte
    error: ErrorKind | None = None  # why there is no (whole) response (`proxy.errors`); None on a response
    # A primary from the core may carry its headers as the upstream sent them (end-to-end pairs, undecoded), with
    # `headers` empty: decoding them on the proxy's event loop cost more than the rest of its snapshot, so the
    # listener decodes them where it reads them (`decoded`), the shadow worker in its own process.
    raw_headers: RawHeaders = ()

    def decoded(self) -> ResponseSnapshot:
        """This snapshot with its headers decoded (itself when they are already): what listeners read."""
        if not self.raw_headers:
            return self
        # Built field by field: `_replace` (a map over the fields and a dict of keywords) costs twice as much.
        headers = tuple(decode_pairs(self.raw_headers))
        return new_tuple(
            ResponseSnapshot,
            (
                self.side,
                self.upstream,
                self.status,
                headers,
                self.body,
                self.body_complete,
                self.latency,
                self.error,
                (),
            ),
        )


class ExchangeStart(NamedTuple):
    """A request the core is about to forward; `mirror` is set when the route wants a copy compared."""

    config: Config  # the snapshot the request started with (hot reload never changes it mid-request)
    route: Route | None  # None: unmatched, served by the default legacy upstream
    served_by: Side
    primary_upstream: str
    mirror: Mirror | None  # options for the copy; None when this exchange is not mirrored
    request: RequestSnapshot
    started_at: float  # wall clock, seconds since the epoch (UTC)
    started: float  # loop.time() when the request was received


class ExchangeObserver(Protocol):
    def primary_done(self, primary: ResponseSnapshot) -> None:
        """The client has its full response (or the primary failed); must return at once."""


class ExchangeListener(Protocol):
    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        """Called for every request before the primary is sent; must return at once."""


class RequestCounter(Protocol):
    """Optional members of an `ExchangeListener`: a listener that has both is told about uninteresting requests
    by one cheap call instead of the snapshots. The core finds them once, at start-up (`ListenerHooks`), so
    listeners without them keep
    hearing `request_received` for every request, as before. Both run on the event loop and must return at once.
    """

    def wants_exchange(self, route: Route | None, served_by: Side, method: str) -> bool:
        """False when `request_received` would do nothing with this request: the core then builds no snapshot
        and does not call it (only `request_served`)."""

    def request_served(
        self, route: Route | None, served_by: Side, method: str, path: str, status: int, failed: bool, latency: float
    ) -> None:
        """Every forwarded request, mirrored or not, once the primary is done (for traffic counts). `path` is the
        canonical path, `status` the upstream's (0 for none), `failed` a 5xx or an upstream or client failure,
        `served_by` the side chosen when the request started."""


WantsExchange = Callable[[Route | None, Side, str], bool]
RequestServed = Callable[[Route | None, Side, str, str, int, bool, float], None]


@dataclass(frozen=True, slots=True)
class ListenerHooks:
    """The listeners and their optional `RequestCounter` hooks, resolved once when the listeners are attached, so
    the request path never looks a hook up by name."""

    listeners: tuple[ExchangeListener, ...] = ()
    # (listener, its wants_exchange or None: a listener without it hears about every request)
    gated: tuple[tuple[ExchangeListener, WantsExchange | None], ...] = ()
    served: tuple[tuple[ExchangeListener, RequestServed], ...] = ()

    @classmethod
    def resolve(cls, listeners: Iterable[ExchangeListener]) -> ListenerHooks:
        found = tuple(listeners)
        gated = tuple((listener, getattr(listener, "wants_exchange", None)) for listener in found)
        served = tuple(
            (listener, hook) for listener in found if (hook := getattr(listener, "request_served", None)) is not None
        )
        return cls(found, gated, served)

    def __bool__(self) -> bool:
        return bool(self.listeners)
