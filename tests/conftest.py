"""Shared fixtures. Builders live in tests/factories.py."""

import inspect

import pytest

# Fixtures a pure-function test may use: none that bring sockets, processes, files or the event loop.
_PURE_FIXTURES = frozenset({"request", "event_loop_policy"})  # the latter: pytest-asyncio, autouse


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every synchronous test that asks for no fixtures (beyond its parameters) `unit`: no loop, no sockets,
    no files. `make test-fast` runs only these; modules may also mark themselves explicitly."""
    for item in items:
        if not isinstance(item, pytest.Function) or inspect.iscoroutinefunction(item.obj):
            continue
        params = set(item.callspec.params) if hasattr(item, "callspec") else set()
        if set(item.fixturenames) - params <= _PURE_FIXTURES:
            item.add_marker(pytest.mark.unit)
