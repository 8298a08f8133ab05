"""`strangler diffs list|show` and `strangler noise suggest`: reviewing stored exchanges and ignoring noise.

Registered on the root app by `cli.report_cmds.register`; shares its options and store opening.
"""

from __future__ import annotations

import base64
import heapq
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.flip import FlipError, add_ignore_fields
from cli.output import CliError, ConfigOption, FormatOption, OutputFormat, print_json, print_line, print_renderable
from cli.report_cmds import (
    DbOption,
    RouteOption,
    SinceOption,
    open_store,
    parse_since,
    store_paths,
)
from proxy.config.loader import load_config
from reports.bodydiff import unlisted_differences
from reports.render import exchange_table, render_exchange, render_suggestion, suggestion_yaml
from reports.summary import noise_verdicts
from shadow.judge.jsonpath import group_path
from shadow.judge.noise import FieldVerdict, suggest_ignore_rules
from shadow.store.types import ExchangeDetail, ExchangeRow
from shadow.values import StoredBody

diffs_app = typer.Typer(help="Review stored exchanges and their differences.", no_args_is_help=True)
noise_app = typer.Typer(
    help="Find fields that differ by nature (timestamps, ids) and ignore them.", no_args_is_help=True
)


class Outcome(StrEnum):
    """`diffs list --outcome` (shadow.values.OUTCOMES, or all of them); by default the differing ones."""

    all = "all"
    match = "match"
    mismatch = "mismatch"
    candidate_error = "candidate_error"
    skipped = "skipped"
    dropped = "dropped"


class PairKind(StrEnum):
    """`diffs list --pair` (shadow.values.Pair): candidate (legacy vs new), noise (legacy vs legacy), replay."""

    candidate = "candidate"
    noise = "noise"
    replay = "replay"


# --- diffs ------------------------------------------------------------------------------------------------------

# What `diffs list` shows without --outcome: the exchanges a reviewer has to look at.
DIFFERING: tuple[Outcome, ...] = (Outcome.mismatch, Outcome.candidate_error)


def row_document(row: ExchangeRow) -> dict[str, Any]:
    return {
        "id": row.id if row.source == 0 else f"{row.source}:{row.id}",
        "time": datetime.fromtimestamp(row.time, UTC).isoformat(),
        "route": row.route_id,
        "mode": row.mode,
        "pair": row.pair,
        "method": row.method,
        "path": row.path,
        "query": row.query,
        "template": row.template,
        "request_id": row.request_id,
        "served_by": row.served_by,
        "outcome": row.outcome,
        "reason": row.reason,
        "status": {"legacy": row.legacy_status, "new": row.new_status},
        "latency_ms": {"legacy": row.legacy_latency_ms, "new": row.new_latency_ms},
        "differences": row.difference_count,
    }


@diffs_app.command("list")
def diffs_list(
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    route: RouteOption = None,
    outcome: Annotated[
        Outcome | None,
        typer.Option(
            "--outcome",
            help="Only this outcome; 'all' for every exchange (default: mismatch and candidate_error).",
            show_default=False,
        ),
    ] = None,
    field: Annotated[
        str | None, typer.Option("--field", help="Only exchanges differing in this field ($.items[*].price).")
    ] = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many, newest first.", min=1)] = 50,
    pair: Annotated[
        PairKind | None,
        typer.Option("--pair", help="Only this pair: candidate, noise or replay (made by `strangler replay`)."),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List the exchanges that differ (mismatches and candidate errors), newest first; the id feeds
    `strangler diffs show`. --outcome all lists matching, skipped and dropped ones too. The pair column says what was
    compared: candidate (legacy vs new), noise (legacy vs legacy) or replay (sent again by `strangler replay`).

    Example: [bold]strangler diffs list --route customers --outcome mismatch --field '$.phone' --limit 20[/bold]
    """
    loaded = load_config(config)
    outcomes: tuple[Outcome | None, ...] = (None,) if outcome is Outcome.all else (outcome,) if outcome else DIFFERING
    with open_store(store_paths(loaded, db)) as store:
        found = [
            store.list_exchanges(
                route_id=route,
                outcome=o.value if o is not None else None,
                field_group=group_path(field) if field else None,
                since=parse_since(since),
                limit=limit,
                pair=pair.value if pair is not None else None,
            )
            for o in outcomes
        ]
    rows = list(heapq.merge(*found, key=lambda r: (r.time, r.id), reverse=True))[:limit]
    if fmt is OutputFormat.json:
        print_json([row_document(r) for r in rows])
        return
    differing_only = outcome is None
    if rows:
        print_renderable(exchange_table(rows))
        if differing_only:
            print_line(
                "[dim]Differing exchanges only (mismatch, candidate_error): --outcome all lists every one.[/dim]"
            )
    elif differing_only:
        print_line("No differing exchanges match (no mismatch or candidate_error): --outcome all lists every one.")
    else:
        print_line("No exchanges match.")


def _parse_id(value: str) -> tuple[int, int]:
    """ "42" or "1:42" (file index : id, as `diffs list` shows ids from a second --db file)."""
    source, _, eid = value.rpartition(":")
    try:
        return int(eid), int(source) if source else 0
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an exchange id (N or FILE:N)", param_hint="ID") from None


def _body_document(body: StoredBody | None) -> dict[str, Any] | None:
    if body is None:
        return None
    doc: dict[str, Any] = {"length": body.length, "truncated": body.truncated}
    try:
        doc["text"] = body.data.decode("utf-8")
    except UnicodeDecodeError:
        doc["base64"] = base64.b64encode(body.data).decode("ascii")
    return doc


def exchange_document(detail: ExchangeDetail) -> dict[str, Any]:
    """`diffs show --format json`: the whole exchange; `differences` are those stored (capped), and
    `differences_unlisted` counts those the comparison found beyond them."""
    r = detail.record
    unlisted = unlisted_differences(r.note)
    return {
        "id": detail.id if detail.source == 0 else f"{detail.source}:{detail.id}",
        "time": datetime.fromtimestamp(r.time, UTC).isoformat(),
        "route": r.route_id,
        "mode": r.mode,
        "pair": r.pair,
        "request": {
            "method": r.method,
            "path": r.path,
            "query": r.query,
            "template": r.template,
            "request_id": r.request_id,
            "headers": [list(h) for h in r.request_headers],
            "body": _body_document(r.request_body),
        },
        "served_by": r.served_by,
        "outcome": r.outcome,
        "reason": r.reason,
        "note": r.note,
        "legacy": {
            "status": r.legacy_status,
            "latency_ms": r.legacy_latency_ms,
            "size": r.legacy_size,
            "headers": [list(h) for h in r.legacy_headers],
            "body": _body_document(r.legacy_body),
        },
        "new": {
            "status": r.new_status,
            "latency_ms": r.new_latency_ms,
            "size": r.new_size,
            "headers": [list(h) for h in r.new_headers],
            "body": _body_document(r.new_body),
        },
        "differences": [
            {"path": d.path, "group": d.group, "kind": d.kind, "legacy": d.legacy, "new": d.new} for d in r.differences
        ],
        "differences_stored": len(r.differences),
        "differences_unlisted": unlisted,
        "differences_total": len(r.differences) + unlisted,
    }


@diffs_app.command("show")
def diffs_show(
    exchange_id: Annotated[str, typer.Argument(metavar="ID", help="Exchange id from `diffs list` (N or FILE:N).")],
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Show everything: whole bodies, every stored difference, whole paths.")
    ] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """One exchange: request line and (redacted) headers, both responses, and a coloured JSON diff of the bodies.

    Large bodies are folded around the differing paths (a few differing items per array, the rest counted), long
    paths shortened in the middle; --full shows everything. --format json has every stored difference and how many
    more the comparison found.

    Example: [bold]strangler diffs show 42[/bold]
    """
    eid, source = _parse_id(exchange_id)
    loaded = load_config(config)
    with open_store(store_paths(loaded, db)) as store:
        detail = store.get_exchange(eid, source)
    if detail is None:
        raise CliError(f"no exchange {exchange_id} in the store")
    if fmt is OutputFormat.json:
        print_json(exchange_document(detail))
    else:
        print_renderable(render_exchange(detail, full=full))


# --- noise ------------------------------------------------------------------------------------------------------


def ignore_candidates(verdicts: list[FieldVerdict]) -> list[str]:
    """JSON fields to ignore: volatile ones (shadow.judge.noise's suggestion) and those classed noise (never a field
    whose structure new changed: shadow.judge.noise classes that real)."""
    noise = [v.group for v in verdicts if not v.real and v.group.startswith("$")]
    return sorted({*suggest_ignore_rules(verdicts), *noise})


def _verdict_document(v: FieldVerdict) -> dict[str, Any]:
    return {
        "path": v.group,
        "kind": v.kind,
        "raw": v.raw,
        "noise": v.noise,
        "raw_rate": v.raw_rate,
        "noise_rate": v.noise_rate,
        "real": v.real,
        "volatile": v.volatile,
        "structure": v.structure,
    }


def _withheld(verdicts: list[FieldVerdict]) -> list[tuple[FieldVerdict, str]]:
    """Volatile fields not suggested because new changed their structure, with why (shadow.judge.noise decides)."""
    return [(v, why) for v in verdicts if (why := v.withheld) is not None]


@noise_app.command("suggest")
def noise_suggest(
    route: Annotated[str | None, typer.Argument(help="Only this route id (default: every route).")] = None,
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    since: SinceOption = None,
    apply: Annotated[bool, typer.Option("--apply", help="Add the rules to routes.yaml (comments are kept).")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Suggest compare.ignore_fields rules for fields classed as noise or whose values look volatile.

    Prints a YAML snippet for routes.yaml; --apply writes the rules into the file, keeping comments and layout.
    A field new added, removed or changed the type of is never suggested, however volatile its values: a line
    says so ("not suggested: $.x — removed by new").

    Example: [bold]strangler noise suggest orders-list --apply[/bold]
    """
    loaded = load_config(config)
    ids = [route] if route else [r.id for r in loaded.routes]
    if route and loaded.route(route) is None:
        raise CliError(f"unknown route '{route}' (known: {', '.join(r.id for r in loaded.routes) or 'none'})")
    window = parse_since(since)
    found: list[tuple[str, list[str], list[FieldVerdict]]] = []
    with open_store(store_paths(loaded, db)) as store:
        for rid in ids:
            verdicts = noise_verdicts(store, loaded, rid, window)
            known = loaded.route(rid)
            present = set(known.compare.ignore_fields) if known else set()
            rules = [f for f in ignore_candidates(verdicts) if f not in present]
            if rules or _withheld(verdicts):
                found.append((rid, rules, verdicts))
    suggested = [(rid, rules) for rid, rules, _ in found if rules]
    applied: dict[str, list[str]] = {}
    if apply:
        for rid, rules in suggested:
            try:
                applied[rid] = list(add_ignore_fields(config, rid, rules))
            except FlipError as exc:
                raise CliError(str(exc), exc.details) from exc
    if fmt is OutputFormat.json:
        print_json(
            {
                "routes": [
                    {
                        "id": rid,
                        "ignore_fields": rules,
                        "not_suggested": [
                            {"path": v.group, "kind": v.kind, "reason": why} for v, why in _withheld(verdicts)
                        ],
                        "fields": [_verdict_document(v) for v in verdicts],
                    }
                    for rid, rules, verdicts in found
                ],
                "yaml": suggestion_yaml(suggested) if suggested else None,
                "applied": applied if apply else None,
            }
        )
        return
    print_renderable(render_suggestion(suggested))
    for rid, _, verdicts in found:
        for v, why in _withheld(verdicts):
            print_line(f"{escape(rid)}: not suggested: {escape(v.group)} — {escape(why)}")
    for rid, added in applied.items():
        print_line(f"{escape(rid)}: added {len(added)} ignore field(s) to {escape(str(config))}")
