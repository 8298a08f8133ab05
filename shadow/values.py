"""The plain values that flow through the shadow pipeline into the store, and out of it into reports.

Kept apart from `shadow.judge.compare` (the only deepdiff import) and `shadow.store.database` (with `.migrations`,
the only sqlite-utils imports) so that every module can share them without importing either library.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Outcome = Literal["match", "mismatch", "candidate_error", "skipped", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("match", "mismatch", "candidate_error", "skipped", "dropped")
DiffKind = Literal["changed", "added", "removed", "type_changed", "order"]
# A field's kind over several differences (in one pair, or across pairs in a report): "mixed" when they disagree.
FieldKind = Literal["changed", "added", "removed", "type_changed", "order", "mixed"]
# "candidate": legacy vs new (the real comparison); "noise": legacy vs a second legacy call; "replay": legacy vs new
# for a stored request sent again by `strangler replay` (never evidence for readiness: no new client traffic).
Pair = Literal["candidate", "noise", "replay"]

# Latency histogram: 60 log-spaced upper bounds from 0.1 ms to 60 s (each ~25% above the previous), plus one
# overflow bucket. Percentiles read from it are within one bucket of the exact value. Here, in a compiled module,
# because the proxy buckets every request's latency for the traffic tally; the store's rollups and readers import it
# from here too.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(0.1 * 600_000.0 ** (i / 59) for i in range(60))
LATENCY_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def latency_bucket(ms: float) -> int:
    """The histogram bucket holding `ms`: the first whose upper bound is >= ms; the overflow bucket past 60 s."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


@dataclass(frozen=True, slots=True)
class Difference:
    """One differing field. Values are JSON text, already redacted and truncated."""

    path: str  # concrete: $.items[3].qty ; headers: header.content-type ; status: status ; body: body
    group: str  # array indexes collapsed: $.items[*].qty
    kind: DiffKind
    legacy: str | None  # None when the field is absent on that side
    new: str | None


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One grouped path that differed in a pair, counted exactly: what feeds the rollups and the verdict.

    Every differing group of a pair is here, however many concrete differences it had; only the concrete
    `Difference` rows stored per exchange are capped."""

    group: str  # $.items[*].qty, header.content-type, status, text: "Queries took #ms"
    kind: FieldKind  # the kind of its concrete differences; "mixed" when they were of several kinds
    count: int  # concrete differences in this group


class Comparison(NamedTuple):
    """How a pair compared. A NamedTuple (immutable; `_replace` for a changed copy): one is made for every compared
    pair, where a frozen dataclass's `__init__` (which dataclasses generates and mypyc leaves interpreted) cost about
    1 µs."""

    outcome: Literal["match", "mismatch"]
    differences: tuple[Difference, ...]  # concrete differences, capped (compare.MAX_DIFFERENCES) for storage
    seconds: float  # time the comparison took
    # Why part of the pair was not (fully) compared, e.g. "body not compared: new body incomplete"; None if all was.
    note: str | None = None
    fields: tuple[FieldDiff, ...] = ()  # every differing group, exact (not capped); see `field_diffs`
    total: int = 0  # concrete differences found, before the cap
    # The order-blind arrays (concrete paths) whose differing elements went to deepdiff for pairing (past
    # compare.PAIRING_BUDGET listed unpaired, with a note); () when the structural walk alone judged the pair.
    deepdiff_arrays: tuple[str, ...] = ()


def field_diffs(differences: Iterable[Difference]) -> tuple[FieldDiff, ...]:
    """The groups of some concrete differences with their kind and count, in first-seen order."""
    kinds: dict[str, FieldKind] = {}
    counts: dict[str, int] = {}
    for d in differences:
        seen = kinds.get(d.group)
        if seen is None:
            kinds[d.group], counts[d.group] = d.kind, 1
        else:
            if seen != d.kind:
                kinds[d.group] = "mixed"
            counts[d.group] += 1
    return tuple(FieldDiff(group, kind, counts[group]) for group, kind in kinds.items())


def merge_kinds(kinds: Iterable[FieldKind]) -> FieldKind | None:
    """One kind for a field seen with several (across pairs): the common one, or "mixed"; None for none."""
    found = set(kinds)
    if not found:
        return None
    return found.pop() if len(found) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class StoredBody:
    """A body as kept in the store: capped, redacted, with what it was before capping."""

    data: bytes  # at most store.body_cap bytes (compressed on disk by the store)
    length: int  # the original length
    truncated: bool


class ExchangeRecord(NamedTuple):
    """One mirrored (or skipped / dropped) exchange, ready to write. Everything secret is already redacted.

    A NamedTuple (immutable; `_replace` for a changed copy): one is built for every mirrored exchange, and a frozen
    dataclass pays one `object.__setattr__` per field, 28 of them."""

    time: float  # epoch seconds, UTC
    route_id: str
    mode: str  # the route's mode when it was served
    pair: Pair
    method: str
    template: str  # the route's path template
    path: str  # concrete canonical path
    query: str  # redacted query string
    request_id: str
    served_by: Literal["legacy", "new"]  # who answered the client
    outcome: Outcome
    reason: str | None  # why skipped / dropped / candidate_error; None otherwise
    legacy_status: int | None
    legacy_latency_ms: float | None
    legacy_size: int | None
    new_status: int | None
    new_latency_ms: float | None
    new_size: int | None
    compare_ms: float | None = None
    request_headers: tuple[tuple[str, str], ...] = ()
    legacy_headers: tuple[tuple[str, str], ...] = ()
    new_headers: tuple[tuple[str, str], ...] = ()
    request_body: StoredBody | None = None
    legacy_body: StoredBody | None = None
    new_body: StoredBody | None = None
    differences: tuple[Difference, ...] = ()  # capped for storage; `fields` holds every differing group
    note: str | None = None  # how the pair was compared when that matters (e.g. "body compared as text: ...")
    fields: tuple[FieldDiff, ...] = ()  # every differing group of the pair, exact; empty: derive from differences
    replay_of: int | None = None  # pair "replay": the stored exchange (same file) whose request was sent again


@dataclass(frozen=True, slots=True)
class TrafficCount:
    """Requests served in one minute by (route or unrouted path, side): feeds the report's traffic header.

    Every request is counted here (cheaply, in memory, flushed with the batch), mirrored or not.
    """

    minute: int  # epoch seconds // 60 * 60
    route_id: str  # "" for requests no route matched
    mode: str  # the route's mode, "legacy" for unrouted
    served_by: Literal["legacy", "new"]
    method: str
    path: str  # template for routed requests, concrete canonical path for unrouted ones
    count: int
    errors: int  # 5xx or upstream failure
    latency_ms_sum: float
    # (status, latency bucket, requests): the same requests by status (0: no response) and legacy-or-new latency
    # histogram bucket (`latency_bucket`); summed per hour into `path_rollup` for the inventory.
    histogram: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class FlipRecord:
    """An audited change of a route's mode or canary weight."""

    time: float
    user: str
    route_id: str
    from_mode: str
    to_mode: str
    from_weight: float | None
    to_weight: float | None
    reason: str
    forced: bool
    gate: str  # JSON: the readiness figures the decision was based on
    action: str = "flip"  # flip | promote | rollback | revert
    # The route's entry in routes.yaml before and after, byte for byte (cli.flip.route_text); a revert writes
    # `before_text` back. None on records written before the store kept them.
    before_text: str | None = None
    after_text: str | None = None
    reverts: int | None = None  # on a revert: the id of the change it undid
    id: int | None = field(default=None, compare=False)  # the store's id, set when read back
