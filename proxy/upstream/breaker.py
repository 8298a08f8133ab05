"""A per-upstream circuit breaker: a pure state machine the handler consults before sending to a new service.

After `failure_threshold` consecutive upstream faults (`proxy.errors.UPSTREAM_FAULTS`: connect, tls, timeout, reset;
never a full pool or a client's fault) the breaker opens: routes with
`fallback: true` go straight to legacy for `cooldown` seconds instead of paying a connect timeout per request.
Then one probe is let through (half-open); its success closes the breaker, its failure re-opens it. Time comes from
the caller (`loop.time()`), so the machine is deterministic and tests need no sleeps.
"""

from __future__ import annotations

from typing import Literal

from proxy.errors import UPSTREAM_FAULTS, ErrorKind

BreakerState = Literal["closed", "open", "half_open"]

FAILURE_THRESHOLD = 5
COOLDOWN = 10.0

# Values of the strangler_breaker_open gauge.
GAUGE_VALUES: dict[BreakerState, float] = {"closed": 0.0, "open": 1.0, "half_open": 0.5}


class Breaker:
    """Consecutive-failure breaker. Every method returns at once; `allow` may move open → half-open."""

    __slots__ = ("_failures", "_opened_at", "_probe_at", "cooldown", "failure_threshold", "state")

    def __init__(self, failure_threshold: int = FAILURE_THRESHOLD, cooldown: float = COOLDOWN) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at = 0.0

    @property
    def gauge(self) -> float:
        return GAUGE_VALUES[self.state]

    def allow(self, now: float) -> bool:
        """True when a request may be sent now. Claims the single half-open probe when the cooldown is over."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            if now - self._opened_at < self.cooldown:
                return False
            self.state = "half_open"
            self._probe_at = now
            return True
        # Half-open with a probe out. A probe that never reports back (its request was cancelled) must not keep
        # the breaker half-open forever: after another cooldown a new probe is allowed.
        if now - self._probe_at >= self.cooldown:
            self._probe_at = now
            return True
        return False

    def record(self, error: ErrorKind | None, *, answered: bool, now: float) -> bool:
        """Feed one forward's outcome: an upstream fault is a failure, an answer (a response head) a success, and
        anything else (a full pool, the client's own fault) leaves the breaker as it is. True when the state
        changed."""
        if error in UPSTREAM_FAULTS:
            return self.record_failure(now)
        if answered:
            return self.record_success(now)
        return False

    def record_success(self, now: float) -> bool:
        """The upstream answered. Returns True when the state changed."""
        self._failures = 0
        if self.state == "closed":
            return False
        self.state = "closed"
        return True

    def record_failure(self, now: float) -> bool:
        """An upstream fault (connect, tls, timeout, reset). Returns True when the state changed."""
        state = self.state
        if state == "half_open":
            self._open(now)
            return True
        if state == "open":
            # A request let through before the breaker opened failed late: already open, keep the cooldown.
            return False
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now)
            return True
        return False

    def _open(self, now: float) -> None:
        self.state = "open"
        self._opened_at = now
        self._failures = 0
