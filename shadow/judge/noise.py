"""Tell real differences from non-determinism (legacy vs legacy), Diffy-style; pure.

For every grouped field path, the rate at which legacy and new differ (raw) is set against the rate at which two
calls to legacy differ (noise). A field is REAL when raw exceeds noise by both a relative and an absolute margin
(`proxy.config.model.Noise`), or when new changed its structure (added, removed or changed the type of the field): a
structural change is never noise, however volatile legacy's values of the field are. Everything else is noise.
Values that look like timestamps, UUIDs or nonces are flagged volatile, and their paths are offered as
`compare.ignore_fields` rules, unless the field's structure changed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import orjson

from proxy.config.model import Noise
from shadow.values import FieldKind, merge_kinds

# A field counts as volatile when at least this share of its sampled values look generated.
VOLATILE_SHARE = 0.8
# Epoch numbers are timestamps only when they are within this many seconds of now.
EPOCH_WINDOW = 10 * 365 * 86400.0


# Kinds that change a document's structure: a field that appears, disappears or changes its type. A group's
# differences of several kinds in one pair ("mixed") count too: they almost always include one of these.
STRUCTURAL_KINDS: frozenset[FieldKind] = frozenset({"added", "removed", "type_changed", "mixed"})
_KIND_WORDS: dict[FieldKind, str] = {
    "added": "added",
    "removed": "removed",
    "type_changed": "type changed",
    "mixed": "changed in several ways",
}
NEVER_NOISE = "a structural change is never noise"


@dataclass(frozen=True, slots=True)
class FieldVerdict:
    group: str  # grouped path: $.items[*].updated_at, header.content-type, status, body
    raw: int  # differing legacy↔new pairs
    noise: int  # differing legacy↔legacy pairs
    raw_rate: float  # raw / compared
    noise_rate: float  # noise / noise_compared
    real: bool  # a difference the new service introduced: raw clears noise by both margins, or `structure`
    volatile: bool  # values look generated (timestamps, ids), or legacy itself differs here about as often
    kind: FieldKind | None = None  # the kind of the legacy↔new differences (shadow.values.merge_kinds); None: unknown
    structure: str | None = None  # the structural change new made, e.g. "removed by new"; None when there is none

    @property
    def ignorable(self) -> bool:
        """Worth a `compare.ignore_fields` rule: volatile, a JSON path (headers, status and text bodies are not
        addressed by ignore_fields), and no structural change (ignoring one would hide a breaking change)."""
        return self.volatile and self.structure is None and self.group.startswith("$")

    @property
    def withheld(self) -> str | None:
        """Why a volatile JSON field is not offered as an ignore rule, e.g. "removed by new (a structural change
        is never noise)"; None when nothing is withheld."""
        if self.structure is None or not self.volatile or not self.group.startswith("$"):
            return None
        return f"{self.structure} ({NEVER_NOISE})"


def is_real(raw_rate: float, noise_rate: float, opts: Noise) -> bool:
    """Raw beats noise by more than `relative` × noise AND by more than `absolute` (both strict)."""
    excess = raw_rate - noise_rate
    return excess > opts.relative * noise_rate and excess > opts.absolute


def structural_change(kinds: Collection[FieldKind], noise_kinds: Collection[FieldKind] = ()) -> str | None:
    """The structural change new made to a field, from the kinds of its legacy↔new pairs (one per pair), e.g.
    "removed by new" or "removed by new in some pairs"; None when there is none.

    A kind that legacy also shows against itself (`noise_kinds`: an optional field present in one legacy answer
    and not the next, a list whose length varies) is legacy's own variation, not a change by new; for presence,
    added and removed are one: legacy omitting a field sometimes explains new adding or removing it.
    """

    def family(kind: FieldKind) -> str:
        return "presence" if kind in ("added", "removed") else kind

    legacy_own = {family(k) for k in noise_kinds}
    found = sorted({k for k in kinds if k in STRUCTURAL_KINDS and family(k) not in legacy_own})
    if not found:
        return None
    text = " or ".join(_KIND_WORDS[k] for k in found) + " by new"
    return text + " in some pairs" if set(kinds) - set(found) else text


def classify_fields(
    raw: Mapping[str, int],
    noise: Mapping[str, int],
    compared: int,
    noise_compared: int,
    opts: Noise,
    samples: Mapping[str, Iterable[str]] | None = None,
    now: float | None = None,
    kinds: Mapping[str, Collection[FieldKind]] | None = None,
    noise_kinds: Mapping[str, Collection[FieldKind]] | None = None,
) -> dict[str, FieldVerdict]:
    """A verdict for every group seen in either pair kind, keyed and ordered by group.

    `compared` and `noise_compared` are the numbers of candidate and noise pairs compared on the route; with no
    noise pairs, noise_rate is 0 and every field above the absolute margin is real. `samples` (optional) holds
    difference values seen per group, for `looks_volatile`. `kinds` and `noise_kinds` (optional) hold the kinds
    the group's candidate and noise pairs had (one per pair, see `shadow.values.FieldDiff.kind`): a structural
    change by new (`structural_change`) makes a field real whatever the rates; a group without kinds (stored
    before kinds were) is judged by the rates alone.
    """
    verdicts = {}
    for group in sorted(raw.keys() | noise.keys()):
        n_raw, n_noise = raw.get(group, 0), noise.get(group, 0)
        raw_rate = n_raw / compared if compared > 0 else 0.0
        noise_rate = n_noise / noise_compared if noise_compared > 0 else 0.0
        above_noise = is_real(raw_rate, noise_rate, opts)
        seen = kinds.get(group, ()) if kinds is not None and n_raw > 0 else ()
        structure = structural_change(seen, noise_kinds.get(group, ()) if noise_kinds is not None else ())
        sampled = samples.get(group) if samples is not None else None
        volatile = (n_noise > 0 and not above_noise) or (sampled is not None and looks_volatile(sampled, now))
        verdicts[group] = FieldVerdict(
            group,
            n_raw,
            n_noise,
            raw_rate,
            noise_rate,
            real=above_noise or structure is not None,
            volatile=volatile,
            kind=merge_kinds(seen),
            structure=structure,
        )
    return verdicts


def suggest_ignore_rules(verdicts: Mapping[str, FieldVerdict] | Iterable[FieldVerdict]) -> list[str]:
    """JSON field groups worth adding to `compare.ignore_fields` (`FieldVerdict.ignorable`), sorted."""
    items = verdicts.values() if isinstance(verdicts, Mapping) else verdicts
    return sorted({v.group for v in items if v.ignorable})


_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?\Z", re.IGNORECASE
)
_HTTP_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\Z")
_UUID = re.compile(r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?\Z", re.IGNORECASE)
_HEX = re.compile(r"(?:0x)?[0-9a-f]{16,}\Z", re.IGNORECASE)
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z", re.IGNORECASE)
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}\Z")
# req_8f3k2j9d0s7a6q1w, trace-4bf92f3577b34da6: a short prefix, a separator, a long token with digits.
_PREFIXED_ID = re.compile(r"[A-Za-z]{1,16}[-_:.](?=[A-Za-z0-9]*\d)[A-Za-z0-9]{12,}\Z")
# Base64 / base64url nonces: long, no spaces, mixed case and digits.
_NONCE = re.compile(r"(?=[^ ]*\d)(?=[^ ]*[a-z])(?=[^ ]*[A-Z])[A-Za-z0-9+/_-]{20,}={0,2}\Z")
_TEXT_PATTERNS = (_ISO_DATETIME, _HTTP_DATE, _UUID, _HEX, _TRACEPARENT, _ULID, _PREFIXED_ID, _NONCE)


def _plain(value: str) -> object:
    """A difference value (JSON text) as the value it stands for; other text as itself."""
    text = value.strip()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _looks_generated(value: object, now: float) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        # Epoch seconds, milliseconds or microseconds close to now.
        return any(abs(value / scale - now) < EPOCH_WINDOW for scale in (1, 1e3, 1e6))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and len(text) >= 9:
            return _looks_generated(int(text), now)
        return any(p.match(text) for p in _TEXT_PATTERNS)
    return False


def looks_volatile(values: Iterable[str], now: float | None = None) -> bool:
    """Whether the values (JSON text or plain) look generated per call: ISO 8601 / HTTP timestamps, epoch
    seconds or milliseconds near `now`, UUIDs, ULIDs, hex ids of 16+ digits, prefixed request ids, nonces.

    Absent and null values are skipped; at least VOLATILE_SHARE of the rest must look generated.
    """
    now = time.time() if now is None else now
    seen = hits = 0
    for value in values:
        plain = _plain(value)
        if plain is None or plain == "":
            continue
        seen += 1
        hits += _looks_generated(plain, now)
    return seen > 0 and hits >= VOLATILE_SHARE * seen
