"""The flip gate and the progressive-rollout guards: what the store says about a route, and what may happen next.

The figures come from `reports.summary.build_report`, so the gate enforces exactly what the report shows: a mismatch
counts only when one of its differences is in a field classed real (noise-only mismatches count as matched). The
decisions (`flip_gate`, `decide_step`) are pure functions of those figures and the route's config; the CLI applies
them to routes.yaml and records them with `Store.record_flip`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.config.model import Config, Guards, Readiness, Route
from reports.readiness import (
    Check,
    RouteFigures,
    Verdict,
    guard_checks,
    readiness_checks,
    verdict,
    verdict_reason,
)
from reports.summary import build_report
from shadow.store.database import Store
from shadow.values import FlipRecord

FULL_WEIGHT = 100.0
# Rollout guards need evidence before they promote or roll back: this share of readiness.min_compared, at least
# MIN_SAMPLES_FLOOR attempts (compared pairs plus candidate errors, so a candidate failing on every request trips
# the error guard instead of never gathering samples).
MIN_SAMPLES_SHARE = 0.1
MIN_SAMPLES_FLOOR = 5

StepAction = Literal["promote", "complete", "rollback", "wait"]


def empty_figures(route_id: str) -> RouteFigures:
    return RouteFigures(route_id=route_id, compared=0, matched=0, mismatched=0, noise_only=0, candidate_errors=0)


def route_figures(
    store: Store | None, config: Config, route_id: str, *, since: float | None = None, now: float | None = None
) -> RouteFigures:
    """The route's figures over exchanges at or after `since`, classified as the report classifies them.

    `store` None (no store file yet) gives empty figures: nothing has been compared.
    """
    if store is None:
        return empty_figures(route_id)
    report = build_report(store, config, since=since, route_id=route_id, now=now, field_limit=0, unrouted_limit=0)
    return report.routes[0].figures if report.routes else empty_figures(route_id)


def new_share(mode: str, weight: float | None) -> float:
    """The percent of a route's clients the new side answers in a mode (shadow: none, it only sees copies)."""
    if mode == "new":
        return FULL_WEIGHT
    return (weight or 0.0) if mode == "canary" else 0.0


def is_forward(from_mode: str, from_weight: float | None, to_mode: str, to_weight: float | None) -> bool:
    """True when the change has the new side answer more clients (only such moves are gated): a canary weight or
    mode new. Starting to shadow is not forward: copies are how the evidence is gathered, and legacy still answers."""
    return new_share(to_mode, to_weight) > new_share(from_mode, from_weight)


@dataclass(frozen=True, slots=True)
class FlipGate:
    """The readiness gate's view of one flip: always computed (and recorded), enforced only on forward moves."""

    route_id: str
    forward: bool
    figures: RouteFigures
    verdict: Verdict
    checks: tuple[Check, ...]
    since: float | None
    reason: str = ""  # reports.readiness.verdict_reason: why, and the fix, when the figures alone do not say

    @property
    def passed(self) -> bool:
        return not self.forward or self.verdict == "ready"

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def document(self) -> dict[str, Any]:
        return {
            "kind": "readiness",
            "forward": self.forward,
            "verdict": self.verdict,
            "reason": self.reason or None,
            "since": self.since,
            "figures": figures_document(self.figures),
            "checks": [check_document(c) for c in self.checks],
        }


def flip_gate(fig: RouteFigures, readiness: Readiness, *, forward: bool, since: float | None = None) -> FlipGate:
    return FlipGate(
        fig.route_id,
        forward,
        fig,
        verdict(fig, readiness),
        readiness_checks(fig, readiness),
        since,
        verdict_reason(fig, readiness),
    )


# --- progressive rollout ------------------------------------------------------------------------------------------


def next_step(steps: Sequence[float], weight: float) -> float:
    """The first configured step above `weight`; FULL_WEIGHT once the steps are used up (a rollout ends at 100%)."""
    for step in steps:
        if step > weight:
            return min(float(step), FULL_WEIGHT)
    return FULL_WEIGHT


def default_min_samples(readiness: Readiness) -> int:
    return max(MIN_SAMPLES_FLOOR, math.ceil(readiness.min_compared * MIN_SAMPLES_SHARE))


def guard_window(last_change: float | None, interval: float, now: float) -> float:
    """Where the guards start looking: the last interval, but never before the route's last recorded change."""
    start = now - interval
    return start if last_change is None else max(start, last_change)


@dataclass(frozen=True, slots=True)
class StepDecision:
    """What `routes promote` does next, and on which evidence."""

    route_id: str
    action: StepAction
    weight: float  # the current canary weight
    target: float | None  # the weight after a promote (FULL_WEIGHT: the route flips to mode new); 0 on rollback
    figures: RouteFigures
    checks: tuple[Check, ...]
    window_since: float
    now: float
    min_samples: int
    reason: str

    @property
    def breached(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def document(self) -> dict[str, Any]:
        return {
            "kind": "guards",
            "action": self.action,
            "weight": self.weight,
            "target": self.target,
            "window": {"since": self.window_since, "until": self.now},
            "min_samples": self.min_samples,
            "figures": figures_document(self.figures),
            "checks": [check_document(c) for c in self.checks],
            "reason": self.reason,
        }


def decide_step(
    fig: RouteFigures,
    guards: Guards,
    steps: Sequence[float],
    weight: float,
    *,
    min_samples: int,
    window_since: float,
    now: float,
    baked: bool,
) -> StepDecision:
    """Roll back on a breached guard, promote when every guard passes after a full interval, else wait.

    Below `min_samples` attempts nothing is promoted, and a rollback needs a `certain_breach`: a single early
    mismatch neither promotes nor rolls back. `baked` is whether a full interval has passed since the last change.
    """
    checks = guard_checks(fig, guards)
    failed = [c for c in checks if not c.passed]

    def decision(action: StepAction, target: float | None, reason: str) -> StepDecision:
        return StepDecision(fig.route_id, action, weight, target, fig, checks, window_since, now, min_samples, reason)

    if fig.attempts < min_samples:
        if certain_breach(fig, guards, min_samples):
            breached = "; ".join(str(c) for c in failed if c.name != "p99_ratio")
            return decision("rollback", 0.0, f"guard breached: {breached} (over the limit even at {min_samples})")
        return decision("wait", None, f"{fig.attempts} attempts in the window, need at least {min_samples}")
    if failed:
        return decision("rollback", 0.0, "guard breached: " + "; ".join(str(c) for c in failed))
    if not baked:
        return decision("wait", None, "the interval since the last change has not passed yet")
    target = next_step(steps, weight)
    if target >= FULL_WEIGHT:
        return decision("complete", FULL_WEIGHT, f"guards pass at {weight:g}%: flip to mode new")
    return decision("promote", target, f"guards pass at {weight:g}%: promote to {target:g}%")


def certain_breach(fig: RouteFigures, guards: Guards, min_samples: int) -> bool:
    """Whether a rate guard is breached however clean the samples still missing up to `min_samples` turn out.

    This lets a clearly failing canary roll back before the sample floor is reached (34 mismatches of 34 do not
    need 16 more to be conclusive), while a single early mismatch against a generous limit still waits.
    """
    if guards.max_mismatch_rate is not None and fig.mismatched / max(fig.compared, min_samples, 1) > (
        guards.max_mismatch_rate
    ):
        return True
    return guards.max_error_rate is not None and fig.candidate_errors / max(fig.attempts, min_samples, 1) > (
        guards.max_error_rate
    )


def evaluate_rollout(
    store: Store | None,
    config: Config,
    route: Route,
    *,
    now: float,
    interval: float | None = None,
    min_samples: int | None = None,
) -> StepDecision:
    """Read the route's figures over its guard window and decide. The route must be in mode canary."""
    if route.canary is None:
        raise ValueError(f"route '{route.id}' is mode {route.mode}, not canary")
    canary = route.canary
    every = canary.interval if interval is None else interval
    last = store.last_flip(route.id) if store is not None else None
    last_change = last.time if last is not None else None
    since = guard_window(last_change, every, now)
    fig = route_figures(store, config, route.id, since=since, now=now)
    return decide_step(
        fig,
        canary.guards,
        canary.steps,
        canary.weight,
        min_samples=default_min_samples(route.readiness) if min_samples is None else min_samples,
        window_since=since,
        now=now,
        baked=last_change is None or now - last_change >= every,
    )


# --- documents (the `gate` JSON of a recorded flip) ------------------------------------------------------------


def figures_document(fig: RouteFigures) -> dict[str, Any]:
    return {
        "compared": fig.compared,
        "matched": fig.matched,
        "mismatched": fig.mismatched,
        "noise_only": fig.noise_only,
        "candidate_errors": fig.candidate_errors,
        "mismatch_rate": fig.mismatch_rate,
        "error_rate": fig.error_rate,
        "p99_legacy_ms": fig.p99_legacy_ms,
        "p99_new_ms": fig.p99_new_ms,
        "p99_ratio": fig.p99_ratio,
    }


def check_document(check: Check) -> dict[str, Any]:
    return {"name": check.name, "value": check.value, "limit": check.limit, "passed": check.passed}


def gate_json(document: dict[str, Any]) -> str:
    return orjson.dumps(document).decode()


def revert_target(flips: Sequence[FlipRecord]) -> FlipRecord | None:
    """The change `routes revert` undoes next: the newest recorded change of the route not yet undone.

    The route's history is read as a stack: every flip, promote and rollback pushes a change, every revert pops the
    change it undid (`reverts`; a revert recorded before ids were kept undid the newest one). So each revert goes one
    step further back, and a revert is never itself reverted: after reverting everything there is nothing left.
    """
    stack: list[FlipRecord] = []
    for flip in flips:
        if flip.action != "revert":
            stack.append(flip)
        elif flip.reverts is None:
            if stack:
                stack.pop()
        else:
            stack = [f for f in stack if f.id != flip.reverts]
    return stack[-1] if stack else None


def flip_document(flip: FlipRecord) -> dict[str, Any]:
    """One recorded flip as `routes history --format json` prints it; `gate` parsed back into an object."""
    try:
        gate: Any = orjson.loads(flip.gate) if flip.gate else None
    except orjson.JSONDecodeError:
        gate = flip.gate
    return {
        "id": flip.id,
        "time": flip.time,
        "user": flip.user,
        "route": flip.route_id,
        "action": flip.action,
        "from_mode": flip.from_mode,
        "to_mode": flip.to_mode,
        "from_weight": flip.from_weight,
        "to_weight": flip.to_weight,
        "reason": flip.reason,
        "forced": flip.forced,
        "gate": gate,
        "reverts": flip.reverts,
        "before_text": flip.before_text,
        "after_text": flip.after_text,
    }
