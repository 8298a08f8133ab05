"""Append new route entries to the end of routes.yaml's `routes:` list, every other byte kept (comments, order,
formatting), the same way `cli.flip` edits one route (`cli.routes_text`): the result is validated before it is
written, atomically.

Errors: `cli.flip.InvalidEditError` when the file is invalid before or after, or its routes are not a block list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, SequenceNode

from cli.flip import validate_text
from cli.routes_text import InvalidEditError, mapping_value, newline_of, read_text, route_span, write_atomic
from reports.inventory import Proposal


def append_routes(path: Path, proposals: Sequence[Proposal]) -> str:
    """Add the proposals after the last route; returns the text added. Nothing is written when there are none."""
    original = read_text(path)
    validate_text(original, path, "is invalid before the edit")
    if not proposals:
        return ""
    try:
        root = yaml.compose(original, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidEditError(f"cannot read the YAML structure: {exc}") from exc
    routes = mapping_value(root, "routes") if isinstance(root, MappingNode) else None
    if not isinstance(routes, SequenceNode) or routes.flow_style or not routes.value:
        raise InvalidEditError(f"{path.name}: routes: is not a block list with a route in it; add the routes by hand")
    last = routes.value[-1]
    if not isinstance(last, MappingNode) or last.flow_style:
        raise InvalidEditError(f"{path.name}: the last route is not a block mapping; add the routes by hand")
    _, end = route_span(original, last)
    dash = " " * (last.start_mark.column - 2)  # entries are written `- key: ...`
    nl = newline_of(original)
    added = "".join(p.yaml(dash) for p in proposals).replace("\n", nl)
    text = original[:end] + nl + nl + added.removesuffix(nl) + original[end:]
    validate_text(text, path, "would be invalid after adding the routes")
    write_atomic(path, original, text)
    return added
