"""HTTP method classes (RFC 9110 §9.2), named once: what may be mirrored without side effects, what may be re-sent."""

from __future__ import annotations

# Safe: the client asks for no state change (RFC 9110 §9.2.1). Mirrored under side_effects: block.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Idempotent: sending it twice has the effect of sending it once (§9.2.2). Only these may be re-sent after any byte
# of them reached an upstream.
IDEMPOTENT_METHODS = SAFE_METHODS | frozenset({"PUT", "DELETE"})
# Mirrored by default (`shadow.methods`) and sent twice to legacy for noise: reads whose answers are worth comparing
# (TRACE only echoes the request back).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
