"""Check a YAML node tree against the key tables of `proxy.config.schema`, recording every issue and carrying on.

The result is a tree of `Table`s holding converted values and the line each key was written on, so the loader
can build config objects and point later (cross-key) issues at the right line.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import TypeVar

import yaml

from proxy.config.model import ConfigIssue
from proxy.config.scalars import Scalar
from proxy.config.schema import Either, ListOf, MapOf, Section, Spec
from proxy.config.units import BadValue

T = TypeVar("T")
INVALID = object()  # a value that failed its check; its key is left out so the default applies


class Issues:
    """Collects issues for one file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[ConfigIssue] = []

    def add(self, where: str, message: str, hint: str | None = None, line: int | None = None) -> None:
        self.found.append(ConfigIssue(self.source, where, message, hint, line))


@dataclass(slots=True)
class Table:
    """A checked mapping: converted values by key, plus where each key was written."""

    where: str
    line: int | None
    values: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    index: int = 0  # position in the enclosing list, for list items

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.line)

    def get(self, key: str, kind: type[T]) -> T | None:
        value = self.values.get(key)
        return value if isinstance(value, kind) else None

    def table(self, key: str) -> Table:
        child = self.values.get(key)
        return child if isinstance(child, Table) else Table(self.at(key), self.line_of(key))


def node_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "null" if node.tag.endswith(":null") else repr(node.value)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    listed = f"known: {', '.join(known)}"
    return f"did you mean '{close[0]}'? {listed}" if close else listed


class Walker:
    """Checks nodes against specs, recording issues and carrying on so one run reports everything."""

    def __init__(self, issues: Issues) -> None:
        self.issues = issues
        self.constructor = yaml.constructor.SafeConstructor()
        self.merged: dict[int, int] = {}  # id(mapping node) -> how many leading pairs came from merge keys

    def check(self, node: yaml.Node, spec: Spec, where: str) -> object:
        if isinstance(spec, Either):
            return self._either(node, spec, where)
        if isinstance(spec, Section | MapOf) and _is_null(node):
            return Table(where, node_line(node))  # `defaults:` with everything commented out
        if isinstance(spec, Scalar):
            return self._scalar(node, spec, where)
        if isinstance(spec, ListOf):
            if isinstance(node, yaml.SequenceNode):
                return self._list(node, spec, where)
            expected = "a list"
        elif isinstance(node, yaml.MappingNode):
            return self._mapping(node, spec, where)
        else:
            expected = "a mapping"
        self.issues.add(where, f"expected {expected}, got {describe_node(node)}", line=node_line(node))
        return INVALID

    def _either(self, node: yaml.Node, spec: Either, where: str) -> object:
        if isinstance(node, yaml.MappingNode) and spec.mapping is not None:
            return self.check(node, spec.mapping, where)
        if isinstance(node, yaml.SequenceNode) and spec.sequence is not None:
            return self.check(node, spec.sequence, where)
        if isinstance(node, yaml.ScalarNode) and spec.scalar is not None:
            return self.check(node, spec.scalar, where)
        self.issues.add(where, f"got {describe_node(node)}", f"expected {spec.description}", node_line(node))
        return INVALID

    def _scalar(self, node: yaml.Node, spec: Scalar, where: str) -> object:
        if not isinstance(node, yaml.ScalarNode):
            self.issues.add(
                where, f"expected a single value, got {describe_node(node)}", spec.description, node_line(node)
            )
            return INVALID
        try:
            return spec.convert(self.constructor.construct_object(node), str(node.value))
        except BadValue as exc:
            self.issues.add(where, exc.problem, exc.hint, node_line(node))
        except ValueError as exc:  # e.g. a malformed YAML timestamp
            self.issues.add(where, str(exc), spec.description, node_line(node))
        return INVALID

    def _list(self, node: yaml.SequenceNode, spec: ListOf, where: str) -> object:
        items: list[object] = []
        for index, item in enumerate(node.value):
            label = f"{where}[{index}]"
            if spec.label_key is not None and isinstance(item, yaml.MappingNode):
                for key, value in item.value:
                    if key.value == spec.label_key and isinstance(value, yaml.ScalarNode) and value.value:
                        label += f" ({value.value})"
            checked = self.check(item, spec.item, label)
            if isinstance(checked, Table):
                checked.index = index
            if checked is not INVALID:
                items.append(checked)
        if spec.as_set:
            return frozenset(items)
        return items if spec.label_key is not None else tuple(items)

    def _mapping(self, node: yaml.MappingNode, spec: Section | MapOf, where: str) -> Table:
        if id(node) not in self.merged:  # an aliased node is visited again, already flattened
            explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
            self.constructor.flatten_mapping(node)  # resolve `<<: *anchor` merge keys; merged pairs come first
            self.merged[id(node)] = len(node.value) - explicit
        merged = self.merged[id(node)]
        table = Table(where, node_line(node))
        suggested: set[str] = set()
        from_merge: set[str] = set()
        for position, (key_node, value_node) in enumerate(node.value):
            key = str(key_node.value)
            at = table.at(key)
            if not isinstance(key_node, yaml.ScalarNode) or _is_null(key_node):
                self.issues.add(
                    where, f"keys must be plain names, got {describe_node(key_node)}", line=node_line(key_node)
                )
                continue
            if key in from_merge:  # merged keys are overridden by later merges and by written keys, as in YAML
                from_merge.discard(key)
                table.values.pop(key, None)
            elif key in table.lines:
                first = table.lines[key]
                self.issues.add(at, f"duplicate key '{key}'", f"first given on line {first}", node_line(key_node))
                continue
            table.lines[key] = node_line(key_node)
            if position < merged:
                from_merge.add(key)
            if isinstance(spec, Section):
                if spec.extensions and key.startswith("x-"):
                    continue
                if key not in spec.keys:
                    self.issues.add(where, f"unknown key '{key}'", suggest(key, list(spec.keys)), node_line(key_node))
                    suggested.update(difflib.get_close_matches(key, list(spec.keys), n=1))
                    continue
                child = spec.keys[key]
            else:
                child = spec.value
                if spec.key_pattern is not None and not re.match(spec.key_pattern, key):
                    self.issues.add(
                        at, f"invalid name '{key}'", "use letters, digits, '_', '.', '-'", node_line(key_node)
                    )
            value = self.check(value_node, child, at)
            if value is not INVALID:
                table.values[key] = value
        if isinstance(spec, Section):
            for key in spec.required:
                # A misspelt required key was already reported, with this key as the suggestion.
                if key not in table.lines and key not in suggested:
                    self.issues.add(where, f"missing required key '{key}'", spec.keys[key].description, table.line)
        return table
