"""Editing routes.yaml in place: only the changed lines move, results are validated, writes are atomic."""

from __future__ import annotations

import difflib
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.flip import (
    FlipChange,
    InvalidEditError,
    RouteEditedError,
    UnknownRouteError,
    add_ignore_fields,
    flip_route,
    restore_route,
    route_text,
    set_weight,
)
from cli.main import app
from proxy.config.loader import load_config
from proxy.config.model import MODES

REPO_ROUTES = Path(__file__).resolve().parents[2] / "routes.yaml"

# Deliberately varied formatting: comments everywhere, flow and block styles, quoted and plain scalars.
ROUTES = """\
# Routes for the flip tests.
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}   # the monolith
  new:
    url: 'http://127.0.0.1:9002'

routes:
  # Orders: reads are compared first.
  - id: orders-read
    match: {path: "/api/orders/{id:int}", methods: [GET]}
    mode: shadow    # flip me
    compare:
      ignore_fields:
        - $.meta.generated_at

  - id: orders-list
    match:
      path: /api/orders
      methods: [GET]
    mode: 'canary'
    fallback: legacy
    canary:
      weight: 25       # percent

      sticky: {header: X-User-Id}
    # trailing comment of orders-list

  - id: customers
    match: {path: "/api/customers/{id}"}
    mode: legacy
    compare: {ignore_fields: []}

  - {id: catalog, match: {path: "/api/catalog/**"}, mode: new, verify: true}
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES, encoding="utf-8")
    path.chmod(0o640)
    return path


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines between two texts."""
    diff = list(difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True)))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_flip_changes_only_the_mode_line(routes_file: Path) -> None:
    """Flipping shadow -> legacy rewrites the one mode line (keeping its comment); every other byte is unchanged."""
    code, out, _ = invoke("routes", "flip", "orders-read", "--to", "legacy", "--config", str(routes_file))
    assert code == 0
    assert out.strip() == "orders-read: shadow → legacy"
    after = routes_file.read_text(encoding="utf-8")
    assert changed_lines(ROUTES, after) == (["    mode: shadow    # flip me\n"], ["    mode: legacy    # flip me\n"])
    assert load_config(routes_file).route("orders-read").mode == "legacy"  # type: ignore[union-attr]


def test_flip_to_canary_adds_one_weight_line(routes_file: Path) -> None:
    """Flipping to canary with --weight adds `canary: {weight: N}` under mode and prints the change."""
    args = ("routes", "flip", "orders-read", "--to", "canary", "--weight", "10", "-c", str(routes_file))
    # A forward flip is gated on readiness; with no traffic stored, only --force gets through (tested elsewhere).
    code, out, _ = invoke(*args, "--force", "--reason", "edit test", "--db", str(routes_file.parent / "s.db"))
    assert code == 0
    assert "orders-read: shadow → canary (weight 10)" in out
    after = routes_file.read_text(encoding="utf-8")
    removed, added = changed_lines(ROUTES, after)
    assert removed == ["    mode: shadow    # flip me\n"]
    assert added == ["    mode: canary    # flip me\n", "    canary: {weight: 10}\n"]
    route = load_config(routes_file).route("orders-read")
    assert route is not None
    assert route.canary is not None
    assert route.canary.weight == 10


def test_flip_to_canary_without_weight_is_refused(routes_file: Path) -> None:
    """A route with no canary weight cannot flip to canary without --weight: exit 1, file untouched."""
    code, out, err = invoke("routes", "flip", "orders-read", "--to", "canary", "-c", str(routes_file))
    assert code == 1
    assert out == ""
    assert "Error:" in err
    assert "--weight" in err
    assert routes_file.read_text(encoding="utf-8") == ROUTES
    assert sorted(p.name for p in routes_file.parent.iterdir()) == ["routes.yaml"]  # no temp file left


def test_reweighting_a_canary_keeps_quotes_and_neighbours(routes_file: Path) -> None:
    """Re-flipping a canary route with a new weight changes only the weight value, keeping its comment."""
    change = flip_route(routes_file, "orders-list", "canary", 50)
    assert replace(change, before_text="", after_text="") == FlipChange("orders-list", "canary", "canary", 25.0, 50.0)
    after = routes_file.read_text(encoding="utf-8")
    assert changed_lines(ROUTES, after) == (
        ["      weight: 25       # percent\n"],
        ["      weight: 50       # percent\n"],
    )


def test_flip_away_from_canary_comments_out_the_canary_block(routes_file: Path) -> None:
    """canary -> new keeps quoting ('new'), comments out the canary: block, and keeps fallback (allowed in new)."""
    change = flip_route(routes_file, "orders-list", "new")
    assert change.commented_out == ("canary",)
    assert change.describe() == "orders-list: canary → new; commented out: canary"
    after = routes_file.read_text(encoding="utf-8")
    removed, added = changed_lines(ROUTES, after)
    assert added == [
        "    mode: 'new'\n",
        "    # canary:\n",
        "    #   weight: 25       # percent\n",
        "    #   sticky: {header: X-User-Id}\n",
    ]
    assert len(removed) == 4
    assert "\n\n      sticky" not in after
    assert "    #   weight: 25       # percent\n\n" in after
    route = load_config(routes_file).route("orders-list")
    assert route is not None
    assert route.mode == "new"
    assert route.fallback
    assert route.canary is None


def test_flip_to_shadow_comments_out_fallback(routes_file: Path) -> None:
    """canary -> shadow also comments out `fallback: legacy`, which the loader rejects for mode shadow."""
    change = flip_route(routes_file, "orders-list", "shadow")
    assert set(change.commented_out) == {"canary", "fallback"}
    assert "    # fallback: legacy\n" in routes_file.read_text(encoding="utf-8")
    assert load_config(routes_file).route("orders-list").mode == "shadow"  # type: ignore[union-attr]


def test_flip_inside_a_flow_mapping(routes_file: Path) -> None:
    """A route written as a flow mapping is edited in place; verify: (new only) is removed from it."""
    flip_route(routes_file, "catalog", "shadow")
    removed, added = changed_lines(ROUTES, routes_file.read_text(encoding="utf-8"))
    assert removed == ['  - {id: catalog, match: {path: "/api/catalog/**"}, mode: new, verify: true}\n']
    assert added == ['  - {id: catalog, match: {path: "/api/catalog/**"}, mode: shadow}\n']


def test_flip_is_atomic_and_keeps_the_file_mode(routes_file: Path) -> None:
    """The file is replaced in one step (new inode), with its permission bits, and no temp file is left."""
    before = routes_file.stat()
    flip_route(routes_file, "customers", "new")
    after = routes_file.stat()
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert after.st_ino != before.st_ino
    assert sorted(p.name for p in routes_file.parent.iterdir()) == ["routes.yaml"]


def test_unknown_route_names_the_known_ids(routes_file: Path) -> None:
    """Flipping an unknown route fails with exit 1, naming every known route id; the file is untouched."""
    code, _, err = invoke("routes", "flip", "orders", "--to", "new", "-c", str(routes_file))
    assert code == 1
    assert "unknown route 'orders'" in err
    assert "orders-read, orders-list, customers, catalog" in err
    assert routes_file.read_text(encoding="utf-8") == ROUTES
    with pytest.raises(UnknownRouteError) as info:
        flip_route(routes_file, "nope", "new")
    assert info.value.known == ("orders-read", "orders-list", "customers", "catalog")


def test_invalid_input_is_refused_before_writing(routes_file: Path) -> None:
    """Bad modes, weights on non-canary modes, out-of-range weights and already-broken files change nothing."""
    with pytest.raises(InvalidEditError, match="unknown mode"):
        flip_route(routes_file, "orders-read", "everything")
    with pytest.raises(InvalidEditError, match="only with mode canary"):
        flip_route(routes_file, "orders-read", "shadow", 10)
    with pytest.raises(InvalidEditError, match="between 0 and 100"):
        flip_route(routes_file, "orders-read", "canary", 150)
    assert routes_file.read_text(encoding="utf-8") == ROUTES
    code, _, _ = invoke("routes", "flip", "orders-read", "--to", "canary", "-w", "150", "-c", str(routes_file))
    assert code == 2  # out of range is a usage error
    broken = ROUTES.replace("mode: legacy", "mode: legcy")
    routes_file.write_text(broken, encoding="utf-8")
    code, _, err = invoke("routes", "flip", "orders-read", "--to", "legacy", "-c", str(routes_file))
    assert code == 1
    assert "invalid before the edit" in err
    assert "legcy" in err
    assert routes_file.read_text(encoding="utf-8") == broken


def test_set_weight_changes_only_the_weight(routes_file: Path) -> None:
    """set_weight edits the canary weight of a canary route and refuses routes in other modes."""
    change = set_weight(routes_file, "orders-list", 12.5)
    assert (change.from_weight, change.to_weight, change.to_mode) == (25.0, 12.5, "canary")
    _removed, added = changed_lines(ROUTES, routes_file.read_text(encoding="utf-8"))
    assert added == ["      weight: 12.5       # percent\n"]
    with pytest.raises(InvalidEditError, match="mode shadow"):
        set_weight(routes_file, "orders-read", 5)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_set_weight_fills_an_empty_canary_value_on_its_own_line(tmp_path: Path, newline: str) -> None:
    """A `canary:` left empty before another key gets `{weight: N}` on its own line; the next key is untouched."""
    path = tmp_path / "routes.yaml"
    before = ROUTES.replace(
        "    mode: legacy\n    compare: {ignore_fields: []}\n",
        "    mode: canary\n    canary:\n    compare: {ignore_fields: []}\n",
    )
    path.write_bytes(before.replace("\n", newline).encode())
    change = set_weight(path, "customers", 10)
    assert change.to_weight == 10
    removed, added = changed_lines(before, path.read_bytes().decode().replace(newline, "\n"))
    assert (removed, added) == (["    canary:\n"], ["    canary: {weight: 10}\n"])


def test_add_ignore_fields_appends_in_each_list_style(routes_file: Path) -> None:
    """add_ignore_fields appends to block and flow lists, creates compare: when missing, and skips duplicates."""
    assert add_ignore_fields(routes_file, "orders-read", ["$.meta.generated_at", "$.items[*].updated_at"]) == (
        "$.items[*].updated_at",
    )
    assert add_ignore_fields(routes_file, "customers", ["$.updated_at"]) == ("$.updated_at",)
    assert add_ignore_fields(routes_file, "orders-list", ["$.meta.generated_at"]) == ("$.meta.generated_at",)
    assert add_ignore_fields(routes_file, "orders-list", ["$.meta.generated_at"]) == ()
    text = routes_file.read_text(encoding="utf-8")
    removed, added = changed_lines(ROUTES, text)
    assert removed == ["    compare: {ignore_fields: []}\n"]
    assert added == [
        '        - "$.items[*].updated_at"\n',
        '    compare: {ignore_fields: ["$.meta.generated_at"]}\n',
        '    compare: {ignore_fields: ["$.updated_at"]}\n',
    ]
    config = load_config(routes_file)
    assert config.route("orders-read").compare.ignore_fields[-1] == "$.items[*].updated_at"  # type: ignore[union-attr]
    assert config.route("customers").compare.ignore_fields == ("$.updated_at",)  # type: ignore[union-attr]


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    """A file with Windows line endings keeps them, including on inserted lines."""
    path = tmp_path / "routes.yaml"
    path.write_bytes(ROUTES.replace("\n", "\r\n").encode())
    flip_route(path, "orders-read", "canary", 5)
    raw = path.read_bytes()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"    mode: canary    # flip me\r\n    canary: {weight: 5}\r\n" in raw


@pytest.mark.skipif(not REPO_ROUTES.exists(), reason="the repository's routes.yaml is not written yet")
@pytest.mark.parametrize("mode", MODES)
def test_every_route_of_the_shipped_routes_yaml_flips_to_every_mode(tmp_path: Path, mode: str) -> None:
    """Each route of the repository's routes.yaml can flip to each mode, leaving a valid file."""
    original = REPO_ROUTES.read_text(encoding="utf-8")
    path = tmp_path / "routes.yaml"
    for route in load_config(REPO_ROUTES).routes:
        shutil.copyfile(REPO_ROUTES, path)
        change = flip_route(path, route.id, mode, 10 if mode == "canary" else None)
        assert (change.from_mode, change.to_mode) == (route.mode, mode)  # to_mode is read back from the result
        removed, added = changed_lines(original, path.read_text(encoding="utf-8"))
        for line in added:  # the mode line, a weight, or a removed line turned into a comment
            uncommented = line.replace("# ", "", 1)
            assert "mode:" in line or "weight: 10" in line or uncommented in removed, line
    assert os.listdir(tmp_path) == ["routes.yaml"]


# --- the route's text, and restoring it (what `routes revert` relies on) ------------------------------------------


def test_route_text_is_the_entry_with_its_trailing_comments(routes_file: Path) -> None:
    """A route's text runs from its id to its last line, with comment lines indented like its keys, not the next."""
    assert route_text(routes_file, "orders-read") == (
        'id: orders-read\n    match: {path: "/api/orders/{id:int}", methods: [GET]}\n    mode: shadow    # flip me\n'
        "    compare:\n      ignore_fields:\n        - $.meta.generated_at"
    )
    orders_list = route_text(routes_file, "orders-list")
    assert orders_list.startswith("id: orders-list\n")
    assert orders_list.endswith("      sticky: {header: X-User-Id}\n    # trailing comment of orders-list")
    assert route_text(routes_file, "customers").endswith("compare: {ignore_fields: []}")
    assert (
        route_text(routes_file, "catalog") == '{id: catalog, match: {path: "/api/catalog/**"}, mode: new, verify: true}'
    )


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("route", ["orders-read", "orders-list", "customers", "catalog"])
@pytest.mark.parametrize("mode", MODES)
def test_restoring_the_text_before_any_flip_gives_the_file_back(
    tmp_path: Path, newline: str, route: str, mode: str
) -> None:
    """Every flip of every route, undone with its recorded texts, leaves the file byte for byte as it was."""
    original = ROUTES.replace("\n", newline)
    path = tmp_path / "routes.yaml"
    path.write_bytes(original.encode())
    before = route_text(path, route)
    try:
        change = flip_route(path, route, mode, 40 if mode == "canary" else None)
    except InvalidEditError:
        pytest.skip(f"{route} cannot be flipped to {mode} by an edit")
    assert change.before_text == before
    assert change.after_text == route_text(path, route)
    restored = restore_route(path, route, change.after_text, change.before_text)
    assert restored.after_text == change.before_text
    assert path.read_bytes() == original.encode()


def test_restore_refuses_a_route_edited_since(routes_file: Path) -> None:
    """The route's text must be what the undone change wrote; otherwise nothing is written (unless overwrite)."""
    change = flip_route(routes_file, "orders-read", "legacy")
    edited = routes_file.read_text(encoding="utf-8").replace("# flip me", "# flipped")
    routes_file.write_text(edited, encoding="utf-8")
    with pytest.raises(RouteEditedError, match="edited since"):
        restore_route(routes_file, "orders-read", change.after_text, change.before_text)
    assert routes_file.read_text(encoding="utf-8") == edited
    restore_route(routes_file, "orders-read", change.after_text, change.before_text, overwrite=True)
    assert routes_file.read_text(encoding="utf-8") == ROUTES


BLOCK_SCALARS = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
routes:
  - id: search
    mode: canary
    canary:
      weight: 10
      sticky:
        header: >-
          X-User-Id
    match:
      path: |-
        /api/search

  - id: orders
    match: {path: /api/orders}
    mode: legacy
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_block_scalar_ends_at_its_last_line(tmp_path: Path, newline: str) -> None:
    """A route ending in a `|`/`>` scalar: its entry stops at that scalar's last line, commenting out a block that
    ends in one leaves the next route alone, and the flip reverts byte for byte."""
    original = BLOCK_SCALARS.replace("\n", newline)
    path = tmp_path / "routes.yaml"
    path.write_bytes(original.encode())
    assert route_text(path, "search").endswith(f"path: |-{newline}        /api/search")
    change = flip_route(path, "search", "legacy")
    assert change.commented_out == ("canary",)
    after = path.read_bytes().decode()
    assert f"{newline}  - id: orders{newline}" in after
    assert f"    # canary:{newline}    #   weight: 10{newline}" in after
    assert f"    #     header: >-{newline}    #       X-User-Id{newline}    match:" in after
    restore_route(path, "search", change.after_text, change.before_text)
    assert path.read_bytes() == original.encode()
