"""The flip audit trail read back (`flips`): every recorded mode or weight change, oldest first, merged over every
open file, each with its store id so a revert can name the change it undoes.
"""

from __future__ import annotations

from typing import Any

from shadow.store.read_sql import Conns, sql_where, where
from shadow.values import FlipRecord

_FLIP_COLUMNS = (
    "time, user, route_id, from_mode, to_mode, from_weight, to_weight, reason, forced, gate, action, before_text, "
    "after_text, reverts"
)


def flips(conns: Conns, route_id: str | None) -> list[FlipRecord]:
    """Every recorded flip (of one route, or all), oldest first, each with its store id."""
    found: list[tuple[float, int, FlipRecord]] = []
    clauses: list[str] = []
    params: list[Any] = []
    where(clauses, params, "route_id", route_id)
    for conn in conns:
        sql = f"SELECT id, {_FLIP_COLUMNS} FROM flips{sql_where(clauses)}"
        for row in conn.execute(sql, params):
            fid, t, user, rid, from_mode, to_mode, from_w, to_w, reason, forced, gate, action, *texts = row
            before_text, after_text, reverts = texts
            record = FlipRecord(
                t, user, rid, from_mode, to_mode, from_w, to_w, reason, bool(forced), gate, action,
                before_text=before_text, after_text=after_text, reverts=reverts, id=fid,
            )  # fmt: skip
            found.append((t, fid, record))
    return [record for _, _, record in sorted(found, key=lambda item: (item[0], item[1]))]
