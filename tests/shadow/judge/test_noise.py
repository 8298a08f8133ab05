"""Tests for shadow.judge.noise: real differences versus legacy's own non-determinism."""

from __future__ import annotations

import pytest

from proxy.config.model import Noise
from shadow.judge.noise import (
    FieldVerdict,
    classify_fields,
    is_real,
    looks_volatile,
    structural_change,
    suggest_ignore_rules,
)
from shadow.values import FieldKind

NOW = 1_717_000_000.0  # 2024-05-29, a fixed "now" for epoch checks
OPTS = Noise()  # relative 20 %, absolute 0.03 %


def test_timestamp_differing_in_raw_and_noise_is_noise() -> None:
    """A field that differs between two legacy calls as often as against new is noise, and volatile."""
    verdicts = classify_fields({"$.generated_at": 1000}, {"$.generated_at": 100}, 1000, 100, OPTS)
    verdict = verdicts["$.generated_at"]
    assert verdict == FieldVerdict("$.generated_at", 1000, 100, 1.0, 1.0, real=False, volatile=True)
    assert suggest_ignore_rules(verdicts) == ["$.generated_at"]


def test_renamed_field_only_in_raw_is_real() -> None:
    """A field removed and another added only against new (never legacy vs legacy) are real."""
    verdicts = classify_fields(
        {"$.customer_name": 500, "$.customerName": 500, "$.generated_at": 500},
        {"$.generated_at": 50},
        500,
        50,
        OPTS,
    )
    assert verdicts["$.customer_name"].real
    assert verdicts["$.customerName"].real
    assert not verdicts["$.customer_name"].volatile
    assert not verdicts["$.generated_at"].real
    assert list(verdicts) == sorted(verdicts)
    assert suggest_ignore_rules(verdicts.values()) == ["$.generated_at"]


def test_real_needs_relative_margin_over_noise() -> None:
    """Raw must exceed noise by more than 20 % of the noise rate: 11 % vs 10 % is noise, 13 % vs 10 % real."""
    assert not is_real(0.11, 0.10, OPTS)
    assert not is_real(0.12, 0.10, OPTS)  # exactly 20 % over is not "more than"
    assert is_real(0.13, 0.10, OPTS)


def test_real_needs_absolute_margin() -> None:
    """With no noise, raw must still exceed the absolute share (0.03 %) to be real."""
    assert not is_real(0.0003, 0.0, OPTS)
    assert is_real(0.0004, 0.0, OPTS)
    assert not is_real(0.0, 0.0, OPTS)
    strict = Noise(relative=0.0, absolute=0.0)
    assert is_real(0.0001, 0.0, strict)


def test_rates_and_empty_denominators() -> None:
    """Rates divide by the compared counts; zero counts give zero rates instead of errors."""
    verdicts = classify_fields({"$.a": 3}, {"$.b": 2}, 0, 0, OPTS)
    assert verdicts["$.a"].raw_rate == 0.0
    assert verdicts["$.b"].noise_rate == 0.0
    assert not verdicts["$.a"].real
    no_noise = classify_fields({"$.a": 3}, {}, 1000, 0, OPTS)["$.a"]
    assert no_noise.raw_rate == pytest.approx(0.003)
    assert no_noise.real


def test_noise_only_field_is_not_real() -> None:
    """A field that differs only legacy vs legacy is noise (and volatile)."""
    verdict = classify_fields({}, {"header.x-cache": 5}, 100, 10, OPTS)["header.x-cache"]
    assert not verdict.real
    assert verdict.volatile
    assert suggest_ignore_rules([verdict]) == []  # not a JSON path


def test_volatile_values_flag_fields_without_noise_sampling() -> None:
    """With no noise pairs, sampled timestamp values still mark a field volatile and suggest ignoring it."""
    samples = {
        "$.meta.now": ['"2024-05-29T10:00:00Z"', '"2024-05-29T10:00:01.123+02:00"'],
        "$.items[*].qty": ["1", "2"],
    }
    verdicts = classify_fields({"$.meta.now": 10, "$.items[*].qty": 10}, {}, 10, 0, OPTS, samples, now=NOW)
    assert verdicts["$.meta.now"].real
    assert verdicts["$.meta.now"].volatile
    assert not verdicts["$.items[*].qty"].volatile
    assert suggest_ignore_rules(verdicts) == ["$.meta.now"]


@pytest.mark.parametrize(
    "values",
    [
        ['"2024-05-29T10:00:00Z"', '"2024-05-29 10:00:00.123456+00:00"'],
        ['"Wed, 29 May 2024 10:00:00 GMT"'],
        [str(int(NOW) - 3), str(int(NOW) + 60)],
        [str(int(NOW * 1000))],
        [str(NOW + 0.25)],
        ['"1717000000"'],
        ['"123e4567-e89b-12d3-a456-426614174000"', '"6F9619FF-8B86-D011-B42D-00C04FC964FF"'],
        ['"deadbeefcafebabe0123"'],
        ['"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"'],
        ['"01ARZ3NDEKTSV4RRFFQ69G5FAV"'],
        ['"req_8f3k2j9d0s7a6q1w"', '"trace-4bf92f3577b3"'],
        ['"dGhpcyBpcyBhIG5vbmNlIQ9Xz"'],
        ["2024-05-29T10:00:00Z", "null", '""'],
    ],
)
def test_looks_volatile_recognises_generated_values(values: list[str]) -> None:
    """Timestamps, epochs near now, UUIDs, hex ids, trace ids, ULIDs, request ids and nonces look volatile."""
    assert looks_volatile(values, now=NOW)


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["null"],
        ['"shipped"', '"delivered"'],
        ["1", "2", "42"],
        ["true"],
        ['"2024-05-29"'],  # a date alone is usually data (a birthday), not a clock reading
        [str(int(NOW) - 40 * 365 * 86400)],  # an epoch far from now
        ['"Hello world, this is long text"'],
        ['"ABC-123"'],
        ['"2024-05-29T10:00:00Z"', '"a"', '"b"'],  # mostly not generated
    ],
)
def test_looks_volatile_rejects_ordinary_values(values: list[str]) -> None:
    """Statuses, small numbers, booleans, plain dates, far epochs and words do not look volatile."""
    assert not looks_volatile(values, now=NOW)


def test_removed_volatile_field_is_real_and_not_suggested() -> None:
    """A field new removed is real even when it differs legacy vs legacy as often, and is never an ignore rule."""
    samples = {"$.generated_at": ['"2024-05-29T10:00:00Z"', '"2024-05-29T10:00:01Z"']}
    verdicts = classify_fields(
        {"$.generated_at": 100},
        {"$.generated_at": 100},
        100,
        100,
        OPTS,
        samples,
        now=NOW,
        kinds={"$.generated_at": ["removed"]},
        noise_kinds={"$.generated_at": ["changed"]},
    )
    verdict = verdicts["$.generated_at"]
    assert verdict.real
    assert verdict.volatile  # its values are volatile in legacy: it is still not noise
    assert (verdict.kind, verdict.structure) == ("removed", "removed by new")
    assert not verdict.ignorable
    assert suggest_ignore_rules(verdicts) == []
    assert verdict.withheld == "removed by new (a structural change is never noise)"


@pytest.mark.parametrize(
    ("kinds", "noise_kinds", "structure"),
    [
        (["added"], [], "added by new"),
        (["type_changed"], ["changed"], "type changed by new"),
        (["changed", "removed"], ["changed"], "removed by new in some pairs"),
        (["mixed"], [], "changed in several ways by new"),
        (["changed"], [], None),
        (["order"], [], None),
        (["changed", "order"], [], None),
        (["added", "removed"], ["removed"], None),  # legacy itself omits the field now and then
        (["type_changed"], ["type_changed"], None),
        ([], [], None),  # stored before kinds were: the rates decide
    ],
)
def test_structural_change_by_kind(kinds: list[FieldKind], noise_kinds: list[FieldKind], structure: str | None) -> None:
    """Added, removed and type changed (or several kinds in one pair) are structural unless legacy shows them too."""
    assert structural_change(kinds, noise_kinds) == structure


def test_structural_field_is_real_below_the_margins() -> None:
    """A structural change makes a field real even when its rate alone would not clear the absolute margin."""
    verdict = classify_fields({"$.a": 1}, {}, 100_000, 0, OPTS, kinds={"$.a": ["type_changed"]})["$.a"]
    assert verdict.raw_rate < OPTS.absolute
    assert verdict.real
    unknown = classify_fields({"$.a": 1}, {}, 100_000, 0, OPTS)["$.a"]
    assert not unknown.real
    assert unknown.kind is None
