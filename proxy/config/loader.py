"""Load routes.yaml into a `Config`, reporting every problem at once with its file, line, place and a hint.

Two passes: `proxy.config.yaml_walk.Walker` checks the YAML tree against `proxy.config.schema`'s key tables (unknown
keys, types, units) and yields `Table`s of converted values; the builders below make the frozen `proxy.config.model`
types, merge route settings over `defaults:`, and check what spans keys (upstream names, modes, ids, routing)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from yarl import URL

from proxy.config.files import resolve
from proxy.config.model import (
    MODES,
    AccessLog,
    Admin,
    Canary,
    Compare,
    Config,
    ConfigError,
    ConfigIssue,
    Defaults,
    Guards,
    Limits,
    Listen,
    Match,
    Mirror,
    Mode,
    Noise,
    Readiness,
    Redact,
    Retention,
    Route,
    Sticky,
    Store,
    Timeouts,
    Upstream,
)
from proxy.config.schema import TOP
from proxy.config.tls_keys import listen_tls, upstream_tls
from proxy.config.yaml_walk import Issues, Table, Walker, describe_node, node_line, suggest
from proxy.modes import key_allowed
from proxy.routing import AmbiguousRoutesError, RouteTable
from proxy.templates import TemplateError, parse_template

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")


def _merged(base: D, table: Table, skip: tuple[str, ...] = ()) -> D:
    """`base` with the table's plain values applied; table keys are the dataclass's field names by design."""
    changes: dict[str, Any] = {k: v for k, v in table.values.items() if not isinstance(v, Table) and k not in skip}
    return replace(base, **changes)


def _extend(base: tuple[str, ...], more: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(base + (more or ())))


def _compare(base: Compare, table: Table) -> Compare:
    """Lists extend the base (a route adds ignored fields to the defaults); scalars replace it."""
    order = table.values.get("ignore_order", base.ignore_order)
    if isinstance(order, tuple) and isinstance(base.ignore_order, tuple):
        order = _extend(base.ignore_order, order)
    tolerance = table.get("float_tolerance", float)
    same_origin = table.get("same_origin", bool)
    return Compare(
        ignore_fields=_extend(base.ignore_fields, table.get("ignore_fields", tuple)),
        ignore_headers=base.ignore_headers | (table.get("ignore_headers", frozenset) or frozenset()),
        headers=base.headers | (table.get("headers", frozenset) or frozenset()),
        ignore_order=order if isinstance(order, bool | tuple) else base.ignore_order,
        float_tolerance=base.float_tolerance if tolerance is None else tolerance,
        same_origin=base.same_origin if same_origin is None else same_origin,
    )


def _defaults(table: Table) -> Defaults:
    return Defaults(
        legacy=table.get("legacy", str) or Defaults().legacy,
        new=table.get("new", str) or Defaults().new,
        timeouts=_merged(Timeouts(), table.table("timeouts")),
        shadow=_merged(Mirror(), table.table("shadow")),
        compare=_compare(Compare(), table.table("compare")),
        noise=_merged(Noise(), table.table("noise")),
        readiness=_merged(Readiness(), table.table("readiness")),
    )


def _store(table: Table, source: Path) -> Store:
    written = table.get("path", str)
    path = resolve(written or Store().path, source)
    redact = table.table("redact")
    empty: frozenset[str] = frozenset()
    builtin = Redact()
    return replace(
        _merged(Store(), table, skip=("path",)),
        path=path,
        retention=_merged(Retention(), table.table("retention")),
        redact=Redact(
            headers=builtin.headers | (redact.get("headers", frozenset) or empty),
            fields=builtin.fields | (redact.get("fields", frozenset) or empty),
            query=builtin.query | (redact.get("query", frozenset) or empty),
        ),
    )


def _upstreams(table: Table, source: Path, issues: Issues, files: bool) -> dict[str, Upstream]:
    built = {}
    for name, spec in table.values.items():
        if isinstance(spec, Table) and isinstance(url := spec.values.get("url"), URL):
            tls_keys = ("ca", "client_cert", "client_key")  # paths: resolved and checked by upstream_tls
            built[name] = upstream_tls(_merged(Upstream(name, url), spec, skip=tls_keys), spec, source, issues, files)
    return built


class _RouteBuilder:
    """Builds routes over the defaults and checks what spans keys: upstream names, modes, ids, ambiguity."""

    def __init__(self, defaults: Defaults, defaults_table: Table, names: list[str], issues: Issues) -> None:
        self.defaults = defaults
        self.defaults_table = defaults_table
        self.names = names
        self.issues = issues

    def build_all(self, tables: list[Table]) -> list[Route]:
        routes: list[Route] = []
        routable: list[Route] = []
        first_use: dict[str, Table] = {}
        for table in tables:
            route = self.build(table)
            routes.append(route)
            if table.get("id", str) is not None:
                if route.id in first_use:
                    hint = f"already used by {first_use[route.id].where}; ids must be unique"
                    self.issues.add(table.at("id"), f"duplicate route id '{route.id}'", hint, table.line_of("id"))
                first_use.setdefault(route.id, table)
            if self._template_ok(table, route):
                routable.append(route)
        try:
            RouteTable.build(routable)
        except AmbiguousRoutesError as exc:
            by_index = {table.index: table for table in tables}
            for a, b, why in exc.conflicts:
                later = by_index[max(a.index, b.index)]
                hint = "make the path, methods, headers or query tell them apart, or remove one"
                self.issues.add(later.at("match"), why, hint, later.line_of("match"))
        return routes

    def _template_ok(self, table: Table, route: Route) -> bool:
        match = table.table("match")
        if match.get("path", str) is None:
            return False
        try:
            parse_template(route.match.path)
        except TemplateError as exc:
            self.issues.add(match.at("path"), str(exc), exc.hint or None, match.line_of("path"))
            return False
        return True

    def build(self, table: Table) -> Route:
        written_mode = table.get("mode", str)
        mode: Mode = next((m for m in MODES if m == written_mode), "legacy")
        checks = written_mode is not None  # with no valid mode, mode-dependent checks would only add noise
        fallback = table.get("fallback", str) == "legacy"
        if checks and fallback and not key_allowed("fallback", mode):
            self.issues.add(
                table.at("fallback"),
                f"only applies when the new side serves (mode new or canary), and this route is mode {mode}",
                "remove fallback:, legacy already serves this route",
                table.line_of("fallback"),
            )
        return Route(
            id=table.get("id", str) or f"#{table.index}",
            index=table.index,
            match=self._match(table.table("match")),
            mode=mode,
            legacy=self._upstream(table, "legacy", self.defaults.legacy),
            upstream=self._upstream(table, "upstream", self.defaults.new),
            fallback=fallback,
            timeouts=_merged(self.defaults.timeouts, table.table("timeouts")),
            canary=self._canary(table, mode, checks),
            shadow=self._shadow(table, mode, checks),
            verify=self._verify(table, mode, checks),
            compare=_compare(self.defaults.compare, table.table("compare")),
            noise=_merged(self.defaults.noise, table.table("noise")),
            readiness=_merged(self.defaults.readiness, table.table("readiness")),
        )

    def _match(self, table: Table) -> Match:
        headers, query = table.table("headers"), table.table("query")
        return Match(
            path=table.get("path", str) or "/",
            methods=table.get("methods", frozenset),
            headers=tuple((name.lower(), str(value)) for name, value in headers.values.items()),
            query=tuple((name, str(value)) for name, value in query.values.items()),
            allow_encoded_slash=table.get("allow_encoded_slash", bool) or False,
        )

    def _upstream(self, table: Table, key: str, default: str) -> str:
        """The upstream name for one side; unknown names are reported where they were written."""
        name = table.get(key, str)
        if name is not None:
            if self.names and name not in self.names:
                hint = suggest(name, self.names)
                self.issues.add(table.at(key), f"unknown upstream '{name}'", hint, table.line_of(key))
            return name
        side = "legacy" if key == "legacy" else "new"
        # An unknown default is reported once, at defaults: or upstreams:, not on every route.
        if self.names and default not in self.names and key == "upstream" and side not in self.defaults_table.lines:
            self.issues.add(
                table.at(key),
                f"unknown upstream '{default}' (the default from defaults.new)",
                f"set upstream: on this route, or define upstreams.{default} (known: {', '.join(self.names)})",
                table.line,
            )
        return default

    def _canary(self, table: Table, mode: Mode, checks: bool) -> Canary | None:
        if "canary" not in table.lines:
            if checks and mode == "canary":
                hint = "add e.g. canary: {weight: 5, sticky: {header: X-User-Id}}"
                self.issues.add(table.at("mode"), "mode canary needs a canary: block", hint, table.line_of("mode"))
                return Canary()
            return None
        if checks and not key_allowed("canary", mode):
            message = f"only applies to mode canary, and this route is mode {mode}"
            hint = "set mode: canary, or remove the canary: block"
            self.issues.add(table.at("canary"), message, hint, table.line_of("canary"))
            return None
        block = table.table("canary")
        steps = block.get("steps", tuple) or ()
        for before, after in itertools.pairwise(steps):
            if after <= before:
                hint = f"{after:g} follows {before:g}; list weights in increasing order"
                self.issues.add(block.at("steps"), "steps must increase", hint, block.line_of("steps"))
                break
        guards = _merged(Guards(), block.table("guards"))
        return replace(_merged(Canary(), block), sticky=self._sticky(block), guards=guards)

    def _sticky(self, canary: Table) -> Sticky | None:
        if "sticky" not in canary.lines:
            return None
        block = canary.table("sticky")
        given = [key for key in ("header", "cookie", "client_ip") if key in block.lines]
        if len(given) != 1:
            hint = f"got {', '.join(given) or 'none'}; e.g. sticky: {{header: X-User-Id}}"
            self.issues.add(block.where, "give exactly one of header, cookie, client_ip", hint, block.line)
            return None
        value = block.values.get(given[0])
        if given[0] == "client_ip":
            if value is False:
                hint = "remove sticky: to pick a side per request at random"
                self.issues.add(
                    block.at("client_ip"), "client_ip: false has no effect", hint, block.line_of("client_ip")
                )
            return Sticky("client_ip") if value is True else None
        return Sticky("header" if given[0] == "header" else "cookie", value) if isinstance(value, str) else None

    def _mirror(self, table: Table, key: str) -> Mirror | None:
        value = table.values.get(key)
        if isinstance(value, Table):
            return _merged(self.defaults.shadow, value)
        return self.defaults.shadow if value is True else None

    def _shadow(self, table: Table, mode: Mode, checks: bool) -> Mirror | None:
        given = "shadow" in table.lines
        if mode == "shadow":
            if table.values.get("shadow") is False:
                hint = "use mode: legacy to stop mirroring"
                self.issues.add(table.at("shadow"), "mode shadow always mirrors", hint, table.line_of("shadow"))
            return self._mirror(table, "shadow") or self.defaults.shadow
        if key_allowed("shadow", mode) or not given or not checks:
            return self._mirror(table, "shadow") if key_allowed("shadow", mode) else None
        hint = {
            "new": "use verify: to mirror new-served traffic to legacy",
            "legacy": "set mode: shadow to mirror legacy-served traffic to the new side",
        }[mode]
        message = f"only applies to mode shadow or canary, and this route is mode {mode}"
        self.issues.add(table.at("shadow"), message, hint, table.line_of("shadow"))
        return None

    def _verify(self, table: Table, mode: Mode, checks: bool) -> Mirror | None:
        if key_allowed("verify", mode):
            return self._mirror(table, "verify")
        if "verify" in table.lines and checks:
            hint = "use shadow: to tune mirroring of legacy-served traffic to the new side"
            if mode == "legacy":
                hint = "set mode: new to serve from the new side and check it against legacy"
            message = f"only applies to mode new, and this route is mode {mode}"
            self.issues.add(table.at("verify"), message, hint, table.line_of("verify"))
        return None


def _build(top: Table, source: Path, issues: Issues, files: bool) -> Config:
    upstream_table = top.table("upstreams")
    names = sorted(upstream_table.lines)  # every name written, so one bad url does not cascade
    defaults_table = top.table("defaults")
    defaults = _defaults(defaults_table)
    if not names:
        hint = "add at least the legacy back end, e.g. upstreams: {legacy: {url: 'http://127.0.0.1:9001'}}"
        issues.add("upstreams", "no upstreams defined", hint, top.line_of("upstreams"))
    for side in ("legacy", "new"):
        name = getattr(defaults, side)
        if names and side in defaults_table.lines and name not in names:
            where = defaults_table.at(side)
            issues.add(where, f"unknown upstream '{name}'", suggest(name, names), defaults_table.line_of(side))
    if names and defaults.legacy not in names and "legacy" not in defaults_table.lines:
        hint = f"define upstreams.legacy, or set defaults.legacy to one of: {', '.join(names)}"
        issues.add("upstreams", "no upstream named 'legacy' (it serves unrouted requests)", hint, upstream_table.line)
    written_routes = top.values.get("routes")
    route_tables = [t for t in written_routes if isinstance(t, Table)] if isinstance(written_routes, list) else []
    routes = _RouteBuilder(defaults, defaults_table, names, issues).build_all(route_tables)
    listen = replace(_merged(Listen(), top.table("listen")), tls=listen_tls(top.table("listen"), source, issues, files))
    admin = _merged(Admin(), top.table("admin"))
    if listen.port and (listen.host, listen.port) == (admin.host, admin.port):
        hint = "give admin: a different port"
        issues.add("admin.port", f"admin and listen both use {admin.host}:{admin.port}", hint, top.line_of("admin"))
    return Config(
        source=source,
        listen=listen,
        admin=admin,
        store=_store(top.table("store"), source),
        upstreams=MappingProxyType(_upstreams(upstream_table, source, issues, files)),
        defaults=defaults,
        routes=tuple(routes),
        limits=_merged(Limits(), top.table("limits")),
        trusted_proxies=top.get("trusted_proxies", tuple) or (),
        debug_headers=top.get("debug_headers", bool) or False,
        via=top.get("via", str) or "strangler",
        access_log=_access_log(top.table("access_log"), source) if "access_log" in top.lines else None,
        workers=top.get("workers", int) or top.get("workers", str) or 1,
    )


def _access_log(table: Table, source: Path) -> AccessLog:
    """The access_log: section; a file path resolves against the config file's directory ("-" is stdout)."""
    built = _merged(AccessLog(), table)
    return built if built.path == "-" else replace(built, path=str(resolve(built.path, source)))


def load_config(path: str | Path, *, files: bool = False) -> Config:
    """Read and validate a config file; raises `ConfigError` listing every issue found. `files`: also load the TLS
    files it names (what serving and `validate` need; a report does not, and may run where they are unreadable)."""
    source = Path(path)
    return parse_config(read_config_text(source), source, files=files)


def read_config_text(source: Path) -> str:
    """The text of a config file; raises `ConfigError` when it cannot be read (missing, a directory, not UTF-8)."""
    try:
        return source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([ConfigIssue(str(source), "", f"cannot read the file: {reason}")]) from exc


def parse_config(text: str, source: Path, *, files: bool = False) -> Config:
    """Validate config text; `source` names it in messages and anchors relative paths (the store file)."""
    issues = Issues(str(source))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        issues.add(
            "",
            f"invalid YAML: {problem}",
            "check indentation, quoting and brackets near this line",
            None if mark is None else mark.line + 1,
        )
        raise ConfigError(issues.found) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(str(source), "", f"invalid YAML: {exc}")]) from exc
    if root is None:
        issues.add("", "the file is empty", "start with 'version: 1', then upstreams: and routes:", 1)
        raise ConfigError(issues.found)
    if not isinstance(root, yaml.MappingNode):
        issues.add(
            "",
            f"expected a mapping at the top level, got {describe_node(root)}",
            "start with 'version: 1'",
            node_line(root),
        )
        raise ConfigError(issues.found)
    top = Walker(issues).check(root, TOP, "")
    assert isinstance(top, Table)
    config = _build(top, source, issues, files)
    if issues.found:
        # Reported in file order, so the list reads top to bottom next to the file.
        raise ConfigError(sorted(issues.found, key=lambda issue: issue.line or 0))
    return config
