"""The TLS keys of routes.yaml: listen.tls and the upstream TLS options load into resolved paths, and (when the files
are checked: serving, `validate`) every unusable file is a config error naming the field, the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from proxy.config.loader import load_config
from proxy.config.model import ConfigError, ConfigIssue
from tests.proxy.tls_fixtures import Pki

UPSTREAMS = """\
upstreams:
  legacy:
    url: "{legacy}"
{options}
routes: []
"""


def _write(tmp_path: Path, listen: str = "", legacy: str = "http://127.0.0.1:9001", options: str = "") -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\n" + listen + UPSTREAMS.format(legacy=legacy, options=options))
    return path


def _issues(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, files=True)
    return list(caught.value.issues)


def _listen(cert: str, key: str, extra: str = "") -> str:
    return f"listen:\n  port: 8443\n  tls:\n    cert: {cert}\n    key: {key}\n{extra}"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_listen_tls_paths_resolve_against_the_config_directory(tmp_path: Path, pki: Pki) -> None:
    """Relative cert and key paths are read from the config file's directory; min_version defaults to 1.2."""
    pki.server("proxy")
    config = load_config(_write(tmp_path, _listen("proxy.pem", "proxy.key")))
    assert config.listen.tls is not None
    assert config.listen.tls.cert == tmp_path / "proxy.pem"
    assert config.listen.tls.key == tmp_path / "proxy.key"
    assert config.listen.tls.min_version == "1.2"


def test_min_version_written_as_a_bare_number_is_accepted(tmp_path: Path, pki: Pki) -> None:
    """`min_version: 1.3` (a YAML float) means TLS 1.3, as does the quoted form."""
    pki.server("proxy")
    config = load_config(_write(tmp_path, _listen("proxy.pem", "proxy.key", "    min_version: 1.3\n")))
    assert config.listen.tls is not None
    assert config.listen.tls.min_version == "1.3"


def test_writing_the_default_min_version_changes_nothing(tmp_path: Path, pki: Pki) -> None:
    """`min_version: "1.2"` loads the same config as leaving it out (the published default)."""
    pki.server("proxy")
    plain = load_config(_write(tmp_path, _listen("proxy.pem", "proxy.key")))
    written = load_config(_write(tmp_path, _listen("proxy.pem", "proxy.key", '    min_version: "1.2"\n')))
    assert written == plain


def test_unknown_min_version_is_an_error(tmp_path: Path, pki: Pki) -> None:
    """TLS 1.1 and older are not offered: min_version 1.1 is refused with the versions allowed."""
    pki.server("proxy")
    (issue,) = _issues(_write(tmp_path, _listen("proxy.pem", "proxy.key", "    min_version: 1.1\n")))
    assert issue.where == "listen.tls.min_version"
    assert issue.hint == "one of: 1.2, 1.3"


def test_missing_certificate_names_the_field_file_and_line(tmp_path: Path, pki: Pki) -> None:
    """A cert file that does not exist is reported at listen.tls.cert with its absolute path and line."""
    pki.server("proxy")
    (issue,) = _issues(_write(tmp_path, _listen("gone.pem", "proxy.key")))
    assert issue.where == "listen.tls.cert"
    assert str(tmp_path / "gone.pem") in issue.message
    assert "cannot read the file" in issue.message
    assert issue.line == 5


def test_key_that_is_not_pem_is_reported_on_the_key(tmp_path: Path, pki: Pki) -> None:
    """A key file holding no PEM private key is reported at listen.tls.key."""
    pki.server("proxy")
    (tmp_path / "junk.key").write_text("not a key\n")
    (issue,) = _issues(_write(tmp_path, _listen("proxy.pem", "junk.key")))
    assert issue.where == "listen.tls.key"
    assert "not a PEM private key" in issue.message


def test_key_of_another_certificate_is_a_mismatch(tmp_path: Path, pki: Pki) -> None:
    """A valid key that belongs to another certificate is reported as not matching the cert file."""
    pki.server("proxy")
    pki.server("other")
    (issue,) = _issues(_write(tmp_path, _listen("proxy.pem", "other.key")))
    assert issue.where == "listen.tls.key"
    assert f"does not match the certificate in {tmp_path / 'proxy.pem'}" in issue.message
    assert issue.hint == "use the key issued with that certificate"


def test_missing_key_in_listen_tls_is_required(tmp_path: Path, pki: Pki) -> None:
    """listen.tls without key: is an error (cert and key are both required)."""
    pki.server("proxy")
    path = tmp_path / "routes.yaml"
    path.write_text(
        "version: 1\nlisten:\n  tls: {cert: proxy.pem}\n" + UPSTREAMS.format(legacy="http://127.0.0.1:9", options="")
    )
    (issue,) = _issues(path)
    assert "key" in issue.message


def test_upstream_tls_options_resolve_and_load(tmp_path: Path, pki: Pki) -> None:
    """ca, client_cert and client_key of an https upstream are resolved against the config directory."""
    pki.client("strangler")
    options = "    ca: ca.pem\n    client_cert: strangler.pem\n    client_key: strangler.key\n    verify: true\n"
    config = load_config(_write(tmp_path, legacy="https://127.0.0.1:9443", options=options))
    legacy = config.upstreams["legacy"]
    assert (legacy.ca, legacy.client_cert, legacy.client_key) == (
        tmp_path / "ca.pem",
        tmp_path / "strangler.pem",
        tmp_path / "strangler.key",
    )
    assert legacy.verify is True


def test_upstream_tls_options_on_http_are_an_error(tmp_path: Path, pki: Pki) -> None:
    """ca on an http:// upstream is refused (it would silently do nothing)."""
    (issue,) = _issues(_write(tmp_path, options="    ca: ca.pem\n"))
    assert issue.where == "upstreams.legacy.ca"
    assert issue.message == "TLS options only apply to https:// upstreams"


def test_client_cert_without_key_is_an_error(tmp_path: Path, pki: Pki) -> None:
    """client_cert alone is refused: mutual TLS needs its key too."""
    pki.client("strangler")
    (issue,) = _issues(_write(tmp_path, legacy="https://127.0.0.1:9443", options="    client_cert: strangler.pem\n"))
    assert issue.where == "upstreams.legacy.client_cert"
    assert issue.message == "client_cert needs client_key"


def test_ca_that_is_not_a_bundle_names_the_field(tmp_path: Path, pki: Pki) -> None:
    """A ca file holding no certificate is reported at upstreams.NAME.ca with its path."""
    (tmp_path / "empty.pem").write_text("")
    (issue,) = _issues(_write(tmp_path, legacy="https://127.0.0.1:9443", options="    ca: empty.pem\n"))
    assert issue.where == "upstreams.legacy.ca"
    assert str(tmp_path / "empty.pem") in issue.message


def test_mismatched_client_key_names_client_key(tmp_path: Path, pki: Pki) -> None:
    """A client key of another certificate is reported at upstreams.NAME.client_key."""
    pki.client("strangler")
    pki.client("someone")
    options = "    client_cert: strangler.pem\n    client_key: someone.key\n"
    (issue,) = _issues(_write(tmp_path, legacy="https://127.0.0.1:9443", options=options))
    assert issue.where == "upstreams.legacy.client_key"
    assert "does not match" in issue.message


def test_encrypted_key_is_refused_instead_of_prompting(tmp_path: Path, pki: Pki) -> None:
    """A passphrase-protected key is a config error on the key (a service must never wait for a passphrase)."""
    _, key = pki.server("proxy")
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (issue,) = _issues(_write(tmp_path, _listen("proxy.pem", "proxy.key")))
    assert issue.where == "listen.tls.key"
    assert "encrypted" in issue.message


def test_commands_that_only_read_the_config_do_not_need_the_files(tmp_path: Path) -> None:
    """Without `files` (report, explain, flip) missing TLS files are no error: those commands may run where the
    service's keys are not readable; the paths are still resolved."""
    options = "    ca: absent-ca.pem\n"
    config = load_config(_write(tmp_path, _listen("absent.pem", "absent.key"), "https://127.0.0.1:9443", options))
    assert config.listen.tls is not None
    assert config.listen.tls.cert == tmp_path / "absent.pem"
    assert config.upstreams["legacy"].ca == tmp_path / "absent-ca.pem"
