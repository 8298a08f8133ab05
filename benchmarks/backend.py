"""A small aiohttp back end for benchmarks: a 60-byte JSON document after an optional fixed delay."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from benchmarks.harness import BODY


def make_app(delay_ms: float) -> web.Application:
    body = BODY.encode()

    async def handle(request: web.Request) -> web.Response:
        if request.can_read_body:
            await request.read()
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.delay_ms), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
