"""Redact secrets before anything reaches the disk.

A secret becomes `<redacted:` + the first 10 hex digits of HMAC-SHA256(key, secret) + `>`: the same secret always
gives the same token (so "legacy and new sent the same token" stays visible), and without the key no token leads
back to its secret. The key lives next to the database (`<db>.key`, mode 0600) or in STRANGLER_REDACT_KEY (hex).

`shadow.records` applies a Redactor to headers, query strings, bodies, difference values and the line signatures
that group text differences before they are stored.
Bodies must be given decoded (see `shadow.judge.normalize.decode_body`): compressed bytes are returned unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from proxy.config.model import Redact
from proxy.query_redact import redact_query
from shadow.judge.jsonpath import BadPath, compile_path
from shadow.judge.normalize import body_kind, media_type
from shadow.judge.textlines import SIGNATURE_PREFIX
from shadow.values import Difference, FieldDiff, merge_kinds

KEY_ENV = "STRANGLER_REDACT_KEY"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
TOKEN_PREFIX = "<redacted:"

_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
# Query-parameter names whose values are redacted wherever they appear in a stored body or difference (an echoed
# URL, a redirect link), whatever redact.query says: redact.query adds names to these, never removes them.
BUILTIN_SECRET_PARAMETERS = Redact().query
_FORM = "application/x-www-form-urlencoded"


def key_path_for(db_path: Path) -> Path:
    """Where the redaction key of this database lives: `strangler.db` → `strangler.db.key`."""
    return db_path.with_name(db_path.name + ".key")


def load_or_create_key(path: Path) -> bytes:
    """The redaction key: STRANGLER_REDACT_KEY (hex) when set, else the key file at `path`, created (32 random
    bytes, hex, mode 0600) on first use and reused after. Raises ValueError for a malformed key."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return _parse_key(env, KEY_ENV)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    # Written whole to a private file (0o600: nobody else may read it) and then linked into place: the key file
    # appears complete or not at all, and a link never replaces a key another process (a proxy worker starting
    # at the same moment) just made; that one's key is used instead.
    partial = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
        os.link(partial, path)
    except FileExistsError:
        return _read_key(path)
    except OSError:  # a file system without hard links: create it in place, as exclusively as it allows
        return _create_in_place(path, key)
    finally:
        partial.unlink(missing_ok=True)
    return key


def _create_in_place(path: Path, key: bytes) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return key


def _read_key(path: Path) -> bytes:
    return _parse_key(path.read_text(encoding="ascii").strip(), str(path))


def _parse_key(text: str, source: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{source}: redaction key is not hex") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{source}: redaction key must be at least {MIN_KEY_BYTES} bytes ({MIN_KEY_BYTES * 2} hex)")
    return key


@dataclass(frozen=True, slots=True)
class Redactor:
    """Replaces secret values by keyed tokens; immutable and thread-safe."""

    key: bytes = field(repr=False)
    rules: Redact
    _headers: frozenset[str] = field(init=False, repr=False)
    _fields: frozenset[str] = field(init=False, repr=False)
    _query: frozenset[str] = field(init=False, repr=False)
    _text_patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False)
    _in_text: re.Pattern[str] | None = field(init=False, repr=False)  # `name=value` of secret parameters
    # The secret field names as quoted JSON keys (b'"password"'), for `_holds_no_secret`; None: a name is not ASCII.
    _field_needles: tuple[bytes, ...] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"redaction key must be at least {MIN_KEY_BYTES} bytes")
        fields = frozenset(f.lower() for f in self.rules.fields)
        query = frozenset(q.lower() for q in self.rules.query)
        object.__setattr__(self, "_headers", frozenset(h.lower() for h in self.rules.headers))
        object.__setattr__(self, "_fields", fields)
        ascii_names = all(f.isascii() for f in fields)
        needles = tuple(b'"' + f.encode() + b'"' for f in fields) if ascii_names else None
        object.__setattr__(self, "_field_needles", needles)
        object.__setattr__(self, "_query", query)
        in_text = query | BUILTIN_SECRET_PARAMETERS
        object.__setattr__(self, "_text_patterns", _text_patterns(fields, in_text))
        object.__setattr__(self, "_in_text", _parameter_pattern(in_text))

    def token(self, secret: str) -> str:
        """The stand-in for one secret value."""
        digest = hmac.new(self.key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{TOKEN_PREFIX}{digest[:10]}>"

    # --- headers and query strings ------------------------------------------------------------------------------

    def header_value(self, name: str, value: str) -> str:
        """The value to store for header `name`: cookies keep their names, auth keeps its scheme."""
        lname = name.lower()
        if lname not in self._headers:
            return value
        if lname == "cookie":
            return "; ".join(self._cookie_pair(part.strip()) for part in value.split(";"))
        if lname == "set-cookie":
            pair, sep, attributes = value.partition(";")
            return self._cookie_pair(pair.strip()) + sep + attributes
        if lname in _AUTH_HEADERS:
            scheme, sep, credentials = value.partition(" ")
            if sep and credentials:
                return f"{scheme} {self.token(credentials.strip())}"
        return self.token(value)

    def _cookie_pair(self, pair: str) -> str:
        name, sep, value = pair.partition("=")
        return f"{name}={self.token(value)}" if sep else pair

    def headers(self, headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """All headers, secret values replaced; names, order and case kept."""
        pairs = headers if isinstance(headers, tuple) else tuple(headers)
        secret = self._headers
        for name, _ in pairs:
            if name.lower() in secret:
                return tuple((name, self.header_value(name, value)) for name, value in pairs)
        return pairs  # most header sets hold no secret: no copy

    def query(self, query_string: str) -> str:
        """The query string with the values of secret parameters replaced; everything else byte for byte."""
        return redact_query(query_string, self._query, self.token)

    # --- bodies -------------------------------------------------------------------------------------------------

    def json_body(self, data: bytes) -> bytes:
        """A JSON body with the values of secret keys (any depth, case-insensitive) and of secret query parameters
        inside its strings (`...?token=abc`) replaced; anything that is not JSON, or holds no secret, is returned
        unchanged."""
        if (not self._fields and self._in_text is None) or self._holds_no_secret(data):
            return data
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        redacted = self._redact_doc(doc)
        return data if redacted is doc else orjson.dumps(redacted)

    def _holds_no_secret(self, data: bytes) -> bool:
        """True when the JSON's bytes alone show there is nothing to redact: ASCII without a backslash (so every key
        is its bytes, no escape can spell a name or an '='), no secret field name as a quoted key in any case, and
        no '=' for a secret parameter's `name=value`. Most bodies pass, and are then neither parsed nor walked (the
        walk costs more than comparing the pair). False means only: look properly."""
        needles = self._field_needles
        if needles is None or not data.isascii() or b"\\" in data:
            return False
        if self._in_text is not None and b"=" in data:
            return False
        lowered = data.lower()
        return not any(needle in lowered for needle in needles)

    def form_body(self, data: bytes) -> bytes:
        """An application/x-www-form-urlencoded body, redacted like a query string (by `query` names)."""
        text = data.decode("utf-8", "surrogateescape")
        return self.query(text).encode("utf-8", "surrogateescape")

    def text_body(self, data: bytes) -> bytes:
        """A text body (HTML, plain, XML) with the values of secret query parameters replaced where they appear as
        `name=value` (echoed URLs, links); everything else byte for byte."""
        if self._in_text is None:
            return data
        text = data.decode("utf-8", "surrogateescape")
        clean = self._in_text.sub(self._replace_match, text)
        return data if clean == text else clean.encode("utf-8", "surrogateescape")

    def body(self, content_type: str | None, data: bytes) -> bytes:
        """A (decoded) body redacted by its kind: JSON fields and parameters in its strings, form fields, secret
        parameters in text; binary bodies unchanged."""
        if media_type(content_type) == _FORM:
            return self.form_body(data)
        kind = body_kind(content_type)
        if kind == "json":
            return self.json_body(data)
        if kind == "text":
            return self.text_body(data)
        return data

    def _redact_doc(self, node: object) -> object:
        """`node` with secret keys' values tokenised; the same object when nothing changed."""
        if isinstance(node, dict):
            out: dict[str, object] | None = None
            for key, value in node.items():
                new: object
                if key.lower() in self._fields:
                    new = None if value is None else self.token(_secret_text(value))
                else:
                    new = self._redact_doc(value)
                if new is not value:
                    out = dict(node) if out is None else out
                    out[key] = new
            return node if out is None else out
        if isinstance(node, list):
            items = [self._redact_doc(v) for v in node]
            return node if all(a is b for a, b in zip(items, node, strict=True)) else items
        if isinstance(node, str) and "=" in node and self._in_text is not None:
            clean = self._in_text.sub(self._replace_match, node)
            return node if clean == node else clean
        return node

    # --- free text and differences ------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """Free text (e.g. a difference value, possibly cut short): JSON secrets and `name=value` pairs of secret
        query names replaced. Works on truncated JSON, where parsing would fail."""
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict | list):
            redacted = self._redact_doc(doc)
            return value if redacted is doc else orjson.dumps(redacted).decode()
        if isinstance(doc, str):
            # A JSON string (a text snippet): scrub its content, where quotes are not escaped.
            scrubbed = self._scrub(doc)
            return value if scrubbed == doc else orjson.dumps(scrubbed).decode()
        return self._scrub(value)

    def _scrub(self, text: str) -> str:
        for pattern in self._text_patterns:
            text = pattern.sub(self._replace_match, text)
        return text

    def _replace_match(self, m: re.Match[str]) -> str:
        secret = m["value"]
        if secret.startswith('"'):
            # A JSON string value, maybe cut off by truncation: redact what is inside the quotes.
            inner = secret[1:-1] if len(secret) > 1 and secret.endswith('"') else secret[1:]
            with contextlib.suppress(orjson.JSONDecodeError):
                inner = orjson.loads(f'"{inner}"')
            return f'{m["prefix"]}"{self.token(inner)}"'
        return m["prefix"] + self.token(secret)

    def path_is_secret(self, path: str) -> bool:
        """Whether a difference path names a secret: a JSON path through a secret key, or a secret header.

        `header.set-cookie` is not: the comparison only ever records cookie names there, never values.
        """
        if path.startswith("header."):
            name = path.removeprefix("header.")
            return name in self._headers and name != "set-cookie"
        if not path.startswith("$"):
            return False
        try:
            steps = compile_path(path)
        except BadPath:
            return False
        return any(isinstance(s, str) and s.lower() in self._fields for s in steps)

    def redact_difference(self, diff: Difference, path_is_secret: Callable[[str], bool] | None = None) -> Difference:
        """The difference as it may be stored: values on a secret path become tokens, other values are
        scrubbed of embedded secrets (a changed object holding a password, say)."""
        secret = (path_is_secret or self.path_is_secret)(diff.path)
        fix = functools.partial(self._secret_value, diff.path) if secret else self.text
        legacy = None if diff.legacy is None else fix(diff.legacy)
        new = None if diff.new is None else fix(diff.new)
        group = self.group(diff.group)
        if legacy == diff.legacy and new == diff.new and group == diff.group:
            return diff
        return replace(diff, group=group, legacy=legacy, new=new)

    def group(self, group: str) -> str:
        """A grouped path as it may be stored: a line signature (`text: "…"`) holds page text, so it is scrubbed
        like free text; JSON paths, header names and `status` hold no values."""
        return self._scrub(group) if group.startswith(SIGNATURE_PREFIX) else group

    def fields(self, fields: Iterable[FieldDiff]) -> tuple[FieldDiff, ...]:
        """A pair's differing groups as they may be stored (`group`), counts merged should two become one."""
        merged: dict[str, FieldDiff] = {}
        for f in fields:
            group = self.group(f.group)
            seen = merged.get(group)
            if seen is None:
                merged[group] = f if group == f.group else replace(f, group=group)
            else:
                kind = merge_kinds((seen.kind, f.kind)) or f.kind
                merged[group] = FieldDiff(group, kind, seen.count + f.count)
        return tuple(merged.values())

    def _secret_value(self, path: str, json_text: str) -> str:
        # Difference values are JSON text; a JSON string is tokenised by its content, so it matches the token the
        # same secret got in a stored body, and a header value is redacted as `headers` stores it.
        try:
            value = orjson.loads(json_text)
        except orjson.JSONDecodeError:
            return orjson.dumps(self.token(json_text)).decode()
        if value is None:
            return json_text
        name = path.removeprefix("header.")
        if name != path and isinstance(value, str) and name in self._headers:
            return orjson.dumps(self.header_value(name, value)).decode()
        return orjson.dumps(self.token(_secret_text(value))).decode()


def _secret_text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _parameter_pattern(names: frozenset[str]) -> re.Pattern[str] | None:
    """`name=value` of the given query-parameter names, as in a query string or a URL inside text."""
    if not names:
        return None
    alternatives = "|".join(re.escape(q) for q in sorted(names))
    return re.compile(rf"(?P<prefix>(?<![\w.-])(?i:{alternatives})=)(?P<value>[^&\s;\"'<>#]+)")


def _text_patterns(fields: frozenset[str], query: frozenset[str]) -> tuple[re.Pattern[str], ...]:
    patterns = []
    if fields:
        names = "|".join(re.escape(f) for f in sorted(fields))
        # "password": "hunter2"  (the closing quote may be lost to truncation)  or  "pin": 1234
        patterns.append(
            re.compile(
                rf'(?P<prefix>"(?i:{names})"\s*:\s*)(?P<value>"(?:[^"\\]|\\.)*"?|[^\s,}}\]"]+)',
            )
        )
    parameters = _parameter_pattern(query)
    if parameters is not None:
        patterns.append(parameters)
    return tuple(patterns)
