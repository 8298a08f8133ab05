"""`strangler report`, `diffs list|show` and `noise suggest` through typer's runner on a store filled by the real
proxy pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from proxy.config.loader import load_config
from shadow.store.database import Store
from tests.reports.report_fixtures import REPORT_CONFIG, Filled, fill
from tests.reports.test_export import validate

ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return fill(tmp_path_factory, "cli-report")


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


def base(filled: Filled) -> list[str | Path]:
    return ["--config", filled.config, "--db", filled.db]


def test_report_table(filled: Filled) -> None:
    """The table report at 120 columns names every route, the verdicts and the key fields."""
    code, out, _ = run("report", *base(filled))
    assert code == 0
    for needle in ("orders-read", "orders-list", "customers", "catalog", "search", "reports", "diverging", "ready",
                   "candidate errors", "needs samples", "$.phone", "$.phone_number", "$.meta.generated_at",
                   "/health"):  # fmt: skip
        assert needle in out, needle
    assert max(len(line) for line in out.splitlines()) <= 120


def test_report_json_validates(filled: Filled) -> None:
    """--format json is valid against docs/report.schema.json and carries the verdicts."""
    code, out, _ = run("report", *base(filled), "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert validate(document) == []
    assert {r["id"]: r["verdict"] for r in document["routes"]}["customers"] == "diverging"


def test_report_default_db_comes_from_config(filled: Filled) -> None:
    """Without --db the store is store.path from routes.yaml."""
    code, out, _ = run("report", "--config", filled.config, "--format", "json", "--route", "customers")
    assert code == 0
    assert [r["id"] for r in json.loads(out)["routes"]] == ["customers"]


def test_fail_on_diverging_exits_3(filled: Filled) -> None:
    """--fail-on diverging exits 3 when a route diverges, after printing the report; a clean route exits 0."""
    code, out, _ = run("report", *base(filled), "--fail-on", "diverging")
    assert code == 3
    assert "customers" in out
    code, _, _ = run("report", *base(filled), "--route", "orders-list", "--fail-on", "diverging")
    assert code == 0
    code, _, _ = run("report", *base(filled), "--route", "search", "--fail-on", "candidate-errors", "-f", "json")
    assert code == 3


def test_report_output_files(filled: Filled, tmp_path: Path) -> None:
    """--output writes markdown, junit and table reports to files instead of stdout."""
    for fmt, marker in (("markdown", "# Migration report"), ("junit", "<testsuites"), ("table", "customers")):
        target = tmp_path / f"report.{fmt}"
        code, out, _ = run("report", *base(filled), "--format", fmt, "--output", target)
        assert code == 0
        assert f"wrote {target}" in out.replace("\n", "")
        assert marker in target.read_text()


def test_report_errors_are_one_line(filled: Filled, tmp_path: Path) -> None:
    """A missing store file or an unknown route is an `Error:` line and exit 1, no traceback."""
    code, _, err = run("report", "--config", filled.config, "--db", tmp_path / "missing.db")
    assert code == 1
    assert "Error:" in err
    assert "no such store file" in err
    assert "Traceback" not in err
    code, _, err = run("report", *base(filled), "--route", "nope")
    assert code == 1
    assert "unknown route 'nope'" in err
    code, _, err = run("report", *base(filled), "--since", "yesterday-ish")
    assert code == 1
    assert "--since" in err


def test_diffs_list_filters(filled: Filled) -> None:
    """diffs list filters by route, outcome and field (a concrete path is grouped) and prints JSON rows."""
    code, out, _ = run("diffs", "list", *base(filled), "--route", "customers", "--outcome", "mismatch",
                       "--field", "$.phone", "--limit", "5", "--format", "json")  # fmt: skip
    assert code == 0
    rows = json.loads(out)
    assert 0 < len(rows) <= 5
    assert all(r["route"] == "customers" and r["outcome"] == "mismatch" and r["differences"] >= 2 for r in rows)
    code, out, _ = run("diffs", "list", *base(filled), "--outcome", "candidate_error")
    assert code == 0
    assert "search" in out
    assert "candidate_error" in out


def test_diffs_show_table_and_json(filled: Filled) -> None:
    """diffs show prints the request, both statuses and the JSON diff with the renamed field; JSON has it all."""
    with Store.open_readers([filled.db]) as store:
        row = store.list_exchanges(route_id="customers", outcome="mismatch", limit=1)[0]
    code, out, _ = run("diffs", "show", str(row.id), *base(filled))
    assert code == 0
    assert f"GET {row.path}" in out
    assert "phone_number" in out
    assert "Differences (2)" in out
    diff_lines = [line for line in out.splitlines() if '"phone' in line]
    assert any(line.lstrip("│ ").startswith("-") and '"phone"' in line for line in diff_lines)
    assert any(line.lstrip("│ ").startswith("+") and '"phone_number"' in line for line in diff_lines)
    code, out, _ = run("diffs", "show", str(row.id), *base(filled), "--format", "json")
    document = json.loads(out)
    assert {d["path"] for d in document["differences"]} == {"$.phone", "$.phone_number"}
    assert document["legacy"]["status"] == document["new"]["status"] == 200
    assert "phone" in document["legacy"]["body"]["text"]


def test_diffs_show_unknown_id(filled: Filled) -> None:
    """An id that is not in the store is an error; a malformed id is a usage error."""
    code, _, err = run("diffs", "show", "999999", *base(filled))
    assert code == 1
    assert "no exchange 999999" in err
    code, _, _ = run("diffs", "show", "x1", *base(filled))
    assert code == 2


def test_noise_suggest_prints_yaml(filled: Filled) -> None:
    """noise suggest offers $.meta.generated_at for orders-list as a routes.yaml snippet, and nothing real."""
    code, out, _ = run("noise", "suggest", *base(filled))
    assert code == 0
    assert "- id: orders-list" in out
    assert "ignore_fields:" in out
    assert "$.meta.generated_at" in out
    assert "$.phone" not in out
    code, out, _ = run("noise", "suggest", "orders-list", *base(filled), "--format", "json")
    document = json.loads(out)
    assert document["routes"][0]["ignore_fields"] == ["$.meta.generated_at"]


def test_noise_suggest_apply_keeps_comments(filled: Filled, tmp_path: Path) -> None:
    """--apply adds the rule to routes.yaml, every comment survives, the file still loads; a rerun adds nothing."""
    config = tmp_path / "routes.yaml"
    shutil.copy(filled.config, config)
    code, out, _ = run("noise", "suggest", "--config", config, "--db", filled.db, "--apply")
    assert code == 0
    assert "orders-list: added 1 ignore field" in out
    text = config.read_text()
    for line in REPORT_CONFIG.splitlines():
        if "#" in line:
            assert line.split("#", 1)[1] in text
    route = load_config(config).route("orders-list")
    assert route is not None
    assert "$.meta.generated_at" in route.compare.ignore_fields
    code, out, _ = run("noise", "suggest", "orders-list", "--config", config, "--db", filled.db, "--apply")
    assert code == 0
    assert "No volatile or noise fields to ignore." in out
