"""access_log: in routes.yaml: defaults, path resolution and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.loader import parse_config
from proxy.config.model import AccessLog, ConfigError

SOURCE = Path("/srv/strangler/routes.yaml")
BASE = "version: 1\nupstreams: {legacy: {url: 'http://127.0.0.1:9001'}}\n"


def test_left_out_means_no_access_log() -> None:
    """Without the block there is no access log."""
    assert parse_config(BASE, SOURCE).access_log is None


def test_an_empty_block_takes_the_defaults() -> None:
    """access_log: {} logs every request as JSON to standard output."""
    assert parse_config(BASE + "access_log: {}\n", SOURCE).access_log == AccessLog(path="-", format="json", sample=1.0)


def test_a_relative_path_resolves_next_to_the_config_file() -> None:
    """Relative paths resolve against the config file's directory; absolute ones stay as written."""
    relative = parse_config(BASE + "access_log: {path: logs/access.log, format: combined, sample: 10%}\n", SOURCE)
    assert relative.access_log == AccessLog(path="/srv/strangler/logs/access.log", format="combined", sample=0.1)
    absolute = parse_config(BASE + "access_log: {path: /var/log/a.log}\n", SOURCE)
    assert absolute.access_log is not None
    assert absolute.access_log.path == "/var/log/a.log"


@pytest.mark.parametrize(
    ("block", "where", "says"),
    [
        ("{format: xml}", "access_log.format", "one of: json, combined"),
        ("{sample: 2}", "access_log.sample", ""),
        ("{path: ''}", "access_log.path", "standard output"),
        ("{rotate: daily}", "access_log", "rotate"),
    ],
)
def test_invalid_values_are_errors_naming_the_field(block: str, where: str, says: str) -> None:
    """A wrong value or an unknown key is a ConfigError naming access_log's field, with a hint."""
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"access_log: {block}\n", SOURCE)
    text = str(caught.value)
    assert where in text
    assert says in text
