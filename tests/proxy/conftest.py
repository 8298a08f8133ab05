"""Fixtures shared by the running-proxy tests: loopback back ends and a client session (the builders they use live
in app_fixtures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.proxy.app_fixtures import backend_app


@pytest.fixture
async def legacy(aiohttp_server: Any) -> TestServer:
    """A started `backend_app("legacy")`."""
    server: TestServer = await aiohttp_server(backend_app("legacy"))
    return server


@pytest.fixture
async def ports(aiohttp_server: Any) -> tuple[int, int]:
    """The ports of a started legacy and a started new `backend_app`."""
    legacy: TestServer = await aiohttp_server(backend_app("legacy"))
    new: TestServer = await aiohttp_server(backend_app("new"))
    assert legacy.port is not None
    assert new.port is not None
    return legacy.port, new.port


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp client session for the test, closed afterwards."""
    async with aiohttp.ClientSession() as session:
        yield session
