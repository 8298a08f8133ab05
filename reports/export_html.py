"""The report as one self-contained HTML page: inline CSS, the inline SVG latency and progress charts, the reasons
table and the HTML tables, with no scripts and nothing fetched from anywhere. It lays out the same rows as the
Markdown report (`reports.export`), so both always list the same figures; all functions are pure, a `Report` in,
text out.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from reports.bodydiff import shorten
from reports.export import (
    REPLAY_FIELD_HEADER,
    REPLAY_HEADER,
    ROUTE_HEADER,
    latency_rows,
    replay_field_rows,
    replay_rows,
)
from reports.fmt import MISSING, ms, percent
from reports.progress import PERIOD_SECONDS, Period, Progress, iso_time
from reports.summary import Report, RouteSummary

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d232a;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.8rem 0 .5rem;overflow-wrap:anywhere}
.meta{color:#5c6670;margin:0 0 1rem;overflow-wrap:anywhere}
.scroll{max-width:100%;overflow-x:auto;margin:.25rem 0 1rem}
table{border-collapse:collapse}
th,td{border-bottom:1px solid #dde2e6;padding:.3rem .6rem;text-align:right;white-space:nowrap}
th{background:#f3f5f7;font-weight:600;white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}
td.l{text-align:left;white-space:normal}code{font:12px/1.3 ui-monospace,Menlo,Consolas,monospace}
td:first-child code{white-space:normal;overflow-wrap:break-word}
table.text th{text-align:left}
.v{font-weight:600;border-radius:3px;padding:.05rem .4rem}
.ready{background:#dff5e1;color:#1a6b2a}.needs-samples{background:#fff4d6;color:#7a5b00}
.not-mirrored{background:#fff4d6;color:#7a5b00}.reason{max-width:60rem}
.diverging{background:#fde2e1;color:#a11a12}.candidate-errors{background:#f6e1f7;color:#7b1a80}
.real{color:#a11a12;font-weight:600}.noise{color:#5c6670}
svg{display:block;max-width:100%;height:auto}
svg text{font:11px ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;fill:#1d232a}
@media (max-width:900px){body{margin:1rem;font-size:13px}th,td{padding:.25rem .3rem}td .v{white-space:normal}}
"""
# The chart's text is monospace, so its width is known when laying the chart out: at most this many px per
# character at 11px (0.6em for the common monospace fonts, with a margin).
_CHART_CHAR_PX = 7.0
_CHART_LABEL_CHARS = 40  # longer route ids are shortened in the chart (whole in its tooltip and the tables)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "", *, text: bool = False) -> str:
    """`rows` hold already-escaped HTML cells; `text` cells are left-aligned prose that may wrap. The table scrolls
    inside its own box when it is wider than the page, so the page itself never scrolls sideways."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    td = '<td class="l">' if text else "<td>"
    body = "".join("<tr>" + "".join(f"{td}{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{_e(table_id)}"' if table_id else ""
    ident += ' class="text"' if text else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _verdict_html(verdict: str) -> str:
    return f'<span class="v {verdict.replace(" ", "-")}">{_e(verdict)}</span>'


def latency_svg(routes: Sequence[RouteSummary], width: int = 720) -> str:
    """Horizontal bars per route: legacy and new p50 (light) and p99 (dark), on one linear ms scale.

    The label column fits the longest route id and the space right of the bars the longest value text, so no
    label is clipped; the page's CSS scales the chart down to a narrow window, text and all."""
    measured = [r for r in routes if r.latency.legacy is not None or r.latency.new is not None]
    if not measured:
        return "<p class='meta'>No compared pairs, so no latency to chart.</p>"
    top = max(p.p99 for r in measured for p in (r.latency.legacy, r.latency.new) if p is not None) or 1.0
    labels = {r.id: shorten(r.id, _CHART_LABEL_CHARS) for r in measured}
    values = {
        (r.id, side): f"{side} {ms(p.p50)} / {ms(p.p99)} ms"
        for r in measured
        for side in ("legacy", "new")
        if (p := getattr(r.latency, side)) is not None
    }
    bar_h, gap, pad = 12, 10, 6
    label_w = max(len(label) for label in labels.values()) * _CHART_CHAR_PX + pad
    value_w = max(len(v) for v in values.values()) * _CHART_CHAR_PX + pad
    width = max(width, int(label_w + value_w + 160))  # at least 160 px of bars
    scale = (width - label_w - value_w) / top
    colours = {("legacy", "p99"): "#8a96a3", ("legacy", "p50"): "#c9d0d7", ("new", "p99"): "#2f7d4a",
               ("new", "p50"): "#9fd3ad"}  # fmt: skip
    parts, y = [], 24
    for r in measured:
        parts.append(f'<text x="0" y="{y + bar_h + 2}">{_e(labels[r.id])}<title>{_e(r.id)}</title></text>')
        for side in ("legacy", "new"):
            p = getattr(r.latency, side)
            if p is not None:
                for q in ("p99", "p50"):  # p50 drawn over p99: one bar shows both
                    w = max(1.0, getattr(p, q) * scale)
                    parts.append(
                        f'<rect x="{label_w:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                        f'fill="{colours[(side, q)]}"><title>{_e(r.id)} {side} {q} {ms(getattr(p, q))} ms</title>'
                        "</rect>"
                    )
                parts.append(
                    f'<text x="{label_w + max(1.0, p.p99 * scale) + pad / 2:.1f}" y="{y + bar_h - 2}">'
                    f"{_e(values[(r.id, side)])}</text>"
                )
            y += bar_h + 2
        y += gap
    legend = '<text x="0" y="12">bars: p99 (dark) with p50 (light) inside; grey legacy, green new</text>'
    height = y + 4
    return (
        f'<svg id="latency-chart" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" aria-label="latency per route">{legend}{"".join(parts)}</svg>'
    )


def _reason_cell(items: Sequence[tuple[str, int]]) -> str:
    return _e(", ".join(f"{reason or '-'} {n}" for reason, n in items)) if items else MISSING


def reasons_html(routes: Sequence[RouteSummary]) -> str:
    """Why pairs were not compared, per route (the table report's notes): candidate errors by kind, skipped and
    dropped requests by reason; empty when every route compared everything it mirrored."""
    rows = [
        [f"<code>{_e(r.id)}</code>", _reason_cell(r.errors_by_reason), _reason_cell(r.skipped_by_reason),
         _reason_cell(r.dropped_by_reason)]
        for r in routes
        if r.errors_by_reason or r.skipped_by_reason or r.dropped_by_reason
    ]  # fmt: skip
    if not rows:
        return ""
    table = _html_table(("route", "candidate errors", "skipped", "dropped"), rows, "reasons", text=True)
    return "<h2>Why pairs were not compared</h2>" + table


def to_html(report: Report, progress: Progress | None = None) -> str:
    """One self-contained page: no scripts, no external stylesheets, fonts or images; with `progress`, a chart of
    the share served by new over time (`progress_svg`)."""
    since = f"since {report.since.isoformat()}" if report.since else "everything kept"
    route_rows = [
        [f"<code>{_e(r.id)}</code>", _e(r.mode), _e(f"{r.served_legacy} / {r.served_new}"), _e(r.compared),
         _e(percent(r.figures.match_rate if r.compared else None)), _e(r.mismatched), _e(r.noise_only),
         _e(r.candidate_errors), _e(r.dropped), _e(r.skipped), _verdict_html(r.verdict)]
        for r in report.routes
    ]  # fmt: skip
    body = [
        "<h1>Migration report</h1>",
        f'<p class="meta">Generated {_e(report.generated_at.isoformat())}, {_e(since)}; config {_e(report.config)}</p>',
        "<h2>Traffic by mode</h2>",
        _html_table(
            ("mode", "routes", "requests", "share"),
            [[_e(m.mode), _e(m.routes), _e(m.requests), _e(percent(m.share))] for m in report.modes]
            + [["<em>unrouted</em>", "", _e(report.unrouted_requests), ""]],
            "traffic",
        ),
    ]
    if report.unrouted:
        body += [
            "<h2>Busiest unrouted paths</h2>",
            _html_table(
                ("method", "path", "requests"),
                [[_e(u.method), f"<code>{_e(u.path)}</code>", _e(u.count)] for u in report.unrouted],
                "unrouted",
            ),
        ]
    if progress is not None:
        body += [f"<h2>Progress: share of requests served by new, per {progress.by}</h2>", progress_svg(progress)]
    body += ["<h2>Routes</h2>", _html_table(ROUTE_HEADER, route_rows, "routes")]
    body += [
        f'<p class="reason"><code>{_e(r.id)}</code> {_verdict_html(r.verdict)}: {_e(r.verdict_reason)}</p>'
        for r in report.routes
        if r.verdict_reason
    ]
    body.append(reasons_html(report.routes))
    body += ["<h2>Latency of compared pairs</h2>", latency_svg(report.routes)]
    latency = latency_rows(report)
    if latency:
        header = ("route", "legacy p50", "legacy p95", "legacy p99", "new p50", "new p95", "new p99", "p99 ratio")
        rows = [[_e(c).replace("`", "") for c in row] for row in latency]
        body.append(_html_table(header, rows, "latency"))
    for r in report.routes:
        if r.fields:
            rows = [
                [f"<code>{_e(f.path)}</code>", _e(f.kind_text), _e(f.count), _e(percent(f.rate)),
                 _e(percent(f.noise_share)),
                 '<span class="noise">noise</span>' if f.noise else '<span class="real">real</span>',
                 "ignore (volatile)" if f.suggested_ignore else ""]
                for f in r.fields
            ]  # fmt: skip
            body += [f"<h2>Fields that differ on <code>{_e(r.id)}</code></h2>",
                     _html_table(("field", "kind", "count", "rate", "noise share", "class", "suggestion"), rows,
                                 f"fields-{r.id}")]  # fmt: skip
    if report.replay.routes:
        rows = [[f"<code>{_e(c[0])}</code>", *(_e(x) for x in c[1:])] for c in replay_rows(report.replay)]
        body += ["<h2>Replays (not counted above): before → after</h2>", _html_table(REPLAY_HEADER, rows, "replay")]
        if report.replay.fields:
            rows = [
                [f"<code>{_e(c[0])}</code>", f"<code>{_e(c[1])}</code>", *(_e(x) for x in c[2:])]
                for c in replay_field_rows(report.replay)
            ]
            body.append(_html_table(REPLAY_FIELD_HEADER, rows, "replay-fields"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>strangler migration report</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# --- HTML: the progress chart -----------------------------------------------------------------------------------------

# Route lines; no red, which marks the flips.
_PROGRESS_COLORS = ("#1f6feb", "#8250df", "#bf8700", "#0a7ea4", "#1a7f37", "#57606a", "#9a6700")


def progress_svg(progress: Progress, width: int = 720, height: int = 260) -> str:
    """An inline SVG line chart: the share served by new per period, overall (thick) and per route, with a dashed
    vertical mark and label at each flip. No script, no external assets."""
    periods = progress.periods
    left, right, top, bottom = 44, 150, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    if not periods:
        return '<p class="muted">No traffic counted in this window.</p>'
    t0 = periods[0].start
    t1 = periods[-1].start + PERIOD_SECONDS[progress.by]

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(share: float) -> float:
        return top + (1 - share) * plot_h

    half = PERIOD_SECONDS[progress.by] / 2
    parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa" stroke="#d0d7de"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#d0d7de"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>'
        )
    # The axis runs to the end of the last period; both labels name a period's start (the first and the last).
    for t, start, anchor in ((t0, t0, "start"), (t1, periods[-1].start, "end")):
        day = iso_time(start)[: 10 if progress.by == "day" else 13]
        parts.append(f'<text x="{x(t):.1f}" y="{height - 18}" text-anchor="{anchor}">{day}</text>')

    def line(series: Sequence[Period], color: str, stroke: float, name: str, row: int) -> None:
        points = [f"{x(p.start + half):.1f},{y(p.new_share):.1f}" for p in series if p.new_share is not None]
        if points:
            parts.append(
                f'<polyline class="series" data-route="{html.escape(name)}" fill="none" stroke="{color}"'
                f' stroke-width="{stroke}" points="{" ".join(points)}"/>'
            )
            if len(points) == 1:
                px, py = points[0].split(",")
                parts.append(f'<circle cx="{px}" cy="{py}" r="{stroke + 1}" fill="{color}"/>')
        ly = top + 12 + row * 16
        parts.append(
            f'<line x1="{left + plot_w + 12}" y1="{ly - 4}" x2="{left + plot_w + 30}" y2="{ly - 4}" stroke="{color}"'
            f' stroke-width="{stroke}"/><text x="{left + plot_w + 34}" y="{ly}">{html.escape(name)}</text>'
        )

    line(periods, "#1d232a", 3, "all traffic", 0)
    for i, (rid, series) in enumerate(progress.routes.items()):
        line(series, _PROGRESS_COLORS[i % len(_PROGRESS_COLORS)], 1.5, rid, i + 1)
    for i, f in enumerate(progress.flips):
        fx = x(min(max(f.time, t0), t1))
        label = html.escape(f"{f.route_id} → {f.to_mode}")
        # Labels stay inside the plot: right of the mark, or left of it in the right third; stacked when several.
        tx, anchor = (fx - 3, "end") if fx > left + plot_w * 2 / 3 else (fx + 3, "start")
        ty = top + plot_h - 4 - 14 * (i % 6)
        parts.append(
            f'<g class="flip"><line x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" y2="{top + plot_h}" stroke="#cf222e"'
            f' stroke-dasharray="4 3"/><text x="{tx:.1f}" y="{ty}" text-anchor="{anchor}" fill="#cf222e">{label}</text>'
            f"<title>{html.escape(iso_time(f.time)[:16])} {label}</title></g>"
        )
    return (
        f'<svg id="progress-chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' aria-label="share of requests served by new per {progress.by}">{"".join(parts)}</svg>'
    )
