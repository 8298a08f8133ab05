"""The grammar of JSON field paths (`$.items[*].qty`) in compare rules: parsing, formatting, grouping, matching.

It lives below the config so that routes.yaml paths are compiled when the config loads (a path that does not parse
is a config error with its file, line and route) and the comparison only ever sees paths that compiled. Applying
paths to documents is `shadow.judge.jsonpath`'s job. Pure and thread-safe.

Errors raised here: BadPath, when a path does not parse. It is deliberately not a ValueError: code that treats a
ValueError as "this body is not JSON" must never mistake a rule error for a property of the response.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Sequence


class BadPath(Exception):
    """A JSONPath-like field path that does not parse."""


class Wildcard(enum.Enum):
    """`[*]` or `.*`: every element of an array, every value of an object."""

    ANY = "*"


PathStep = str | int | Wildcard
Steps = tuple[PathStep, ...]
ANY = Wildcard.ANY

_STEP = re.compile(
    r"""
      \.(?P<name>[^.\[\]'"]+)                    # .name  or  .*
    | \[\s*(?P<index>-?\d+)\s*\]                 # [3]
    | \[\s*(?P<star>\*)\s*\]                     # [*]
    | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]        # ['weird key']
    | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]        # ["weird key"]
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=1024)
def compile_path(path: str) -> Steps:
    """Parse `$.a.b`, `$.items[*].x`, `$.items[0].x`, `$['weird key']` into steps (cached).

    A missing leading `$` is tolerated (`a.b` means `$.a.b`). Raises BadPath.
    """
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    elif text and text[0] not in ".[":
        text = "." + text
    steps: list[PathStep] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise BadPath(f"cannot parse field path {path!r} at character {pos + len(path) - len(text) + 1}")
        if m["name"] is not None:
            steps.append(ANY if m["name"] == "*" else m["name"])
        elif m["index"] is not None:
            steps.append(int(m["index"]))
        elif m["star"] is not None:
            steps.append(ANY)
        else:
            quoted = m["sq"] if m["sq"] is not None else m["dq"]
            steps.append(_ESCAPE.sub(r"\1", quoted))
        pos = m.end()
    if not steps:
        raise BadPath(f"field path {path!r} addresses the whole document")
    return tuple(steps)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def format_path(steps: Iterable[str | int]) -> str:
    """Steps → `$.items[3]['weird key']` notation (the inverse of compile_path for concrete paths)."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _PLAIN_KEY.match(step):
            parts.append(f".{step}")
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


_INDEX = re.compile(r"\[\d+\]")


def group_path(path: str) -> str:
    """Collapse array indexes so one field is counted once: `$.items[3].qty` → `$.items[*].qty`."""
    return _INDEX.sub("[*]", path)


def path_matches(pattern: Sequence[PathStep], concrete: Sequence[str | int]) -> bool:
    """Whether a concrete path (keys and indexes) is addressed by a compiled pattern."""
    if len(pattern) != len(concrete):
        return False
    for want, got in zip(pattern, concrete, strict=True):
        if want is ANY:
            continue
        if isinstance(want, int) != isinstance(got, int) or want != got:
            return False
    return True
