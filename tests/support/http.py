"""A real HTTP server (aiohttp) on a free loopback port, for callbacks and webhooks in tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_http(handler: Handler, path: str = "/hook") -> tuple[web.AppRunner, str]:
    """Serve POST `path` with `handler`; the runner (to `cleanup()`) and the URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}{path}"
