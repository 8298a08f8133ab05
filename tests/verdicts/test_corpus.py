"""The labelled verdict corpus: every scenario in scenarios.py, run through the real proxy and shadow pipeline,
gives its labelled verdict (and the reason beside it), compared count and differing fields (with kinds) in
`strangler report --format json`.

Each scenario runs once (cached for the session); four tests read its report: the verdict, its reason, the fields,
the kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.verdicts.harness import observe
from tests.verdicts.scenarios import KNOWN_WRONG, SCENARIOS, Aspect, Scenario

Observe = Callable[[Scenario], dict[str, Any]]


@pytest.fixture(scope="session")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Observe:
    """Each scenario's report entry, run on first use in its own folder and store, then reused."""
    cache: dict[str, dict[str, Any]] = {}

    def get(scenario: Scenario) -> dict[str, Any]:
        if scenario.name not in cache:
            cache[scenario.name] = observe(scenario, tmp_path_factory.mktemp(scenario.name))
        return cache[scenario.name]

    return get


def cases(aspect: Aspect) -> list[Any]:
    """One param per scenario, xfail (strict, assertion failures only) where KNOWN_WRONG lists it."""
    out = []
    for s in SCENARIOS:
        reason = KNOWN_WRONG.get((s.name, aspect))
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
        out.append(pytest.param(s, id=s.name, marks=marks))
    return out


@pytest.mark.parametrize("scenario", cases("verdict"))
def test_verdict_and_compared_count(scenario: Scenario, observed: Observe) -> None:
    """The route gets its labelled verdict, and every mirrored client request (only those) is counted compared."""
    route = observed(scenario)
    assert (route["verdict"], route["compared"]) == (scenario.verdict, scenario.compared)


@pytest.mark.parametrize("scenario", cases("fields"))
def test_differing_fields(scenario: Scenario, observed: Observe) -> None:
    """The report lists exactly the labelled field groups, real and noise apart, each counted in every pair."""
    route = observed(scenario)
    fields = route["fields"]
    real = {f["path"] for f in fields if not f["noise"]}
    noise = {f["path"] for f in fields if f["noise"]}
    assert (real, noise) == (set(scenario.real), set(scenario.noise))
    assert route["field_groups"] == len(fields)
    assert {f["path"]: f["count"] for f in fields} == {f["path"]: scenario.compared for f in fields}


@pytest.mark.parametrize("scenario", cases("kinds"))
def test_field_kinds(scenario: Scenario, observed: Observe) -> None:
    """Each differing field group carries its kind (added, removed, changed, type_changed, order or mixed)."""
    route = observed(scenario)
    assert {f["path"]: f.get("kind") for f in route["fields"]} == {**scenario.real, **scenario.noise}


@pytest.mark.parametrize("scenario", cases("reason"))
def test_verdict_reason(scenario: Scenario, observed: Observe) -> None:
    """The reason printed beside the verdict holds the labelled phrase; a route whose verdict needs none has none."""
    route = observed(scenario)
    if scenario.reason:
        assert scenario.reason in (route["verdict_reason"] or ""), route["verdict_reason"]
    else:
        assert route["verdict_reason"] is None
