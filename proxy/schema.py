"""The key tables of routes.yaml: one declarative source for both validation and the published JSON Schema.

`proxy.loader` walks the parsed YAML against `TOP`: each `Section` lists the keys allowed at its level and each
leaf is a `proxy.scalars.Scalar` that converts its value. `json_schema()` renders the same tables, so
docs/routes.schema.json cannot drift from what the loader accepts. Regenerate it with `python -m proxy.schema`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config import MODES
from proxy.scalars import (
    ENV_PATTERN,
    NAME_PATTERN,
    JsonObject,
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
    "Copying requests to the other side for comparison; merged over defaults.shadow.",
    {
        "sample": rate("Share of eligible requests mirrored"),
        "methods": _names("Methods mirrored (default GET, HEAD, OPTIONS)", method("An HTTP method")),
        "side_effects": choice(
            "Unsafe methods: block (never mirror), dry_run (mirror with the mirror header set), allow",
            ("block", "dry_run", "allow"),
        ),
        "max_body": size("Requests with larger bodies are not mirrored"),
        "timeout": duration("Deadline for the mirrored request"),
        "header": text("Header added to mirrored requests so the other side can tell them apart"),
    },
)
MIRROR_OR_TRUE = Either("true for the defaults, or a mapping of overrides", boolean("true: use defaults"), MIRROR)
COMPARE = Section(
    "How responses are compared; lists extend the defaults, scalars replace them.",
    {
        "ignore_fields": ListOf("JSON body fields left out of the comparison", json_path("e.g. $.meta.generated_at")),
        "ignore_headers": _names("Headers never compared, added to the built-in volatile set", header_name("Name")),
        "headers": _names("Headers compared (default content-type, location)", header_name("Header name")),
        "ignore_order": Either(
            "true to ignore list order everywhere, or the JSON paths of lists whose order does not matter",
            boolean("Ignore the order of every list"),
            sequence=ListOf("Paths of unordered lists", json_path("e.g. $.items")),
        ),
        "float_tolerance": number("Numbers closer than this compare equal"),
        "same_origin": boolean(
            "Absolute URLs (bodies, Location, Link, Content-Location) on the legacy upstream's, the new upstream's "
            "or the client-facing host compare as one (default true)"
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
    },
)
CANARY = Section(
    "Send a share of traffic to the new side (mode: canary).",
    {
        "weight": number("Percent of traffic served by the new side", maximum=100.0),
        "sticky": Section(
            "Keep each client on one side; give exactly one key (default: random per request).",
            {
                "header": header_name("Bucket by this request header"),
                "cookie": text("Bucket by this cookie"),
                "client_ip": boolean("Bucket by client address (true)"),
            },
        ),
        "steps": ListOf("Progressive rollout weights, increasing, 0-100", number("A weight", maximum=100.0)),
        "interval": duration("Time between rollout steps"),
        "guards": Section(
            "Roll back to weight 0 when a guard trips.",
            {
                "max_mismatch_rate": rate("Highest mismatch rate tolerated"),
                "max_error_rate": rate("Highest new-side error rate tolerated"),
                "max_p99_ratio": number("Highest new/legacy p99 latency ratio tolerated", above=True),
            },
        ),
    },
)
MATCH = Section(
    "Which requests the route takes.",
    {
        "path": text("Path template: /api/orders/{id:int}, /api/customers/** (literal segments win)"),
        "methods": _names("Methods matched (default: any)", method("An HTTP method")),
        "headers": MapOf("Request headers that must have exactly these values", text("Exact value")),
        "query": MapOf("Query parameters that must have exactly these values", text("Exact value")),
        "allow_encoded_slash": boolean("Accept %2F and %5C in the path (otherwise 400)"),
    },
    required=("path",),
)
ROUTE = Section(
    "One endpoint group and how it is migrated.",
    {
        "id": name("Unique route id ([A-Za-z0-9_.-]+), used in reports and the admin API"),
        "match": MATCH,
        "mode": choice("legacy: legacy only; shadow: legacy serves, new is compared; canary: split; new", MODES),
        "upstream": name("Upstream of the new side (default defaults.new)"),
        "legacy": name("Upstream of the legacy side (default defaults.legacy)"),
        "fallback": choice("legacy: if the new side fails before any byte, serve from legacy", ("legacy", "none")),
        "timeouts": TIMEOUTS,
        "canary": CANARY,
        "shadow": MIRROR_OR_TRUE,
        "verify": Either("mode new: mirror new-served traffic to legacy", boolean("true: use defaults"), MIRROR),
        "compare": COMPARE,
        "noise": NOISE,
        "readiness": READINESS,
    },
    required=("id", "match", "mode"),
)
UPSTREAM = Section(
    "A back end.",
    {
        "url": http_url("Base URL: http(s)://host:port with an optional base path"),
        "host_header": choice(
            "rewrite: send the upstream's host; preserve: pass the client's", ("rewrite", "preserve")
        ),
        "max_connections": integer("Connection pool size", minimum=1),
        "breaker_failures": integer(
            "Consecutive failures after which fallback routes stop trying this upstream (circuit breaker)", minimum=1
        ),
        "breaker_cooldown": duration("How long an open breaker waits before one probe request is let through"),
    },
    required=("url",),
)
STORE = Section(
    "Where compared exchanges are kept (SQLite).",
    {
        "path": text("Database file; relative paths resolve against this file's directory"),
        "body_cap": size("Bytes kept per stored body"),
        "sample_matches": rate("Share of matching exchanges whose bodies are kept"),
        "retention": Section(
            "Pruning of old exchanges.",
            {
                "max_age": duration("Exchanges older than this are deleted"),
                "max_exchanges": integer("Keep at most this many exchanges", minimum=1),
            },
        ),
        "redact": Section(
            "Masked before storage; these lists ADD to the built-in defaults.",
            {
                "headers": _names("Header names", header_name("Header name")),
                "fields": _names("JSON field names, at any depth", text("Field name")),
                "query": _names("Query parameter names", text("Parameter name")),
            },
        ),
    },
)
ADDRESS = {"host": text("Interface to bind"), "port": integer("TCP port (0: any free port)", maximum=65535)}
TOP = Section(
    "strangler routes.yaml: routes endpoints to a legacy back end or a new service, shadows and compares them.",
    {
        "version": version("Config format version; must be 1"),
        "listen": Section("The proxy listener.", ADDRESS),
        "admin": Section(
            "The admin API listener.",
            {
                **ADDRESS,
                "token_env": text("Environment variable holding the bearer token", ENV_PATTERN, "variable name"),
            },
        ),
        "store": STORE,
        "upstreams": MapOf("Back ends by name", UPSTREAM, key_pattern=NAME_PATTERN),
        "defaults": Section(
            "Defaults applied to every route.",
            {
                "legacy": name("Default legacy upstream; also serves unrouted requests"),
                "new": name("Default new upstream"),
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
                "max_body": size("Largest request body (413 past it)"),
                "header_timeout": duration("Deadline for a complete request head"),
                "keepalive_timeout": duration("Idle keep-alive connections are closed after this"),
                "max_connections": integer("Concurrent client connections", minimum=1),
                "drain_timeout": duration("Graceful shutdown: time allowed for in-flight requests", positive=False),
                "body_timeout": duration("Idle time allowed between request body bytes (408 past it)"),
                "shadow_in_flight": integer(
                    "Copies in flight to the other upstream (and its shadow pool size); read when the shadow side "
                    "starts",
                    minimum=1,
                ),
                "shadow_waiting": integer(
                    "Copies waiting for an in-flight slot; past it copies are dropped (queue_full)", minimum=0
                ),
                "shadow_backlog": size(
                    "Bytes the proxy holds for a shadow worker that is behind (worker_busy past it)"
                ),
            },
        ),
        "trusted_proxies": ListOf("Peers whose X-Forwarded-For is believed", network("CIDR or address")),
        "debug_headers": boolean("Add X-Strangler-Route / X-Strangler-Upstream to responses"),
        "via": text("Pseudonym used in the Via header"),
        "routes": ListOf("Routes; the most specific match wins", ROUTE, label_key="id"),
    },
    required=("version",),
    extensions=True,
)


def _render(spec: Spec) -> JsonObject:
    out: JsonObject
    if isinstance(spec, Scalar):
        out = dict(spec.json)
    elif isinstance(spec, Section):
        out = {
            "type": "object",
            "additionalProperties": False,
            "properties": {key: _render(child) for key, child in spec.keys.items()},
        }
        if spec.required:
            out["required"] = list(spec.required)
        if spec.extensions:
            out["patternProperties"] = {"^x-": {"description": "Ignored: a place for YAML anchors"}}
    elif isinstance(spec, ListOf):
        out = {"type": "array", "items": _render(spec.item)}
        if spec.as_set:
            out["uniqueItems"] = True
    elif isinstance(spec, MapOf):
        out = {"type": "object", "additionalProperties": _render(spec.value)}
        if spec.key_pattern is not None:
            out["propertyNames"] = {"pattern": spec.key_pattern}
    else:
        shapes = (spec.scalar, spec.mapping, spec.sequence)
        out = {"anyOf": [_render(shape) for shape in shapes if shape is not None]}
    out["description"] = spec.description
    return out


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of routes.yaml, rendered from the loader's own key tables."""
    schema = _render(TOP)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "strangler routes.yaml"
    return schema


def render_json() -> str:
    """The schema as written to docs/routes.schema.json: stable key order, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_json())
