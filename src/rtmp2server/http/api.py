"""The JSON API, `/api/v1/...`: live streams, connections, recordings; kick and end publish.

This module owns the routes and the JSON bodies they answer with; their schemas are in
`openapi.py` (and the tests hold one to the other). Everything is read from the live state of
the server when asked: the registry's streams with their `StreamStats`, the server's
sessions, the relay's players, and the recording directory.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..logs import get_logger
from ..server.recorder import Recorder
from ..server.registry import Stream
from .openapi import DOCUMENT

if TYPE_CHECKING:
    from ..server.server import Session
    from .flv import HTTPFLVPlayer
    from .server import HttpServer

log = get_logger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/streams", streams)
    app.router.add_get("/api/v1/streams/{app}/{name}", stream)
    app.router.add_delete("/api/v1/streams/{app}/{name}", end_stream)
    app.router.add_get("/api/v1/clients", clients)
    app.router.add_delete("/api/v1/clients/{id}", kick)
    app.router.add_get("/api/v1/recordings", recordings)


def _side(request: web.Request) -> HttpServer:
    from .server import SIDE

    return request.app[SIDE]


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


# --- streams ------------------------------------------------------------------------------


def _recording(stream: Stream) -> str | None:
    for sink in stream.sinks:
        if isinstance(sink, Recorder) and sink.path is not None:
            return str(sink.path)
    return None


def _publisher(side: HttpServer, stream: Stream) -> int | None:
    for session in side.rtmp.sessions:
        if any(s is stream for s in session.published.values()):
            return session.id
    return None


def stream_json(side: HttpServer, stream: Stream) -> dict[str, Any]:
    stats = side.stats.get(stream.key)
    players = side.players(stream.key)
    health: dict[str, Any] = {
        "fps": None,
        "keyframe_interval": None,
        "av_drift_ms": None,
        "timestamp_jumps": 0,
        "timestamp_backward": 0,
        "realtime_ratio": None,
        "dropped_frames": sum(p.dropped for p in players),
    }
    rate_in = rate_out = 0.0
    tracks: list[dict[str, Any]] = []
    keyframes = 0
    warnings: list[str] = []
    if stats is not None and stats.stream is stream:
        health = stats.health()
        rate_in, rate_out = stats.rates()
        tracks = [t.to_json() for _, t in sorted(stats.tracks.items())]
        keyframes = stats.keyframes
        warnings = stats.warnings(health)
    return {
        "app": stream.app,
        "name": stream.name,
        "publisher": {
            "client_id": _publisher(side, stream),
            "peer": stream.peer,
            "flash_ver": stream.flash_ver,
            "pulled_from": stream.source or None,
        },
        "started": stream.started_wall,
        "duration": round(stream.duration, 3),
        "bytes_in": stream.bytes,
        "bytes_out": sum(p.bytes_out for p in players),
        "bitrate_in": round(rate_in),
        "bitrate_out": round(rate_out),
        "frames": {
            "video": stream.video_frames,
            "audio": stream.audio_frames,
            "keyframes": keyframes,
            "data": stream.data_messages,
        },
        "tracks": tracks,
        "players": [player_json(p) for p in players],
        "recording": _recording(stream),
        "health": health,
        "warnings": warnings,
        "push": [p.status() for p in side.rtmp.pushes.of(stream.app, stream.name)],
    }


def player_json(p: Any) -> dict[str, Any]:
    session = p.session
    return {
        "client_id": session.id,
        "peer": p.peer,
        "protocol": getattr(session, "protocol", "rtmp"),
        "joined": time.time() - (time.monotonic() - p.joined),
        "video_frames": p.video_frames,
        "audio_frames": p.audio_frames,
        "dropped_frames": p.dropped,
        "skips": p.skips,
        "bytes_out": p.bytes_out,
    }


async def streams(request: web.Request) -> web.Response:
    side = _side(request)
    body = [stream_json(side, s) for s in side.rtmp.registry]
    return web.json_response({"streams": body})


def _find(request: web.Request) -> Stream | None:
    side = _side(request)
    return side.rtmp.registry.get(request.match_info["app"], request.match_info["name"])


async def stream(request: web.Request) -> web.Response:
    found = _find(request)
    if found is None:
        return _error(404, "no such live stream")
    return web.json_response(stream_json(_side(request), found))


async def end_stream(request: web.Request) -> web.Response:
    found = _find(request)
    if found is None:
        return _error(404, "no such live stream")
    log.info(
        "http %s: ends the publish of %s/%s (peer=%s)",
        request.remote,
        ascii(found.app),
        ascii(found.name),
        found.peer,
    )
    found.close("ended through the HTTP API")
    side = _side(request)
    if side.rtmp.registry.get(*found.key) is found:
        side.rtmp.registry.release(found)
    return web.json_response({"closed": f"{found.app}/{found.name}"})


# --- clients ------------------------------------------------------------------------------


def client_json(side: HttpServer, session: Session) -> dict[str, Any]:
    playing = []
    relay = side.rtmp.relay
    if relay is not None:
        playing = [
            f"{p.channel.key[0]}/{p.channel.key[1]}"
            for p in relay.players()
            if p.session is session and p.channel is not None
        ]
    publishing = [f"{s.app}/{s.name}" for s in session.published.values()]
    state = "connecting"
    if publishing:
        state = "publishing"
    elif playing:
        state = "playing"
    elif session.conn.app or session.conn.state.value == "connected":
        state = "connected"
    return {
        "id": session.id,
        "peer": session.peer,
        "protocol": "rtmps" if session.transport is not None and _is_tls(session) else "rtmp",
        "app": session.conn.app,
        "connected": time.time() - (time.monotonic() - session.accepted_at),
        "state": state,
        "publishing": publishing,
        "playing": playing,
    }


def _is_tls(session: Session) -> bool:
    transport = session.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


def flv_client_json(side: HttpServer, player: HTTPFLVPlayer) -> dict[str, Any]:
    app, name = player.request.match_info["app"], player.request.match_info["name"]
    return {
        "id": player.id,
        "peer": player.peer,
        "protocol": player.protocol,
        "app": app,
        "connected": player.connected,
        "state": "playing",
        "publishing": [],
        "playing": [f"{app}/{name}"],
    }


async def clients(request: web.Request) -> web.Response:
    side = _side(request)
    body = [client_json(side, s) for s in sorted(side.rtmp.sessions, key=lambda s: s.id)]
    body += [flv_client_json(side, p) for p in sorted(side.flv_players(), key=lambda p: p.id)]
    return web.json_response({"clients": body})


async def kick(request: web.Request) -> web.Response:
    text = request.match_info["id"]
    if not text.isdigit():
        return _error(400, "a client id is a number")
    side = _side(request)
    wanted = int(text)
    for session in side.rtmp.sessions:
        if session.id == wanted:
            log.info("http %s: kicks client %d (peer=%s)", request.remote, wanted, session.peer)
            session.close("kicked through the HTTP API")
            return web.json_response({"closed": str(wanted)})
    for player in side.flv_players():
        if player.id == wanted:
            log.info("http %s: kicks HTTP-FLV client %d (peer=%s)", request.remote, wanted,
                     player.peer)  # fmt: skip
            player.kick()
            return web.json_response({"closed": str(wanted)})
    return _error(404, "no such client")


# --- recordings ---------------------------------------------------------------------------


def _flv_duration(path: Path) -> float | None:
    """The timestamp of the last complete tag, in seconds (a finished FLV's duration)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if end < 13 + 15:
                return None
            f.seek(end - 4)
            prev = int.from_bytes(f.read(4), "big")
            if prev < 11 or prev > end - 13 - 4:
                return None
            f.seek(end - 4 - prev)
            header = f.read(11)
    except OSError:
        return None
    if len(header) != 11 or header[0] not in (8, 9, 18):
        return None
    # FLV's timestamp: 24 low bits, then the TimestampExtended byte (the high 8).
    ts = (header[7] << 24) | (header[4] << 16) | (header[5] << 8) | header[6]
    return ts / 1000


def _list_recordings(record_dir: Path, live: set[str]) -> list[dict[str, Any]]:
    out = []
    for path in sorted(record_dir.glob("*/*.flv")):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append(
            {
                "path": str(path),
                "app": path.parent.name,
                "size": st.st_size,
                "duration": _flv_duration(path),
                "modified": st.st_mtime,
                "live": str(path) in live,
            }
        )
    return out


async def recordings(request: web.Request) -> web.Response:
    side = _side(request)
    record_dir = side.rtmp.config.record_dir
    if record_dir is None:
        return web.json_response({"recordings": []})
    live = {r for r in (_recording(s) for s in side.rtmp.registry) if r is not None}
    # A directory of many files is listed off the event loop: ingest never waits for it.
    body = await asyncio.to_thread(_list_recordings, Path(record_dir), live)
    return web.json_response({"recordings": body})
