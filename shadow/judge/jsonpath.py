"""Applying `ignore_fields` and `ignore_order` to a parsed document (pure, thread-safe).

The path grammar (compile_path, BadPath, format_path, group_path, path_matches) is `proxy.jsonpath`'s and is
re-exported here for the comparison's convenience. Every path in a `Compare` compiled when the config loaded (a
`Compare` cannot hold one that does not parse), so the cached `compile_path` calls below never raise.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

from proxy.jsonpath import (
    ANY,
    BadPath,
    PathStep,
    Steps,
    Wildcard,
    compile_path,
    format_path,
    group_path,
    path_matches,
)
from shadow.judge.normalize import canonical_json

__all__ = [
    "ANY",
    "BadPath",
    "PathStep",
    "Steps",
    "Wildcard",
    "apply_ignores",
    "compile_path",
    "format_path",
    "group_path",
    "is_order_insensitive",
    "order_blind",
    "path_matches",
]


def _select(doc: object, steps: Sequence[PathStep]) -> list[object]:
    """The values a (prefix of a) compiled path addresses, walked level by level rather than recursively.

    Exact `type(...) is` checks: parsed JSON holds plain dicts and lists, and this runs for every compared pair.
    """
    nodes = [doc]
    for step in steps:
        if step is ANY:
            found: list[object] = []
            for node in nodes:
                if type(node) is dict:
                    found.extend(node.values())
                elif type(node) is list:
                    found.extend(node)
            nodes = found
        elif type(step) is int:
            nodes = [n[step] for n in nodes if type(n) is list and -len(n) <= step < len(n)]
        else:
            nodes = [n[step] for n in nodes if type(n) is dict and step in n]
        if not nodes:
            break
    return nodes


def _drop(doc: object, steps: Steps) -> None:
    """Remove the addressed fields from `doc` itself."""
    last = steps[-1]
    for node in _select(doc, steps[:-1]):
        if last is ANY:
            if isinstance(node, dict | list):
                node.clear()
        elif isinstance(last, int):
            if isinstance(node, list) and -len(node) <= last < len(node):
                del node[last]
        elif isinstance(node, dict):
            node.pop(last, None)


def apply_ignores(doc: object, ignore_fields: tuple[str, ...], *, in_place: bool = False) -> object:
    """`doc` without the fields named by `ignore_fields` (JSONPath-like).

    A copy by default; `in_place=True` edits `doc` itself, the cheap way for a document the caller just parsed.
    """
    if not ignore_fields:
        return doc
    if not in_place:
        doc = copy.deepcopy(doc)
    for path in ignore_fields:
        _drop(doc, compile_path(path))
    return doc


def _sort_key(value: object) -> tuple[int, object]:
    """A total order over JSON values, the same on both sides; scalars skip the (costlier) canonical dump."""
    if isinstance(value, str):
        return 3, value
    if isinstance(value, bool):
        return 1, int(value)
    if isinstance(value, int | float):
        return 2, value
    if value is None:
        return 0, 0
    return 4, canonical_json(value)


def _sort_list(items: list[object]) -> None:
    """Sort canonically. Arrays of only strings or only numbers sort natively (much cheaper); a sort that was
    not a consistent total order at worst makes two equal arrays look different, never the reverse."""
    try:
        items.sort()
    except TypeError:  # mixed types, objects, null
        items.sort(key=_sort_key)


def _sort_all(node: object) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _sort_all(value)
    elif isinstance(node, list):
        for value in node:
            _sort_all(value)
        _sort_list(node)


@functools.lru_cache(maxsize=256)
def _compiled_deepest_first(paths: tuple[str, ...]) -> tuple[Steps, ...]:
    # Nested arrays are sorted before the arrays that hold them, so the outer sort sees canonical elements.
    return tuple(sorted((compile_path(p) for p in paths), key=len, reverse=True))


def order_blind(doc: object, ignore_order: bool | tuple[str, ...], *, in_place: bool = False) -> object:
    """`doc` with the arrays `ignore_order` names (True: every array) sorted canonically, so their order no
    longer matters. A copy by default; `in_place=True` sorts `doc` itself."""
    if not ignore_order:
        return doc
    if not in_place:
        doc = copy.deepcopy(doc)
    if isinstance(ignore_order, tuple):
        for steps in _compiled_deepest_first(ignore_order):
            for node in _select(doc, steps):
                if isinstance(node, list):
                    _sort_list(node)
    else:
        _sort_all(doc)
    return doc


def is_order_insensitive(path: Sequence[str | int], ignore_order: bool | tuple[str, ...]) -> bool:
    """Whether the array at this concrete path is compared without regard to order."""
    if ignore_order is True:
        return True
    if not ignore_order:
        return False
    return any(path_matches(compile_path(p), path) for p in ignore_order)
