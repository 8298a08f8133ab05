"""Canary buckets, sticky keys and the legacy/new split."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.canary import bucket, choose_side, sticky_key
from proxy.config.model import Canary, Sticky

KEYS = [f"user-{i}" for i in range(2000)]


def test_bucket_is_in_range_and_spread() -> None:
    """Buckets lie in 0..9999 and spread roughly evenly over keys."""
    values = [bucket("orders", k) for k in KEYS]
    assert all(0 <= v < 10_000 for v in values)
    below_half = sum(v < 5000 for v in values)
    assert 900 < below_half < 1100


def test_bucket_is_stable_across_processes() -> None:
    """A fresh interpreter with a different hash seed computes the same buckets."""
    code = "from proxy.canary import bucket; print([bucket('orders', f'user-{i}') for i in range(50)])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
        timeout=30,
    ).stdout
    assert out.strip() == str([bucket("orders", f"user-{i}") for i in range(50)])


def test_bucket_values_are_pinned() -> None:
    """Known inputs keep their buckets, so an upgrade never reshuffles users already on the new side."""
    assert bucket("orders", "user-1") == 555
    assert bucket("checkout", "10.0.0.7") == 9629


def test_bucket_depends_on_route() -> None:
    """The same key lands in independent buckets on different routes."""
    assert [bucket("a", k) for k in KEYS[:50]] != [bucket("b", k) for k in KEYS[:50]]


@pytest.mark.parametrize(
    ("sticky", "expected"),
    [
        (None, None),
        (Sticky("header", "x-user"), "u-1"),
        (Sticky("header", "x-missing"), None),
        (Sticky("header", "x-empty"), None),
        (Sticky("cookie", "session"), "s-9"),
        (Sticky("cookie", "other"), None),
        (Sticky("client_ip"), "10.0.0.7"),
    ],
)
def test_sticky_key(sticky: Sticky | None, expected: str | None) -> None:
    """The sticky key comes from the configured header (any case), cookie or client IP; absent or empty is None."""
    headers = CIMultiDict({"X-User": "u-1", "X-Empty": ""})
    assert sticky_key(sticky, headers, {"session": "s-9"}, "10.0.0.7") == expected


def test_sticky_key_without_client_ip() -> None:
    """An unknown client IP gives no key rather than one shared bucket."""
    assert sticky_key(Sticky("client_ip"), {}, {}, "") is None


@pytest.mark.parametrize("weight", [0.0, 0.5, 10.0, 50.0, 99.9, 100.0])
def test_same_key_same_side(weight: float) -> None:
    """A keyed request always gets the same side at a given weight, however often it is asked."""
    canary = Canary(weight=weight)
    for key in KEYS[:200]:
        sides = {choose_side("orders", canary, key, rand=random.Random(0).random) for _ in range(5)}
        assert len(sides) == 1


@pytest.mark.parametrize(("weight", "side"), [(0.0, "legacy"), (100.0, "new")])
def test_extreme_weights(weight: float, side: str) -> None:
    """Weight 0 always serves legacy and 100 always new, keyed or not."""
    canary = Canary(weight=weight)
    assert {choose_side("r", canary, k) for k in [*KEYS[:500], None]} == {side}
    assert {choose_side("r", canary, None, rand=lambda: 0.0) for _ in range(3)} == {side}
    assert {choose_side("r", canary, None, rand=lambda: 0.999999) for _ in range(3)} == {side}


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 1.0), (0.5, 1.0), (1.0, 5.0), (5.0, 25.0), (25.0, 50.0), (50.0, 100.0)]
)
def test_weights_are_monotonic(low: float, high: float) -> None:
    """Raising the weight only moves users to new; lowering it only moves them back to legacy."""
    at_low = {k for k in KEYS if choose_side("orders", Canary(weight=low), k) == "new"}
    at_high = {k for k in KEYS if choose_side("orders", Canary(weight=high), k) == "new"}
    assert at_low <= at_high
    assert abs(len(at_high) / len(KEYS) - high / 100) < 0.05


def test_fractional_weight_uses_bucket_threshold() -> None:
    """A 0.5 % weight sends exactly the keys whose bucket is below 50."""
    canary = Canary(weight=0.5)
    for key in KEYS:
        assert (choose_side("orders", canary, key) == "new") is (bucket("orders", key) < 50)


@pytest.mark.parametrize("weight", [1.0, 10.0, 50.0, 90.0])
def test_random_fallback_share(weight: float) -> None:
    """Without a key, a seeded random draw sends about weight percent of requests to new."""
    rand = random.Random(42).random
    n = 20_000
    share = sum(choose_side("orders", Canary(weight=weight), None, rand=rand) == "new" for _ in range(n)) / n
    assert abs(share - weight / 100) < 0.01
