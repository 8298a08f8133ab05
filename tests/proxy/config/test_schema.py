"""Each routes.yaml key is declared once: the JSON Schema, its defaults, the README key table and the demo config
are generated from, or checked against, the key tables and the config dataclasses."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.config.keydocs import BEGIN, END, Key, is_leaf, json_schema, keys, markdown, render_json, splice
from proxy.config.loader import load_config, parse_config
from proxy.config.model import Config
from proxy.config.scalars import duration, rate, size
from proxy.config.schema import ROUTE, TOP, Either, ListOf, MapOf, Section, Spec

ROOT = Path(__file__).resolve().parents[3]
LEAVES = [key for key in keys() if is_leaf(key.spec)]
# listen.tls needs real certificate files: its default is checked in tests/proxy/test_tls_config.py.
WITH_DEFAULT = [key for key in LEAVES if key.default is not None and not key.path.startswith("listen.tls.")]

# A small config with one route per mode that takes route-level blocks, so every key has a place to be written.
BASE: dict[str, object] = {
    "version": 1,
    "upstreams": {"legacy": {"url": "http://127.0.0.1:9001"}, "new": {"url": "http://127.0.0.1:9002"}},
    "routes": [
        {"id": "s", "match": {"path": "/s"}, "mode": "shadow"},
        {"id": "c", "match": {"path": "/c"}, "mode": "canary", "canary": {}},
        {"id": "n", "match": {"path": "/n"}, "mode": "new", "verify": {}},
    ],
    "access_log": {},  # an optional block is written, like canary: and verify:, so its keys have a place
}
_ROUTE_FOR_BLOCK = {"shadow": "s", "canary": "c", "verify": "n"}


def _properties(schema: object) -> dict[str, object]:
    assert isinstance(schema, dict)
    properties = schema["properties"]
    assert isinstance(properties, dict)
    return properties


def _load(document: dict[str, object]) -> Config:
    return parse_config(yaml.safe_dump(document, sort_keys=False), Path("/srv/strangler/routes.yaml"))


def _write(document: dict[str, object], path: str, value: object) -> None:
    """Set `path` (e.g. "routes[].canary.interval", "upstreams.NAME.max_connections") wherever it applies."""
    parts = path.split(".")
    targets: list[dict[str, object]] = [document]
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        found: list[dict[str, object]] = []
        for target in targets:
            if last:
                target[part] = value
            elif part == "NAME":
                found += [item for item in target.values() if isinstance(item, dict)]
            elif part.endswith("[]"):
                wanted = _ROUTE_FOR_BLOCK.get(parts[position + 1])
                items = target[part[:-2]]
                assert isinstance(items, list)
                found += [item for item in items if wanted in (None, item["id"])]
            else:
                child = target.setdefault(part, {})
                assert isinstance(child, dict)
                found.append(child)
        targets = found


def _written_paths(text: str) -> set[str]:
    """Every key path routes.yaml writes, counting commented-out keys (`# headers: {...}`) as written."""
    uncommented = re.sub(r"^(\s*)# ?([a-z_]+:(\s|$))", r"\1\2", text, flags=re.MULTILINE)
    paths: set[str] = set()

    def walk(spec: Spec, node: yaml.Node, path: str) -> None:
        if isinstance(spec, Either) and spec.mapping is not None:
            spec = spec.mapping
        if isinstance(spec, Section) and isinstance(node, yaml.MappingNode):
            for key, item in node.value:  # nodes keep repeated keys: alternatives shown one after the other
                if key.value in spec.keys:
                    at = f"{path}.{key.value}" if path else key.value
                    paths.add(at)
                    walk(spec.keys[key.value], item, at)
        elif isinstance(spec, MapOf) and isinstance(node, yaml.MappingNode):
            for _, item in node.value:
                walk(spec.value, item, f"{path}.NAME")
        elif isinstance(spec, ListOf) and isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(spec.item, item, f"{path}[]")

    root = yaml.compose(uncommented, Loader=yaml.SafeLoader)
    assert root is not None
    walk(TOP, root, "")
    return paths


def test_checked_in_schema_matches_the_code() -> None:
    """docs/routes.schema.json is exactly what the code generates (run `make schema` after changing a key)."""
    checked_in = (ROOT / "docs" / "routes.schema.json").read_text(encoding="utf-8")
    assert checked_in == render_json(), "docs/routes.schema.json is stale: run `make schema`"


def test_readme_key_table_matches_the_code() -> None:
    """README.md's key table, between its markers, is exactly the generated one (run `make schema`)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1
    assert readme.count(END) == 1
    assert readme == splice(readme, markdown()), "README.md's key table is stale: run `make schema`"


def test_module_prints_the_schema_and_the_table() -> None:
    """`python -m proxy.config.keydocs --json` and `--markdown` print what json_schema and markdown return."""

    def run(*args: str) -> str:
        command = [sys.executable, "-m", "proxy.config.keydocs", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=30).stdout

    printed = run("--json")
    assert printed == render_json()
    assert json.loads(printed)["title"] == "strangler routes.yaml"
    assert run("--markdown") == markdown()


def test_readme_option_rewrites_only_the_block(tmp_path: Path) -> None:
    """`--readme FILE` replaces a stale table between the markers and leaves the text around it alone."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nBefore.\n\n{BEGIN}\n| stale |\n{END}\n\nAfter.\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "proxy.config.keydocs", "--readme", str(readme)], cwd=ROOT, check=True, timeout=30
    )
    assert readme.read_text(encoding="utf-8") == f"# Title\n\nBefore.\n\n{BEGIN}\n\n{markdown()}\n{END}\n\nAfter.\n"


def test_splice_refuses_a_readme_without_markers() -> None:
    """A README without the markers is an error, not a silently unchanged file."""
    with pytest.raises(ValueError, match="keys:begin"):
        splice("# no table here\n", markdown())


def test_schema_lists_every_key_the_loader_knows() -> None:
    """Top-level and route properties are exactly the loader's key tables, each with a description."""
    schema = json_schema()
    top = _properties(schema)
    route_schema = _properties(schema)["routes"]
    assert isinstance(route_schema, dict)
    route = _properties(route_schema["items"])
    assert set(top) == set(TOP.keys)
    assert set(route) == set(ROUTE.keys)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["version"]
    for properties in (top, route):
        for key, value in properties.items():
            assert isinstance(value, dict)
            assert value.get("description"), f"{key} has no description"


def test_every_leaf_in_the_schema_carries_its_default() -> None:
    """Each leaf of the JSON Schema has `default` equal to the key table's, and only keys with no default lack it."""
    schema = json_schema()
    for key in LEAVES:
        node: object = schema
        for part in key.path.split("."):
            assert isinstance(node, dict)
            node = node["additionalProperties"] if part == "NAME" else _properties(node)[part.removesuffix("[]")]
            if part.endswith("[]"):
                assert isinstance(node, dict)
                node = node["items"]
        assert isinstance(node, dict)
        assert node.get("default") == key.default, key.path


def test_keys_without_a_default_are_required_or_optional_by_design() -> None:
    """Only required keys and keys whose absence turns a feature off lack a dataclass default."""
    without = {key.path for key in LEAVES if key.default is None}
    assert without == {
        "upstreams.NAME.url",
        "routes[].id",
        "routes[].match.path",
        "routes[].match.methods",
        "routes[].mode",
        "routes[].canary.sticky.header",
        "routes[].canary.sticky.cookie",
        "routes[].canary.sticky.client_ip",
        "routes[].canary.guards.max_mismatch_rate",
        "routes[].canary.guards.max_error_rate",
        "routes[].canary.guards.max_p99_ratio",
        "listen.tls.cert",
        "listen.tls.key",
        "upstreams.NAME.ca",
        "upstreams.NAME.client_cert",
        "upstreams.NAME.client_key",
    }


@pytest.mark.parametrize("key", WITH_DEFAULT, ids=[key.path for key in WITH_DEFAULT])
def test_writing_the_documented_default_changes_nothing(key: Key) -> None:
    """Writing a key's published default (schema and README) loads the same config as leaving the key out."""
    written = copy.deepcopy(BASE)
    _write(written, key.path, key.default)
    assert _load(written) == _load(BASE), f"{key.path}: {key.default!r} is not the default"


def test_published_defaults_read_as_written() -> None:
    """Durations, sizes and small rates are shown in the units a person writes, not as raw seconds or bytes."""
    published = {key.path: key.default for key in keys()}
    assert published["defaults.timeouts.read"] == "30s"
    assert published["routes[].canary.interval"] == "10m"
    assert published["store.retention.max_age"] == "7d"
    assert published["limits.max_body"] == "10MiB"
    assert published["limits.max_line_size"] == 8190
    assert published["defaults.readiness.max_mismatch_rate"] == "0.1%"
    assert published["defaults.shadow.sample"] == 1.0
    assert published["defaults.shadow.methods"] == ["GET", "HEAD", "OPTIONS"]
    assert published["routes[].fallback"] == "none"
    assert published["routes[].upstream"] == "new"


def test_units_are_spelled_only_when_exact() -> None:
    """A value no unit writes exactly stays a plain number, so a published default never rounds."""
    assert duration("d").spell(1.5) == "1500ms"
    assert duration("d").spell(0.0001) == 0.0001
    assert duration("d", positive=False).spell(0.0) == 0.0
    assert size("s").spell(1536) == 1536
    assert size("s").spell(3 * 1024**3) == "3GiB"
    assert rate("r").spell(0.05) == "5%"
    assert rate("r").spell(0.25) == 0.25


def test_shared_sections_are_listed_once() -> None:
    """A route's blocks that repeat a defaults block point to it instead of listing its keys again."""
    by_path = {key.path: key for key in keys()}
    assert by_path["routes[].timeouts"].same_as == "defaults.timeouts"
    assert by_path["routes[].shadow"].same_as == "defaults.shadow"
    assert by_path["routes[].verify"].same_as == "defaults.shadow"
    assert not any(path.startswith("routes[].timeouts.") for path in by_path)


def test_demo_config_shows_every_key() -> None:
    """The top-level routes.yaml writes (or shows commented out) every key of the schema, as its header promises."""
    written = _written_paths((ROOT / "routes.yaml").read_text(encoding="utf-8"))
    missing = [key.path for key in keys() if key.path not in written]
    assert not missing, f"routes.yaml does not show: {', '.join(missing)}"


def test_demo_config_uses_only_schema_keys() -> None:
    """Every key written in the top-level routes.yaml is in the schema, and the loader accepts the file."""
    path = ROOT / "routes.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(document) <= set(TOP.keys)
    for written in document["routes"]:
        assert set(written) <= set(ROUTE.keys)
    assert load_config(path).routes


def test_sections_render_closed_objects() -> None:
    """Every fixed-key section renders with additionalProperties false, so editors flag typos too."""

    def walk(spec: object, rendered: object) -> int:
        count = 0
        if isinstance(spec, Section):
            assert isinstance(rendered, dict)
            assert rendered["additionalProperties"] is False
            count += 1
            properties = _properties(rendered)
            for key, child in spec.keys.items():
                count += walk(child, properties[key])
        return count

    assert walk(TOP, json_schema()) > 10
