"""The core CLI commands through typer's CliRunner: validate, explain, routes list, help texts, serve and demo."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner, Result

from cli.demo.legacy_app import make_legacy_app
from cli.main import app
from cli.output import CliError
from proxy.canary import bucket
from proxy.config.loader import load_config
from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, stop_cleanly, strangler

REPO_ROUTES = Path(__file__).resolve().parents[2] / "routes.yaml"

ROUTES = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
routes:
  - id: orders-read
    match: {path: "/api/orders/{id:int}", methods: [GET, HEAD]}
    mode: shadow
  - id: orders-any
    match: {path: "/api/orders/**"}
    mode: legacy
  - id: customers
    match: {path: "/api/customers/{id}"}
    mode: canary
    canary: {weight: 30, sticky: {header: X-User-Id}}
  - id: beta-search
    match: {path: /api/search, headers: {X-Beta: "1"}}
    mode: new
    fallback: legacy
"""
BROKEN = """\
version: 1
upstreams: {legacy: {url: "http://127.0.0.1:9001"}, new: {url: "http://127.0.0.1:9002"}}
routes:
  - id: a
    match: {path: /a}
    mode: legcy
  - id: b
    match: {path: /b}
    mode: shadow
    upstream: nwe
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES, encoding="utf-8")
    return path


@pytest.fixture
def repo_routes(tmp_path: Path) -> Path:
    """A temp copy of the repository's routes.yaml (this test file's own config when it is not written yet)."""
    path = tmp_path / "repo-routes.yaml"
    path.write_text(REPO_ROUTES.read_text(encoding="utf-8") if REPO_ROUTES.exists() else ROUTES, encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))


# --- validate ---------------------------------------------------------------------------------------------------


def test_validate_reports_route_and_upstream_counts(repo_routes: Path) -> None:
    """validate on a good file prints `OK: N routes, M upstreams` and exits 0."""
    config = load_config(repo_routes)
    result = invoke("validate", "--config", str(repo_routes))
    assert result.exit_code == 0
    assert result.stdout.strip() == f"OK: {len(config.routes)} routes, {len(config.upstreams)} upstreams"


def test_validate_prints_every_issue_and_exits_1(tmp_path: Path) -> None:
    """validate on a broken file prints each issue as its own red `Error:` line on stderr and exits 1."""
    path = tmp_path / "routes.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    result = invoke("validate", "-c", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("Error: ") for line in lines)
    assert "routes[0] (a).mode" in lines[0]
    assert "legcy" in lines[0]
    assert "routes[1] (b).upstream" in lines[1]
    assert "nwe" in lines[1]
    assert "Traceback" not in result.output


def test_validate_refuses_a_malformed_ignore_fields_path(tmp_path: Path) -> None:
    """validate names the file, line and route of an ignore_fields path that does not parse, and exits 1."""
    path = tmp_path / "routes.yaml"
    path.write_text(BROKEN.replace("mode: legcy", "mode: shadow\n    compare: {ignore_fields: ['$.items[']}"))
    result = invoke("validate", "-c", str(path))
    assert result.exit_code == 1
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"Error: {path}:7: routes[0] (a).compare.ignore_fields[0]: cannot parse field path")


def test_validate_json_lists_issues(tmp_path: Path) -> None:
    """validate --format json prints {ok, issues[]} with line numbers, and still exits 1 on errors."""
    path = tmp_path / "routes.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    result = invoke("validate", "-c", str(path), "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert [i["line"] for i in doc["issues"]] == [6, 10]
    assert {"where", "message", "hint", "text"} <= doc["issues"][0].keys()


def test_validate_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    """A missing config file is one error line naming the file, exit 1, no traceback."""
    result = invoke("validate", "-c", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "nope.yaml" in result.stderr
    assert result.stderr.startswith("Error: ")


# --- explain ----------------------------------------------------------------------------------------------------


def test_explain_table_shows_winner_upstream_and_losers(routes_file: Path) -> None:
    """explain prints the winning route, its mode and upstream, and why nearby routes lost."""
    result = invoke("explain", "get", "/api/orders/42", "-c", str(routes_file))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "orders-read (/api/orders/{id:int})" in out
    assert "shadow" in out
    assert "mirrored to" in out
    assert "orders-any" in out
    assert "lower precedence" in out


def test_explain_json_has_the_documented_keys(routes_file: Path) -> None:
    """explain --format json gives route, mode, upstream, canonical_path and candidates [{route, reason}]."""
    result = invoke("explain", "GET", "/api//orders/./7?x=1", "-c", str(routes_file), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"route", "mode", "upstream", "canonical_path", "candidates"} <= doc.keys()
    assert (doc["route"], doc["mode"], doc["upstream"]) == ("orders-read", "shadow", "legacy")
    assert doc["canonical_path"] == "/api/orders/7"
    assert doc["params"] == {"id": "7"}
    assert doc["candidates"]
    assert all(set(c) >= {"route", "reason"} for c in doc["candidates"])


def test_explain_canary_side_follows_the_sticky_key_and_header_matched_routes_need_their_header(
    routes_file: Path,
) -> None:
    """A canary route without its sticky header is a random split (upstream null); with it, the side its bucket
    gives (as `proxy.canary.bucket` computes); a header-matched route needs its header."""
    base = ("explain", "GET", "/api/customers/5", "-c", str(routes_file), "-f", "json")
    canary = json.loads(invoke(*base).stdout)
    assert (canary["route"], canary["mode"], canary["upstream"], canary["canary_weight"]) == (
        "customers",
        "canary",
        None,
        30.0,
    )
    sides = set()
    for user in range(40):
        doc = json.loads(invoke(*base, "-H", f"x-user-id: {user}").stdout)
        expected = "new" if bucket("customers", str(user)) < 3000 else "legacy"
        assert (doc["served_by"], doc["upstream"], doc["bucket"]) == (
            expected,
            expected,
            bucket("customers", str(user)),
        )
        sides.add(doc["served_by"])
    assert sides == {"legacy", "new"}
    args = ("explain", "GET", "/api/search?q=tea", "-c", str(routes_file), "-f", "json")
    with_header = json.loads(invoke(*args, "-H", "X-Beta: 1").stdout)
    assert (with_header["route"], with_header["upstream"]) == ("beta-search", "new")
    without = json.loads(invoke(*args).stdout)
    assert without["route"] is None
    assert any(c["route"] == "beta-search" and "X-Beta".lower() in c["reason"] for c in without["candidates"])


def test_explain_unmatched_goes_to_default_legacy(routes_file: Path) -> None:
    """A request no route takes is explained as served by defaults.legacy, with route null."""
    doc = json.loads(invoke("explain", "POST", "/health", "-c", str(routes_file), "-f", "json").stdout)
    assert (doc["route"], doc["mode"], doc["upstream"]) == (None, "legacy", "legacy")


def test_explain_bad_path_is_an_error_and_debug_shows_the_exception(routes_file: Path) -> None:
    """A path the proxy would refuse is one error line (exit 1); with --debug the exception propagates."""
    result = invoke("explain", "GET", "/a/%zz", "-c", str(routes_file))
    assert result.exit_code == 1
    assert "Error:" in result.stderr
    assert "400" in result.stderr
    debug = invoke("--debug", "explain", "GET", "/a/%zz", "-c", str(routes_file))
    assert debug.exit_code == 1
    assert isinstance(debug.exception, CliError)


def test_explain_flags_encoded_slashes(routes_file: Path) -> None:
    """A %2F in the path is reported as refused when the route does not allow encoded slashes."""
    doc = json.loads(invoke("explain", "GET", "/api/orders/a%2Fb", "-c", str(routes_file), "-f", "json").stdout)
    assert doc["refused"]
    assert "allow_encoded_slash" in doc["refused"]


def test_malformed_header_option_is_a_usage_error(routes_file: Path) -> None:
    """--header without a colon is a usage error (exit 2)."""
    assert invoke("explain", "GET", "/", "-c", str(routes_file), "-H", "nocolon").exit_code == 2


# --- routes list ------------------------------------------------------------------------------------------------


def test_routes_list_json_schema(repo_routes: Path) -> None:
    """routes list --format json is a list of {id, mode, upstream, legacy, methods, path, weight, fallback,
    mirror_to}, mirror_to naming where copies go (new for shadow routes, legacy for new + verify)."""
    result = invoke("routes", "list", "-c", str(repo_routes), "--format", "json")
    assert result.exit_code == 0
    docs = json.loads(result.stdout)
    config = load_config(repo_routes)
    assert [d["id"] for d in docs] == [r.id for r in config.routes]
    for d in docs:
        assert set(d) == {"id", "mode", "upstream", "legacy", "methods", "path", "weight", "fallback", "mirror_to"}
        if d["mode"] == "shadow":
            assert d["mirror_to"] == d["upstream"]
        if d["mode"] == "legacy":
            assert d["mirror_to"] is None
        assert d["mode"] in ("legacy", "shadow", "canary", "new")
        assert d["methods"] is None or all(isinstance(m, str) for m in d["methods"])
        assert (d["weight"] is not None) == (d["mode"] == "canary")
        assert isinstance(d["fallback"], bool)


def test_routes_list_table_names_every_route(routes_file: Path) -> None:
    """routes list prints a table with every route id, its mode and canary weight."""
    result = invoke("routes", "list", "-c", str(routes_file))
    assert result.exit_code == 0
    for route_id in ("orders-read", "orders-any", "customers", "beta-search"):
        assert route_id in result.stdout
    assert "30%" in result.stdout


# --- help and usage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [(), ("validate",), ("explain",), ("routes",), ("routes", "list"), ("routes", "flip"), ("serve",), ("demo",)],
)
def test_every_help_ends_with_an_example(command: tuple[str, ...]) -> None:
    """Every command's --help shows a runnable `Example: strangler ...`."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "strangler " in result.stdout.split("Example", 1)[1]


def test_unknown_command_is_a_usage_error() -> None:
    """An unknown command exits 2."""
    assert invoke("frobnicate").exit_code == 2


# --- serve and demo ---------------------------------------------------------------------------------------------


def config_for(tmp_path: Path, legacy_port: int, new_port: int) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        ROUTES.replace("9001", str(legacy_port)).replace("9002", str(new_port))
        + "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n",
        encoding="utf-8",
    )
    return path


async def test_serve_runs_the_proxy_until_sigterm(tmp_path: Path) -> None:
    """`strangler serve` in a subprocess proxies to the legacy back end and exits 0 after SIGTERM."""
    async with TestServer(make_legacy_app(), host="127.0.0.1") as legacy:
        new, port, admin = free_ports(3)
        config = config_for(tmp_path, legacy.port or 0, new)
        argv = ["serve", "-c", str(config), "--port", str(port), "--admin-port", str(admin)]
        async with child_process(strangler(*argv)) as proc, aiohttp.ClientSession() as session:
            await wait_until(lambda: ready_while_running(proc, admin), limit=10)  # the interpreter starts and binds
            async with session.get(f"http://127.0.0.1:{port}/api/orders/3") as r:
                body = await r.json()
            assert body["id"] == 3
            assert await stop_cleanly(proc) == 0


def test_demo_drives_traffic_and_prints_the_route_table(tmp_path: Path) -> None:
    """`strangler demo -n 60` starts both apps and the proxy, sends 60 requests and prints per-route activity."""
    config = config_for(tmp_path, *free_ports(2))
    result = invoke("demo", "-c", str(config), "--requests", "60")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "What each route did" in out
    assert "orders-read" in out
    assert "customers" in out
    assert "60/60" in out
