"""proxy.request_body: what reading a client's body raises maps onto one error type, one kind per cause."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from proxy.errors import KINDS, BadBody, BodyTimeout, BodyTooLarge, ClientGone, RequestBodyError
from proxy.request_body import body_error


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), BodyTimeout),
        (web.RequestPayloadError("broken chunk"), BadBody),
        (BadHttpMessage("bad chunk size"), BadBody),
        (asyncio.IncompleteReadError(b"ab", 10), ClientGone),
        (ConnectionResetError("reset by peer"), ClientGone),
        (OSError("broken pipe"), ClientGone),
        (RuntimeError("anything else"), ClientGone),
    ],
)
def test_read_failures_map_to_one_kind_each(raised: BaseException, expected: type[RequestBodyError]) -> None:
    """Each way a body read fails becomes the RequestBodyError of its kind (a timeout is not taken for an OSError)."""
    mapped = body_error(raised, 2.0)
    assert type(mapped) is expected
    assert KINDS[mapped.kind].close  # the connection is never reused after a body that was not read through


def test_a_body_error_passes_through_unchanged() -> None:
    """A RequestBodyError raised by the reader itself (over max_body) is kept as it is."""
    too_large = BodyTooLarge("request body over 10 bytes")
    assert body_error(too_large, 2.0) is too_large
    assert KINDS[too_large.kind].status == 413


def test_timeout_message_names_the_idle_limit() -> None:
    """A stalled body says how long it was waited for."""
    assert str(body_error(TimeoutError(), 2.5)) == "no request body byte for 2.5s"
