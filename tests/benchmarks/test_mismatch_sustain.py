"""benchmarks.mismatch_sustain, run short: the figures it prints add up (every mirrored request has an outcome, and
the store holds a row for each)."""

from __future__ import annotations

import pytest

from benchmarks.mismatch_sustain import MATCH_ROUTE, MISMATCH_ROUTE, run


@pytest.mark.slow
def test_a_short_sustained_run_accounts_for_every_mirrored_request() -> None:
    """Two seconds at 100 mismatching and 20 matching req/s through a real serve: every request answered, every
    mirrored request of each route has an outcome, the mismatching ones are mismatches (or counted drops), and the
    store holds one row per mirrored request (the 20 warm-up requests of each route included)."""
    result = run(2.0, 100.0, 20.0)
    assert result.load.startswith("sent 240, 200 OK 240, errors 0")
    mismatching, matching = result.mismatching, result.matching
    assert (mismatching.mirrored, matching.mirrored) == (200, 40)
    assert mismatching.unaccounted == matching.unaccounted == 0
    assert set(mismatching.outcomes) <= {"mismatch"} | {f"dropped/{r}" for r in mismatching.dropped}
    assert sum(mismatching.outcomes.values()) == 200
    assert set(matching.outcomes) <= {"match"} | {f"dropped/{r}" for r in matching.dropped}
    assert sum(result.stored[MISMATCH_ROUTE].values()) == 200 + 20
    assert sum(result.stored[MATCH_ROUTE].values()) == 40 + 20
    assert result.rows_lost == 0
    assert set(result.cpu) == {"proxy", "worker"}
