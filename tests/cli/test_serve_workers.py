"""`serve --workers`: the count comes from the flag, else the config's `workers:`, and each worker's command line."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from cli.serve_workers import worker_command, worker_count
from proxy.worker_role import WorkerRole
from tests.proxy.app_fixtures import write_config


def _config(tmp_path: Path, workers: str = "") -> Path:
    return write_config(tmp_path / "routes.yaml", legacy=9, new=9, settings=f"workers: {workers}" if workers else "")


def test_the_flag_wins_over_the_config_key_which_wins_over_one(tmp_path: Path) -> None:
    """--workers overrides `workers:`; without either the count is 1; auto is the core count."""
    assert worker_count(None, _config(tmp_path)) == 1
    assert worker_count(None, _config(tmp_path, "3")) == 3
    assert worker_count("2", _config(tmp_path, "3")) == 2
    assert worker_count("auto", _config(tmp_path, "3")) == (os.cpu_count() or 1)
    assert worker_count(None, _config(tmp_path, "auto")) == (os.cpu_count() or 1)


def test_an_unreadable_config_leaves_one_worker_for_serve_to_report(tmp_path: Path) -> None:
    """A config that does not load counts as one worker: the lone serve then reports the error as before."""
    assert worker_count(None, tmp_path / "missing.yaml") == 1


def test_a_bad_worker_count_is_a_usage_error(tmp_path: Path) -> None:
    """`serve --workers 0` exits 2 naming the option and the accepted forms, before starting anything."""
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["serve", "--config", str(_config(tmp_path)), "--workers", "0"]
    )
    assert result.exit_code == 2
    assert "--workers" in result.output
    assert "auto" in result.output


def test_a_worker_runs_serve_alone_quietly_in_its_place(tmp_path: Path) -> None:
    """A worker's command is `serve` with one worker, quiet, the supervisor's port and the worker's hidden place."""
    role = WorkerRole.in_directory(tmp_path, 1)
    command = list(
        worker_command(role, config=Path("r.yaml"), host=None, port=8080, db=Path("s.db"), shadow_worker=False)
    )
    tail = command[command.index("serve") :]
    assert tail[:5] == ["serve", "--config", "r.yaml", "--port", "8080"]
    assert tail[5:7] == ["--workers", "1"]
    assert "--quiet" in tail
    assert tail[tail.index("--worker-dir") + 1] == str(tmp_path)
    assert tail[tail.index("--worker-index") + 1] == "1"
    assert "--no-shadow-worker" in tail
    assert tail[tail.index("--db") + 1] == "s.db"
    assert "--host" not in tail
    assert "--server" not in tail  # the worker then chooses as a lone proxy would ($STRANGLER_SERVER, listen.server)


def test_a_workers_command_carries_the_chosen_listener(tmp_path: Path) -> None:
    """`serve --workers 2 --server aiohttp` runs every worker on the aiohttp listener, not the default."""
    role = WorkerRole.in_directory(tmp_path, 0)
    command = list(
        worker_command(role, config=Path("r.yaml"), host=None, port=8080, db=None, shadow_worker=True, server="aiohttp")
    )
    assert command[command.index("--server") + 1] == "aiohttp"
