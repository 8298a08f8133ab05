"""The readiness verdict and rollout guards shared by report, flip and promote."""

import pytest

from proxy.config.model import Guards, Readiness
from reports.readiness import RouteFigures, guard_checks, readiness_checks, verdict, verdict_reason

R = Readiness(min_compared=100, max_mismatch_rate=0.01, max_error_rate=0.01)


def fig(
    compared: int = 1000, mismatched: int = 0, errors: int = 0, p99: tuple[float, float] | None = None
) -> RouteFigures:
    legacy, new = p99 or (None, None)
    return RouteFigures("r", compared, compared - mismatched, mismatched, 0, errors, legacy, new)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        (fig(), "ready"),
        (fig(compared=99), "needs samples"),
        (fig(mismatched=11), "diverging"),
        (fig(mismatched=10), "ready"),
        (fig(errors=20), "candidate errors"),
        (fig(compared=10, mismatched=5), "diverging"),
        (fig(compared=0), "needs samples"),
    ],
)
def test_verdict_follows_thresholds(figures: RouteFigures, expected: str) -> None:
    """Errors beat divergence, divergence beats a small sample, and a route inside every threshold is ready."""
    assert verdict(figures, R) == expected


def test_readiness_checks_name_each_failed_figure() -> None:
    """The gate prints every figure with its limit and whether it failed."""
    checks = readiness_checks(fig(compared=50, mismatched=5), R)
    failed = {c.name for c in checks if not c.passed}
    assert failed == {"compared", "mismatch_rate"}
    assert "FAILED" in str(next(c for c in checks if c.name == "compared"))


def test_guards_check_only_configured_limits() -> None:
    """Unset guards are skipped; a p99 ratio over the limit fails its guard."""
    g = Guards(max_mismatch_rate=0.05, max_p99_ratio=1.5)
    checks = guard_checks(fig(mismatched=10, p99=(10.0, 20.0)), g)
    assert [c.name for c in checks] == ["mismatch_rate", "p99_ratio"]
    assert [c.passed for c in checks] == [True, False]


def skipped(*reasons: tuple[str, int], compared: int = 0, errors: int = 0) -> RouteFigures:
    return RouteFigures("r", compared, compared, 0, 0, errors, skipped_by_reason=reasons)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        (skipped(("method_not_mirrored", 30)), "not mirrored"),
        (skipped(("side_effects_blocked", 3), ("method_not_mirrored", 2)), "not mirrored"),
        (skipped(("method_not_mirrored", 30), ("request_too_large", 1)), "needs samples"),
        (skipped(("method_not_mirrored", 30), compared=5), "needs samples"),
        (skipped(("method_not_mirrored", 30), errors=5), "candidate errors"),
        (skipped(), "needs samples"),
    ],
)
def test_not_mirrored_only_when_policy_skipped_everything(figures: RouteFigures, expected: str) -> None:
    """`not mirrored` needs nothing compared, no errors, and every skip a policy skip (method or side effects)."""
    assert verdict(figures, R) == expected
    reason = verdict_reason(figures, R)
    assert ("the mirror policy skipped" in reason and "side_effects: dry_run" in reason) == (expected == "not mirrored")


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        (skipped(("response_too_large", 12)), "all 12 requests so far were skipped (12 with an answer too large"),
        (skipped(("response_too_large", 1)), "the 1 request so far was skipped"),
        (skipped(("request_too_large", 4)), "(4 with a request body over shadow.max_body): none could be compared"),
        (
            skipped(("method_not_mirrored", 3), ("response_too_large", 2)),
            "(2 with an answer too large to compare; 3 with a method not listed in methods)",
        ),
        (
            skipped(("response_too_large", 12), ("request_too_large", 1)),
            "(12 with an answer too large to compare; 1 with a request body over shadow.max_body)",
        ),
        (skipped(("response_too_large", 12), ("primary_timeout", 1)), ""),  # another skip: samples may yet come
        (skipped(("method_not_mirrored", 30), ("primary_timeout", 1)), ""),
        (skipped(), ""),
    ],
)
def test_needs_samples_says_why_when_everything_was_too_large(figures: RouteFigures, reason: str) -> None:
    """A route whose every mirrored request was left out for its size (a request body over shadow.max_body, an
    answer too large to compare) still needs samples (nothing was verified), with the reason and the fix; only then."""
    assert verdict(figures, R) == "needs samples"
    said = verdict_reason(figures, R)
    assert (reason in said and "shadow.max_body" in said) if reason else said == ""


def sized(compared: int, *reasons: tuple[str, int]) -> RouteFigures:
    """`compared` matching pairs (enough for R) and the given skips."""
    return RouteFigures("r", compared, compared, 0, 0, 0, skipped_by_reason=reasons)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        (sized(1000), "ready"),
        (sized(1000, ("response_too_large", 10)), "ready"),  # 0.99%: within the default 1%
        (sized(1000, ("response_too_large", 11)), "needs samples"),
        (sized(1000, ("request_too_large", 6), ("response_too_large", 6)), "needs samples"),
        (sized(1000, ("method_not_mirrored", 900), ("queue_full", 900)), "ready"),  # policy and capacity: not size
    ],
)
def test_too_many_left_out_for_their_size_is_not_ready(figures: RouteFigures, expected: str) -> None:
    """Enough matching pairs are not `ready` when more than readiness.max_uncompared_rate of the mirrored requests
    were left out for their size: the largest requests and answers were never compared. The gate's check says so."""
    assert verdict(figures, R) == expected
    [check] = [c for c in readiness_checks(figures, R) if c.name == "uncompared_rate"]
    assert check.passed == (expected == "ready")
    said = verdict_reason(figures, R)
    if expected == "ready":
        assert said == ""
    else:
        assert "were left out of the comparison for their size" in said
        assert "over readiness.max_uncompared_rate 1%" in said


def test_max_uncompared_rate_is_the_routes_own() -> None:
    """A route that tolerates more left out (readiness.max_uncompared_rate: 5%) is ready where the default is not."""
    figures = sized(1000, ("response_too_large", 20))
    assert verdict(figures, R) == "needs samples"
    assert verdict(figures, Readiness(min_compared=1000, max_uncompared_rate=0.05)) == "ready"
