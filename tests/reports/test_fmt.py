"""reports.fmt: how milliseconds, percentages, ratios, weights and modes look in every output."""

from __future__ import annotations

import pytest

from reports.fmt import MISSING, MODE_STYLE, mode_text, ms, per_second, percent, ratio, weight

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, MISSING), (0.0, "0.0"), (4.25, "4.2"), (99.94, "99.9"), (100.0, "100"), (1234.5, "1234")],
)
def test_ms_has_one_decimal_under_100_and_none_above(value: float | None, shown: str) -> None:
    """Milliseconds keep one decimal below 100 ms and drop it from 100 ms up; a missing figure is a dash."""
    assert ms(value) == shown


def test_percent_of_a_fraction_with_fixed_decimals_or_significant_digits() -> None:
    """A fraction 0..1 reads as a percentage: fixed decimals for rates, significant digits for small thresholds."""
    assert (percent(0.5), percent(1.0), percent(0.12345, 2), percent(0.5, 0)) == ("50.0%", "100.0%", "12.35%", "50%")
    assert (percent(0.0005, significant=3), percent(0.001, significant=3)) == ("0.05%", "0.1%")
    assert percent(None) == MISSING


def test_ratio_weight_and_rate() -> None:
    """A latency ratio carries ×, a canary weight % without trailing zeros, a rate one decimal; missing is a dash."""
    assert (ratio(1.25), ratio(None)) == ("1.25×", MISSING)
    assert (weight(20), weight(2.5), weight(100.0)) == ("20%", "2.5%", "100%")
    assert (per_second(3.333), per_second(None)) == ("3.3", MISSING)


def test_mode_text_is_styled_and_a_canary_shows_its_weight() -> None:
    """Each mode has its style; a canary with a weight reads `canary 20%`, other modes ignore the weight."""
    for mode, style in MODE_STYLE.items():
        assert (mode_text(mode).plain, str(mode_text(mode).style)) == (mode, style)
    assert mode_text("canary", 20).plain == "canary 20%"
    assert mode_text("shadow", 20).plain == "shadow"
    assert (mode_text("unknown").plain, str(mode_text("unknown").style)) == ("unknown", "")
