"""Compare a legacy and a new response field by field; the only deepdiff import.

Equal raw bytes, equal decoded bytes, or strictly equal parsed JSON (after ignores) are a match at once. JSON that
differs is walked once by `shadow.judge.jsondiff`, which finds every difference; deepdiff (milliseconds per call,
../shared/PERF-NOTES.md) runs only to pair the elements of an order-blind array that really differs.
Headers and bodies are taken apart (decoded, compared as JSON, text or bytes) by `shadow.judge.bodies`; this module
keeps the verdict, the assembly of the differences and everything deepdiff does.
Pure and thread-safe: the shadow runner calls `compare_responses` from worker threads.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from deepdiff import DeepDiff
from deepdiff.helper import notpresent

from proxy.clock import duration_clock
from proxy.config.model import Compare
from proxy.events import ResponseSnapshot
from proxy.tuples import new_tuple
from shadow.judge.bodies import body_differences, body_problems, decoded_bodies, header_differences, json_equal
from shadow.judge.jsondiff import json_differences
from shadow.judge.jsonpath import (
    PathStep,
    compile_path,
    format_path,
    group_path,
    path_matches,
)
from shadow.judge.normalize import (
    UndecodableBody,
    body_kind,
    canonical_json,
    header_view,
    same_header_views,
)
from shadow.judge.origins import Judged, Origins, noted, unify_pair
from shadow.judge.textdiff import render_value
from shadow.judge.unordered import PAIRING_CUTOFF, matched_elements, unpaired_differences
from shadow.values import Comparison, Difference, DiffKind, Outcome, field_diffs

log = logging.getLogger("strangler.shadow.compare")


class _LibraryRecords(logging.Filter):
    """deepdiff's own log records (a limit it reached, a note on its options, logged again on every call that meets
    them) are about the library, not about the user's traffic: kept only when strangler logs at DEBUG, and then as
    DEBUG records, so they never reach a serve log or a terminal as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not log.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _quiet_library_logs(package: str) -> None:
    """Filter every logger of `package` (a logger's filters see only the records logged on it, not its children's)."""
    quiet = _LibraryRecords()
    names = [n for n in logging.root.manager.loggerDict if n == package or n.startswith(package + ".")]
    for name in {package, f"{package}.diff", *names}:
        logging.getLogger(name).addFilter(quiet)


_quiet_library_logs("deepdiff")

MAX_DIFFERENCES = 100  # concrete differences kept per comparison for storage; the rest are counted in the note
# Removed × added elements of one order-blind array past which deepdiff does not pair them (each pairing compares
# two elements in depth, ~0.1 ms for a small object: 2,500 is about a quarter of a second).
PAIRING_BUDGET = 2_500
DEEPDIFF_MAX_PASSES = 10_000_000  # deepdiff's pairing passes over unordered arrays (its default, set explicitly)

_KINDS: dict[str, DiffKind] = {
    "values_changed": "changed",
    "type_changes": "type_changed",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "repetition_change": "changed",
}


def judge_pair(
    primary: ResponseSnapshot,
    candidate: ResponseSnapshot,
    rules: Compare,
    *,
    candidate_is_new: bool = True,
    origins: Origins | None = None,
) -> tuple[Outcome, str | None, Comparison | None]:
    """The outcome of one mirrored pair; the one rule set shared by live shadowing and `strangler replay`.

    A candidate that failed, or answered 5xx where the primary did not, is a candidate error (its differences are
    still kept when there was an answer); a failed or truncated primary leaves nothing to compare.
    `candidate_is_new`: False when the candidate is the legacy side (verify mode), so values stay oriented
    legacy → new in every record. `origins`: the authorities `compare.same_origin` unifies (shadow.judge.origins).
    """
    quick = judge_pair_quick(primary, candidate, rules, candidate_is_new=candidate_is_new, origins=origins)
    if isinstance(quick, Unjudged):
        return judge_rest(quick, rules)
    return quick


@dataclass(frozen=True, slots=True)
class Unjudged:
    """A pair `judge_pair_quick` could not decide, as it looked at it (known-origin URLs already unified): what
    `judge_rest` finishes, in another thread, without unifying or trying the fast path again."""

    primary: ResponseSnapshot
    candidate: ResponseSnapshot
    candidate_is_new: bool
    origins: Origins | None  # set when unifying changed something: the judgement gets its note


# The skip reason of a pair with a side's body cut at its capture cap (or cut short): what was kept cannot be compared.
# `reports.readiness` reads it too: a route whose every mirrored request is skipped for it gets no samples by waiting.
RESPONSE_TOO_LARGE: Final = "response_too_large"


def judge_pair_quick(
    primary: ResponseSnapshot,
    candidate: ResponseSnapshot,
    rules: Compare,
    *,
    candidate_is_new: bool = True,
    origins: Origins | None = None,
) -> tuple[Outcome, str | None, Comparison | None] | Unjudged:
    """`judge_pair`'s answer when it needs no field-by-field comparison (a failed side, a cut body, a fast-path
    match), else the pair to finish with `judge_rest`. Cheap enough for the shadow runner to call on the event loop
    for small bodies."""
    unified: Origins | None = None
    if origins is not None:
        primary, candidate, changed = unify_pair(primary, candidate, origins)
        unified = origins if changed else None
    if candidate.error is not None:
        return "candidate_error", candidate.error, None
    if primary.error is not None:
        return "skipped", f"primary_{primary.error}", None
    if candidate.status >= 500 and primary.status < 500:
        return Unjudged(primary, candidate, candidate_is_new, unified)
    if not primary.body_complete or not candidate.body_complete:
        return "skipped", RESPONSE_TOO_LARGE, None
    started = duration_clock()
    legacy, new = (primary, candidate) if candidate_is_new else (candidate, primary)
    if is_fast_match(legacy, new, rules):
        # Every field in order (`new_tuple`, proxy.tuples): one per matching pair, without the Python-level __new__.
        match: Comparison = new_tuple(Comparison, ("match", (), duration_clock() - started, None, (), 0, ()))
        judged: Judged = "match", None, match
        return judged if unified is None else noted(judged, unified)
    return Unjudged(primary, candidate, candidate_is_new, unified)


def judge_rest(pair: Unjudged, rules: Compare) -> tuple[Outcome, str | None, Comparison | None]:
    """The field-by-field part of `judge_pair`, for a pair the quick judge left (differences, or a 5xx candidate)."""
    primary, candidate = pair.primary, pair.candidate
    legacy, new = (primary, candidate) if pair.candidate_is_new else (candidate, primary)
    comparison = compare_responses(legacy, new, rules)
    if candidate.status >= 500 and primary.status < 500:
        judged: Judged = "candidate_error", f"status_{candidate.status}", comparison
    else:
        judged = comparison.outcome, None, comparison
    return judged if pair.origins is None else noted(judged, pair.origins)


def compare_responses(legacy: ResponseSnapshot, new: ResponseSnapshot, rules: Compare) -> Comparison:
    """Status, compared headers and body of two responses, as a match or a list of differences."""
    started = duration_clock()
    diffs: list[Difference] = []
    if legacy.status != new.status:
        diffs.append(Difference("status", "status", "changed", str(legacy.status), str(new.status)))
    diffs.extend(header_differences(legacy, new, rules))
    body_diffs, notes, deepdiff_arrays = body_differences(legacy, new, rules, _json_differences)
    diffs.extend(body_diffs)
    diffs.sort(key=_order_key)
    fields, total = field_diffs(diffs), len(diffs)  # exact, before the storage cap
    if len(diffs) > MAX_DIFFERENCES:
        notes.append(f"{len(diffs) - MAX_DIFFERENCES} more differences not listed")
        diffs = stored_differences(diffs, MAX_DIFFERENCES)
    return Comparison(
        outcome="mismatch" if diffs else "match",
        differences=tuple(diffs),
        seconds=duration_clock() - started,
        note="; ".join(notes) if notes else None,
        fields=fields,
        total=total,
        deepdiff_arrays=tuple(deepdiff_arrays),
    )


def stored_differences(diffs: Sequence[Difference], limit: int) -> list[Difference]:
    """At most `limit` of some ordered differences to store: the first of every group, then the rest in order.

    The noise-only split of a route's mismatches reads the stored rows: a real group past the cap (a changed line
    after 150 volatile ones) must be among them, or the pair would be taken for noise only.
    """
    firsts: dict[str, int] = {}
    for i, d in enumerate(diffs):
        firsts.setdefault(d.group, i)
    keep = set(list(firsts.values())[:limit])
    for i in range(len(diffs)):
        if len(keep) >= limit:
            break
        keep.add(i)
    return [d for i, d in enumerate(diffs) if i in keep]


def is_fast_match(legacy: ResponseSnapshot, new: ResponseSnapshot, rules: Compare) -> bool:
    """True when the pair is known to match without deepdiff (False means: run compare_responses to know)."""
    if (
        legacy.headers == new.headers
        and legacy.body == new.body
        and legacy.status == new.status
        and legacy.body is not None
        and legacy.body_complete
        and new.body_complete
    ):
        return True  # the same headers (so the same coding) and the same bytes: the commonest match, at once
    if legacy.status != new.status or not same_header_views(
        header_view(legacy.headers, rules), header_view(new.headers, rules)
    ):
        return False
    if body_problems(legacy, new):
        return False
    try:
        a, b, content_type = decoded_bodies(legacy, new)
    except UndecodableBody:
        return False
    if a is b or a == b:
        return True
    if body_kind(content_type) != "json":
        return False
    try:
        return json_equal(a, b, rules)
    except (ValueError, RecursionError):
        return False


def _json_differences(
    doc_a: object, doc_b: object, rules: Compare, notes: list[str] | None = None, paired: list[str] | None = None
) -> list[Difference]:
    """Every difference, from one structural walk; deepdiff only for order-blind arrays that really differ (their
    paths appended to `paired`)."""
    unordered = functools.partial(
        _unordered_differences,
        rules=rules,
        notes=[] if notes is None else notes,
        paired=[] if paired is None else paired,
    )
    return json_differences(
        doc_a, doc_b, float_tolerance=rules.float_tolerance, ignore_order=rules.ignore_order, unordered=unordered
    )


def _unordered_differences(
    a: list[object], b: list[object], path: Sequence[str | int], *, rules: Compare, notes: list[str], paired: list[str]
) -> list[Difference]:
    """An order-blind array's differences. Elements equal by the JSON rules but written otherwise are one element
    first (`unordered.matched_elements`, judged by this walk); arrays of scalars deepdiff would not pair are then
    judged without it (`unordered.unpaired_differences`), the rest by deepdiff, which pairs each removed element
    with its most similar added one. Pairing compares every removed element with every added one; past
    PAIRING_BUDGET comparisons the elements are reported as removed and added instead (still each counted), so one
    large array cannot hold a worker thread for seconds."""

    nested = functools.partial(_unordered_differences, rules=rules, notes=[], paired=[])  # their notes unused

    def same(x: object, y: object, index: int) -> bool:  # the walk's own judgement of two elements
        at = (*path, index)
        tolerance, ignore_order = rules.float_tolerance, rules.ignore_order
        return not json_differences(x, y, float_tolerance=tolerance, ignore_order=ignore_order, unordered=nested, at=at)

    b = list(matched_elements(a, b, rules.float_tolerance, same))  # equal elements are one, however written
    only_a, only_b = _unmatched(a, b)
    if not only_a and not only_b:
        return []
    pair = only_a * only_b <= PAIRING_BUDGET
    if not pair:
        notes.append(f"{format_path(path)}: {only_a} removed and {only_b} added elements, too many to pair")
    unpaired = unpaired_differences(a, b, path, pair=pair)  # scalars deepdiff would not pair: its report, without it
    if unpaired is not None:
        return unpaired
    paired.append(format_path(path))
    return deepdiff_report(a, b, rules, tuple(path), pair=pair)


def _unmatched(a: list[object], b: list[object]) -> tuple[int, int]:
    """How many elements of each array have no equal (canonical JSON) in the other, counting repeats."""
    left = Counter(map(canonical_json, a))
    right = Counter(map(canonical_json, b))
    return (left - right).total(), (right - left).total()


def _level_is_order_blind(
    patterns: tuple[tuple[PathStep, ...], ...], prefix: tuple[str | int, ...], level: Any
) -> bool:
    concrete = [*prefix, *level.path(output_format="list")]
    return any(path_matches(p, concrete) for p in patterns)


def deepdiff_report(
    doc_a: object, doc_b: object, rules: Compare, prefix: tuple[str | int, ...] = (), *, pair: bool = True
) -> list[Difference]:
    """deepdiff's differences between `doc_a` and `doc_b`, which sit at `prefix` in their documents.

    `pair=False`: elements of unordered arrays are never paired up (reported removed and added)."""
    options: dict[str, Any] = {
        "view": "tree",
        "verbose_level": 2,
        "threshold_to_diff_deeper": 0,  # always name the fields, never "the whole object changed"
        # JSON has one number type (1 == 1.0) but true is not 1: compare int/float as numbers, bool apart.
        "ignore_type_in_groups": [(int, float)],
        "ignore_type_subclasses": True,
        # Limits set here rather than left to the library's defaults: no cap on differences (counting is exact; only
        # storage is capped, by compare_responses), and deepdiff's own bound on pairing passes for unordered arrays.
        "max_diffs": None,
        "max_passes": DEEPDIFF_MAX_PASSES,
    }
    # Pair only when nothing was added or removed (never), or at deepdiff's default share, set here because
    # shadow.judge.unordered reproduces the arrays it would not pair and must use the same share.
    options["cutoff_intersection_for_pairs"] = PAIRING_CUTOFF if pair else 0.0
    if rules.float_tolerance > 0:
        options["math_epsilon"] = rules.float_tolerance
    if rules.ignore_order is True:
        options.update(ignore_order=True, report_repetition=True)
    elif rules.ignore_order:
        patterns = tuple(compile_path(p) for p in rules.ignore_order)
        options.update(
            ignore_order_func=functools.partial(_level_is_order_blind, patterns, prefix), report_repetition=True
        )
    tree = DeepDiff(doc_a, doc_b, **options)
    out = []
    for report, levels in tree.items():
        kind = _KINDS.get(report, "changed")
        for level in levels:
            concrete = format_path([*prefix, *level.path(output_format="list")])
            if report == "repetition_change":
                rep = level.additional["repetition"]
                legacy: str | None = render_value([level.t1] * rep["old_repeat"])
                new: str | None = render_value([level.t2] * rep["new_repeat"])
            else:
                legacy = None if kind == "added" or level.t1 is notpresent else render_value(level.t1)
                new = None if kind == "removed" or level.t2 is notpresent else render_value(level.t2)
            out.append(Difference(concrete, group_path(concrete), kind, legacy, new))
    return out


_DIGITS = re.compile(r"(\d+)")
_SECTION = {"status": 0, "header": 1, "body": 2, "$": 3}


def _order_key(diff: Difference) -> tuple[tuple[int, tuple[str | int, ...]], str, str, str]:
    """Status, then headers, then body; indexes in numeric order ($.a[2] before $.a[10]); at one path, by kind and
    values. Total, so the order (and which rows are kept past the cap) never depends on the order differences were
    found in: deepdiff reports an order-blind array's removed and added values by set iteration, which the
    process's hash seed decides, and the shadow worker and an in-process listener would keep different rows."""
    return _path_order(diff.path), diff.kind, _sortable(diff.legacy), _sortable(diff.new)


def _sortable(value: str | None) -> str:
    return "" if value is None else "=" + value  # None (absent) before every value, the empty string included


@functools.lru_cache(maxsize=4096)
def _path_order(path: str) -> tuple[int, tuple[str | int, ...]]:
    # Cached: a route's answers differ at the same paths pair after pair, and a pair with many differences spent a
    # tenth of its comparison splitting them here.
    section = _SECTION.get(re.split(r"[.:\[]", path, maxsplit=1)[0], 4)
    return section, tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(path)))
