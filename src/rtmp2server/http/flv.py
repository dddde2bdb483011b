"""HTTP-FLV playback: `GET /{app}/{name}.flv` streams a live publish as one FLV response.

This module owns the HTTP player: an `Output` of the relay (so it joins from the GOP cache and
falls under the slow-player rule exactly as an RTMP player does) that frames each message as
an FLV tag (`protocol.flv`) instead of RTMP chunks, and a writer task per response that hands
what the relay queued to aiohttp. The play access rules apply as to RTMP play: the declared
applications, CIDR lists, play keys (`?token=` or `?key=` in the query) and the on_play
callback, through the server's `AccessControl`.

A player of a stream that is not published yet waits as an RTMP player does: the relay keeps
it `waiting` for up to `RelayConfig.play_wait` seconds. Its response has not started then (no
status line): a publish that starts (`publish_notify`) starts it as a 200 with the FLV, and
`not_found` after `play_wait` answers 404, so a player that asks before the encoder is up
gets the stream as soon as it is.

Bytes the relay queued but the writer has not handed to the socket yet count as buffered for
the slow-player rule, as the socket's own buffer does: a player that stops reading makes its
response's queue grow, and the relay then drops it to the next keyframe.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..logs import get_logger
from ..protocol import flv
from ..protocol.messages import DATA_AMF0
from ..server.access import Request
from ..server.relay import flush_then_buffered

if TYPE_CHECKING:
    from ..server.relay import Player
    from .server import HttpServer

log = get_logger(__name__)

# Ids of HTTP players, apart from the RTMP sessions' (the API shows both).
_IDS = itertools.count(1_000_000_001)


PLAYERS: set[HTTPFLVPlayer] = set()  # playing now, in this process (ended at shutdown)


class HTTPFLVPlayer:
    """One HTTP-FLV response as a relay `Output` (see the module docstring)."""

    multitrack = False  # browsers' and ffmpeg's FLV demuxers take the default track only
    framing = -1  # FLV tags: the same bytes for every HTTP player
    protocol = "http-flv"

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.owner = self
        self.id = next(_IDS)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip = str(peer[0])
            self.port = int(peer[1])
            self.peer = f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"
        else:
            self.ip, self.port, self.peer = "", 0, "?"
        self._parts: list[bytes] = []
        self._queue: list[bytes] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self.ended = False
        self.not_found_reason = ""  # set when the relay gave up waiting for a publisher
        self.connected = time.time()

    # --- Output ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        transport = self.request.transport
        return self.ended or transport is None or transport.is_closing()

    def frame(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> bytes:
        return flv.tag(type_id, ts, payload)

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def send_data(self, sid: int, ts: int, payload: bytes) -> None:
        self._parts.append(flv.tag(DATA_AMF0, ts, payload))

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts = []
            self._queue.append(data)
            self._queued += len(data)
            self._wake.set()

    def buffered(self) -> int:
        transport = self.request.transport
        socket = 0 if transport is None else transport.get_write_buffer_size()
        return self._queued + socket

    drain = flush_then_buffered

    def publish_notify(self, sid: int, name: str) -> None:
        # FLV has no such message: the tags just go on. A response still waiting for its
        # publisher starts now (`wait_publish`).
        self._wake.set()

    def unpublish_notify(self, sid: int, name: str) -> None:
        pass

    def stream_eof(self, sid: int) -> None:
        self.end()

    def not_found(self, sid: int, name: str, description: str) -> None:
        self.not_found_reason = description
        self.end()

    # --- the response ------------------------------------------------------------------

    def end(self) -> None:
        self.ended = True
        self._wake.set()

    def kick(self) -> None:
        """End the play and close the connection (the API's kick)."""
        self.end()
        transport = self.request.transport
        if transport is not None:
            transport.close()

    async def wait_publish(self, p: Player) -> bool:
        """Wait while the relay keeps `p` waiting for a publisher; whether one came (False:
        `play_wait` ran out, the server is closing, or the client left)."""
        while p.waiting and not self.closed:
            try:
                # Once a second anyway, to notice a client that left (as in `run`).
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except TimeoutError:
                continue
            self._wake.clear()
        # Anything queued by the join stays queued; `run` is woken for it.
        self._wake.set()
        return not p.waiting and not self.closed

    async def run(self, response: web.StreamResponse) -> None:
        """Write what the relay queues until the play ends or the client leaves."""
        wake = self._wake
        while True:
            if not wake.is_set():
                try:
                    # Woken by the relay; once a second anyway, to notice a client that left
                    # while nothing was sent (aiohttp does not cancel handlers on disconnect).
                    # A timeout scope, not `wait_for`: no task made per wake-up.
                    async with asyncio.timeout(1.0):
                        await wake.wait()
                except TimeoutError:
                    if self.closed:
                        return
                    continue
            wake.clear()
            while self._queue:
                # All that was queued since the last write, in one chunk of the response.
                queue, self._queue = self._queue, []
                data = queue[0] if len(queue) == 1 else b"".join(queue)
                self._queued -= len(data)
                await response.write(data)
            if self.ended:
                return


async def play_flv(request: web.Request) -> web.StreamResponse:
    from .server import SIDE

    side: HttpServer = request.app[SIDE]
    rtmp = side.rtmp
    app = request.match_info["app"]
    name = request.match_info["name"]
    relay = rtmp.relay
    player = HTTPFLVPlayer(request)
    limit = rtmp.config.max_name_length
    if len(app) > limit or len(name) > limit:
        return web.json_response({"error": "name too long"}, status=400)
    if relay is None:
        return web.json_response({"error": "play is off on this server"}, status=404)
    # The connection bounds of RTMP hold for HTTP-FLV players too (counted apart).
    players = side.flv_players()
    per_ip = rtmp.config.max_connections_per_ip
    if len(players) >= rtmp.config.max_connections or (
        per_ip and sum(1 for q in players if q.ip == player.ip) >= per_ip
    ):
        log.warning("http %s: HTTP-FLV play refused: over the connection limit", player.peer)
        return web.json_response({"error": "too many players"}, status=503)
    query = request.query_string
    for action in ("connect", "play"):
        decision = await rtmp.access.decide(
            Request(
                action=action,
                app=app,
                name=name,
                query=query,
                ip=player.ip,
                port=player.port,
                client_id=str(player.id),
                tc_url=f"http://{request.host}/{app}",
            )
        )
        if not decision.allowed:
            log.warning(
                "http %s: play %s/%s refused: %s",
                player.peer,
                ascii(app),
                ascii(name),
                decision.reason,
            )
            return web.json_response({"error": f"playing {name} is not allowed"}, status=403)
    response = web.StreamResponse(
        headers={
            "Content-Type": "video/x-flv",
            "Cache-Control": "no-cache",
            # Browsers' players (flv.js, mpegts.js) fetch from pages of other origins.
            "Access-Control-Allow-Origin": "*",
        }
    )
    p = relay.add_player(player, app, name, wait=True)
    if p is None:
        return web.json_response({"error": f"{name} is not published"}, status=404)
    why = "disconnected"
    PLAYERS.add(player)
    try:
        if p.waiting and not await player.wait_publish(p):
            if player.not_found_reason:
                return web.json_response({"error": player.not_found_reason}, status=404)
            why = "ended" if player.ended else "disconnected"
            return web.json_response({"error": f"{name}: the play ended"}, status=503)
        await response.prepare(request)
        # The header announces both tracks: players then wait for the sequence headers the
        # join sends first (ffmpeg and mpegts.js probe by the tags, not by these flags).
        await response.write(flv.file_header(audio=True, video=True))
        await player.run(response)
        why = "ended"
    except (ConnectionError, asyncio.CancelledError):
        why = "disconnected"
        raise
    finally:
        player.ended = True
        PLAYERS.discard(player)
        relay.remove_player(p, why)
    return response
