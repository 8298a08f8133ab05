"""The inventory against an OpenAPI description (`strangler inventory --openapi SPEC`): the operations the spec
describes that traffic never reached, and the traffic the spec does not describe.

Pure: `spec_operations` reads a parsed OpenAPI 3 (or Swagger 2) document, `compare_spec` sets an `Inventory` against
its operations. A spec path is compared with an inventory template segment by segment: two literal segments must be
equal (ignoring case, as route matching does); a parameter on either side (`{orderId}`, `{id:int}`, `{table}.json`)
takes any one segment, as does a route's `*`. The spec's paths are relative to its server's base path (OpenAPI 3
`servers[0].url`, Swagger 2 `basePath`), which is put in front of them. Traffic counted under a wildcard route's
template (`/api/**`) cannot be told apart by operation: a spec operation reached only through such a template is
listed apart, not as seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reports.inventory import Endpoint, Inventory

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class SpecError(ValueError):
    """The document is not an OpenAPI description this can read; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str  # upper case
    path: str  # with the base path in front
    operation_id: str | None


@dataclass(frozen=True, slots=True)
class Unseen:
    """A spec operation no traffic reached (`wildcard`: the template of a wildcard route whose traffic may hold it)."""

    operation: Operation
    wildcard: str | None


@dataclass(frozen=True, slots=True)
class Undocumented:
    """A template and method seen in traffic that no spec operation describes."""

    template: str
    method: str
    requests: int
    route: str | None


@dataclass(frozen=True, slots=True)
class SpecCoverage:
    base_path: str
    operations: int
    seen: int  # operations traffic reached (under a template of its own)
    unseen: tuple[Unseen, ...]  # in the spec's order
    undocumented: tuple[Undocumented, ...]  # busiest first
    requests: int  # all requests in the inventory
    undocumented_requests: int
    wildcard_requests: int  # counted under wildcard routes' templates: not told apart by operation


def spec_operations(doc: Any) -> tuple[str, tuple[Operation, ...]]:
    """The base path and the operations of a parsed OpenAPI 3 or Swagger 2 document."""
    if not isinstance(doc, Mapping):
        raise SpecError("not an OpenAPI document: the top level is not a mapping")
    if "openapi" not in doc and "swagger" not in doc:
        raise SpecError("not an OpenAPI document: no 'openapi' (3.x) or 'swagger' (2.0) field")
    paths = doc.get("paths")
    if not isinstance(paths, Mapping):
        raise SpecError("no 'paths' mapping: the document describes no operation")
    base = _base_path(doc)
    operations: list[Operation] = []
    for path, item in paths.items():
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, Mapping):
            raise SpecError(f"paths: {path!r} is not a path ('/...') with a mapping of operations")
        for method in HTTP_METHODS:
            op = item.get(method)
            if isinstance(op, Mapping):
                op_id = op.get("operationId")
                full = base + path if path != "/" or not base else base
                operations.append(Operation(method.upper(), full, op_id if isinstance(op_id, str) else None))
    return base, tuple(operations)


def _base_path(doc: Mapping[str, Any]) -> str:
    if "swagger" in doc:
        base = doc.get("basePath")
        return base.rstrip("/") if isinstance(base, str) else ""
    servers = doc.get("servers")
    if isinstance(servers, Sequence) and servers and isinstance(servers[0], Mapping):
        url = servers[0].get("url")
        if isinstance(url, str) and "{" not in url:
            return urlsplit(url).path.rstrip("/")
    return ""


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


def _is_param(segment: str) -> bool:
    """A parameter (`{id}`, `{id:int}`, `{table}.json`) or a route's one-segment `*`: it takes any one segment."""
    return "{" in segment or segment == "*"


def _same_segments(a: Sequence[str], b: Sequence[str]) -> bool:
    """Pairwise (as far as the shorter goes): equal literals, ignoring case, or a parameter on either side."""
    return all(_is_param(x) or _is_param(y) or x.lower() == y.lower() for x, y in zip(a, b, strict=False))


def matches(spec_path: str, template: str) -> bool:
    """Whether a spec path and an inventory template (no wildcard) can name the same requests."""
    return _matching(_segments(spec_path), _segments(template))


def _matching(a: Sequence[str], b: Sequence[str]) -> bool:
    """`matches` on paths already split: as many segments, and the same pair by pair."""
    return len(a) == len(b) and _same_segments(a, b)


def _under_wildcard(spec_path: str, template: str) -> bool:
    """Whether a wildcard template (`/api/**`, `/**`) takes the spec path's requests."""
    prefix, path = _segments(template.split("**", 1)[0]), _segments(spec_path)
    return len(path) >= len(prefix) and _same_segments(prefix, path)


def compare_spec(inventory: Inventory, base_path: str, operations: Sequence[Operation]) -> SpecCoverage:
    """Which spec operations traffic reached, and which traffic the spec does not describe. Each template is split
    once and set only against the operations with as many segments, each pair compared once for both answers."""
    by_length: dict[int, list[tuple[Operation, list[str]]]] = {}
    for op in operations:
        segments = _segments(op.path)
        by_length.setdefault(len(segments), []).append((op, segments))
    seen: set[Operation] = set()
    undocumented: list[Undocumented] = []
    wildcards: list[Endpoint] = []
    for e in inventory.endpoints:
        if "**" in e.template:
            wildcards.append(e)
            continue
        segments = _segments(e.template)
        described: set[str] = set()  # the methods a spec operation on this template's path describes
        for op, op_segments in by_length.get(len(segments), ()):
            if _matching(op_segments, segments):
                described.add(op.method)
                if op.method in e.methods:
                    seen.add(op)
        undocumented += [Undocumented(e.template, m, n, e.route) for m, n in e.by_method if m not in described]
    unseen = [Unseen(op, _wildcard_for(op, wildcards)) for op in operations if op not in seen]
    undocumented.sort(key=lambda u: (-u.requests, u.template, u.method))
    return SpecCoverage(
        base_path=base_path,
        operations=len(operations),
        seen=len(seen),
        unseen=tuple(unseen),
        undocumented=tuple(undocumented),
        requests=inventory.requests,
        undocumented_requests=sum(u.requests for u in undocumented),
        wildcard_requests=sum(e.requests for e in wildcards),
    )


def _wildcard_for(op: Operation, wildcards: Sequence[Endpoint]) -> str | None:
    """The template of a wildcard route whose traffic may hold the operation (same method, its prefix matches)."""
    return next(
        (w.template for w in wildcards if op.method in w.methods and _under_wildcard(op.path, w.template)), None
    )


def coverage_document(cov: SpecCoverage, spec: str) -> dict[str, Any]:
    """The JSON document of `inventory --openapi --format json`."""
    return {
        "spec": spec,
        "base_path": cov.base_path,
        "operations": cov.operations,
        "seen": cov.seen,
        "unseen": [
            {
                "method": u.operation.method,
                "path": u.operation.path,
                "operation_id": u.operation.operation_id,
                "wildcard_route_template": u.wildcard,
            }
            for u in cov.unseen
        ],
        "undocumented": [
            {"method": u.method, "template": u.template, "requests": u.requests, "route": u.route}
            for u in cov.undocumented
        ],
        "requests": cov.requests,
        "undocumented_requests": cov.undocumented_requests,
        "wildcard_requests": cov.wildcard_requests,
    }


def render_coverage(cov: SpecCoverage, spec: str) -> Group:
    """The comparison as two tables (never prints): operations never seen, traffic not described."""
    base = f" (base path {escape(cov.base_path)})" if cov.base_path else ""
    lines: list[RenderableType] = [
        Text.from_markup(
            f"[bold]{escape(spec)}[/bold]{base}: {cov.seen} of {cov.operations} operations seen in traffic; "
            f"{cov.undocumented_requests} of {cov.requests} requests on {len(cov.undocumented)} template(s) "
            "the spec does not describe"
        )
    ]
    if cov.unseen:
        table = Table(title="In the spec, never seen in traffic", box=box.SIMPLE_HEAD, title_justify="left")
        notes = any(u.wildcard for u in cov.unseen)
        for name in ("method", "path", "operationId", "note")[: 4 if notes else 3]:
            table.add_column(name)
        for u in cov.unseen:
            row = [u.operation.method, escape(u.operation.path), escape(u.operation.operation_id or "–")]
            if notes:
                row.append(f"a wildcard route ({escape(u.wildcard)}) took traffic it may include" if u.wildcard else "")
            table.add_row(*row)
        lines.append(table)
    if cov.undocumented:
        table = Table(title="In traffic, not in the spec", box=box.SIMPLE_HEAD, title_justify="left")
        for name, justify in (("method", "left"), ("template", "left"), ("requests", "right"), ("route", "left")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for d in cov.undocumented:
            table.add_row(d.method, escape(d.template), str(d.requests), escape(d.route or "none"))
        lines.append(table)
    if cov.wildcard_requests:
        lines.append(
            Text(
                f"{cov.wildcard_requests} requests were counted under wildcard routes' templates (**): "
                "they are not told apart by operation."
            )
        )
    return Group(*lines)
