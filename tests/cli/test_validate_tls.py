"""`strangler validate` checks the TLS files routes.yaml names, as serving does (other commands only read paths)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from tests.proxy.tls_fixtures import Pki

CONFIG = """\
version: 1
listen:
  tls: {{cert: {cert}, key: {key}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:9001"}}
routes: []
"""


def test_validate_reports_a_missing_certificate(tmp_path: Path) -> None:
    """A certificate that does not exist is an error line naming field and file; exit 1."""
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(cert="absent.pem", key="absent.key"))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 1
    assert f"listen.tls.cert: {tmp_path / 'absent.pem'}: cannot read the file" in result.stderr


def test_validate_accepts_a_matching_pair(tmp_path: Path) -> None:
    """A certificate and its key made by a test CA validate cleanly."""
    Pki(tmp_path).server("proxy")
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(cert="proxy.pem", key="proxy.key"))
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 0 routes, 1 upstreams")
