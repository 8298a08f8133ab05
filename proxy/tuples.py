"""`new_tuple`: building a NamedTuple made per request or per copy in one C call.

A NamedTuple's own constructor is a Python-level `__new__` (a Python frame binding each value, more with keywords);
`tuple.__new__(Cls, values)` builds the same instance from the tuple of all its fields in order, defaults included,
in one C call. Used for the values made on every request (the fast path's forward result, canonical path, route
match and target, the exchange snapshots in `proxy.events` and `proxy.notify`) and every mirrored copy (the shadow
worker's wire, its copies, its comparisons and records). Unlike calling the NamedTuple it takes any number of values,
so each caller lists the fields in order, named in a comment where they are many. A leaf module: loading routes.yaml
(`proxy.routing`) uses it too, and must not import the serving side.
"""

from __future__ import annotations

new_tuple = tuple.__new__
