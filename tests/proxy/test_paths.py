"""Canonical request paths: normalisation, flags and refusals."""

from __future__ import annotations

import pytest

from proxy.paths import CanonicalPath, PathError, canonical_path


@pytest.mark.parametrize(
    ("raw", "path", "segments"),
    [
        ("/", "/", ()),
        ("/api/orders/42", "/api/orders/42", ("api", "orders", "42")),
        ("/api/orders/", "/api/orders/", ("api", "orders")),
        ("/a/./b/../c", "/a/c", ("a", "c")),
        ("/a/b/..", "/a/", ("a",)),
        ("/a/b/.", "/a/b/", ("a", "b")),
        ("/a/%2e%2e/b", "/b", ("b",)),
        ("/a/%2E/b", "/a/b", ("a", "b")),
        ("/a/.%2e/b", "/b", ("b",)),
        ("/..", "/", ()),
        ("/../../etc/passwd", "/etc/passwd", ("etc", "passwd")),
        ("//a///b//", "/a/b/", ("a", "b")),
        ("//evil.example/x", "/evil.example/x", ("evil.example", "x")),
        ("/%41%62%7e%2D%5f%2E1", "/Ab~-_.1", ("Ab~-_.1",)),
        ("/a%3ab%3Fc", "/a%3Ab%3Fc", ("a:b?c",)),
        ("/file.json", "/file.json", ("file.json",)),
        ("/.well-known/x", "/.well-known/x", (".well-known", "x")),
        ("/caf\u00e9", "/caf%C3%A9", ("caf\u00e9",)),
        ("/caf%c3%a9", "/caf%C3%A9", ("caf\u00e9",)),
        ("/a b", "/a%20b", ("a b",)),
        ("/x/\udcff", "/x/%FF", ("x", "\ufffd")),
        ("/a{b}|c", "/a%7Bb%7D%7Cc", ("a{b}|c",)),
        ("/sub-delims!$&'()*+,=:@;x", "/sub-delims!$&'()*+,=:@;x", ("sub-delims!$&'()*+,=:@",)),
        ("/100%25", "/100%25", ("100%",)),
    ],
)
def test_canonical_form(raw: str, path: str, segments: tuple[str, ...]) -> None:
    """Each raw path has one canonical encoded form and decoded segments, with no encoded-slash flag."""
    assert canonical_path(raw) == CanonicalPath(path, segments, False)


@pytest.mark.parametrize(
    ("raw", "path", "segments"),
    [
        ("/admin;x/secret", "/admin;x/secret", ("admin", "secret")),
        ("/admin;jsessionid=1", "/admin;jsessionid=1", ("admin",)),
        ("/admin%3Bx", "/admin%3Bx", ("admin",)),
        ("/admin%3bx/y", "/admin%3Bx/y", ("admin", "y")),
        ("/admin.", "/admin.", ("admin",)),
        ("/admin../x", "/admin../x", ("admin", "x")),
        ("/admin%2E", "/admin.", ("admin",)),
        ("/admin%20", "/admin%20", ("admin",)),
        ("/admin.%20./x", "/admin.%20./x", ("admin", "x")),
        ("/orders/5;v=2", "/orders/5;v=2", ("orders", "5")),
        ("/ADMIN/X", "/ADMIN/X", ("ADMIN", "X")),
    ],
)
def test_match_keys_drop_parameters_and_trailing_dots(raw: str, path: str, segments: tuple[str, ...]) -> None:
    """Segments are matched cut at ';' (raw or %3B) and without trailing dots or spaces, case kept (routing folds
    case); the forwarded path keeps all of it."""
    assert canonical_path(raw) == CanonicalPath(path, segments, False)


@pytest.mark.parametrize(
    ("raw", "path", "segments"),
    [
        ("/a%2fb", "/a%2Fb", ("a/b",)),
        ("/public/..%2Fadmin", "/public/..%2Fadmin", ("public", "../admin")),
        ("/public/%2e%2e%2fadmin", "/public/..%2Fadmin", ("public", "../admin")),
        ("/a%5Cb", "/a%5Cb", ("a\\b",)),
        ("/x/..%5c..%5cwin.ini", "/x/..%5C..%5Cwin.ini", ("x", "..\\..\\win.ini")),
    ],
)
def test_encoded_slash_is_kept_and_flagged(raw: str, path: str, segments: tuple[str, ...]) -> None:
    """%2F and %5C stay encoded, never split or climb segments, and flag the path."""
    assert canonical_path(raw) == CanonicalPath(path, segments, True)


def test_encoded_slash_flag_ignores_removed_segments() -> None:
    """An encoded slash in a segment that dot-segment removal drops does not flag the path."""
    assert canonical_path("/a%2Fb/../c") == CanonicalPath("/c", ("c",), False)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("api/orders", "not_origin_form"),
        ("", "not_origin_form"),
        ("http://example.com/x", "not_origin_form"),
        ("*", "not_origin_form"),
        ("/a\\b", "backslash"),
        ("/a/..\\..\\b", "backslash"),
        ("/a%", "bad_percent"),
        ("/a%4", "bad_percent"),
        ("/a%zz", "bad_percent"),
        ("/a%+1", "bad_percent"),
        ("/a% 1", "bad_percent"),
        ("/a%00b", "nul"),
        ("/a\x00b", "nul"),
        ("/a%0Ab", "control"),
        ("/a%0d%0aSet-Cookie:x", "control"),
        ("/a\tb", "control"),
        ("/a%7f", "control"),
        ("/a\x7f", "control"),
        ("/a/\ud800", "bad_encoding"),
        ("/public/..;/admin/x", "ambiguous_segment"),
        ("/public/..;x/admin/x", "ambiguous_segment"),
        ("/public/.;/x", "ambiguous_segment"),
        ("/;x/admin", "ambiguous_segment"),
        ("/%3Bx/admin", "ambiguous_segment"),
        ("/public/%2e%2e%3B/admin", "ambiguous_segment"),
        ("/...", "ambiguous_segment"),
        ("/a/.%20/b", "ambiguous_segment"),
    ],
)
def test_refused_paths(raw: str, reason: str) -> None:
    """Paths that cannot be canonical raise PathError with a slug naming the problem."""
    with pytest.raises(PathError) as info:
        canonical_path(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "raw", ["/a/./b/../c", "/%41%2f%7e", "//x//y/", "/caf\u00e9/%2e%2E/z", "/public/..%2Fadmin", "/a b/c"]
)
def test_canonical_form_is_a_fixed_point(raw: str) -> None:
    """Canonicalising a canonical path changes nothing."""
    once = canonical_path(raw)
    assert canonical_path(once.path) == once


def test_fast_path_agrees_with_full_rules() -> None:
    """Plain paths taken by the fast path give the same result as the full canonicalisation."""
    from proxy.paths import _canonical_slow

    for raw in ["/", "/a", "/a/b/", "/api/v1/orders/42", "/x-y_z~/@:!$"]:
        assert canonical_path(raw) == _canonical_slow(raw)
