"""The flip gate and rollout guards: figures read from a real store, and the pure decisions taken on them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from proxy.config.loader import parse_config
from proxy.config.model import Config, Guards, Readiness
from reports.gate import (
    FULL_WEIGHT,
    decide_step,
    default_min_samples,
    evaluate_rollout,
    flip_document,
    flip_gate,
    gate_json,
    guard_window,
    is_forward,
    next_step,
    revert_target,
    route_figures,
)
from reports.readiness import RouteFigures
from shadow.store.database import Store
from shadow.values import Difference, ExchangeRecord, FlipRecord

CONFIG = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
routes:
  - id: orders
    match: {path: "/orders/{id}"}
    mode: canary
    shadow: {}
    readiness: {min_compared: 20, max_mismatch_rate: 5%, max_error_rate: 5%}
    noise: {sample: 0.5}
    canary:
      weight: 5
      steps: [1, 5, 25, 50, 100]
      interval: 10m
      guards: {max_mismatch_rate: 10%, max_error_rate: 10%, max_p99_ratio: 3}
"""
PRICE = Difference("$.price", "$.price", "changed", "1", "2")
STAMP = Difference("$.meta.stamp", "$.meta.stamp", "changed", '"a"', '"b"')


def record(t: float, outcome: str = "match", **changes: object) -> ExchangeRecord:
    base = ExchangeRecord(
        time=t,
        route_id="orders",
        mode="canary",
        pair="candidate",
        method="GET",
        template="/orders/{id}",
        path="/orders/1",
        query="",
        request_id=f"req-{t}",
        served_by="legacy",
        outcome=outcome,  # type: ignore[arg-type]
        reason="status_500" if outcome == "candidate_error" else None,
        legacy_status=200,
        legacy_latency_ms=10.0,
        legacy_size=10,
        new_status=500 if outcome == "candidate_error" else 200,
        new_latency_ms=12.0,
        new_size=10,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def mismatch(t: float, *diffs: Difference, **changes: object) -> ExchangeRecord:
    return record(t, "mismatch", differences=diffs or (PRICE,), **changes)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(CONFIG, tmp_path / "routes.yaml")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "strangler.db") as s:
        yield s


def fig(compared: int, mismatched: int = 0, errors: int = 0, p99: tuple[float, float] = (10.0, 12.0)) -> RouteFigures:
    return RouteFigures("orders", compared, compared - mismatched, mismatched, 0, errors, *p99)


@pytest.mark.parametrize(
    ("before", "after", "forward"),
    [
        (("shadow", None), ("canary", 10.0), True),
        (("shadow", None), ("new", None), True),
        (("legacy", None), ("shadow", None), False),
        (("legacy", None), ("canary", 0.0), False),
        (("canary", 100.0), ("new", None), False),
        (("canary", 10.0), ("canary", 25.0), True),
        (("canary", 25.0), ("canary", 10.0), False),
        (("canary", 25.0), ("canary", None), False),
        (("new", None), ("canary", 50.0), False),
        (("canary", 50.0), ("shadow", None), False),
        (("new", None), ("legacy", None), False),
    ],
)
def test_forward_means_more_for_the_new_side(
    before: tuple[str, float | None], after: tuple[str, float | None], forward: bool
) -> None:
    """A move that has the new side answer more clients (a higher canary weight, mode new) is forward and gated;
    starting to shadow, and every move back, is always allowed."""
    assert is_forward(*before, *after) is forward


def test_next_step_walks_the_steps_and_ends_at_full_weight() -> None:
    """The next weight is the first step above the current one; past the last step the rollout ends at 100%."""
    steps = (1.0, 5.0, 25.0, 50.0)
    assert [next_step(steps, w) for w in (0.0, 1.0, 3.0, 25.0, 50.0)] == [1.0, 5.0, 5.0, 50.0, FULL_WEIGHT]
    assert next_step((), 10.0) == FULL_WEIGHT


def test_guard_window_never_reaches_before_the_last_change() -> None:
    """The guards read the last interval, cut at the route's last recorded change."""
    assert guard_window(None, 600.0, 10_000.0) == 9_400.0
    assert guard_window(9_900.0, 600.0, 10_000.0) == 9_900.0
    assert guard_window(1_000.0, 600.0, 10_000.0) == 9_400.0


def test_min_samples_scale_with_readiness() -> None:
    """The default sample floor is a tenth of readiness.min_compared, never below five."""
    assert default_min_samples(Readiness(min_compared=500)) == 50
    assert default_min_samples(Readiness(min_compared=20)) == 5


GUARDS = Guards(max_mismatch_rate=0.1, max_error_rate=0.1, max_p99_ratio=2.0)


def decide(f: RouteFigures, weight: float = 5.0, *, baked: bool = True, min_samples: int = 10) -> str:
    d = decide_step(f, GUARDS, (1, 5, 25, 100), weight, min_samples=min_samples, window_since=0.0, now=1.0, baked=baked)
    return d.action if d.target is None else f"{d.action} {d.target:g}"


def test_step_decisions() -> None:
    """Too few samples wait; a breached guard rolls back to 0; passing guards promote after a full interval."""
    assert decide(fig(5, mismatched=1)) == "wait"  # one early mismatch is not yet evidence
    assert decide(fig(5, mismatched=1, p99=(10.0, 90.0))) == "wait"  # nor is latency on five samples
    assert decide(fig(5, mismatched=5)) == "rollback 0"  # five of five already breach 10% of any ten
    assert decide(fig(0, errors=2)) == "rollback 0"
    assert decide(fig(50, mismatched=10)) == "rollback 0"
    assert decide(fig(50, errors=50)) == "rollback 0"
    assert decide(fig(0, errors=20)) == "rollback 0"  # a candidate failing every request still trips the guard
    assert decide(fig(50, p99=(10.0, 30.0))) == "rollback 0"
    assert decide(fig(50), baked=False) == "wait"
    assert decide(fig(50)) == "promote 25"
    assert decide(fig(50), weight=25.0) == "complete 100"


def test_rollback_reason_names_the_breached_figure() -> None:
    """A rollback's reason and breached checks say which guard failed with its value and limit."""
    d = decide_step(fig(40, mismatched=20), GUARDS, (5, 25), 5.0, min_samples=10, window_since=0, now=1, baked=True)
    assert [c.name for c in d.breached] == ["mismatch_rate"]
    assert "mismatch_rate = 50% (needs ≤ 10%): FAILED" in d.reason
    doc = d.document()
    assert doc["figures"]["mismatched"] == 20
    assert doc["action"] == "rollback"


def test_figures_come_from_the_store_window(store: Store, config: Config) -> None:
    """Compared, mismatched and candidate errors are counted from the store, only at or after `since`."""
    now = time.time()
    old = [mismatch(now - 3000) for _ in range(5)]
    recent = [record(now - 10) for _ in range(8)] + [mismatch(now - 5), record(now - 5, "candidate_error")]
    store.write_batch(old + recent)
    everything = route_figures(store, config, "orders", now=now)
    assert (everything.compared, everything.mismatched, everything.candidate_errors) == (14, 6, 1)
    window = route_figures(store, config, "orders", since=now - 60, now=now)
    assert (window.compared, window.matched, window.mismatched, window.candidate_errors) == (9, 8, 1, 1)
    assert window.p99_legacy_ms is not None
    assert window.p99_new_ms is not None
    assert route_figures(None, config, "orders").compared == 0


def test_noise_only_mismatches_count_as_matched(store: Store, config: Config) -> None:
    """A mismatch whose only difference is a field legacy also shows against itself is not a real mismatch."""
    now = time.time()
    noise_pairs = [record(now - 5, "mismatch", pair="noise", differences=(STAMP,)) for _ in range(10)]
    noise_pairs += [record(now - 5, pair="noise") for _ in range(10)]
    candidates = [mismatch(now - 5, STAMP) for _ in range(10)] + [record(now - 5) for _ in range(9)]
    candidates.append(mismatch(now - 5, STAMP, PRICE))
    store.write_batch(noise_pairs + candidates)
    f = route_figures(store, config, "orders", now=now)
    assert (f.compared, f.mismatched, f.noise_only, f.matched) == (20, 1, 10, 19)


def test_flip_gate_refuses_forward_moves_until_ready(store: Store, config: Config) -> None:
    """Forward flips need the ready verdict and list every check; backward flips pass whatever the figures."""
    now = time.time()
    store.write_batch([record(now - 5) for _ in range(10)])
    route = config.route("orders")
    assert route is not None
    few = flip_gate(route_figures(store, config, "orders", now=now), route.readiness, forward=True)
    assert not few.passed
    assert few.verdict == "needs samples"
    assert [c.name for c in few.failed] == ["compared"]
    assert flip_gate(few.figures, route.readiness, forward=False).passed
    store.write_batch([record(now - 5) for _ in range(15)])
    ready = flip_gate(route_figures(store, config, "orders", now=now), route.readiness, forward=True)
    assert ready.passed
    assert ready.verdict == "ready"
    doc = orjson.loads(gate_json(ready.document()))
    assert doc["figures"]["compared"] == 25
    assert {c["name"] for c in doc["checks"]} == {"compared", "mismatch_rate", "error_rate", "uncompared_rate"}


def flip(t: float, **changes: object) -> FlipRecord:
    base = FlipRecord(t, "ana", "orders", "canary", "canary", 1.0, 5.0, "", False, "{}", "promote")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_rollout_reads_only_exchanges_since_the_last_change(store: Store, config: Config) -> None:
    """Mismatches before the last promote do not count against the new weight; ones after it do."""
    now = time.time()
    route = config.route("orders")
    assert route is not None
    store.write_batch([mismatch(now - 300) for _ in range(20)])
    store.record_flip(flip(now - 200))
    store.write_batch([record(now - 100) for _ in range(10)])
    waiting = evaluate_rollout(store, config, route, now=now)
    assert waiting.action == "wait"
    assert "interval" in waiting.reason
    assert waiting.figures.compared == 10
    assert waiting.window_since == now - 200
    assert evaluate_rollout(store, config, route, now=now, interval=150).action == "promote"
    store.write_batch([mismatch(now - 50) for _ in range(10)])
    breached = evaluate_rollout(store, config, route, now=now, interval=150)
    assert breached.action == "rollback"
    assert breached.figures.mismatched == 10


def test_a_route_without_a_recorded_flip_uses_the_interval(store: Store, config: Config) -> None:
    """With no recorded change the window is the last interval, and the weight has baked long enough."""
    now = time.time()
    route = config.route("orders")
    assert route is not None
    store.write_batch([mismatch(now - 900) for _ in range(20)] + [record(now - 60) for _ in range(6)])
    decision = evaluate_rollout(store, config, route, now=now)
    assert (decision.action, decision.target, decision.figures.compared) == ("promote", 25.0, 6)
    assert evaluate_rollout(store, config, route, now=now, min_samples=7).action == "wait"


def test_flip_document_parses_the_gate() -> None:
    """History's JSON carries every field of a flip and the gate as an object."""
    doc = flip_document(flip(1.0, gate='{"verdict": "ready"}', forced=True, reason="hotfix"))
    assert doc["gate"] == {"verdict": "ready"}
    assert doc["forced"] is True
    assert doc["reason"] == "hotfix"
    assert doc["from_weight"] == 1.0
    assert doc["action"] == "promote"


def _change(fid: int, action: str = "flip", reverts: int | None = None) -> FlipRecord:
    return FlipRecord(
        float(fid), "ana", "r", "shadow", "canary", None, 10.0, "", False, "{}", action, reverts=reverts, id=fid
    )


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], None),
        ([_change(1)], 1),
        ([_change(1), _change(2)], 2),
        ([_change(1), _change(2), _change(3, "revert", reverts=2)], 1),
        ([_change(1), _change(2), _change(3, "revert", reverts=2), _change(4, "revert", reverts=1)], None),
        ([_change(1), _change(2, "revert", reverts=1), _change(3, "promote")], 3),
        ([_change(1), _change(2, "rollback"), _change(3, "revert")], 1),  # a revert recorded before ids were kept
    ],
)
def test_revert_target_walks_back_one_change_per_revert(history: list[FlipRecord], expected: int | None) -> None:
    """Changes stack up and each revert pops the one it undid, so the next revert goes further back."""
    target = revert_target(history)
    assert (target.id if target is not None else None) == expected
