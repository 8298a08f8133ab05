"""Parse the human units routes.yaml speaks: durations ("250ms"), sizes ("64KiB") and rates ("0.1%").

Each parser accepts the plain number form too, so generated configs can stay numeric, and rejects anything else
with a `BadValue` that quotes the value and lists the accepted forms.
"""

from __future__ import annotations

import math
import os
import re

DURATION_FORMS = "a number of seconds, or 250ms, 2s, 10m, 1h, 7d"
SIZE_FORMS = "a number of bytes, or 512B, 10KB, 64KiB, 1MiB, 1GiB (KB=1000, KiB=1024)"
RATE_FORMS = "a fraction from 0 to 1 (0.001), or a percentage ('0.1%')"
WORKERS_FORMS = "a whole number from 1, or auto (one per CPU core)"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z%]*)\s*$")


class BadValue(ValueError):
    """A value that does not parse; `problem` says what is wrong, `hint` what would be accepted."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{problem} ({hint})" if hint else problem)
        self.problem = problem
        self.hint = hint


def _split(value: str) -> tuple[float, str] | None:
    found = _NUMBER_WITH_UNIT.match(value)
    if found is None:
        return None
    return float(found.group(1)), found.group(2)


def _plain_number(value: object) -> float | None:
    # bool is an int subclass, but `timeout: yes` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_duration(value: object) -> float:
    """Seconds from "250ms", "2s", "10m", "1h", "7d" or a bare number of seconds (not negative)."""
    number = _plain_number(value)
    if number is None and isinstance(value, str):
        parts = _split(value)
        if parts is not None and parts[1] in ("", *_DURATION_UNITS):
            number = parts[0] * _DURATION_UNITS.get(parts[1], 1.0)
    if number is None or not math.isfinite(number) or number < 0:
        raise BadValue(f"invalid duration {value!r}", f"accepted: {DURATION_FORMS}")
    return number


def parse_size(value: object) -> int:
    """Bytes from "512", "10KB" (1000), "64KiB" (1024), "1MiB", "1GiB" or a bare whole number of bytes."""
    number = _plain_number(value)
    if number is None and isinstance(value, str):
        parts = _split(value)
        if parts is not None and parts[1].lower() in ("", *_SIZE_UNITS):
            number = parts[0] * _SIZE_UNITS.get(parts[1].lower(), 1)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        raise BadValue(f"invalid size {value!r}", f"accepted: {SIZE_FORMS}")
    return int(number)


def parse_rate(value: object) -> float:
    """A fraction in 0..1 from 0.001 or "0.1%"; 5 is refused rather than guessed to mean 5%."""
    number = _plain_number(value)
    if number is None and isinstance(value, str):
        parts = _split(value)
        if parts is not None and parts[1] in ("", "%"):
            number = parts[0] / 100 if parts[1] == "%" else parts[0]
    if number is None or not math.isfinite(number) or not 0 <= number <= 1:
        hint = f"accepted: {RATE_FORMS}"
        if number is not None and 1 < number <= 100:
            hint = f"did you mean '{value}%'? {hint}"
        raise BadValue(f"invalid rate {value!r}", hint)
    return number


def parse_workers(value: object) -> int | str:
    """A proxy worker count as written: a whole number from 1, or "auto" (kept; `workers_for` resolves it)."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadValue(f"invalid worker count {value!r}", f"accepted: {WORKERS_FORMS}")
    return value


def workers_for(value: int | str) -> int:
    """How many proxy worker processes a parsed `workers` value means: "auto" is the number of CPU cores."""
    return (os.cpu_count() or 1) if value == "auto" else int(value)
