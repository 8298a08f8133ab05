"""Secret query parameters: the one rule for replacing their values in a query string, used by the shadow store's
redaction (`shadow.redact`, keyed tokens) and by the access log (`proxy.access`, a fixed marker)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_plus


def redact_query(query_string: str, secret: frozenset[str], token: Callable[[str], str]) -> str:
    """The query string with the value of every parameter named in `secret` (lower-case names, matched
    case-insensitively after percent-decoding) replaced by `token(value)`; everything else byte for byte."""
    if not query_string or not secret:
        return query_string
    parts = []
    for part in query_string.split("&"):
        raw_name, sep, raw_value = part.partition("=")
        name = unquote_plus(raw_name) if "%" in raw_name or "+" in raw_name else raw_name  # decode only if needed
        if sep and name.lower() in secret:
            part = f"{raw_name}={token(unquote_plus(raw_value))}"
        parts.append(part)
    return "&".join(parts)
