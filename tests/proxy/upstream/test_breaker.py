"""The circuit breaker state machine, driven by explicit clock values."""

from __future__ import annotations

import pytest

from proxy.errors import ErrorKind
from proxy.upstream.breaker import Breaker, BreakerState


def _state(breaker: Breaker) -> BreakerState:
    """Read through a call so mypy does not keep a narrowed literal across state changes."""
    return breaker.state


def _tripped(now: float = 0.0) -> Breaker:
    breaker = Breaker(failure_threshold=3, cooldown=10.0)
    for _ in range(3):
        breaker.record_failure(now)
    return breaker


def test_starts_closed_and_allows() -> None:
    """A new breaker is closed and lets every request through."""
    breaker = Breaker()
    assert _state(breaker) == "closed"
    assert all(breaker.allow(t) for t in range(10))
    assert breaker.gauge == 0.0


def test_opens_after_threshold_consecutive_failures() -> None:
    """N consecutive failures open the breaker; the N-1th does not."""
    breaker = Breaker(failure_threshold=3, cooldown=10.0)
    assert not breaker.record_failure(0.0)
    assert not breaker.record_failure(0.1)
    assert _state(breaker) == "closed"
    assert breaker.record_failure(0.2)
    assert _state(breaker) == "open"
    assert breaker.gauge == 1.0
    assert not breaker.allow(1.0)


def test_success_resets_the_failure_count() -> None:
    """A success between failures means they are no longer consecutive."""
    breaker = Breaker(failure_threshold=3)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    breaker.record_success(0.0)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert _state(breaker) == "closed"


def test_half_open_lets_exactly_one_probe_through() -> None:
    """After the cooldown one probe is allowed and every other request is refused until it reports."""
    breaker = _tripped(now=100.0)
    assert not breaker.allow(109.9)
    assert breaker.allow(110.0)
    assert _state(breaker) == "half_open"
    assert breaker.gauge == 0.5
    assert not breaker.allow(110.1)
    assert not breaker.allow(115.0)


def test_probe_success_closes() -> None:
    """A successful probe closes the breaker and traffic flows again."""
    breaker = _tripped()
    assert breaker.allow(10.0)
    assert breaker.record_success(10.5)
    assert _state(breaker) == "closed"
    assert breaker.allow(10.6)


def test_probe_failure_reopens_for_a_new_cooldown() -> None:
    """A failed probe re-opens the breaker, counting the cooldown from the failure."""
    breaker = _tripped()
    assert breaker.allow(10.0)
    assert breaker.record_failure(11.0)
    assert _state(breaker) == "open"
    assert not breaker.allow(20.9)
    assert breaker.allow(21.0)


def test_lost_probe_is_replaced_after_another_cooldown() -> None:
    """A probe that never reports does not wedge the breaker half-open."""
    breaker = _tripped()
    assert breaker.allow(10.0)
    assert not breaker.allow(19.0)
    assert breaker.allow(20.0)


def test_late_failure_while_open_keeps_cooldown() -> None:
    """A failure reported while already open does not extend the cooldown."""
    breaker = _tripped(now=0.0)
    assert not breaker.record_failure(5.0)
    assert breaker.allow(10.0)


def test_threshold_must_be_positive() -> None:
    """A zero threshold is a programming error."""
    with pytest.raises(ValueError, match="at least 1"):
        Breaker(failure_threshold=0)


@pytest.mark.parametrize("kind", ["pool_timeout", "error", "too_large", "body_timeout", "client_gone", "bad_body"])
def test_record_leaves_the_breaker_alone_for_faults_not_the_upstreams(kind: ErrorKind) -> None:
    """A full pool, a request-side fault or the client's own failure is neither a failure nor a success."""
    breaker = Breaker(failure_threshold=1)
    assert not breaker.record(kind, answered=False, now=0.0)
    assert _state(breaker) == "closed"
    tripped = _tripped()
    assert not tripped.record(kind, answered=False, now=1.0)
    assert _state(tripped) == "open"


@pytest.mark.parametrize("kind", ["connect", "timeout", "reset"])
def test_record_counts_upstream_faults_even_after_a_head(kind: ErrorKind) -> None:
    """connect, timeout and reset are failures, also a reset mid-body after the head arrived."""
    breaker = Breaker(failure_threshold=1)
    assert breaker.record(kind, answered=True, now=0.0)
    assert _state(breaker) == "open"


def test_record_answer_is_a_success() -> None:
    """An upstream that answered (any status, no fault) closes a half-open breaker."""
    breaker = _tripped()
    assert breaker.allow(10.0)
    assert breaker.record(None, answered=True, now=10.5)
    assert _state(breaker) == "closed"
