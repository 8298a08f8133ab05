"""The validated, frozen form of routes.yaml, and the error raised when a file is wrong.

Every other module reads configuration only through these types: they are built once per (re)load by
`proxy.config.loader.load_config` and never mutated, so a request in flight keeps the snapshot it started with.
All durations are seconds (float), all sizes bytes (int), all rates fractions in 0..1, weights percent 0..100.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from yarl import URL

from proxy.jsonpath import compile_path
from proxy.methods import READ_METHODS

Mode = Literal["legacy", "shadow", "canary", "new"]
MODES: tuple[Mode, ...] = ("legacy", "shadow", "canary", "new")
Server = Literal["fast", "aiohttp"]
SERVERS: tuple[Server, ...] = ("fast", "aiohttp")  # listen.server: the proxy listener implementations
HostHeader = Literal["rewrite", "preserve"]
SideEffects = Literal["block", "dry_run", "allow"]
StickyKind = Literal["header", "cookie", "client_ip"]
TLSVersionName = Literal["1.2", "1.3"]
AccessLogFormat = Literal["json", "combined"]


def server_named(value: str) -> Server | None:
    """The listener implementation a name (`--server`, `$STRANGLER_SERVER`) stands for; None for an unknown one."""
    for name in SERVERS:
        if value == name:
            return name
    return None


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One thing wrong with a config file, located precisely enough to fix without searching."""

    source: str  # file name as given, e.g. "routes.yaml"
    where: str  # e.g. "routes[3] (orders-read).upstream" or "defaults.timeouts.read"
    message: str  # e.g. "unknown upstream 'legcy' (known: legacy, new)"
    hint: str | None = None
    line: int | None = None  # 1-based line in the file, when known

    def __str__(self) -> str:
        at = f"{self.source}:{self.line}" if self.line is not None else self.source
        text = f"{at}: {self.where}: {self.message}" if self.where else f"{at}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(Exception):
    """A config file could not be loaded; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True, slots=True)
class ListenTLS:
    """The client-facing listener's certificate and key (PEM files, absolute paths) and lowest TLS version."""

    cert: Path
    key: Path
    min_version: TLSVersionName = "1.2"


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    tls: ListenTLS | None = None  # None: clear text
    server: Server = "fast"


@dataclass(frozen=True, slots=True)
class Admin:
    host: str = "127.0.0.1"
    port: int = 8081
    # Name of the environment variable holding the bearer token; no token set means writes are disabled.
    token_env: str = "STRANGLER_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0
    read: float = 30.0  # idle time allowed between bytes from the upstream, and before the response head
    pool: float = 5.0  # wait for a free pooled connection when all max_connections are busy (503, no fallback)


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: URL  # scheme://host:port, optional base path without trailing slash
    host_header: HostHeader = "rewrite"
    max_connections: int = 256
    # Circuit breaker for fallback routes: open after this many consecutive failures, probe again after cooldown.
    breaker_failures: int = 5
    breaker_cooldown: float = 10.0
    # TLS to an https:// upstream (absolute paths; see proxy.tls.upstream_context). None: the system's trust store.
    ca: Path | None = None
    client_cert: Path | None = None  # with client_key: mutual TLS
    client_key: Path | None = None
    verify: bool = True


SHADOW_WORKER_NICE = 5  # `limits.shadow_worker_nice`'s default (also what a worker started by hand uses)


@dataclass(frozen=True, slots=True)
class Limits:
    """Protections for the client-facing listener and against the shadow side. Safe defaults; every one
    configurable under `limits:`."""

    max_line_size: int = 8190  # request line and each header line
    max_header_size: int = 32768  # all header lines together
    max_headers: int = 100
    max_body: int = 10 * 1024 * 1024  # request body; 413 past it, also on streamed (chunked) bodies
    header_timeout: float = 10.0  # deadline to receive a complete request head (slowloris)
    keepalive_timeout: float = 75.0  # idle client keep-alive connections are closed after this
    max_connections: int = 1024  # concurrent client connections
    drain_timeout: float = 30.0  # graceful shutdown: time allowed for in-flight requests
    # Idle time allowed between request body bytes: a client that stalls mid-body would otherwise hold its
    # connection and an upstream pool connection for ever (slow-body attack). 408 and the connection is closed.
    body_timeout: float = 30.0
    # The shadow side, read when it starts (the worker, or the in-process listener): copies in flight to the other
    # upstream (also the size of its connection pools, so a new service never sees more shadow connections), copies
    # waiting for one of those, and bytes the proxy may hold for a shadow worker that is behind. Past any of them,
    # copies are dropped and counted, never queued without bound.
    shadow_in_flight: int = 64
    shadow_waiting: int = 256
    shadow_backlog: int = 64 * 1024 * 1024
    # Added to the shadow worker process's nice value: when it and the proxy want the same core, the kernel runs the
    # proxy first, so the shadow side cannot lengthen the client's tail (the worker falls behind and drops instead).
    shadow_worker_nice: int = SHADOW_WORKER_NICE


@dataclass(frozen=True, slots=True)
class Sticky:
    kind: StickyKind
    name: str = ""  # header or cookie name; empty for client_ip


@dataclass(frozen=True, slots=True)
class Guards:
    max_mismatch_rate: float | None = None
    max_error_rate: float | None = None
    max_p99_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class Canary:
    weight: float = 0.0  # percent of sticky buckets sent to the new upstream
    sticky: Sticky | None = None  # None: per-request random
    steps: tuple[float, ...] = ()  # progressive rollout weights, e.g. (1, 5, 25, 50, 100)
    interval: float = 600.0
    guards: Guards = Guards()


@dataclass(frozen=True, slots=True)
class Mirror:
    """Options for sending a copy of a request to the other side (`shadow:` and `verify:`)."""

    sample: float = 1.0
    methods: frozenset[str] = READ_METHODS
    side_effects: SideEffects = "block"
    max_body: int = 1024 * 1024
    timeout: float = 5.0
    header: str = "X-Strangler-Shadow"


@dataclass(frozen=True, slots=True)
class Compare:
    ignore_fields: tuple[str, ...] = ()  # JSONPath-like: $.meta.generated_at, $.items[*].updated_at
    ignore_headers: frozenset[str] = frozenset()  # lower-case names, added to the built-in volatile set
    # Allow-list of headers compared (lower-case). Location: where a redirect sends the client is its payload.
    headers: frozenset[str] = frozenset({"content-type", "location"})
    ignore_order: bool | tuple[str, ...] = False
    float_tolerance: float = 0.0
    # Absolute URLs on the legacy upstream's, the new upstream's or the client-facing authority compare as one.
    same_origin: bool = True

    def __post_init__(self) -> None:
        # Compiled here, once (compile_path caches), so no Compare ever holds a path the comparison cannot use;
        # the loader has already reported bad ones with their file and line. Raises proxy.jsonpath.BadPath.
        for path in self.ignore_fields:
            compile_path(path)
        if isinstance(self.ignore_order, tuple):
            for path in self.ignore_order:
                compile_path(path)


@dataclass(frozen=True, slots=True)
class Noise:
    sample: float = 0.0  # share of safe requests also sent a second time to legacy
    relative: float = 0.20  # raw must exceed noise by this relative margin ...
    absolute: float = 0.0003  # ... and by this share of the route's compared requests


@dataclass(frozen=True, slots=True)
class Readiness:
    min_compared: int = 500
    max_mismatch_rate: float = 0.001
    max_error_rate: float = 0.001
    # Mirrored requests left out of the comparison for their size (a request body over shadow.max_body, an answer
    # too large to compare): past this share of the route's mirrored requests, what was compared does not stand for it.
    max_uncompared_rate: float = 0.01


@dataclass(frozen=True, slots=True)
class Redact:
    headers: frozenset[str] = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
    fields: frozenset[str] = frozenset({"password", "token", "secret", "api_key", "access_token", "refresh_token"})
    query: frozenset[str] = frozenset({"password", "token", "secret", "api_key", "access_token", "refresh_token"})


@dataclass(frozen=True, slots=True)
class Retention:
    max_age: float = 7 * 86400.0
    max_exchanges: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Store:
    path: Path = Path("strangler.db")  # relative paths resolve against the config file's directory
    retention: Retention = Retention()
    body_cap: int = 64 * 1024  # bytes kept per stored body
    sample_matches: float = 0.01  # share of matching exchanges whose bodies are kept
    redact: Redact = Redact()


@dataclass(frozen=True, slots=True)
class AccessLog:
    """One line per request (`proxy.access`); left out of the file: no access log."""

    path: str = "-"  # "-": standard output; else a file, relative paths resolve against the config file's directory
    format: AccessLogFormat = "json"
    sample: float = 1.0  # share of requests logged


@dataclass(frozen=True, slots=True)
class Match:
    path: str  # the template as written, e.g. "/api/orders/{id:int}"
    methods: frozenset[str] | None = None  # None: any method
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, exact value)
    query: tuple[tuple[str, str], ...] = ()  # (name, exact value)
    allow_encoded_slash: bool = False  # %2F / %5C in the path are a 400 unless the route allows them


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    index: int  # position in routes: (for messages)
    match: Match
    mode: Mode
    legacy: str  # upstream name serving the legacy side
    upstream: str  # upstream name serving the new side
    fallback: bool = False  # new side refused/timed out before any byte -> legacy
    timeouts: Timeouts = Timeouts()
    canary: Canary | None = None  # set when mode is canary
    shadow: Mirror | None = None  # mirror legacy-served traffic to new (mode shadow, or canary with shadow:)
    verify: Mirror | None = None  # mode new: mirror new-served traffic to legacy
    compare: Compare = Compare()
    noise: Noise = Noise()
    readiness: Readiness = Readiness()


@dataclass(frozen=True, slots=True)
class Defaults:
    legacy: str = "legacy"
    new: str = "new"
    timeouts: Timeouts = Timeouts()
    shadow: Mirror = Mirror()
    compare: Compare = Compare()
    noise: Noise = Noise()
    readiness: Readiness = Readiness()


@dataclass(frozen=True, slots=True)
class Config:
    source: Path  # the file this was loaded from
    version: int = 1
    listen: Listen = Listen()
    admin: Admin = Admin()
    store: Store = Store()
    upstreams: Mapping[str, Upstream] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Defaults = Defaults()
    routes: tuple[Route, ...] = ()
    limits: Limits = Limits()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    debug_headers: bool = False  # add X-Strangler-Route / X-Strangler-Upstream to responses
    via: str = "strangler"  # pseudonym in the Via header
    access_log: AccessLog | None = None  # None: no access log
    workers: int | str = 1  # proxy worker processes: a whole number from 1, or "auto" (`units.workers_for`)

    def route(self, route_id: str) -> Route | None:
        for r in self.routes:
            if r.id == route_id:
                return r
        return None
