"""Is a route ready to move? The verdict the report prints and the gate `routes flip` and `promote` enforce.

One pure function per question, shared by the report, the flip gate and the rollout guards, so what a reviewer
reads is exactly what the CLI enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from proxy.config.model import Guards, Readiness
from proxy.handler import CAPTURE_FACTOR
from proxy.modes import POLICY_SKIPS
from reports.fmt import percent, size
from shadow.fetch import RESPONSE_CAP
from shadow.judge.compare import RESPONSE_TOO_LARGE
from shadow.plan import REQUEST_TOO_LARGE

Verdict = Literal["ready", "needs samples", "not mirrored", "diverging", "candidate errors"]
VERDICTS: tuple[Verdict, ...] = ("ready", "needs samples", "not mirrored", "diverging", "candidate errors")

NOT_MIRRORED_FIX = (
    "set side_effects: dry_run and list the methods in methods of the route's shadow: block (verify: in mode new), "
    "so copies go with the shadow header, or judge the new side on a read route"
)
TOO_LARGE_FIX = (
    f"raise the route's shadow.max_body (request bodies over it are not mirrored, and legacy's answer is kept up to "
    f"{CAPTURE_FACTOR}× it) if its requests and answers are under {size(RESPONSE_CAP)}; answers over "
    f"{size(RESPONSE_CAP)} are never compared"
)
# Skip reasons that leave a mirrored request out of the comparison for its size. Waiting does not cure them, and the
# requests they leave out are not a random sample of the route's traffic (they are its largest), so past
# readiness.max_uncompared_rate the pairs compared do not stand for the route.
SIZE_SKIPS: Final[Mapping[str, str]] = {
    REQUEST_TOO_LARGE: "with a request body over shadow.max_body",
    RESPONSE_TOO_LARGE: "with an answer too large to compare",
}


@dataclass(frozen=True, slots=True)
class RouteFigures:
    """What the store says about one route's mirrored traffic over a window."""

    route_id: str
    compared: int  # candidate pairs compared (matched + mismatched)
    matched: int
    mismatched: int  # pairs with at least one real (non-noise) difference
    noise_only: int  # pairs whose differences were all classed as noise (counted as matched for the verdict)
    candidate_errors: int
    p99_legacy_ms: float | None = None
    p99_new_ms: float | None = None
    skipped_by_reason: tuple[tuple[str, int], ...] = ()  # requests not mirrored, (reason, count)
    unmirrored: str | None = None  # the route's config mirrors nothing: why and the fix (`proxy.modes`)

    @property
    def attempts(self) -> int:
        return self.compared + self.candidate_errors

    @property
    def uncompared(self) -> int:
        """Mirrored requests left out of the comparison for their size (`SIZE_SKIPS`)."""
        return sum(count for reason, count in self.skipped_by_reason if reason in SIZE_SKIPS)

    @property
    def uncompared_rate(self) -> float:
        """Their share of the requests that were, or were to be, compared."""
        left_out = self.uncompared
        return left_out / (self.attempts + left_out) if left_out else 0.0

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0

    @property
    def error_rate(self) -> float:
        return self.candidate_errors / self.attempts if self.attempts else 0.0

    @property
    def match_rate(self) -> float:
        return (self.compared - self.mismatched) / self.compared if self.compared else 0.0

    @property
    def p99_ratio(self) -> float | None:
        if not self.p99_legacy_ms or self.p99_new_ms is None:
            return None
        return self.p99_new_ms / self.p99_legacy_ms


@dataclass(frozen=True, slots=True)
class Check:
    """One threshold test, printed by the gate whether it passed or failed."""

    name: str
    value: float
    limit: float
    passed: bool

    def __str__(self) -> str:
        op = "≥" if self.name == "compared" else "≤"
        mark = "ok" if self.passed else "FAILED"
        return f"{self.name} = {_fmt(self.name, self.value)} (needs {op} {_fmt(self.name, self.limit)}): {mark}"


def _fmt(name: str, value: float) -> str:
    if name == "compared":
        return str(int(value))
    if name.endswith("rate"):
        return percent(value, significant=3)
    return f"{value:.3g}"


def readiness_checks(fig: RouteFigures, readiness: Readiness) -> tuple[Check, ...]:
    return (
        Check("compared", fig.compared, readiness.min_compared, fig.compared >= readiness.min_compared),
        Check(
            "mismatch_rate",
            fig.mismatch_rate,
            readiness.max_mismatch_rate,
            fig.mismatch_rate <= readiness.max_mismatch_rate,
        ),
        Check("error_rate", fig.error_rate, readiness.max_error_rate, fig.error_rate <= readiness.max_error_rate),
        uncompared_check(fig, readiness),
    )


def uncompared_check(fig: RouteFigures, readiness: Readiness) -> Check:
    """Not too many mirrored requests left out of the comparison for their size (readiness.max_uncompared_rate)."""
    limit = readiness.max_uncompared_rate
    return Check("uncompared_rate", fig.uncompared_rate, limit, fig.uncompared_rate <= limit)


def not_mirrored(fig: RouteFigures) -> str | None:
    """Why nothing on the route can be compared, when its policy mirrors none of its traffic; else None.

    The rule: nothing compared, no candidate errors, and either the route's config mirrors nothing (mode legacy,
    canary without shadow, new without verify) or requests were skipped, every one for a policy reason
    (`proxy.modes.POLICY_SKIPS`). Waiting for samples would wait forever, so the verdict is `not mirrored`, with
    this reason.
    """
    if fig.compared or fig.candidate_errors:
        return None
    if fig.unmirrored is not None:
        return fig.unmirrored
    if not fig.skipped_by_reason:
        return None
    if any(reason not in POLICY_SKIPS for reason, _ in fig.skipped_by_reason):
        return None
    total = sum(count for _, count in fig.skipped_by_reason)
    why = "; ".join(f"{count} {POLICY_SKIPS[reason]}" for reason, count in fig.skipped_by_reason)
    every = "the 1 request" if total == 1 else f"all {total} requests"
    return f"the mirror policy skipped {every} ({why}), so nothing can be compared; fix: {NOT_MIRRORED_FIX}"


def too_large_to_compare(fig: RouteFigures, readiness: Readiness) -> str | None:
    """Why a mirrored route needs samples that waiting will not bring, when requests left out of the comparison for
    their size (`SIZE_SKIPS`) are over readiness.max_uncompared_rate of its mirrored requests (all of them, apart
    from those its policy skips, when nothing was compared); else None. Its verdict is `needs samples` (what was
    left out was not verified, so the gate holds), with this reason beside it."""
    left_out = fig.uncompared
    if not left_out or uncompared_check(fig, readiness).passed:
        return None
    why = "; ".join(f"{n} {SIZE_SKIPS[r]}" for r, n in fig.skipped_by_reason if r in SIZE_SKIPS)
    if not fig.attempts:
        if any(r not in SIZE_SKIPS and r not in POLICY_SKIPS for r, _ in fig.skipped_by_reason):
            return None  # other skips too: the samples may yet come
        why += "".join(f"; {n} {POLICY_SKIPS[r]}" for r, n in fig.skipped_by_reason if r in POLICY_SKIPS)
        total = sum(count for _, count in fig.skipped_by_reason)
        every = "the 1 request so far was" if total == 1 else f"all {total} requests so far were"
        return f"{every} skipped ({why}): none could be compared; fix: {TOO_LARGE_FIX}"
    share = percent(fig.uncompared_rate, significant=3)
    limit = percent(readiness.max_uncompared_rate, significant=3)
    return (
        f"{left_out} of the {fig.attempts + left_out} requests mirrored ({share}) were left out of the comparison "
        f"for their size ({why}), over readiness.max_uncompared_rate {limit}: the pairs compared do not stand for "
        f"the route's traffic; fix: {TOO_LARGE_FIX}, or raise max_uncompared_rate if those are verified another way"
    )


def verdict(fig: RouteFigures, readiness: Readiness) -> Verdict:
    """Errors first (a failing candidate hides its diffs), then divergence, then a policy that mirrors nothing,
    then sample size: enough pairs compared, and not too many requests left out of the comparison for their size."""
    checks = {c.name: c for c in readiness_checks(fig, readiness)}
    if fig.attempts and not checks["error_rate"].passed:
        return "candidate errors"
    if fig.compared and not checks["mismatch_rate"].passed:
        return "diverging"
    if not_mirrored(fig) is not None:
        return "not mirrored"
    if not checks["compared"].passed or not checks["uncompared_rate"].passed:
        return "needs samples"
    return "ready"


def verdict_reason(fig: RouteFigures, readiness: Readiness) -> str:
    """The reason the report and the flip gate print beside a verdict that needs one ("" when none does): why a
    route is not mirrored, or why one that needs samples will not get them by waiting."""
    found = verdict(fig, readiness)
    if found == "not mirrored":
        return not_mirrored(fig) or ""
    if found == "needs samples":
        return too_large_to_compare(fig, readiness) or ""
    return ""


def guard_checks(fig: RouteFigures, guards: Guards) -> tuple[Check, ...]:
    """The rollout guards that are configured; unset guards are not checked."""
    checks: list[Check] = []
    if guards.max_mismatch_rate is not None:
        checks.append(
            Check(
                "mismatch_rate",
                fig.mismatch_rate,
                guards.max_mismatch_rate,
                fig.mismatch_rate <= guards.max_mismatch_rate,
            )
        )
    if guards.max_error_rate is not None:
        checks.append(
            Check("error_rate", fig.error_rate, guards.max_error_rate, fig.error_rate <= guards.max_error_rate)
        )
    if guards.max_p99_ratio is not None and fig.p99_ratio is not None:
        checks.append(Check("p99_ratio", fig.p99_ratio, guards.max_p99_ratio, fig.p99_ratio <= guards.max_p99_ratio))
    return tuple(checks)
