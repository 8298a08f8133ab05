"""Property: any YAML document given to the config loader ends as a Config or a ConfigError, never another
exception (issue 10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config.loader import parse_config
from proxy.config.model import Config, ConfigError

pytestmark = pytest.mark.unit

SOURCE = Path("/nonexistent/routes.yaml")

# The loader's own words, so generated documents reach deep into its checks instead of failing at the top level.
KEYS = st.sampled_from(
    [
        "version", "listen", "admin", "upstreams", "defaults", "routes", "limits", "store", "trusted_proxies",
        "debug_headers", "via", "legacy", "new", "url", "id", "match", "path", "methods", "mode", "canary",
        "weight", "sticky", "shadow", "verify", "compare", "ignore", "host", "port", "timeout", "fallback",
        "max_body", "path", "retention", "redact", "sample", "headers", "cookie", "header", "upstream",
        "max_connections", "token_env", "drain_timeout", "shadow_backlog", "sample_matches",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["legacy", "new", "shadow", "canary", "/api/**", "http://127.0.0.1:1", "2s", "1MiB", "GET", 1]),
    st.binary(max_size=8),
)
DOCUMENTS: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=6), st.integers()), inner, max_size=5),
    ),
    max_leaves=30,
)


def _outcome(text: str) -> None:
    try:
        result = parse_config(text, SOURCE)
    except ConfigError:
        return
    assert isinstance(result, Config)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_yaml_document_is_a_config_or_a_config_error(document: Any) -> None:
    """A YAML document of any shape (dumped by PyYAML) loads as a Config or raises ConfigError, nothing else."""
    _outcome(yaml.safe_dump(document) if not isinstance(document, bytes) else yaml.dump(document))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(":-[]{}!&*|>'\"#%@ \n\tabc01/.?,")), max_size=80))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    """Arbitrary YAML-ish text (tags, anchors, flow and block syntax) loads as a Config or raises ConfigError."""
    _outcome(text)


def _base() -> dict[str, Any]:
    return {
        "version": 1,
        "listen": {"host": "127.0.0.1", "port": 8080},
        "upstreams": {"legacy": {"url": "http://127.0.0.1:9001"}, "new": {"url": "http://127.0.0.1:9002"}},
        "defaults": {"timeout": "2s"},
        "limits": {"max_body": "1MiB"},
        "store": {"path": "shadow.db", "retention": {"max_age": "7d"}},
        "routes": [
            {"id": "a", "match": {"path": "/api/**", "methods": ["GET"]}, "mode": "shadow",
             "shadow": {"sample": 0.5}, "compare": {"ignore": ["$.at"]}},
            {"id": "b", "match": {"path": "/b/{id}"}, "mode": "canary", "canary": {"weight": 10}},
        ],
    }  # fmt: skip


def _places(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_places(value, (*at, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_places(value, (*at, i)))
    return found


_PLACES = _places(_base())[1:]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_PLACES), DOCUMENTS)
def test_a_real_config_with_any_value_anywhere_is_a_config_or_a_config_error(at: tuple[Any, ...], value: Any) -> None:
    """A working config with one value replaced by anything loads as a Config or raises ConfigError."""
    doc = _base()
    node = doc
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = value
    _outcome(yaml.dump(doc))
