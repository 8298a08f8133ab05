"""HTTP method classes (RFC 9110 §9.2) and the one rule for sending a request again. Pure.

Every module that asks "is this method safe" or "may this request be re-sent" asks here: mirroring under
`side_effects: block`, the dry-run mark, noise sampling, replay, fallback to legacy and the transport's retry of a
stale keep-alive connection.
"""

from __future__ import annotations

# Safe: the client asks for no state change (§9.2.1).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Idempotent: sending it twice has the effect of sending it once (§9.2.2).
IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}
# Mirrored by default (`shadow.methods`) and sent twice to legacy for noise: reads whose answers are worth comparing
# (TRACE, though safe, only echoes the request back).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def may_resend(method: str, *, sent: bool) -> bool:
    """Whether a request that failed without a response may be sent again (to legacy on fallback, or on a fresh
    connection after a stale pooled one): only when a second copy cannot repeat its effect, that is when its
    method is idempotent or no byte of it left for the first upstream (a refused or failed connect).

    A timeout or reset after the request went out says nothing about whether the upstream executed it: a POST
    the new side is still processing must not also reach legacy.
    """
    return not sent or method in IDEMPOTENT_METHODS
