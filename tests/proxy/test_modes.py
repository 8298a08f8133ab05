"""The route-mode rules in `proxy.modes`: serving side, mirror decision and the keys each mode allows."""

from __future__ import annotations

import pytest

from proxy.config.model import Canary, Match, Mirror, Mode, Route, Sticky
from proxy.modes import KEY_MODES, key_allowed, mirror_decision, serving_side, side_upstream, split_key

pytestmark = pytest.mark.unit


def _route(
    mode: Mode, *, canary: Canary | None = None, shadow: Mirror | None = None, verify: Mirror | None = None
) -> Route:
    return Route("r", 0, Match(path="/r"), mode, "legacy", "new", canary=canary, shadow=shadow, verify=verify)


@pytest.mark.parametrize(("mode", "side"), [("legacy", "legacy"), ("shadow", "legacy"), ("new", "new")])
def test_serving_side_by_mode(mode: Mode, side: str) -> None:
    """legacy and shadow are served by legacy, new by new; an unrouted request by legacy."""
    assert serving_side(_route(mode), None) == side
    assert serving_side(None, None) == "legacy"


def test_canary_side_follows_the_sticky_bucket() -> None:
    """A canary at 0% serves legacy and at 100% new; a sticky key always lands on the same side."""
    sticky = Sticky("header", "X-User-Id")
    for weight, side in ((0.0, "legacy"), (100.0, "new")):
        route = _route("canary", canary=Canary(weight=weight, sticky=sticky))
        assert serving_side(route, "u1") == side
    route = _route("canary", canary=Canary(weight=50.0, sticky=sticky))
    key = split_key(route, {"X-User-Id": "u7"}, {}, "")
    assert key == "u7"
    assert len({serving_side(route, key) for _ in range(20)}) == 1
    assert side_upstream(route, "new", "legacy") == route.upstream


def test_mirror_decision_names_the_skip_reason() -> None:
    """A shadow route copies reads to new, skips methods outside `methods`, and blocks writes unless allowed."""
    route = _route("shadow", shadow=Mirror(methods=frozenset({"GET", "POST"})))
    assert mirror_decision(route, "legacy", "GET").target == route.upstream
    assert mirror_decision(route, "legacy", "GET").options is not None
    assert mirror_decision(route, "legacy", "PUT").skip == "method_not_mirrored"
    assert mirror_decision(route, "legacy", "POST").skip == "side_effects_blocked"
    dry = _route("shadow", shadow=Mirror(methods=frozenset({"POST"}), side_effects="dry_run"))
    assert mirror_decision(dry, "legacy", "POST").options is not None
    assert mirror_decision(_route("legacy"), "legacy", "GET").target is None


def test_verify_mirrors_new_served_traffic_to_legacy() -> None:
    """Mode new with verify copies to legacy; mode new without verify mirrors nothing."""
    route = _route("new", verify=Mirror())
    assert mirror_decision(route, "new", "GET").target == route.legacy
    assert mirror_decision(_route("new"), "new", "GET").options is None


def test_keys_allowed_per_mode() -> None:
    """canary only under canary; shadow under shadow and canary; verify under new; fallback where new serves."""
    modes: tuple[Mode, ...] = ("legacy", "shadow", "canary", "new")
    allowed = {key: {m for m in modes if key_allowed(key, m)} for key in KEY_MODES}
    assert allowed == {
        "canary": {"canary"},
        "shadow": {"shadow", "canary"},
        "verify": {"new"},
        "fallback": {"new", "canary"},
    }
    assert key_allowed("compare", "legacy")
