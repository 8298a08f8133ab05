"""How figures look wherever strangler shows them (tables, Markdown, HTML, `watch`, `explain`, `routes list`):
milliseconds, percentages, ratios, sizes, canary weights, and the styles of modes, outcomes and verdicts. One home, so a
figure reads the same in every output.
"""

from __future__ import annotations

from typing import Final

from rich.text import Text

MISSING: Final = "–"  # a figure that does not exist (no samples, no side)

MODE_STYLE: Final = {"legacy": "dim", "shadow": "cyan", "canary": "yellow", "new": "green", "removed": "strike dim"}
OUTCOME_STYLE: Final = {
    "match": "green",
    "mismatch": "red",
    "candidate_error": "magenta",
    "skipped": "dim",
    "dropped": "yellow",
}
VERDICT_STYLE: Final = {
    "ready": "bold green",
    "needs samples": "yellow",
    "not mirrored": "bold yellow",
    "diverging": "bold red",
    "candidate errors": "bold magenta",
}


def size(count: int) -> str:
    """Bytes as B, KiB, MiB or GiB with one decimal (whole bytes below 1 KiB)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ms(value: float | None) -> str:
    """Milliseconds: one decimal under 100 ms, whole above (the decimal is noise there); – when absent."""
    if value is None:
        return MISSING
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def percent(value: float | None, digits: int = 1, *, significant: int | None = None) -> str:
    """A fraction 0..1 as a percentage with `digits` decimals, or with `significant` digits (thresholds such as
    0.05%, which a fixed decimal would round away); – when absent."""
    if value is None:
        return MISSING
    if significant is not None:
        return f"{value * 100:.{significant}g}%"
    return f"{value * 100:.{digits}f}%"


def ratio(value: float | None) -> str:
    """new ÷ legacy, as `1.25×`; – when absent."""
    return MISSING if value is None else f"{value:.2f}×"


def weight(value: float) -> str:
    """A canary weight (already in percent): `20%`, `2.5%`."""
    return f"{value:g}%"


def per_second(value: float | None) -> str:
    """A request rate; – before there is one."""
    return MISSING if value is None else f"{value:.1f}"


def mode_text(mode: str, canary_weight: float | None = None) -> Text:
    """A route's mode in its style; a canary with its weight (`canary 20%`)."""
    text = Text(mode, MODE_STYLE.get(mode, ""))
    if mode == "canary" and canary_weight is not None:
        text.append(f" {weight(canary_weight)}")
    return text


def verdict_text(verdict: str) -> Text:
    return Text(verdict, VERDICT_STYLE.get(verdict, ""))
