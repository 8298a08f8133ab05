"""The report as files: JSON (stable, documented in docs/report.schema.json), Markdown and JUnit XML for CI, plus the
table rows the Markdown and HTML pages share (the HTML page itself is `reports.export_html`).

All functions are pure: a `Report` in, text out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from reports.contract_section import contracts_section
from reports.fmt import MISSING, ms, percent, ratio
from reports.readiness import VERDICTS
from reports.replay_changes import ReplaySummary
from reports.summary import FieldSummary, Report, RouteSummary
from shadow.store.types import Percentiles

SCHEMA_ID = "strangler-report/1"  # bump the number on any incompatible change to report_document
FAILING_VERDICTS = ("diverging", "candidate errors")


# --- JSON -------------------------------------------------------------------------------------------------------


def report_document(report: Report) -> dict[str, Any]:
    """The JSON form of a report; its shape is docs/report.schema.json."""
    return {
        "schema": SCHEMA_ID,
        "generated_at": report.generated_at.isoformat(),
        "since": report.since.isoformat() if report.since else None,
        "config": report.config,
        "sources": list(report.sources),
        "verdicts": {v: len(report.with_verdict(v)) for v in VERDICTS},
        "traffic": {
            "total": report.total_requests,
            "unrouted": report.unrouted_requests,
            "modes": [
                {"mode": m.mode, "routes": m.routes, "requests": m.requests, "share": m.share} for m in report.modes
            ],
        },
        "routes": [route_document(r) for r in report.routes],
        "unrouted": [{"method": u.method, "path": u.path, "count": u.count} for u in report.unrouted],
        "replay": replay_section(report.replay),
        "contracts": contracts_section(report.contracts),
    }


def replay_section(summary: ReplaySummary) -> dict[str, Any]:
    """Replayed pairs before → after (the report's "replay", and `strangler replay --format json`)."""
    return {
        "replayed": summary.replayed,
        "fixed": summary.fixed,
        "routes": [dataclasses.asdict(r) for r in summary.routes],
        "fields": [{**dataclasses.asdict(f), "fixed": f.fixed} for f in summary.fields],
    }


def route_document(r: RouteSummary) -> dict[str, Any]:
    fig = r.figures
    return {
        "id": r.id,
        "mode": r.mode,
        "template": r.template,
        "served": {"legacy": r.served_legacy, "new": r.served_new},
        "compared": r.compared,
        "matched": r.matched,
        "mismatched": r.mismatched,
        "noise_only": r.noise_only,
        "candidate_errors": r.candidate_errors,
        "dropped": r.dropped,
        "skipped": r.skipped,
        "dropped_by_reason": dict(r.dropped_by_reason),
        "skipped_by_reason": dict(r.skipped_by_reason),
        "errors_by_reason": dict(r.errors_by_reason),
        "match_rate": fig.match_rate if fig.compared else None,
        "mismatch_rate": fig.mismatch_rate if fig.compared else None,
        "error_rate": fig.error_rate if fig.attempts else None,
        "latency": {
            "legacy": _percentiles(r.latency.legacy),
            "new": _percentiles(r.latency.new),
            "ratio": {q: r.latency.ratio(q) for q in ("p50", "p95", "p99")},
        },
        "fields": [field_document(f) for f in r.fields],
        "field_groups": r.field_groups,
        "suggested_ignore_fields": list(r.suggested_ignores),
        "verdict": r.verdict,
        "verdict_reason": r.verdict_reason or None,
        "checks": [{"name": c.name, "value": c.value, "limit": c.limit, "passed": c.passed} for c in r.checks],
    }


def field_document(f: FieldSummary) -> dict[str, Any]:
    return {
        "path": f.path,
        "kind": f.kind,
        "kinds": dict(f.kinds),
        "count": f.count,
        "rate": f.rate,
        "noise": f.noise,
        "noise_share": f.noise_share,
        "noise_rate": f.noise_rate,
        "volatile": f.volatile,
        "suggested_ignore": f.suggested_ignore,
    }


def _percentiles(p: Percentiles | None) -> dict[str, Any]:
    if p is None:
        return {"p50": None, "p95": None, "p99": None, "count": 0, "exact": True}
    # Rounded to the µs the store keeps (floats of exact µs / 1000 print as such).
    figures = {"p50": round(p.p50, 3), "p95": round(p.p95, 3), "p99": round(p.p99, 3)}
    return {**figures, "count": p.count, "exact": p.exact}


def to_json(report: Report) -> str:
    return json.dumps(report_document(report), indent=2, ensure_ascii=False) + "\n"


# --- Markdown ---------------------------------------------------------------------------------------------------


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _route_rows(report: Report) -> list[list[object]]:
    return [
        [f"`{r.id}`", r.mode, f"{r.served_legacy} / {r.served_new}", r.compared,
         percent(r.figures.match_rate if r.compared else None), r.mismatched, r.noise_only, r.candidate_errors,
         r.dropped, r.skipped, f"**{r.verdict}**"]
        for r in report.routes
    ]  # fmt: skip


ROUTE_HEADER = ("route", "mode", "legacy / new", "compared", "match", "mismatch", "noise only", "cand. errors",
                 "dropped", "skipped", "verdict")  # fmt: skip


def latency_rows(report: Report) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in report.routes:
        lat = r.latency
        if lat.legacy is None and lat.new is None:
            continue
        rows.append(
            [f"`{r.id}`", *(_latency_ms(lat.legacy, q) for q in ("p50", "p95", "p99")),
             *(_latency_ms(lat.new, q) for q in ("p50", "p95", "p99")),
             ratio(lat.ratio("p99"))]
        )  # fmt: skip
    return rows


def _latency_ms(p: Percentiles | None, q: str) -> str:
    """One percentile in ms; "≈" marks a histogram estimate (retention deleted some of the window's rows)."""
    if p is None:
        return MISSING
    return ("" if p.exact else "≈") + ms(getattr(p, q))


def _field_rows(route: RouteSummary) -> list[list[object]]:
    return [
        [f"`{f.path}`", f.kind_text, f.count, percent(f.rate), percent(f.noise_share),
         "noise" if f.noise else "**real**", "ignore (volatile)" if f.suggested_ignore else ""]
        for f in route.fields
    ]  # fmt: skip


def to_markdown(report: Report) -> str:
    since = f"since {report.since.isoformat()}" if report.since else "everything kept"
    lines = ["# Migration report", "", f"Generated {report.generated_at.isoformat()}, {since}.", ""]
    counts = ", ".join(f"{n} {v}" for v, n in report_document(report)["verdicts"].items())
    lines += [f"**Verdicts:** {counts}", "", "## Traffic by mode", ""]
    mode_rows: list[list[object]] = [[m.mode, m.routes, m.requests, percent(m.share)] for m in report.modes]
    unrouted_share = report.unrouted_requests / report.total_requests if report.total_requests else 0.0
    mode_rows.append(["unrouted", "", report.unrouted_requests, percent(unrouted_share)])
    lines += _md_table(("mode", "routes", "requests", "share"), mode_rows)
    if report.unrouted:
        lines += ["## Busiest unrouted paths", ""]
        lines += _md_table(
            ("method", "path", "requests"), [[u.method, f"`{u.path}`", u.count] for u in report.unrouted]
        )
    lines += ["## Routes", "", *_md_table(ROUTE_HEADER, _route_rows(report))]
    reasons = [f"- `{r.id}` **{r.verdict}**: {r.verdict_reason}" for r in report.routes if r.verdict_reason]
    lines += [*reasons, ""] if reasons else []
    latency = latency_rows(report)
    if latency:
        header = ("route", "legacy p50", "legacy p95", "legacy p99", "new p50", "new p95", "new p99", "p99 ratio")
        lines += ["## Latency of compared pairs (ms)", "", *_md_table(header, latency)]
    for r in report.routes:
        if r.fields:
            lines += [f"## Fields that differ on `{r.id}`", ""]
            lines += _md_table(("field", "kind", "count", "rate", "noise share", "class", "suggestion"), _field_rows(r))
    if report.replay.routes:
        lines += ["## Replays (not counted above): before → after", ""]
        lines += _md_table(REPLAY_HEADER, [[f"`{c[0]}`", *c[1:]] for c in replay_rows(report.replay)])
        if report.replay.fields:
            lines += _md_table(REPLAY_FIELD_HEADER, [[f"`{c[0]}`", f"`{c[1]}`", *c[2:]] for c in
                                                      replay_field_rows(report.replay)])  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


REPLAY_HEADER = ("route", "replayed", "mismatches before → after", "fixed", "regressed", "cand. errors", "skipped")
REPLAY_FIELD_HEADER = ("route", "field", "before → after", "fixed")


def replay_rows(summary: ReplaySummary) -> list[list[object]]:
    return [
        [r.route_id, r.replayed, f"{r.mismatched_before} → {r.mismatched_after}", r.fixed, r.regressed,
         r.errors_after, r.skipped_after]
        for r in summary.routes
    ]  # fmt: skip


def replay_field_rows(summary: ReplaySummary) -> list[list[object]]:
    return [[f.route_id, f.group, f"{f.before} → {f.after}", f.fixed] for f in summary.fields]


# --- JUnit ------------------------------------------------------------------------------------------------------


def to_junit(report: Report) -> str:
    """One testcase per route: a failure when diverging or failing with candidate errors, skipped when it still
    needs samples or is not mirrored, passed when ready."""
    failures = sum(r.verdict in FAILING_VERDICTS for r in report.routes)
    skipped = sum(r.verdict in ("needs samples", "not mirrored") for r in report.routes)
    suites = ET.Element("testsuites", name="strangler", tests=str(len(report.routes)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="strangler migration readiness",
        tests=str(len(report.routes)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        timestamp=report.generated_at.isoformat(),
    )
    for r in report.routes:
        case = ET.SubElement(suite, "testcase", classname=f"strangler.routes.{r.mode}", name=r.id)
        details = "\n".join(str(c) for c in r.checks)
        real = [f"{f.path} ({f.kind_text})" for f in r.fields if f.real]
        if real:
            details += "\nreal differences in: " + ", ".join(real)
        if r.verdict in FAILING_VERDICTS:
            failure = ET.SubElement(case, "failure", message=f"{r.id}: {r.verdict}", type=r.verdict.replace(" ", "_"))
            failure.text = details
        elif r.verdict == "needs samples":
            ET.SubElement(case, "skipped", message=f"{r.id}: needs samples ({r.compared} compared)")
        elif r.verdict == "not mirrored":
            ET.SubElement(case, "skipped", message=f"{r.id}: not mirrored: {r.verdict_reason}")
        if r.verdict not in FAILING_VERDICTS:
            ET.SubElement(case, "system-out").text = details
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
