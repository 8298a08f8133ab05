"""proxy.jsonpath: the grammar of compare field paths (parse, format, group, match)."""

from __future__ import annotations

import pytest

from proxy.jsonpath import ANY, BadPath, compile_path, format_path, group_path, path_matches


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$.a.b", ("a", "b")),
        ("$.items[*].updated_at", ("items", ANY, "updated_at")),
        ("$.items[0].x", ("items", 0, "x")),
        ("$.items[-1]", ("items", -1)),
        ("$['weird key'].x", ("weird key", "x")),
        ('$["it\'s"]', ("it's",)),
        ("$['a\\'b']", ("a'b",)),
        ("$.meta.*", ("meta", ANY)),
        ("a.b", ("a", "b")),
        ("$[0]", (0,)),
    ],
)
def test_compile_path_parses_jsonpath_like_syntax(path: str, steps: tuple[object, ...]) -> None:
    """Dotted names, indexes, wildcards and quoted keys parse into steps."""
    assert compile_path(path) == steps


@pytest.mark.parametrize("path", ["$", "", "$.a[", "$.a[x]", "$..a", "$.a['b]"])
def test_compile_path_rejects_malformed_paths(path: str) -> None:
    """Malformed or whole-document paths raise BadPath."""
    with pytest.raises(BadPath):
        compile_path(path)


def test_format_path_quotes_keys_that_need_it_and_round_trips() -> None:
    """Plain keys use dots, odd keys use ['…'], and the result parses back to the same steps."""
    text = format_path(["items", 3, "weird key", "it's", "qty"])
    assert text == "$.items[3]['weird key']['it\\'s'].qty"
    assert compile_path(text) == ("items", 3, "weird key", "it's", "qty")


def test_group_path_collapses_every_index() -> None:
    """Every [N] becomes [*], so one field is counted once across array positions."""
    assert group_path("$.items[3].tags[12].name") == "$.items[*].tags[*].name"
    assert group_path("header.x-a") == "header.x-a"


def test_path_matches_wildcards_and_keeps_keys_and_indexes_apart() -> None:
    """[*] matches any key or index; a key never matches an index of the same spelling."""
    assert path_matches(compile_path("$.items[*].qty"), ["items", 3, "qty"])
    assert not path_matches(compile_path("$.items[0]"), ["items", "0"])
    assert not path_matches(compile_path("$.a"), ["a", "b"])
