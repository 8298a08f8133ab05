"""reports.replay_changes: before → after of replayed pairs, per route and per field."""

from __future__ import annotations

from reports.replay_changes import FieldChange, RouteChange, summarize
from shadow.store.types import ReplayPair
from shadow.values import Outcome


def pair(before: Outcome | None, after: Outcome, before_groups: set[str], after_groups: set[str]) -> ReplayPair:
    return ReplayPair("r", 1, 2, 0.0, before, frozenset(before_groups), after, frozenset(after_groups))


def test_fields_count_only_pairs_compared_now_and_unknown_originals_count_as_replayed() -> None:
    """A fixed pair, a regression, a candidate error now (says nothing about fields) and a replay whose original
    is gone (no before): all replayed, only compared pairs counted per field."""
    summary = summarize(
        [
            pair("mismatch", "match", {"$.a"}, set()),
            pair("match", "mismatch", set(), {"$.b"}),
            pair("mismatch", "candidate_error", {"$.a"}, set()),
            pair(None, "match", set(), set()),
        ]
    )
    assert summary.routes == (RouteChange("r", 4, 2, 1, 1, 1, 1, 0),)
    assert summary.fields == (FieldChange("r", "$.a", 1, 0), FieldChange("r", "$.b", 0, 1))
    assert (summary.replayed, summary.fixed) == (4, 1)
