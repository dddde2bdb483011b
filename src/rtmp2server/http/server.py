"""The HTTP listener of an `RTMPServer`: one aiohttp application for the API and /metrics.

This module owns the listener's life (started and stopped with the RTMP server), the bearer
token check, and the per-stream statistics: a `StreamStats` sink is attached to every publish
when it starts (a registry observer) and forgotten when it stops, so the API and the metrics
only ever see live streams. The routes themselves are in `api.py`, `metrics.py` and `flv.py`
(HTTP-FLV playback); this module serves the dashboard (`/`) and its files (`/static/`, from
the package's `static/` folder, where setup copies mpegts.js into `static/vendor/`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import http_address
from ..logs import get_logger
from ..server.registry import Stream, StreamKey
from .stats import StreamStats

if TYPE_CHECKING:
    from ..server.relay import Player
    from ..server.server import RTMPServer
    from .flv import HTTPFLVPlayer

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths anyone may read: the API's own description, and the dashboard's page and files (they
# hold nothing secret; the page sends the API token the user gives it with each API call).
_PUBLIC = frozenset({"/api/v1/openapi.json", "/"})
_PUBLIC_PREFIX = "/static/"

STATIC = Path(__file__).with_name("static")
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".png": "image/png",
}

SIDE: web.AppKey[HttpServer] = web.AppKey("rtmp2")


class HttpServer:
    """The HTTP side of one `RTMPServer` (`config.http`, `config.api_token`)."""

    def __init__(self, rtmp: RTMPServer) -> None:
        self.rtmp = rtmp
        self.stats: dict[StreamKey, StreamStats] = {}
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.address: tuple[str, int] | None = None
        self.refused_requests = 0
        rtmp.registry.on_start.append(self._on_start)
        rtmp.registry.on_stop.append(self._on_stop)

    # --- statistics --------------------------------------------------------------------

    def _on_start(self, stream: Stream) -> None:
        key = stream.key
        stats = StreamStats(
            stream,
            bytes_out=lambda: sum(p.bytes_out for p in self.players(key)),
            dropped=lambda: sum(p.dropped for p in self.players(key)),
        )
        self.stats[key] = stats
        stream.add_sink(stats)

    def _on_stop(self, stream: Stream) -> None:
        stats = self.stats.get(stream.key)
        if stats is not None and stats.stream is stream:
            del self.stats[stream.key]

    def players(self, key: StreamKey) -> list[Player]:
        relay = self.rtmp.relay
        if relay is None:
            return []
        channel = relay.channel(*key)
        return [] if channel is None else list(channel.players)

    def flv_players(self) -> list[HTTPFLVPlayer]:
        """This server's HTTP-FLV players."""
        from .flv import PLAYERS

        return [p for p in PLAYERS if self._app is not None and p.request.app is self._app]

    # --- the listener ------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.address is None:
            raise RuntimeError("HTTP listener not started")
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def application(self) -> web.Application:
        from . import api, flv, metrics

        app = web.Application(middlewares=[self._auth])
        app[SIDE] = self
        api.add_routes(app)
        metrics.add_routes(app, self)
        # After the API's paths. "/static/x.flv" is still HTTP-FLV: no static file is an .flv.
        app.router.add_get("/{app}/{name}.flv", flv.play_flv)
        app.router.add_get("/", dashboard)
        app.router.add_get("/static/{path:.+}", static_file)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.rtmp.config.api_token
        # HTTP-FLV is governed by the play rules (a token in the query), as RTMP play is.
        path = request.path
        if (
            token
            and path not in _PUBLIC
            and not path.startswith(_PUBLIC_PREFIX)
            and not path.endswith(".flv")
        ):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), token.encode()
            )
            if not ok:
                self.refused_requests += 1
                # The token is not logged, given or expected: it is a secret.
                log.warning(
                    "http %s: %s %s refused: no valid bearer token",
                    request.remote,
                    request.method,
                    ascii(request.path),
                )
                return web.json_response(
                    {"error": "this needs Authorization: Bearer TOKEN (api_token)"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    async def start(self) -> None:
        """Listen on `config.http` (ConfigError was raised by validate for a bad value)."""
        host, port = http_address(self.rtmp.config.http)
        self._app = self.application()
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as err:
            await runner.cleanup()
            # Named, so that "cannot listen on ..." says which listener failed.
            raise OSError(err.errno, f"http {host}:{port}: {err.strerror or err}") from err
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        log.info("HTTP API on %s", self.url)

    async def close(self) -> None:
        # HTTP-FLV responses end first: aiohttp's shutdown waits for running handlers.
        for player in self.flv_players():
            player.end()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for observers, fn in (
            (self.rtmp.registry.on_start, self._on_start),
            (self.rtmp.registry.on_stop, self._on_stop),
        ):
            if fn in observers:
                observers.remove(fn)


# --- the dashboard ---------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.StreamResponse:
    return _file(request, "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    return _file(request, request.match_info["path"])


def _file(request: web.Request, name: str) -> web.StreamResponse:
    """`name` under `STATIC`: only plain files of the known types, nothing outside it."""
    parts = name.split("/")
    suffix = Path(name).suffix
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts) or suffix not in _TYPES:
        return web.json_response({"error": "not found"}, status=404)
    path = STATIC.joinpath(*parts)
    if not path.is_file():
        if parts[0] == "vendor":
            # The browser-side packages are not in git: setup installs them from npm.
            log.warning(
                "http %s: %s is missing: run scripts/setup.sh (npm ci, then the copy into %s)",
                request.remote,
                ascii(name),
                STATIC / "vendor",
            )
            return web.json_response(
                {"error": f"{name} is not installed: run scripts/setup.sh"}, status=404
            )
        return web.json_response({"error": "not found"}, status=404)
    return web.FileResponse(
        path, headers={"Content-Type": _TYPES[suffix], "Cache-Control": "no-cache"}
    )
