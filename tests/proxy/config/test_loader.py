"""Loading routes.yaml: unit parsing, every kind of validation message, defaults merging, the demo config."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from yarl import URL

from proxy.config.loader import load_config, parse_config
from proxy.config.model import Compare, Config, ConfigError, ConfigIssue, Mirror, Readiness, Redact, Timeouts
from proxy.config.units import BadValue, parse_duration, parse_rate, parse_size, workers_for
from proxy.jsonpath import BadPath
from proxy.routing import RouteTable

ROOT = Path(__file__).resolve().parents[3]
SOURCE = Path("routes.yaml")
BASE = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
"""  # four lines, so text appended to it starts on line 5
ROUTE_KEYS = "id, match, mode, upstream, legacy, fallback, timeouts, canary, shadow, verify, compare, noise, readiness"


def load(text: str) -> Config:
    return parse_config(text, SOURCE)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return list(caught.value.issues)


def messages(text: str) -> list[str]:
    return [str(issue) for issue in issues(text)]


def route(body: str) -> str:
    """BASE plus one route whose `id: r` line is line 6."""
    indented = "".join(f"    {line}\n" for line in body.strip().splitlines())
    return f"{BASE}routes:\n  - id: r\n{indented}"


# --- units ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        (30, 30.0),
        (1.5, 1.5),
        ("45", 45.0),
    ],
)
def test_parse_duration_accepts_units_and_bare_seconds(value: object, seconds: float) -> None:
    """Durations convert to seconds from every accepted unit and from plain numbers."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "size"),
    [("512", 512), (512, 512), ("10KB", 10_000), ("64KiB", 65_536), ("1MiB", 1_048_576), ("1GiB", 1 << 30), ("2B", 2)],
)
def test_parse_size_accepts_decimal_and_binary_units(value: object, size: int) -> None:
    """Sizes convert to bytes; KB means 1000 and KiB 1024."""
    assert parse_size(value) == size


@pytest.mark.parametrize(("value", "rate"), [(0.001, 0.001), ("0.1%", 0.001), ("25%", 0.25), (1, 1.0), ("0.5", 0.5)])
def test_parse_rate_accepts_fractions_and_percentages(value: object, rate: float) -> None:
    """Rates are fractions in 0..1, written either as a number or as a percentage."""
    assert parse_rate(value) == pytest.approx(rate)


@pytest.mark.parametrize(
    ("parse", "value", "quoted", "accepted"),
    [
        (parse_duration, "5 sec", "'5 sec'", "250ms, 2s"),
        (parse_duration, -1, "-1", "250ms, 2s"),
        (parse_duration, True, "True", "250ms, 2s"),
        (parse_size, "10 MB!", "'10 MB!'", "64KiB"),
        (parse_size, "1.5", "'1.5'", "64KiB"),
        (parse_rate, 5, "5", "0.1%"),
        (parse_rate, "half", "'half'", "0.1%"),
    ],
)
def test_unit_errors_quote_the_value_and_show_accepted_forms(
    parse: object, value: object, quoted: str, accepted: str
) -> None:
    """A bad unit value raises ValueError naming the value and listing what would be accepted."""
    assert callable(parse)
    with pytest.raises(ValueError, match="invalid") as caught:
        parse(value)
    assert quoted in str(caught.value)
    assert accepted in str(caught.value)
    assert isinstance(caught.value, BadValue)


# --- one test per kind of message ----------------------------------------------------------------------------


def test_unknown_upstream_names_the_route_and_lists_known() -> None:
    """An unknown upstream is reported at the route's field, with a close match and the known names."""
    assert messages(route("match: {path: /a}\nmode: shadow\nupstream: legcy")) == [
        "routes.yaml:9: routes[0] (r).upstream: unknown upstream 'legcy' "
        "(hint: did you mean 'legacy'? known: legacy, new)"
    ]


def test_unknown_key_suggests_the_closest_known_key() -> None:
    """A misspelt key is one error whose hint suggests the intended key (no extra 'missing match')."""
    assert messages(route("mach: {path: /a}\nmode: shadow")) == [
        f"routes.yaml:7: routes[0] (r): unknown key 'mach' (hint: did you mean 'match'? known: {ROUTE_KEYS})"
    ]


def test_unknown_key_at_top_level_has_no_location_prefix() -> None:
    """Top-level unknown keys are reported against the file itself."""
    found = issues(BASE + "lisen: {port: 8080}\n")
    assert (found[0].where, found[0].message, found[0].line) == ("", "unknown key 'lisen'", 5)
    assert found[0].hint is not None
    assert found[0].hint.startswith("did you mean 'listen'?")


def test_missing_required_key_is_reported_on_its_parent() -> None:
    """A route without `match.path` or `mode` gets one issue per missing key."""
    assert messages(route("match: {methods: [GET]}")) == [
        "routes.yaml:6: routes[0] (r): missing required key 'mode' (hint: legacy: legacy only; shadow: legacy serves, "
        "new is compared; canary: split; new)",
        "routes.yaml:7: routes[0] (r).match: missing required key 'path' (hint: Path template: /api/orders/{id:int}, "
        "/api/customers/** (literal segments win))",
    ]


def test_wrong_type_says_what_was_expected() -> None:
    """A value of the wrong YAML type is named with what the key expects."""
    assert messages(BASE + "listen: {port: eighty}\ndebug_headers: sometimes\nroutes: {}\n") == [
        "routes.yaml:5: listen.port: expected a whole number, got 'eighty'",
        "routes.yaml:6: debug_headers: expected true or false, got 'sometimes'",
        "routes.yaml:7: routes: expected a list, got a mapping",
    ]


def test_bad_duration_size_and_rate_carry_the_accepted_forms() -> None:
    """Unit errors are located at their key and hint at the accepted spellings."""
    text = route("match: {path: /a}\nmode: shadow\ntimeouts: {read: 5 sec}\nshadow: {max_body: 1 MB!, sample: 5}")
    assert messages(text) == [
        "routes.yaml:9: routes[0] (r).timeouts.read: invalid duration '5 sec' "
        "(hint: accepted: a number of seconds, or 250ms, 2s, 10m, 1h, 7d)",
        "routes.yaml:10: routes[0] (r).shadow.max_body: invalid size '1 MB!' "
        "(hint: accepted: a number of bytes, or 512B, 10KB, 64KiB, 1MiB, 1GiB (KB=1000, KiB=1024))",
        "routes.yaml:10: routes[0] (r).shadow.sample: invalid rate 5 "
        "(hint: did you mean '5%'? accepted: a fraction from 0 to 1 (0.001), or a percentage ('0.1%'))",
    ]


def test_zero_timeout_is_refused() -> None:
    """Timeouts must be positive: a zero read timeout would fail every request."""
    assert messages(BASE + "defaults: {timeouts: {connect: 0}}\n") == [
        "routes.yaml:5: defaults.timeouts.connect: 0 must be more than zero "
        "(hint: accepted: a number of seconds, or 250ms, 2s, 10m, 1h, 7d)"
    ]


def test_duplicate_route_id_points_at_the_first_use() -> None:
    """A repeated id is reported on the later route, naming the earlier one."""
    text = (
        BASE + "routes:\n  - {id: a, match: {path: /a}, mode: legacy}\n  - {id: a, match: {path: /b}, mode: legacy}\n"
    )
    assert messages(text) == [
        "routes.yaml:7: routes[1] (a).id: duplicate route id 'a' "
        "(hint: already used by routes[0] (a); ids must be unique)"
    ]


def test_invalid_route_id_characters() -> None:
    """Route ids are limited to letters, digits, '_', '.' and '-'."""
    text = BASE + "routes:\n  - {id: 'a b', match: {path: /a}, mode: legacy}\n"
    assert messages(text) == [
        "routes.yaml:6: routes[0] (a b).id: invalid name 'a b' (hint: use letters, digits, '_', '.' and '-')"
    ]


def test_canary_weight_out_of_range() -> None:
    """Canary weights are percentages from 0 to 100."""
    assert messages(route("match: {path: /a}\nmode: canary\ncanary: {weight: 150}")) == [
        "routes.yaml:9: routes[0] (r).canary.weight: 150 is out of range (hint: must be at least 0 and at most 100)"
    ]


def test_bad_mode_lists_the_modes() -> None:
    """An unknown mode is refused with the four modes as the hint."""
    assert messages(route("match: {path: /a}\nmode: shadowed")) == [
        "routes.yaml:8: routes[0] (r).mode: invalid value 'shadowed' (hint: one of: legacy, shadow, canary, new)"
    ]


def test_canary_block_without_canary_mode() -> None:
    """A canary: block on a non-canary route is an error rather than silently ignored."""
    assert messages(route("match: {path: /a}\nmode: shadow\ncanary: {weight: 5}")) == [
        "routes.yaml:9: routes[0] (r).canary: only applies to mode canary, and this route is mode shadow "
        "(hint: set mode: canary, or remove the canary: block)"
    ]


def test_canary_mode_without_canary_block() -> None:
    """mode: canary needs its canary: settings."""
    assert messages(route("match: {path: /a}\nmode: canary")) == [
        "routes.yaml:8: routes[0] (r).mode: mode canary needs a canary: block "
        "(hint: add e.g. canary: {weight: 5, sticky: {header: X-User-Id}})"
    ]


def test_canary_sticky_takes_exactly_one_key_and_steps_increase() -> None:
    """sticky: names one bucketing key, and rollout steps must increase."""
    text = route("match: {path: /a}\nmode: canary\ncanary:\n  sticky: {header: X-U, cookie: u}\n  steps: [5, 50, 25]")
    assert messages(text) == [
        "routes.yaml:10: routes[0] (r).canary.sticky: give exactly one of header, cookie, client_ip "
        "(hint: got header, cookie; e.g. sticky: {header: X-User-Id})",
        "routes.yaml:11: routes[0] (r).canary.steps: steps must increase "
        "(hint: 25 follows 50; list weights in increasing order)",
    ]


def test_shadow_on_mode_new_hints_at_verify() -> None:
    """shadow: on a mode-new route is an error whose hint points at verify:."""
    assert messages(route("match: {path: /a}\nmode: new\nshadow: true")) == [
        "routes.yaml:9: routes[0] (r).shadow: only applies to mode shadow or canary, and this route is mode new "
        "(hint: use verify: to mirror new-served traffic to legacy)"
    ]


def test_verify_on_mode_shadow_hints_at_shadow() -> None:
    """verify: only fits mode new; on a shadow route the hint points at shadow:."""
    assert messages(route("match: {path: /a}\nmode: shadow\nverify: {sample: 0.5}")) == [
        "routes.yaml:9: routes[0] (r).verify: only applies to mode new, and this route is mode shadow "
        "(hint: use shadow: to tune mirroring of legacy-served traffic to the new side)"
    ]


def test_fallback_on_legacy_served_route() -> None:
    """fallback: legacy is refused where legacy already serves."""
    assert messages(route("match: {path: /a}\nmode: shadow\nfallback: legacy")) == [
        "routes.yaml:9: routes[0] (r).fallback: only applies when the new side serves (mode new or canary), "
        "and this route is mode shadow (hint: remove fallback:, legacy already serves this route)"
    ]


def test_malformed_json_paths_are_config_errors_with_file_line_and_route() -> None:
    """A compare path that does not parse (ignore_fields, ignore_order, in a route or defaults) is refused at load,
    named by file, line, route and key, instead of turning every pair into a text comparison later."""
    text = BASE + (
        "defaults:\n"
        "  compare: {ignore_order: ['$.a..b']}\n"
        "routes:\n"
        "  - id: orders\n"
        "    match: {path: /a}\n"
        "    mode: shadow\n"
        "    compare:\n"
        "      ignore_fields: [$.ok, '$.items[']\n"
    )
    assert messages(text) == [
        "routes.yaml:6: defaults.compare.ignore_order[0]: cannot parse field path '$.a..b' at character 4 "
        "(hint: e.g. $.meta.generated_at, $.items[*].id, $['odd key'])",
        "routes.yaml:12: routes[0] (orders).compare.ignore_fields[1]: cannot parse field path '$.items[' at "
        "character 8 (hint: e.g. $.meta.generated_at, $.items[*].id, $['odd key'])",
    ]


def test_compare_rules_hold_only_paths_that_compile() -> None:
    """A Compare built in code with a malformed path fails at once with BadPath, which is no ValueError (so no
    "not valid JSON" handler can swallow it)."""
    with pytest.raises(BadPath):
        Compare(ignore_fields=("$.items[",))
    with pytest.raises(BadPath):
        Compare(ignore_order=("$.a[x]",))
    assert not issubclass(BadPath, ValueError)


def test_path_template_error_comes_from_the_router() -> None:
    """A template the router cannot parse is reported at match.path with the router's hint."""
    found = issues(route("match: {path: api/a}\nmode: legacy"))
    assert [(i.where, i.line, i.hint) for i in found] == [("routes[0] (r).match.path", 7, "write '/api/a'")]
    assert "api/a" in found[0].message


def test_ambiguous_routes_are_reported_on_the_later_route() -> None:
    """Two routes matching the same requests with equal precedence: the later one is flagged, naming the first."""
    text = (
        BASE
        + "routes:\n"
        + "  - {id: a, match: {path: '/x/{id}'}, mode: legacy}\n"
        + "  - {id: b, match: {path: '/x/{n}'}, mode: shadow}\n"
    )
    found = issues(text)
    assert [(i.where, i.line) for i in found] == [("routes[1] (b).match", 7)]
    assert "routes[0] (a)" in found[0].message
    assert found[0].hint == "make the path, methods, headers or query tell them apart, or remove one"


def test_unknown_http_method() -> None:
    """Methods are checked against the known HTTP methods."""
    assert messages(route("match: {path: /a, methods: [get, FETCH]}\nmode: legacy")) == [
        "routes.yaml:7: routes[0] (r).match.methods[1]: unknown HTTP method 'FETCH' "
        "(hint: one of: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT)"
    ]


def test_bad_upstream_urls() -> None:
    """Upstream urls must be http(s) with a host and no query or fragment."""
    text = "version: 1\nupstreams:\n  legacy: {url: 'ftp://h'}\n  new: {url: 'http://h/?q=1'}\n"
    assert messages(text) == [
        "routes.yaml:3: upstreams.legacy.url: invalid upstream url 'ftp://h' "
        "(hint: an absolute http:// or https:// URL, e.g. http://10.0.0.5:8000)",
        "routes.yaml:4: upstreams.new.url: upstream url 'http://h/?q=1' has a query or fragment "
        "(hint: give only scheme://host:port/base-path)",
    ]


def test_missing_legacy_upstream() -> None:
    """Unrouted requests go to defaults.legacy, so that upstream must exist."""
    assert messages("version: 1\nupstreams:\n  old: {url: 'http://h'}\n") == [
        "routes.yaml:3: upstreams: no upstream named 'legacy' (it serves unrouted requests) "
        "(hint: define upstreams.legacy, or set defaults.legacy to one of: old)"
    ]


def test_no_upstreams_at_all() -> None:
    """A config with no upstreams gets one clear issue, not one per route."""
    assert messages("version: 1\nroutes:\n  - {id: a, match: {path: /a}, mode: legacy}\n") == [
        "routes.yaml:1: upstreams: no upstreams defined "
        "(hint: add at least the legacy back end, e.g. upstreams: {legacy: {url: 'http://127.0.0.1:9001'}})"
    ]


def test_trusted_proxy_with_host_bits_suggests_the_network() -> None:
    """A CIDR with host bits set is refused with the network it probably meant."""
    assert messages(BASE + "trusted_proxies: [10.0.0.1/8]\n") == [
        "routes.yaml:5: trusted_proxies[0]: network '10.0.0.1/8' has host bits set (hint: did you mean 10.0.0.0/8?)"
    ]


def test_version_is_required_and_must_be_1() -> None:
    """The version key is required and only version 1 is understood."""
    assert messages(BASE.replace("version: 1", "version: 2")) == [
        "routes.yaml:1: version: unsupported version 2 (hint: this strangler reads version: 1)"
    ]
    assert messages(BASE.replace("version: 1\n", "")) == [
        "routes.yaml:1: missing required key 'version' (hint: Config format version; must be 1)"
    ]


def test_duplicate_yaml_key() -> None:
    """A key given twice in one mapping is an error instead of the last one silently winning."""
    assert messages(BASE + "debug_headers: true\ndebug_headers: false\n") == [
        "routes.yaml:6: debug_headers: duplicate key 'debug_headers' (hint: first given on line 5)"
    ]


def test_anchors_merge_keys_and_x_keys() -> None:
    """Top-level `x-*` keys hold anchors; merged keys are overridden by keys written in the route."""
    text = BASE + (
        "x-shadowed: &shadowed {mode: shadow, compare: {ignore_fields: [$.at]}}\n"
        "routes:\n"
        "  - {<<: *shadowed, id: a, match: {path: /a}}\n"
        "  - {<<: *shadowed, id: b, match: {path: /b}, mode: legacy}\n"
    )
    a, b = load(text).routes
    assert (a.mode, b.mode) == ("shadow", "legacy")
    assert b.compare.ignore_fields == ("$.at",)


def test_yaml_syntax_error_is_one_issue_with_its_line() -> None:
    """Broken YAML yields a single issue pointing at the offending line."""
    found = issues(BASE + "routes: [\n  {id: a\n")
    assert len(found) == 1
    assert found[0].message.startswith("invalid YAML")
    assert found[0].line is not None
    assert found[0].line >= 6


def test_empty_and_non_mapping_files() -> None:
    """An empty file and a top-level list each get one clear issue."""
    assert messages("# nothing\n") == [
        "routes.yaml:1: the file is empty (hint: start with 'version: 1', then upstreams: and routes:)"
    ]
    assert messages("- a\n- b\n") == [
        "routes.yaml:1: expected a mapping at the top level, got a list (hint: start with 'version: 1')"
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file, not an OSError."""
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the file"):
        load_config(tmp_path / "missing.yaml")


# --- all at once, merging, the demo --------------------------------------------------------------------------


def test_all_issues_are_reported_at_once_in_file_order() -> None:
    """Errors in different sections all come back from one load, ordered by line."""
    text = BASE + (
        "limits: {max_body: lots}\n"
        "routes:\n"
        "  - {id: a, match: {path: /a}, mode: shadow, upstream: nope}\n"
        "  - {id: b, match: {path: /b}, mode: canary, canary: {weight: -1}}\n"
        "  - {id: c, match: {path: /c, methods: [GOT]}, mode: legacy, extra: 1}\n"
    )
    found = issues(text)
    assert [(i.line, i.where) for i in found] == [
        (5, "limits.max_body"),
        (7, "routes[0] (a).upstream"),
        (8, "routes[1] (b).canary.weight"),
        (9, "routes[2] (c).match.methods[0]"),
        (9, "routes[2] (c)"),
    ]


def test_breaker_keys_are_checked_where_they_are_written() -> None:
    """A breaker that could never open (0 failures) or a cooldown that is not a duration is an error there."""
    text = BASE.replace(
        'new: {url: "http://127.0.0.1:9002"}',
        'new: {url: "http://127.0.0.1:9002", breaker_failures: 0, breaker_cooldown: soon}',
    )
    found = issues(text)
    assert sorted(i.where for i in found) == ["upstreams.new.breaker_cooldown", "upstreams.new.breaker_failures"]


def test_shadow_limits_are_checked_where_they_are_written() -> None:
    """No copy could ever be sent with shadow_in_flight 0, a backlog must be a size and a nice value goes up to 19:
    each is an error there."""
    found = issues(BASE + "limits: {shadow_in_flight: 0, shadow_backlog: lots, shadow_worker_nice: 20}\n")
    assert sorted(i.where for i in found) == [
        "limits.shadow_backlog",
        "limits.shadow_in_flight",
        "limits.shadow_worker_nice",
    ]


def test_route_settings_merge_over_defaults() -> None:
    """Route blocks override defaults key by key; compare lists extend the defaults' lists."""
    text = BASE + (
        "defaults:\n"
        "  timeouts: {connect: 500ms, read: 20s}\n"
        "  shadow: {sample: 50%, timeout: 3s}\n"
        "  compare: {ignore_fields: [$.meta.id], headers: [etag], ignore_order: [$.a]}\n"
        "  noise: {sample: 0.1}\n"
        "  readiness: {min_compared: 10}\n"
        "routes:\n"
        "  - id: r\n"
        "    match: {path: /a, methods: [get]}\n"
        "    mode: shadow\n"
        "    timeouts: {read: 1m}\n"
        "    shadow: {sample: 1.0}\n"
        "    compare: {ignore_fields: [$.x, $.meta.id], ignore_order: [$.b], float_tolerance: 0.01}\n"
        "    readiness: {max_error_rate: 1%}\n"
        "  - {id: plain, match: {path: /b}, mode: shadow}\n"
    )
    custom, plain = load(text).routes
    assert custom.timeouts == Timeouts(connect=0.5, read=60.0)
    assert custom.shadow == Mirror(sample=1.0, timeout=3.0)
    assert custom.compare == Compare(
        ignore_fields=("$.meta.id", "$.x"),
        headers=Compare().headers | {"etag"},
        ignore_order=("$.a", "$.b"),
        float_tolerance=0.01,
    )
    assert custom.noise.sample == pytest.approx(0.1)
    assert custom.readiness == Readiness(min_compared=10, max_error_rate=0.01)
    assert custom.match.methods == frozenset({"GET"})
    assert plain.timeouts == Timeouts(connect=0.5, read=20.0)
    assert plain.shadow == Mirror(sample=0.5, timeout=3.0)
    assert (custom.index, plain.index) == (0, 1)


def test_mirrors_follow_the_mode() -> None:
    """shadow is always set for mode shadow, only on request for canary; verify only for mode new."""
    text = BASE + (
        "routes:\n"
        "  - {id: s, match: {path: /s}, mode: shadow}\n"
        "  - {id: c, match: {path: /c}, mode: canary, canary: {weight: 5}}\n"
        "  - {id: cs, match: {path: /cs}, mode: canary, canary: {sticky: {client_ip: true}}, shadow: {sample: 0.5}}\n"
        "  - {id: n, match: {path: /n}, mode: new, verify: true, fallback: legacy}\n"
        "  - {id: nn, match: {path: /nn}, mode: new}\n"
    )
    s, c, cs, n, nn = load(text).routes
    assert (s.shadow, c.shadow, cs.shadow) == (Mirror(), None, Mirror(sample=0.5))
    assert c.canary is not None
    assert c.canary.weight == 5.0
    assert cs.canary is not None
    assert cs.canary.sticky is not None
    assert cs.canary.sticky.kind == "client_ip"
    assert (n.verify, n.fallback, nn.verify, nn.fallback) == (Mirror(), True, None, False)
    assert s.legacy == "legacy"
    assert s.upstream == "new"


def test_top_level_sections(tmp_path: Path) -> None:
    """Store paths resolve against the config's directory; redact lists add to the built-ins; urls lose a trailing /."""
    path = tmp_path / "conf" / "routes.yaml"
    path.parent.mkdir()
    path.write_text(
        "version: 1\n"
        "upstreams:\n"
        "  legacy: {url: 'http://127.0.0.1:9001/base/', host_header: preserve}\n"
        "store: {path: data/s.db, body_cap: 1KiB, redact: {headers: [X-Session], fields: [pin]}}\n"
        "limits: {max_body: 1MiB, header_timeout: 250ms,\n"
        "         shadow_in_flight: 8, shadow_waiting: 0, shadow_backlog: 2MiB, shadow_worker_nice: 3}\n"
        "trusted_proxies: [10.0.0.0/8, '::1']\n"
        "listen: {port: 0}\n"
    )
    config = load_config(path)
    assert config.store.path == path.parent / "data" / "s.db"
    assert config.store.body_cap == 1024
    assert config.store.redact.headers == Redact().headers | {"x-session"}
    assert "pin" in config.store.redact.fields
    assert "password" in config.store.redact.fields
    assert config.upstreams["legacy"].url == URL("http://127.0.0.1:9001/base")
    assert config.upstreams["legacy"].host_header == "preserve"
    assert (config.limits.max_body, config.limits.header_timeout) == (1 << 20, 0.25)
    limits = config.limits
    assert (limits.shadow_in_flight, limits.shadow_waiting, limits.shadow_backlog) == (8, 0, 2 << 20)
    assert limits.shadow_worker_nice == 3
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert config.listen.port == 0
    assert config.source == path


def test_demo_routes_yaml_loads() -> None:
    """The checked-in routes.yaml is valid, routes the demo API and leaves /health to legacy."""
    config = load_config(ROOT / "routes.yaml")
    modes = {r.id: r.mode for r in config.routes}
    assert modes == {
        "orders-read": "shadow",
        "orders-list": "shadow",
        "orders-write": "legacy",
        "customers": "canary",
        "catalog": "shadow",
        "search": "new",
        "reports": "new",
    }
    assert config.upstreams["legacy"].url == URL("http://127.0.0.1:9001")
    assert config.upstreams["new"].url == URL("http://127.0.0.1:9002")
    assert (config.listen.port, config.admin.port) == (8080, 8081)
    assert config.store.path == ROOT / "strangler.db"
    table = RouteTable.build(config.routes)
    assert table.match("GET", ("health",), {}, {}) is None
    found = table.match("GET", ("api", "orders", "7"), {}, {})
    assert found is not None
    assert found.route.id == "orders-read"


@pytest.mark.parametrize(("written", "kept"), [("", 1), ("workers: 4\n", 4), ("workers: auto\n", "auto")])
def test_workers_is_a_count_or_auto(written: str, kept: object) -> None:
    """`workers:` keeps a whole number from 1 or `auto` (resolved to the core count when serve starts); default 1."""
    assert load(BASE + written).workers == kept
    assert workers_for(load(BASE + written).workers) == (os.cpu_count() or 1 if kept == "auto" else kept)


@pytest.mark.parametrize("written", ["0", "-2", "two", "1.5", "true"])
def test_workers_refuses_anything_else_with_the_accepted_forms(written: str) -> None:
    """A worker count that is neither a whole number from 1 nor auto is an error naming the key and the forms."""
    found = messages(BASE + f"workers: {written}\n")
    assert any("workers" in m and "auto (one per CPU core)" in m for m in found), found
