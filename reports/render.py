"""Report values as rich renderables: the migration report, the exchange list, one exchange, noise suggestions.

Never prints: the CLI decides where output goes (a terminal, a file, a recording console in tests).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from reports.bodydiff import body_diff, shorten, unlisted_differences
from reports.contract_section import render_contracts
from reports.fmt import MISSING, OUTCOME_STYLE, VERDICT_STYLE, mode_text, ms, percent, ratio, verdict_text
from reports.readiness import VERDICTS
from reports.replay_changes import ReplaySummary
from reports.summary import FieldSummary, Report, RouteSummary
from shadow.store.types import ExchangeDetail, ExchangeRow, Percentiles
from shadow.values import Difference

SHOWN_DIFFERENCES = 20  # rows of `diffs show`'s differences table unless --full


def _reasons(items: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{reason or '-'} {n}" for reason, n in items)


# --- the report -------------------------------------------------------------------------------------------------


def render_report(report: Report) -> Group:
    """The whole report: header, route table, latency table, then each route's differing fields."""
    parts: list[RenderableType] = [_header(report), traffic_table(report)]
    if report.unrouted:
        parts.append(unrouted_table(report))
    parts += [route_table(report.routes), latency_table(report.routes)]
    for route in report.routes:
        if route.fields:
            parts.append(field_table(route))
    parts += [verdict_reason_text(r) for r in report.routes if r.verdict_reason]
    notes = _route_notes(report.routes)
    if notes is not None:
        parts.append(notes)
    if report.replay.routes:
        parts.append(replay_tables(report.replay, title="Replays (not counted above): before → after"))
    if report.contracts:
        parts.append(render_contracts(report.contracts))
    return Group(*parts)


def verdict_reason_text(route: RouteSummary) -> Text:
    """`orders-write: not mirrored: nothing can be compared: ...; fix: ...` under the route table."""
    text = Text(f"{route.id}: ", "bold")
    text.append_text(verdict_text(route.verdict))
    text.append(f": {route.verdict_reason}")
    return text


def _header(report: Report) -> Text:
    window = f"since {_stamp(report.since)}" if report.since else "everything kept"
    text = Text("Migration report", "bold")
    text.append(f"  {_stamp(report.generated_at)}, {window}", "dim")
    text.append(f"\nconfig {report.config}", "dim")
    if report.sources:
        text.append(f", store {', '.join(report.sources)}", "dim")
    counts = {v: len(report.with_verdict(v)) for v in VERDICTS}
    text.append("\n")
    for i, (verdict, n) in enumerate(counts.items()):
        text.append(", " if i else "")
        text.append(f"{n} {verdict}", VERDICT_STYLE[verdict] if n else "dim")
    return text


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def traffic_table(report: Report) -> Table:
    """Traffic per mode (the mode each request was served in) and routes on each mode now."""
    table = Table(title="Traffic by mode", title_justify="left")
    for column in ("mode", "routes", "requests", "share"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    total = report.total_requests or 1
    for m in report.modes:
        table.add_row(mode_text(m.mode), str(m.routes), str(m.requests), percent(m.share))
    table.add_row(
        Text("unrouted", "italic"), "", str(report.unrouted_requests), percent(report.unrouted_requests / total)
    )
    return table


def unrouted_table(report: Report) -> Table:
    """The busiest paths no route matched: served by the default legacy upstream, still to migrate."""
    title = "Busiest unrouted paths (served by the default legacy upstream)"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("method")
    table.add_column("path")
    table.add_column("requests", justify="right")
    for u in report.unrouted:
        table.add_row(escape(u.method), escape(u.path), str(u.count))
    return table


def route_table(routes: Sequence[RouteSummary]) -> Table:
    """One row per route; "real diff" are pairs with a real difference, "noise only" those with noise alone."""
    caption = "served: requests answered by legacy / new · real diff: compared pairs with a real difference"
    table = Table(title="Routes", title_justify="left", box=box.SIMPLE_HEAVY, caption=caption, caption_justify="left")
    columns = ("route", "mode", "served", "compared", "match", "real diff", "noise only", "errors", "drop/skip",
               "verdict")  # fmt: skip
    for column in columns:
        left = column in ("route", "mode", "verdict")
        table.add_column(column, justify="left" if left else "right", no_wrap=column in ("route", "verdict"))
    for r in routes:
        table.add_row(
            Text(r.id, "bold"),
            mode_text(r.mode),
            f"{r.served_legacy} / {r.served_new}",
            str(r.compared),
            percent(r.figures.match_rate if r.compared else None),
            Text(str(r.mismatched), "red" if r.mismatched else ""),
            str(r.noise_only),
            Text(str(r.candidate_errors), "magenta" if r.candidate_errors else ""),
            f"{r.dropped} / {r.skipped}",
            verdict_text(r.verdict),
        )
    return table


def latency_table(routes: Sequence[RouteSummary]) -> Table:
    """p50 / p95 / p99 (nearest rank, exact; "≈" when estimated past retention) of both sides, and new ÷ legacy."""
    table = Table(title="Latency of compared pairs (ms)", title_justify="left")
    table.add_column("route")
    for column in ("legacy p50 / p95 / p99", "new p50 / p95 / p99", "p50 ratio", "p99 ratio"):
        table.add_column(column, justify="right")
    for r in routes:
        if r.latency.legacy is None and r.latency.new is None:
            continue
        lat = r.latency
        p99 = lat.ratio("p99")
        table.add_row(
            r.id,
            _percentiles(lat.legacy),
            _percentiles(lat.new),
            ratio(lat.ratio("p50")),
            Text(ratio(p99), "red" if p99 is not None and p99 > 2 else ""),
        )
    return table


def _percentiles(p: Percentiles | None) -> str:
    if p is None:
        return MISSING
    # "≈": retention deleted some of the window's rows, so these are the hourly histogram's estimates.
    return ("" if p.exact else "≈") + f"{ms(p.p50)} / {ms(p.p95)} / {ms(p.p99)}"


def field_table(route: RouteSummary) -> Table:
    """The route's differing fields, busiest first, each with its kind and classed real or noise."""
    more = route.field_groups - len(route.fields)
    title = f"Fields that differ on {route.id}" + (
        f" (top {len(route.fields)} of {route.field_groups})" if more else ""
    )
    table = Table(title=escape(title), title_justify="left", min_width=len(title))
    for column in ("field", "kind", "count", "rate", "noise share", "class", "suggestion"):
        table.add_column(column, justify="right" if column in ("count", "rate", "noise share") else "left")
    for f in route.fields:
        table.add_row(
            escape(f.path),
            f.kind_text,
            str(f.count),
            percent(f.rate),
            percent(f.noise_share, 0),
            _field_class(f),
            Text("ignore (volatile)", "cyan") if f.suggested_ignore else Text(""),
        )
    return table


def _field_class(f: FieldSummary) -> Text:
    return Text("noise", "dim") if f.noise else Text("real", "bold red")


def _route_notes(routes: Sequence[RouteSummary]) -> Text | None:
    """Why pairs were not compared, per route, when any were skipped, dropped or failed."""
    lines = []
    for r in routes:
        for label, items in (("skipped", r.skipped_by_reason), ("dropped", r.dropped_by_reason),
                             ("candidate errors", r.errors_by_reason)):  # fmt: skip
            if items:
                lines.append(f"{r.id}: {label}: {_reasons(items)}")
    if not lines:
        return None
    return Text("\n".join(lines), "dim")


def replay_tables(summary: ReplaySummary, *, title: str = "Replay: before → after") -> Group:
    """Before → after per route (mismatches, fixed, regressed) and per field group, and one line per route with
    how many former mismatches now match."""
    routes = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("route", "replayed", "mismatches", "fixed", "regressed", "cand.err", "skipped"):
        routes.add_column(column, justify="left" if column == "route" else "right", no_wrap=True)
    for r in summary.routes:
        routes.add_row(
            escape(r.route_id), str(r.replayed), f"{r.mismatched_before} → {r.mismatched_after}",
            Text(str(r.fixed), "green" if r.fixed else ""), Text(str(r.regressed), "red" if r.regressed else ""),
            str(r.errors_after), str(r.skipped_after),
        )  # fmt: skip
    parts: list[RenderableType] = [routes]
    if summary.fields:
        fields = Table(title="Fields: exchanges differing", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("route", "field", "before → after", "fixed"):
            fields.add_column(column, justify="right" if column == "fixed" else "left", overflow="fold")
        for f in summary.fields:
            fields.add_row(escape(f.route_id), escape(f.group), f"{f.before} → {f.after}", str(f.fixed))
        parts.append(fields)
    lines = [
        Text(f"{r.route_id}: {r.fixed} of {r.mismatched_before} former mismatches now match",
             "green" if r.mismatched_after == 0 else "yellow")
        for r in summary.routes
        if r.mismatched_before
    ]  # fmt: skip
    return Group(*parts, *lines)


# --- diff review ------------------------------------------------------------------------------------------------


def exchange_table(rows: Sequence[ExchangeRow]) -> Table:
    """`diffs list`: the newest exchanges first."""
    table = Table()
    for column in ("id", "time", "route", "pair", "request", "outcome", "status", "ms legacy / new", "diffs"):
        table.add_column(column, justify="right" if column in ("id", "diffs") else "left")
    for row in rows:
        request = f"{row.method} {row.path}" + (f"?{row.query}" if row.query else "")
        table.add_row(
            _row_id(row),
            datetime.fromtimestamp(row.time, UTC).strftime("%m-%d %H:%M:%S"),
            escape(row.route_id),
            row.pair,
            escape(request),
            Text(row.outcome + (f" ({row.reason})" if row.reason else ""), OUTCOME_STYLE.get(row.outcome, "")),
            f"{row.legacy_status or '–'} / {row.new_status or '–'}",
            f"{ms(row.legacy_latency_ms)} / {ms(row.new_latency_ms)}",
            str(row.difference_count),
        )
    return table


def _row_id(row: ExchangeRow) -> str:
    return str(row.id) if row.source == 0 else f"{row.source}:{row.id}"


def render_exchange(detail: ExchangeDetail, *, full: bool = False) -> Group:
    """`diffs show`: the request, both responses side by side, the differences, then the body diff.

    Long paths are shortened, the list of differences and the body diff are capped; `full` shows everything."""
    r = detail.record
    request = Text(f"{r.method} {r.path}" + (f"?{r.query}" if r.query else ""), "bold")
    request.append(f"   route {r.route_id} ({r.mode}), {r.pair} pair, served by {r.served_by}", "dim")
    request.append("\n")
    request.append(r.outcome + (f": {r.reason}" if r.reason else ""), OUTCOME_STYLE.get(r.outcome, ""))
    request.append(f"   {datetime.fromtimestamp(r.time, UTC).isoformat()}   request id {r.request_id}", "dim")
    if r.note:
        request.append(f"\n({r.note})", "yellow")
    parts: list[RenderableType] = [request]
    if r.request_headers:
        parts.append(_headers_table("request headers", r.request_headers))
    sides = Table(title="Responses", title_justify="left")
    for column in ("", "legacy", "new"):
        sides.add_column(column)
    sides.add_row("status", str(r.legacy_status or "–"), str(r.new_status or "–"))
    sides.add_row("latency ms", ms(r.legacy_latency_ms), ms(r.new_latency_ms))
    sides.add_row("size", str(r.legacy_size if r.legacy_size is not None else "–"), str(r.new_size or "–"))
    for name in sorted({k.lower() for k, _ in (*r.legacy_headers, *r.new_headers)}):
        sides.add_row(
            escape(name), escape(_header_value(r.legacy_headers, name)), escape(_header_value(r.new_headers, name))
        )
    parts.append(sides)
    unlisted = unlisted_differences(r.note)
    if r.differences:
        parts.append(_differences_table(r.differences, unlisted, full=full))
    body = body_diff(
        r.legacy_body,
        r.new_body,
        r.legacy_headers,
        r.new_headers,
        [d.path for d in r.differences],
        fold=False if full else None,
        complete=not unlisted,
    )
    parts.append(Panel(body, title="body: - legacy  + new", title_align="left", border_style="dim"))
    return Group(*parts)


def _differences_table(differences: Sequence[Difference], unlisted: int, *, full: bool) -> RenderableType:
    """The stored differences (at most SHOWN_DIFFERENCES unless `full`), paths shortened in the middle, and a line
    counting those not shown here and those the comparison found but did not store."""
    title = f"Differences ({len(differences)})"
    if unlisted:
        title = f"Differences ({len(differences)} stored of {len(differences) + unlisted}; {unlisted} more not stored)"
    shown = differences if full else differences[:SHOWN_DIFFERENCES]
    table = Table(title=title, title_justify="left", min_width=len(title))
    for column in ("path", "kind", "legacy", "new"):
        table.add_column(column, overflow="fold")
    for d in shown:
        table.add_row(
            Text(d.path if full else shorten(d.path), "bold"),
            d.kind,
            Text(d.legacy or "(absent)", "red"),
            Text(d.new or "(absent)", "green"),
        )
    if len(shown) == len(differences):
        return table
    more = Text(f"… {len(differences) - len(shown)} more stored differences: --full or --format json lists them", "dim")
    return Group(table, more)


def _headers_table(title: str, headers: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in headers:
        table.add_row(escape(name), escape(value))
    return table


def _header_value(headers: Sequence[tuple[str, str]], name: str) -> str:
    return ", ".join(v for k, v in headers if k.lower() == name) or "–"


# --- noise suggestions ------------------------------------------------------------------------------------------


def suggestion_yaml(rules: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The YAML snippet for routes.yaml: `routes: - id: X compare: ignore_fields: [...]`."""
    lines = ["routes:"]
    for route_id, fields in rules:
        lines += [f"  - id: {route_id}", "    compare:", "      ignore_fields:"]
        lines += [f"        - {_yaml_scalar(f)}" for f in fields]
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: str) -> str:
    # `$.items[*].x` is a fine plain scalar in a block sequence; quote (JSON is valid YAML) anything riskier.
    risky = not value.startswith("$") or any(c in value for c in ("'", '"', ": ", " #", "\\"))
    return json.dumps(value) if risky else value


def render_suggestion(rules: Sequence[tuple[str, Sequence[str]]]) -> RenderableType:
    if not rules:
        return Text("No volatile or noise fields to ignore.", "green")
    return Syntax(suggestion_yaml(rules), "yaml", theme="ansi_dark", background_color="default")
