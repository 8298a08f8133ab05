"""proxy.methods: the method classes of RFC 9110 and the one rule for sending a request again."""

from __future__ import annotations

import pytest

from proxy.methods import IDEMPOTENT_METHODS, READ_METHODS, SAFE_METHODS, may_resend


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])
def test_idempotent_methods_may_be_resent_even_after_they_went_out(method: str) -> None:
    """An idempotent request may be sent again whether or not the first upstream received it."""
    assert may_resend(method, sent=True)
    assert may_resend(method, sent=False)


@pytest.mark.parametrize("method", ["POST", "PATCH", "CONNECT"])
def test_other_methods_are_resent_only_when_nothing_left(method: str) -> None:
    """A POST or PATCH is sent again only when no byte of it reached the first upstream."""
    assert may_resend(method, sent=False)
    assert not may_resend(method, sent=True)


def test_method_classes_follow_rfc_9110() -> None:
    """Safe: GET, HEAD, OPTIONS, TRACE; idempotent: those plus PUT and DELETE."""
    assert frozenset({"GET", "HEAD", "OPTIONS", "TRACE"}) == SAFE_METHODS
    assert SAFE_METHODS | {"PUT", "DELETE"} == IDEMPOTENT_METHODS
    assert frozenset({"GET", "HEAD", "OPTIONS"}) == READ_METHODS  # mirrored by default: TRACE only echoes
