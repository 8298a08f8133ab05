"""Header and body differences of a legacy/new pair, without deepdiff: the compared headers, the entity headers, the
bodies decoded from their Content-Encoding, and the body compared as JSON, text or bytes by its media type. JSON
that differs is handed to the differ `shadow.judge.compare` passes in (it stays the only deepdiff import). Pure and
thread-safe, like the comparison that calls it.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model import Compare
from proxy.events import Headers, ResponseSnapshot
from shadow.judge.jsonpath import apply_ignores, order_blind
from shadow.judge.normalize import (
    UndecodableBody,
    body_kind,
    canonical_json,
    decode_content,
    header_view,
    parse_json,
    same_header_value,
)
from shadow.judge.textdiff import binary_differences, render_optional, text_differences
from shadow.values import Difference, DiffKind

# Two JSON documents (ignored fields removed) → their differences, appending notes and the arrays deepdiff paired.
JsonDiffer = Callable[[object, object, Compare, list[str], list[str]], list[Difference]]

# --- headers ----------------------------------------------------------------------------------------------------


def header_differences(legacy: ResponseSnapshot, new: ResponseSnapshot, rules: Compare) -> list[Difference]:
    view_a, view_b = header_view(legacy.headers, rules), header_view(new.headers, rules)
    if view_a == view_b:
        return []
    out = []
    for name in sorted(view_a.keys() | view_b.keys()):
        a, b = view_a.get(name), view_b.get(name)
        if same_header_value(name, a, b):
            continue
        kind: DiffKind = "added" if a is None else "removed" if b is None else "changed"
        path = f"header.{name}"
        out.append(Difference(path, path, kind, render_optional(a), render_optional(b)))
    return out


# --- bodies -----------------------------------------------------------------------------------------------------


def _entity_headers(headers: Headers) -> tuple[str | None, str | None]:
    """Content-Type and Content-Encoding in one pass over the headers."""
    content_type = encoding = None
    for key, value in headers:
        name = key.lower()
        if name == "content-type":
            content_type = content_type or value
        elif name == "content-encoding":
            encoding = encoding or value
    return content_type, encoding


def _same_coding(a: str | None, b: str | None) -> bool:
    return a == b or (a or "identity").strip().lower() == (b or "identity").strip().lower()


def decoded_bodies(legacy: ResponseSnapshot, new: ResponseSnapshot) -> tuple[bytes, bytes, str | None]:
    """Both bodies without their Content-Encoding, and the Content-Type to judge them by (legacy's first).

    Byte-equal bodies with the same coding come back as the same object, undecoded. Raises UndecodableBody.
    """
    type_a, coding_a = _entity_headers(legacy.headers)
    type_b, coding_b = _entity_headers(new.headers)
    raw_a, raw_b = legacy.body or b"", new.body or b""
    if raw_a == raw_b and _same_coding(coding_a, coding_b):
        return raw_a, raw_a, type_a or type_b
    return decode_content(coding_a, raw_a), decode_content(coding_b, raw_b), type_a or type_b


def body_problems(legacy: ResponseSnapshot, new: ResponseSnapshot) -> list[str]:
    problems = []
    for label, snap in (("legacy", legacy), ("new", new)):
        if snap.body is None:
            problems.append(f"{label} body not captured")
        elif not snap.body_complete:
            problems.append(f"{label} body incomplete")
    return problems


def body_differences(
    legacy: ResponseSnapshot, new: ResponseSnapshot, rules: Compare, json_differ: JsonDiffer
) -> tuple[list[Difference], list[str], list[str]]:
    """The bodies' differences, the notes on how they were compared, and the arrays deepdiff paired.

    `json_differ` finds the differences of two JSON documents (shadow.judge.compare's, which pairs order-blind
    arrays with deepdiff), appending to the notes and the paired arrays it is given."""
    problems = body_problems(legacy, new)
    if problems:
        # A cut or missing body would only produce differences that are not there.
        return [], ["body not compared: " + ", ".join(problems)], []
    notes: list[str] = []
    paired: list[str] = []
    try:
        a, b, content_type = decoded_bodies(legacy, new)
    except UndecodableBody as exc:
        notes.append(f"body compared as bytes: {exc}")
        return binary_differences(legacy.body or b"", new.body or b""), notes, paired
    if a is b or a == b:
        return [], [], paired
    kind = body_kind(content_type)
    if kind == "json":
        try:
            equal = json_equal(a, b, rules)
            # Parsed again: the fast check sorted its copies, and reported indexes must be the documents' own.
            diffs = (
                []
                if equal
                else json_differ(compared_document(a, rules), compared_document(b, rules), rules, notes, paired)
            )
        except ValueError:
            notes.append("body compared as text: not valid JSON")
            kind = "text"
        except RecursionError:  # nested deeper than the stack allows (orjson itself parses 1,024 levels)
            notes.append("body compared as text: JSON nested too deeply")
            kind = "text"
        else:
            return diffs, notes, paired
    if kind == "text":
        return text_differences(a, b, content_type, notes, _entity_headers(new.headers)[0]), notes, paired
    return binary_differences(a, b), notes, paired


def compared_document(data: bytes, rules: Compare) -> object:
    """The document without its ignored fields (edited in place: nobody else holds it). Raises ValueError."""
    return apply_ignores(parse_json(data), rules.ignore_fields, in_place=True)


def json_equal(a: bytes, b: bytes, rules: Compare) -> bool:
    """Equal as JSON after ignores (and order-blind where asked). Raises ValueError when either is not JSON.

    Canonical bytes, not `==`: Python says true == 1 and 0 == false, JSON does not. One sorted dump per side
    costs less than `==` plus a check for that.
    """
    doc_a = order_blind(compared_document(a, rules), rules.ignore_order, in_place=True)
    doc_b = order_blind(compared_document(b, rules), rules.ignore_order, in_place=True)
    return canonical_json(doc_a) == canonical_json(doc_b)
