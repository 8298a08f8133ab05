"""Tests for shadow.redact: secrets never reach storage, equal secrets stay comparable, the key file."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import multiprocessing.queues
import os
import stat
import threading
from pathlib import Path

import orjson
import pytest

from proxy.config.model import Redact
from shadow.records import stored_body
from shadow.redact import KEY_ENV, Redactor, key_path_for, load_or_create_key
from shadow.values import Difference

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SECRET = "hunter2-s3cr3t"


@pytest.fixture
def redactor() -> Redactor:
    """A redactor with the default rules and a fixed key."""
    return Redactor(KEY, Redact())


def test_token_is_keyed_stable_and_opaque(redactor: Redactor) -> None:
    """The same secret gives the same token; another key gives another; the secret is not in it."""
    token = redactor.token(SECRET)
    assert token.startswith("<redacted:")
    assert token.endswith(">")
    assert len(token) == len("<redacted:>") + 10
    assert redactor.token(SECRET) == token
    assert redactor.token(SECRET + "x") != token
    assert Redactor(OTHER_KEY, Redact()).token(SECRET) != token
    assert SECRET not in token
    assert KEY.hex() not in repr(redactor)


def test_short_key_refused() -> None:
    """A key shorter than 16 bytes is refused."""
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Redactor(b"short", Redact())


def test_headers_redacted_by_name_case_insensitively(redactor: Redactor) -> None:
    """Secret headers lose their values (auth keeps its scheme); other headers, order and case stay."""
    headers = (
        ("Authorization", f"Bearer {SECRET}"),
        ("X-API-Key", SECRET),
        ("Accept", "application/json"),
        ("Proxy-Authorization", SECRET),
    )
    out = redactor.headers(headers)
    assert SECRET not in repr(out)
    assert out[0] == ("Authorization", f"Bearer {redactor.token(SECRET)}")
    assert out[1] == ("X-API-Key", redactor.token(SECRET))
    assert out[2] == ("Accept", "application/json")
    assert out[3] == ("Proxy-Authorization", redactor.token(SECRET))


def test_cookies_keep_names_lose_values(redactor: Redactor) -> None:
    """Cookie and Set-Cookie keep cookie names and attributes; every value becomes a token."""
    cookie = redactor.header_value("Cookie", f"sid={SECRET}; theme=dark")
    assert cookie == f"sid={redactor.token(SECRET)}; theme={redactor.token('dark')}"
    set_cookie = redactor.header_value("Set-Cookie", f"sid={SECRET}; Path=/; HttpOnly")
    assert set_cookie == f"sid={redactor.token(SECRET)}; Path=/; HttpOnly"


def test_unlisted_header_untouched() -> None:
    """Only headers named in the rules are redacted."""
    redactor = Redactor(KEY, Redact(headers=frozenset({"x-secret"})))
    assert redactor.header_value("Authorization", "Bearer abc") == "Bearer abc"
    assert redactor.header_value("X-Secret", "abc") == redactor.token("abc")


def test_query_redacts_secret_params_only(redactor: Redactor) -> None:
    """Secret parameter values (any case, percent-encoded) become tokens; the rest stays byte for byte."""
    query = f"page=2&Token={SECRET}&q=a%20b&api_key=x%2By&flag&access_token="
    out = redactor.query(query)
    assert SECRET not in out
    token, plus, empty = redactor.token(SECRET), redactor.token("x+y"), redactor.token("")
    assert out == f"page=2&Token={token}&q=a%20b&api_key={plus}&flag&access_token={empty}"
    assert redactor.query("") == ""


def test_json_body_redacts_keys_at_any_depth(redactor: Redactor) -> None:
    """Values of secret keys anywhere in a JSON body become tokens; equal secrets give equal tokens."""
    body = orjson.dumps(
        {"user": {"name": "ann", "Password": SECRET, "tokens": [{"token": SECRET}, {"token": None}]}, "n": 1}
    )
    out = redactor.json_body(body)
    assert SECRET.encode() not in out
    doc = json.loads(out)
    assert doc["user"]["Password"] == redactor.token(SECRET)
    assert doc["user"]["tokens"][0]["token"] == redactor.token(SECRET)
    assert doc["user"]["tokens"][1]["token"] is None
    assert doc["user"]["name"] == "ann"
    assert doc["n"] == 1


def test_json_body_without_secrets_or_not_json_is_unchanged(redactor: Redactor) -> None:
    """Bodies holding no secret key, and non-JSON bodies, come back byte for byte."""
    plain = b'{ "a" : 1 }'
    assert redactor.json_body(plain) is plain
    assert redactor.json_body(b"<html>") == b"<html>"


@pytest.mark.parametrize(
    "body",
    [
        b'{"user": {"PASSWORD": "s3cret-value"}}',  # any case
        b'{"user": {"pass\\u0077ord": "s3cret-value"}}',  # a key spelled with an escape
        '{"user": {"to\u212aen": "s3cret-value"}}'.encode(),  # KELVIN SIGN: lowercases to "token"
        b'{"next": "https://x.example/cb?token=s3cret-value"}',  # a secret parameter inside a string
        b'{"next": "https:\\/\\/x.example\\/cb?token\\u003ds3cret-value"}',  # the same, escaped
    ],
)
def test_json_secrets_found_however_the_bytes_spell_them(redactor: Redactor, body: bytes) -> None:
    """The quick look at a body's bytes never lets a secret through: keys in any case, spelled with escapes or
    with characters that lowercase to a secret name, and secret parameters in strings are all redacted."""
    out = redactor.json_body(body)
    assert b"s3cret-value" not in out
    assert redactor.token("s3cret-value").encode() in out


def test_json_without_secret_names_is_returned_without_parsing() -> None:
    """A body whose bytes hold no secret key name and no '=' comes back as the same object, even when it is not
    valid JSON (it is not parsed); with a secret name anywhere in it, it is parsed and walked."""
    redactor = Redactor(KEY, Redact())
    plain = b'{"id": 1, "name": "widget", "tags": ["a", "b"]'  # cut short: parsing would fail
    assert redactor.json_body(plain) is plain
    named = b'{"note": "no password here", "password": "pw-1"}'
    assert b"pw-1" not in redactor.json_body(named)


def test_body_dispatches_on_content_type(redactor: Redactor) -> None:
    """JSON types redact fields, form bodies redact like a query, binary types are left alone."""
    form = f"user=ann&password={SECRET}".encode()
    assert redactor.body("application/x-www-form-urlencoded; charset=utf-8", form) == (
        f"user=ann&password={redactor.token(SECRET)}".encode()
    )
    assert SECRET.encode() not in redactor.body("application/vnd.api+json", orjson.dumps({"secret": SECRET}))
    assert redactor.body("image/png", form) == form


def test_text_redacts_json_and_truncated_json(redactor: Redactor) -> None:
    """Difference values holding secrets are scrubbed, even when cut short and no longer valid JSON."""
    whole = orjson.dumps({"name": "ann", "password": SECRET}).decode()
    assert SECRET not in redactor.text(whole)
    cut = '{"name":"ann","password":"' + SECRET[:8]
    assert SECRET[:8] not in redactor.text(cut)
    numeric = '{"user":{"pin":1,"token":123456789…'
    assert "123456789" not in redactor.text(numeric)
    snippet = orjson.dumps(f"GET /login?user=ann&password={SECRET}").decode()
    assert SECRET not in redactor.text(snippet)
    assert redactor.text('"harmless"') == '"harmless"'


def test_path_is_secret(redactor: Redactor) -> None:
    """JSON paths through a secret key and secret headers are secret; cookie-name diffs are not."""
    assert redactor.path_is_secret("$.user.password")
    assert redactor.path_is_secret("$.sessions[2].Token")
    assert redactor.path_is_secret("$['api_key']")
    assert redactor.path_is_secret("header.authorization")
    assert not redactor.path_is_secret("header.set-cookie")
    assert not redactor.path_is_secret("$.user.name")
    assert not redactor.path_is_secret("status")
    assert not redactor.path_is_secret("body:line 3")


def test_redact_difference_on_secret_path(redactor: Redactor) -> None:
    """A difference on $.user.password stores tokens that match the tokens used in stored bodies."""
    diff = Difference("$.user.password", "$.user.password", "changed", orjson.dumps(SECRET).decode(), '"other"')
    out = redactor.redact_difference(diff)
    assert SECRET not in repr(out)
    assert out.legacy == orjson.dumps(redactor.token(SECRET)).decode()
    assert out.new == orjson.dumps(redactor.token("other")).decode()
    assert (out.path, out.group, out.kind) == (diff.path, diff.group, diff.kind)
    added = redactor.redact_difference(Difference("$.token", "$.token", "added", None, "12345"))
    assert added.legacy is None
    assert added.new == orjson.dumps(redactor.token("12345")).decode()


def test_redact_difference_scrubs_nested_values_and_accepts_predicate(redactor: Redactor) -> None:
    """A changed object holding a secret is scrubbed; a custom predicate can mark any path secret."""
    diff = Difference("$.user", "$.user", "changed", orjson.dumps({"password": SECRET}).decode(), "null")
    out = redactor.redact_difference(diff)
    assert SECRET not in repr(out)
    assert out.new == "null"
    plain = Difference("$.note", "$.note", "changed", '"a"', '"b"')
    assert redactor.redact_difference(plain) is plain
    custom = redactor.redact_difference(plain, lambda path: path == "$.note")
    assert custom.legacy == orjson.dumps(redactor.token("a")).decode()


def test_key_file_created_0600_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the env var, a 32-byte key is created next to the DB with mode 0600 and read back later."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = key_path_for(tmp_path / "strangler.db")
    assert path == tmp_path / "strangler.db.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert Redactor(key, Redact()).token("x") == Redactor(load_or_create_key(path), Redact()).token("x")


def test_key_from_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STRANGLER_REDACT_KEY (hex) is used when set, and no key file is written."""
    monkeypatch.setenv(KEY_ENV, OTHER_KEY.hex())
    path = tmp_path / "db.key"
    assert load_or_create_key(path) == OTHER_KEY
    assert not path.exists()
    monkeypatch.setenv(KEY_ENV, "not-hex")
    with pytest.raises(ValueError, match="not hex"):
        load_or_create_key(path)


def test_malformed_key_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file that is not long enough hex is reported, never silently replaced."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "db.key"
    path.write_text("abcd\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_or_create_key(path)
    assert path.read_text() == "abcd\n"


def test_redact_difference_on_secret_header_matches_stored_header(redactor: Redactor) -> None:
    """A differing secret header is redacted exactly as the stored header value is (auth scheme kept)."""
    diff = Difference("header.authorization", "header.authorization", "changed", '"Bearer one-pw"', '"Bearer two-pw"')
    out = redactor.redact_difference(diff)
    assert out.legacy == orjson.dumps(redactor.header_value("Authorization", "Bearer one-pw")).decode()
    assert (out.new or "").startswith('"Bearer <redacted:')
    assert "-pw" not in repr(out)


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "text/plain", "application/xml"])
def test_secret_query_parameters_echoed_in_a_text_body_are_redacted(redactor: Redactor, content_type: str) -> None:
    """A text body echoing a URL (`...?token=abc`) keeps the URL but not the secret parameter's value."""
    body = f'<a href="https://app.example/cb?state=1&token={SECRET}&x=2">next</a>\nlogin?api_key={SECRET}'.encode()
    clean = redactor.body(content_type, body)
    assert SECRET.encode() not in clean
    token = redactor.token(SECRET).encode()
    assert b"?state=1&token=" + token + b"&x=2" in clean
    assert b"login?api_key=" + token in clean


def test_secret_query_parameters_inside_json_strings_are_redacted(redactor: Redactor) -> None:
    """A JSON string value holding a URL with a secret parameter gets that value replaced; other values stay."""
    doc = {"next": f"https://app.example/page?access_token={SECRET}&page=2", "n": 1, "note": "a=b"}
    clean = orjson.loads(redactor.body("application/json", orjson.dumps(doc)))
    assert clean == {"next": f"https://app.example/page?access_token={redactor.token(SECRET)}&page=2", "n": 1,
                     "note": "a=b"}  # fmt: skip


def test_builtin_secret_names_apply_to_bodies_even_with_a_custom_query_list() -> None:
    """redact.query adds names for bodies; the built-in secret names (token, password, ...) still apply there."""
    redactor = Redactor(KEY, Redact(query=frozenset({"sig"})))
    clean = redactor.body("text/plain", f"/a?sig={SECRET}-1 /b?token={SECRET}-2".encode())
    assert SECRET.encode() not in clean
    assert redactor.body("text/plain", b"/a?page=2") == b"/a?page=2"


def test_compressed_text_body_is_stored_without_the_echoed_secret() -> None:
    """A gzip text body echoing `?token=...` is stored decoded and redacted: the secret is not readable after
    decompression."""
    redactor = Redactor(KEY, Redact())
    plain = f"GET /cb?token={SECRET} echoed".encode()
    headers = (("Content-Type", "text/plain"), ("Content-Encoding", "gzip"))
    stored = stored_body(headers, gzip.compress(plain), redactor, 64 * 1024)
    assert stored is not None
    assert SECRET.encode() not in stored.data
    assert redactor.token(SECRET).encode() in stored.data


def create_key_at_once(path: str, start: threading.Barrier, found: multiprocessing.queues.Queue[str]) -> None:
    """Runs in a child process: loads or creates the key the moment its sibling does; puts the key or the error."""
    start.wait()
    try:
        found.put(load_or_create_key(Path(path)).hex())
    except ValueError as e:
        found.put(f"error: {e}")


def test_two_processes_creating_the_key_at_once_get_the_same_key(tmp_path: Path) -> None:
    """Two proxy workers starting together on a new store both end up with the one key file's key: neither reads
    the file half-written (it appears whole, or not at all)."""
    ctx = multiprocessing.get_context("fork")  # fork: the two must start within microseconds of each other
    for round_ in range(12):
        path = str(tmp_path / f"key-{round_}")
        start, found = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=create_key_at_once, args=(path, start, found)) for _ in range(2)]
        for p in procs:
            p.start()
        keys = [found.get(timeout=30), found.get(timeout=30)]
        for p in procs:
            p.join(timeout=30)
        assert keys[0] == keys[1], f"round {round_}: {keys}"
        assert keys[0] == Path(path).read_text(encoding="ascii").strip()
