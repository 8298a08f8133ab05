"""The key tables of routes.yaml: the one declaration of each key's type, constraints and description.

`proxy.config.loader` walks the parsed YAML against `TOP`: each `Section` lists the keys allowed at its level and each
leaf is a `proxy.config.scalars.Scalar` that converts its value. A key's default is the default of the
`proxy.config.model` dataclass field of the same name. `proxy.config.keydocs` renders these tables with those defaults
as the JSON Schema (docs/routes.schema.json) and the README key table, so neither can drift from what the loader
accepts. Adding a key: add it here and to its dataclass (and the loader, if it needs more), then run `make schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config.model import MODES, SERVERS
from proxy.config.scalars import (
    ENV_PATTERN,
    NAME_PATTERN,
    Scalar,
    boolean,
    choice,
    duration,
    header_name,
    http_url,
    integer,
    json_path,
    method,
    name,
    network,
    number,
    rate,
    size,
    text,
    version,
    worker_count,
)


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping with a fixed set of keys; any other key is an error."""

    description: str
    keys: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    extensions: bool = False  # accept and ignore `x-*` keys (a home for YAML anchors, as in docker-compose)


@dataclass(frozen=True, slots=True)
class ListOf:
    description: str
    item: Spec
    as_set: bool = False  # converted to a frozenset instead of a tuple
    label_key: str | None = None  # items are named in messages by this key, e.g. "routes[3] (orders-read)"


@dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping whose keys are user-chosen names (upstreams, header values to match)."""

    description: str
    value: Spec
    key_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Either:
    """One key that takes several shapes, chosen by the YAML node's kind (e.g. `shadow: true` or a mapping)."""

    description: str
    scalar: Scalar | None = None
    mapping: Section | None = None
    sequence: ListOf | None = None


Spec = Scalar | Section | ListOf | MapOf | Either


def _names(description: str, item: Scalar) -> ListOf:
    return ListOf(description, item, as_set=True)


def _fallback(on: object) -> str:
    return "legacy" if on else "none"  # Route.fallback is a bool


TIMEOUTS = Section(
    "Upstream timeouts; a route's values are merged over defaults.timeouts.",
    {
        "connect": duration("Time allowed to open a connection to the upstream"),
        "read": duration("Idle time allowed between bytes from the upstream, and before the response head"),
        "pool": duration(
            "Time a request waits for a free pooled connection when all max_connections are busy; past it 503"
            " pool_timeout, which never counts against the upstream (no breaker failure, no fallback)"
        ),
    },
)
MIRROR = Section(
    "Mirror options: copying requests to the other side for comparison. defaults.shadow is merged under every "
    "route's shadow: and verify:.",
    {
        "sample": rate("Share of eligible requests mirrored"),
        "methods": _names("Methods mirrored", method("An HTTP method")),
        "side_effects": choice(
            "Unsafe methods: block (never mirror), dry_run (mirror with the mirror header set), allow",
            ("block", "dry_run", "allow"),
        ),
        "max_body": size("Requests with larger bodies are not mirrored"),
        "timeout": duration("Deadline for the mirrored request"),
        "header": text("Header added to mirrored requests so the other side can tell them apart"),
    },
)
MIRROR_OR_TRUE = Either(
    "Mirror legacy-served traffic to the new side (mode shadow, or the legacy-served share of a canary): true for "
    "defaults.shadow, or a mapping merged over it.",
    boolean("true: use defaults"),
    MIRROR,
)
COMPARE = Section(
    "How responses are compared; lists extend the defaults, scalars replace them.",
    {
        "ignore_fields": ListOf(
            "JSON paths of body fields left out of the comparison, e.g. $.meta.generated_at, $.items[*].updated_at; "
            "compiled when the file loads, so one that does not parse ($.items[) is an error with its line and route",
            json_path("e.g. $.meta.generated_at"),
        ),
        "ignore_headers": _names(
            "Headers never compared, added to the built-in volatile set (date, server, ...)", header_name("Name")
        ),
        "headers": _names("Headers that are compared (an allow-list)", header_name("Header name")),
        "ignore_order": Either(
            "true to ignore list order everywhere, or the JSON paths of lists whose order does not matter",
            boolean("Ignore the order of every list"),
            sequence=ListOf("Paths of unordered lists", json_path("e.g. $.items")),
        ),
        "float_tolerance": number("Numbers closer than this compare equal"),
        "same_origin": boolean(
            "Absolute URLs (bodies, Location, Link, Content-Location) on the legacy upstream's, the new upstream's "
            "or the client-facing host compare as one (see Shadow traffic)"
        ),
    },
)
NOISE = Section(
    "Noise estimation: a second legacy request shows which differences are legacy's own nondeterminism.",
    {
        "sample": rate("Share of safe requests also sent a second time to legacy"),
        "relative": number("A raw mismatch rate must exceed noise by this relative margin"),
        "absolute": rate("... and by this share of the route's compared requests"),
    },
)
READINESS = Section(
    "When a route counts as ready to flip to the new side.",
    {
        "min_compared": integer("Compared requests needed before a verdict"),
        "max_mismatch_rate": rate("Highest mismatch rate (above noise) still ready"),
        "max_error_rate": rate("Highest new-side error rate still ready"),
        "max_uncompared_rate": rate("Highest share of mirrored requests left out for their size still ready"),
    },
)
CANARY = Section(
    "Send a share of traffic to the new side (mode: canary).",
    {
        "weight": number("Percent of sticky buckets served by the new side", maximum=100.0),
        "sticky": Section(
            "Keep each client on one side; give exactly one key (left out: a side picked per request at random).",
            {
                "header": header_name("Bucket by this request header, e.g. {header: X-User-Id}"),
                "cookie": text("Bucket by this cookie, e.g. {cookie: session}"),
                "client_ip": boolean("true: bucket by client address"),
            },
        ),
        "steps": ListOf(
            "Progressive rollout weights for `routes promote`, increasing, 0-100", number("A weight", maximum=100.0)
        ),
        "interval": duration("Time between rollout steps of `routes promote`"),
        "guards": Section(
            "Roll back to weight 0 when a guard trips; a guard left out is not checked.",
            {
                "max_mismatch_rate": rate("Highest mismatch rate tolerated"),
                "max_error_rate": rate("Highest new-side error rate tolerated"),
                "max_p99_ratio": number("Highest new/legacy p99 latency ratio tolerated", above=True),
            },
        ),
    },
)
MATCH = Section(
    "Which requests the route takes. The path template has literal segments, {name}, {name:int}, {name:uuid}, "
    "mixed segments such as {name}.json or v{n:int}, * (one segment) and ** (any depth).",
    {
        "path": text("Path template: /api/orders/{id:int}, /api/customers/** (literal segments win)"),
        "methods": _names("Methods matched (left out: any method)", method("An HTTP method")),
        "headers": MapOf("Request headers that must have exactly these values", text("Exact value")),
        "query": MapOf("Query parameters that must have exactly these values", text("Exact value")),
        "allow_encoded_slash": boolean("Accept %2F and %5C in the path (otherwise they answer 400)"),
    },
    required=("path",),
)
ROUTE = Section(
    "One endpoint group and how it is migrated.",
    {
        "id": name("Unique route id (letters, digits, _ . -), used in reports and the admin API"),
        "match": MATCH,
        "mode": choice("legacy: legacy only; shadow: legacy serves, new is compared; canary: split; new", MODES),
        "upstream": name("This route's new-side upstream (left out: defaults.new)"),
        "legacy": name("This route's legacy-side upstream (left out: defaults.legacy)"),
        "fallback": choice(
            "legacy: when the new side refuses the connection or times out before any response byte, serve from "
            "legacy (idempotent methods, or any method when nothing was sent); while the new upstream's circuit "
            "breaker is open, such requests go straight to legacy",
            ("legacy", "none"),
            _fallback,
        ),
        "timeouts": TIMEOUTS,
        "canary": CANARY,
        "shadow": MIRROR_OR_TRUE,
        "verify": Either(
            "mode new: mirror new-served traffic to legacy and compare: true for defaults.shadow, or a mapping merged "
            "over it.",
            boolean("true: use defaults"),
            MIRROR,
        ),
        "compare": COMPARE,
        "noise": NOISE,
        "readiness": READINESS,
    },
    required=("id", "match", "mode"),
)
UPSTREAM = Section(
    "A back end.",
    {
        "url": http_url("Base URL: http(s)://host:port[/base-path], no query or fragment"),
        "host_header": choice(
            "rewrite: send the upstream's host; preserve: pass the client's Host", ("rewrite", "preserve")
        ),
        "max_connections": integer("Keep-alive connection pool size", minimum=1),
        "breaker_failures": integer(
            "Circuit breaker for fallback routes: after this many consecutive failures their requests go straight "
            "to legacy",
            minimum=1,
        ),
        "breaker_cooldown": duration(
            "How long an open breaker waits before one probe request is let through (a reload retunes a breaker "
            "and keeps its state)"
        ),
        "ca": text(
            "https upstreams: PEM CA bundle trusted for this upstream instead of the system's (relative to this "
            "file's directory)"
        ),
        "client_cert": text("https upstreams: PEM client certificate for mutual TLS; needs client_key"),
        "client_key": text("https upstreams: PEM private key of client_cert"),
        "verify": boolean(
            "https upstreams: check the certificate and host name; false accepts any certificate (a warning is "
            "logged at every start and reload)"
        ),
    },
    required=("url",),
)
LISTEN_TLS = Section(
    "Serve the client-facing listener over TLS (HTTP/1.1 only). Certificate and key are reloaded when their files "
    "change and on SIGHUP; open connections keep theirs.",
    {
        "cert": text("PEM certificate chain file, leaf first (relative to this file's directory)"),
        "key": text("PEM private key file of cert"),
        "min_version": choice("Lowest TLS version accepted", ("1.2", "1.3")),
    },
    required=("cert", "key"),
)
STORE = Section(
    "Where compared exchanges are kept (SQLite).",
    {
        "path": text("Database file; relative paths resolve against this file's directory"),
        "body_cap": size("Bytes kept per stored body"),
        "sample_matches": rate("Share of matching exchanges whose bodies are kept (mismatches always keep theirs)"),
        "retention": Section(
            "Pruning of old exchanges, enforced every 10 minutes.",
            {
                "max_age": duration("Exchanges older than this are deleted"),
                "max_exchanges": integer("Keep at most this many exchanges", minimum=1),
            },
        ),
        "redact": Section(
            "Masked before storage (see Redaction); a list given here ADDS to the built-in default.",
            {
                "headers": _names("Header names", header_name("Header name")),
                "fields": _names("JSON field names, at any depth", text("Field name")),
                "query": _names("Query parameter names", text("Parameter name")),
            },
        ),
    },
)
ACCESS_LOG = Section(
    "One line per request (see Access log); left out: no access log. A reload applies new settings.",
    {
        "path": text(
            '"-" for standard output, or a file, appended to (relative paths resolve against this file\'s directory)',
            r"^.",
            "path",
            '"-" for standard output, or a file path',
        ),
        "format": choice(
            "json (one object per line) or combined (Apache/nginx combined, request id appended)", ("json", "combined")
        ),
        "sample": rate("Share of requests logged"),
    },
)
ADDRESS = {"host": text("Interface to bind"), "port": integer("TCP port (0: any free port)", maximum=65535)}
TOP = Section(
    "strangler routes.yaml: routes endpoints to a legacy back end or a new service, shadows and compares them.",
    {
        "version": version("Config format version; must be 1"),
        "listen": Section(
            "The client-facing listener.",
            {
                **ADDRESS,
                "tls": LISTEN_TLS,
                "server": choice(
                    "Listener: `fast` is strangler's protocol-level one (an asyncio protocol on llhttp, one task per "
                    "connection); `aiohttp` is aiohttp's server (a Task per request), kept one release to compare",
                    SERVERS,
                ),
            },
        ),
        "admin": Section(
            "The admin API listener.",
            {
                **ADDRESS,
                "token_env": text(
                    "Environment variable holding the bearer token that write calls need (Authorization: Bearer); "
                    "when it is unset, writes are disabled",
                    ENV_PATTERN,
                    "variable name",
                ),
            },
        ),
        "store": STORE,
        "upstreams": MapOf("Back ends by name", UPSTREAM, key_pattern=NAME_PATTERN),
        "defaults": Section(
            "Applied to every route; a route's own blocks are merged over these.",
            {
                "legacy": name(
                    "Legacy-side upstream of routes that name none; also serves every request no route matches"
                ),
                "new": name("New-side upstream of routes that name none"),
                "timeouts": TIMEOUTS,
                "shadow": MIRROR,
                "compare": COMPARE,
                "noise": NOISE,
                "readiness": READINESS,
            },
        ),
        "limits": Section(
            "Protections for the client-facing listener and against the shadow side.",
            {
                "max_line_size": size("Longest request line or header line"),
                "max_header_size": size("All header lines together"),
                "max_headers": integer("Most header lines", minimum=1),
                "max_body": size("Largest request body (413 past it, also on chunked bodies)"),
                "header_timeout": duration("Deadline for a complete request head (slowloris guard)"),
                "keepalive_timeout": duration("Idle client keep-alive connections are closed after this"),
                "max_connections": integer("Concurrent client connections", minimum=1),
                "drain_timeout": duration("Graceful shutdown: time allowed for in-flight requests", positive=False),
                "body_timeout": duration(
                    "Idle time allowed between request body bytes: past it 408 and the connection is closed, so "
                    "stalled uploads cannot pin client or upstream connections"
                ),
                "shadow_in_flight": integer(
                    "Copies in flight to the other upstream at once, also the size of its shadow pools, so a new "
                    "service never sees more; read when the shadow side starts",
                    minimum=1,
                ),
                "shadow_waiting": integer(
                    "Copies waiting for an in-flight slot; past it copies are dropped (queue_full); read when the "
                    "shadow side starts",
                    minimum=0,
                ),
                "shadow_backlog": size(
                    "Bytes the proxy holds for a shadow worker that is behind; past it copies are dropped "
                    "(worker_busy); read when the shadow side starts"
                ),
                "shadow_worker_nice": integer(
                    "Added to the shadow worker's nice value: a busy core runs the proxy first; read at start", 0, 19
                ),
            },
        ),
        "trusted_proxies": ListOf(
            "Peers (CIDRs or addresses) whose incoming X-Forwarded-For/-Proto/-Host are believed",
            network("CIDR or address"),
        ),
        "debug_headers": boolean("Add X-Strangler-Route / X-Strangler-Upstream to responses"),
        "via": text("Pseudonym used in the Via header"),
        "access_log": ACCESS_LOG,
        "workers": worker_count(
            "Proxy worker processes sharing the listen port (SO_REUSEPORT, Linux), supervised by `serve`; read at "
            "start (`serve --workers` overrides it)"
        ),
        "routes": ListOf("Routes; the most specific match wins", ROUTE, label_key="id"),
    },
    required=("version",),
    extensions=True,
)
