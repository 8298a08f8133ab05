"""The route-mode rules, each decided here once (pure): which side serves a request, whether a copy of it is
mirrored (or why not), and which route keys each mode allows.

The request handler, the shadow bridge and worker, `explain`, `routes list`, `routes flip` and the config loader all
ask these functions; nothing else decides, so what `explain` says is what the proxy does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from proxy.canary import Side, choose_side, sticky_key
from proxy.config.model import Mirror, Mode, Route
from proxy.methods import SAFE_METHODS

# Why a request on a route that mirrors its side was not copied (stored as the skipped exchange's reason).
SkipReason = Literal["method_not_mirrored", "side_effects_blocked"]
# Those reasons, said of the requests they skipped. Both mean the route's policy keeps such requests from being
# mirrored at all: more traffic of the same kind will never be evidence (other skips, too large or not sampled, are
# not policy).
POLICY_SKIPS: Mapping[str, str] = {
    "method_not_mirrored": "with a method not listed in methods",
    "side_effects_blocked": "with an unsafe method under side_effects: block",
}

# The route keys that apply only under some modes, and those modes. The loader reports a key written under another
# mode; `routes flip` comments such keys out when it moves a route to a mode that does not allow them.
KEY_MODES: Mapping[str, frozenset[Mode]] = {
    "canary": frozenset({"canary"}),
    "shadow": frozenset({"shadow", "canary"}),
    "verify": frozenset({"new"}),
    "fallback": frozenset({"new", "canary"}),
}


def key_allowed(key: str, mode: Mode) -> bool:
    """Whether a route key applies under `mode` (keys not in KEY_MODES apply under every mode)."""
    modes = KEY_MODES.get(key)
    return modes is None or mode in modes


def split_key(route: Route, headers: Mapping[str, str], cookies: Mapping[str, str], client_ip: str) -> str | None:
    """The sticky value a canary route splits this request by; None when it splits at random per request."""
    if route.mode != "canary" or route.canary is None:
        return None
    return sticky_key(route.canary.sticky, headers, cookies, client_ip)


def serving_side(route: Route | None, key: str | None, rand: Callable[[], float] = random.random) -> Side:
    """Which side serves a request by its route's mode (and, for canary, its sticky bucket or a random draw).

    Unrouted requests go to legacy. The circuit breaker of a fallback route may still send a new-side request to
    legacy; that is runtime state, applied by the handler after this choice.
    """
    if route is None:
        return "legacy"
    if route.mode == "new":
        return "new"
    if route.mode == "canary" and route.canary is not None:
        return choose_side(route.id, route.canary, key, rand)
    return "legacy"


def side_upstream(route: Route | None, side: Side, default_legacy: str) -> str:
    """The upstream name that serves `side` of a route (unrouted requests: the default legacy upstream)."""
    if route is None:
        return default_legacy
    return route.upstream if side == "new" else route.legacy


def mirror_options(route: Route | None, served_by: Side) -> Mirror | None:
    """The route's mirror options for requests the given side serves; None when it mirrors none of them.

    shadow: legacy serves, copies go to new. canary with shadow: the legacy-served share is copied. new with verify:
    new serves, copies go to legacy.
    """
    if route is None:
        return None
    if served_by == "legacy":
        return route.shadow if route.mode in ("shadow", "canary") else None
    return route.verify if route.mode == "new" else None


def unmirrored_reason(route: Route) -> str | None:
    """Why a route's config mirrors none of its traffic, so nothing on it can ever be compared, with the fix; None
    when it mirrors some side."""
    if mirror_options(route, "legacy") is not None or mirror_options(route, "new") is not None:
        return None
    if route.mode == "canary":
        return (
            "mode canary without shadow: mirrors nothing, so nothing is compared; fix: add shadow: {} to copy the "
            "legacy-served share to the new side"
        )
    if route.mode == "new":
        return "mode new without verify: nothing is compared against legacy; fix: add verify: {} to check it"
    return (
        "mode legacy mirrors nothing, so nothing is compared; fix: flip it to shadow (not gated: legacy still answers)"
    )


def mirror_target(route: Route | None, served_by: Side) -> str | None:
    """The upstream a copy of a request served by `served_by` goes to, when the route mirrors that side."""
    if route is None or mirror_options(route, served_by) is None:
        return None
    return route.legacy if served_by == "new" else route.upstream


@dataclass(frozen=True, slots=True)
class MirrorDecision:
    """Whether one request is copied to the other side: the options when it is, the reason when it is not."""

    options: Mirror | None  # set when a copy is made (sampling, max_body and timeouts still apply)
    skip: SkipReason | None  # set when the route mirrors this side but not this request
    target: str | None  # the upstream copies of this side go to; None when the route mirrors nothing here


def mirror_decision(route: Route | None, served_by: Side, method: str) -> MirrorDecision:
    """Methods outside the route's `methods` are never copied; methods with side effects (not GET, HEAD, OPTIONS,
    TRACE) only when side_effects is not "block"."""
    opts = mirror_options(route, served_by)
    if opts is None:
        return _NOT_MIRRORING
    skip = _method_skip(opts, method)
    return MirrorDecision(None if skip is not None else opts, skip, mirror_target(route, served_by))


_NOT_MIRRORING = MirrorDecision(None, None, None)


def _method_skip(opts: Mirror, method: str) -> SkipReason | None:
    if method not in opts.methods:
        return "method_not_mirrored"
    if opts.side_effects == "block" and method not in SAFE_METHODS:
        return "side_effects_blocked"
    return None


def mirror_for(route: Route | None, served_by: Side, method: str) -> Mirror | None:
    """The mirror options that apply to this request, or None when no copy is made (`mirror_decision`'s options,
    without building the decision: the request handler asks this for every request)."""
    opts = mirror_options(route, served_by)
    return opts if opts is not None and _method_skip(opts, method) is None else None
