"""The bytes of an upstream request head: the request side of the HTTP/1.1 client, without I/O.

`proxy.upstream.transport` writes what `encode_head` returns; `proxy.upstream.h1_protocol` reads what comes back.
Compiled with the request path (`proxy.native_build`): every proxied request and every shadow copy encodes one.
"""

from __future__ import annotations

from collections.abc import Iterable


def encode_head(
    method: str, target: str, headers: Iterable[tuple[str, str]], framing: str
) -> tuple[bytes, bool] | None:
    """The request head as bytes and whether it asks to close the connection; None if a field holds CR or LF.

    `framing` is "" or one complete framing line ("Content-Length: 12\\r\\n").
    """
    if not isinstance(headers, list | tuple):
        headers = list(headers)  # walked twice below
    parts = [f"{name}: {value}\r\n" for name, value in headers]
    lines = len(parts) + 2  # the request line, the fields and the empty line
    if framing:
        parts.append(framing)
        lines += 1
    parts.append("\r\n")
    text = f"{method} {target} HTTP/1.1\r\n" + "".join(parts)
    # A CR or LF inside a name, value or target would split the head: header injection. Counting is one C scan.
    if text.count("\n") != lines or text.count("\r") != lines:
        return None
    # One C scan finds whether any Connection field exists (forwarded requests never carry one) before a look at each.
    close = "\nconnection:" in text.lower() and any(
        len(name) == 10 and name.lower() == "connection" and "close" in value.lower() for name, value in headers
    )
    # aiohttp decodes incoming fields as UTF-8 with surrogateescape; this restores the exact original bytes.
    return text.encode("utf-8", "surrogateescape"), close
