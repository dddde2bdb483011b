"""The asyncio RTMP server: sockets, sessions, timeouts, and the publish policy.

`RTMPServer` listens; each accepted socket gets a `Session`, an `asyncio.Protocol` that feeds
bytes to a sans-IO `ServerConnection` and acts on what comes out: publishes are checked
against the registry (one publisher per app/stream) and the server's publish handler (which
attaches sinks such as the recorder, or refuses), media messages go to the stream's sinks.

A peer that breaks the protocol gets one log line naming it, what arrived and what was
expected, and its connection closes; the server and every other stream go on. A bug in our
own code while handling one connection is logged with its traceback and closes only that
connection too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..protocol.connection import ServerConnection, State
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import PlayRequest, PublishRequest, StreamClosed
from ..protocol.messages import Message
from .recorder import Recorder
from .registry import Stream, StreamRegistry
from .relay import Relay, RelayConfig

log = logging.getLogger("rtmp2server")

READ_SIZE = 256 * 1024  # bytes asked of the socket per read, as asyncio and uvloop do


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 1935
    record_dir: Path | None = None  # None: do not record
    chunk_size: int = 4096
    max_message_size: int = 16 * 1024 * 1024
    window_ack_size: int = 5_000_000
    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0  # no bytes from a publisher or a half-open peer for this long
    # Live playback of every publish (GOP cache, play wait, player bounds); None: no playing.
    relay: RelayConfig | None = field(default_factory=RelayConfig)


PublishHandler = Callable[[Stream], bool]
"""Called when a publish is about to start; attaches sinks and returns True to accept, or
returns False to refuse it with NetStream.Publish.BadName."""

PlayHandler = Callable[["Session", PlayRequest], None]
"""Called for `play`; answers the request on the session (the relay implements it)."""


class Session(asyncio.BufferedProtocol):
    """One client connection.

    Reads go into the server's one receive buffer (`get_buffer`), and only the bytes that
    arrived are copied out of it: a read costs no allocation of a full-size buffer (with
    `recv(256 KiB)`, glibc maps and unmaps 256 KiB for every small read of a live stream).
    """

    def __init__(self, server: RTMPServer) -> None:
        self.server = server
        cfg = server.config
        self.conn = ServerConnection(
            chunk_size=cfg.chunk_size,
            window_ack_size=cfg.window_ack_size,
            max_message_size=cfg.max_message_size,
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.published: dict[int, Stream] = {}
        self.last_data = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        # Per-connection extension point: players attach their state here (relay).
        self.on_close: list[Callable[[Session], None]] = []
        self.on_event: list[Callable[[Session, Any], None]] = []

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
        self.server._sessions.add(self)
        self._arm_timer(self.server.config.handshake_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server._read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        try:
            try:
                items = self.conn.receive_data(data)
            except RemoteProtocolError as err:
                # Keep every complete message that arrived before the bad bytes.
                self._dispatch(err.partial, events=False)
                log.warning("peer %s: %s; closing the connection", self.peer, err)
                self.abort()
                return
            self._dispatch(items)
        except Exception:
            log.exception("peer %s: internal error; closing the connection", self.peer)
            self.abort()
            return
        self.flush()

    def _dispatch(self, items: list[Any], *, events: bool = True) -> None:
        """Media messages to their stream's sinks, a run of one stream's messages at once;
        events (unless `events` is False) acted on in order with them."""
        published = self.published
        run: list[Message] = []
        target: Stream | None = None  # when set, `run` holds its next messages
        for item in items:
            if type(item) is Message:
                stream = published.get(item.stream_id)
                if stream is None:
                    continue
                if stream is not target:
                    if target is not None:
                        target.deliver_all(run)
                    run = []
                    target = stream
                run.append(item)
                continue
            if target is not None:
                target.deliver_all(run)
                run = []
                target = None
            if events:
                self._on_event(item)
        if target is not None:
            target.deliver_all(run)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for sid in list(self.published):
            self._end_publish(sid, "disconnected" if exc is None else f"connection lost: {exc}")
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                log.exception("peer %s: close callback failed", self.peer)
        self.server._sessions.discard(self)

    # --- helpers -------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.closed:
            self.transport.write(out)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_timer(self, delay: float) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        if self.closed:
            return
        cfg = self.server.config
        if self.conn.state is not State.CONNECTED:
            if time.monotonic() - self.last_data >= cfg.handshake_timeout:
                log.warning(
                    "peer %s: no connect within %.0f s (state %s); closing",
                    self.peer,
                    cfg.handshake_timeout,
                    self.conn.state.value,
                )
                self.abort()
                return
        elif self.transport is not None and not self.transport.is_reading():
            # Paused by back-pressure from a sink: our silence, not the peer's.
            self.last_data = time.monotonic()
        elif not self.conn.playing and cfg.idle_timeout > 0:
            idle = time.monotonic() - self.last_data
            if idle >= cfg.idle_timeout:
                log.warning("peer %s: no data for %.0f s; closing", self.peer, idle)
                self.abort()
                return
        self._arm_timer(min(cfg.handshake_timeout, cfg.idle_timeout or 5.0) / 2)

    def _on_event(self, event: Any) -> None:
        if type(event) is PublishRequest:
            self._on_publish(event)
        elif type(event) is PlayRequest:
            handler = self.server.play_handler
            if handler is None:
                self.conn.reject_play(event, f"{event.name} is not available.")
            else:
                handler(self, event)
        elif type(event) is StreamClosed and event.stream_id in self.published:
            self._end_publish(event.stream_id, event.command)
        for callback in self.on_event:
            callback(self, event)

    def _on_publish(self, req: PublishRequest) -> None:
        conn = self.conn
        stream = Stream(
            app=conn.app,
            name=req.name,
            query=req.query,
            peer=self.peer,
            flash_ver=conn.flash_ver,
            tc_url=conn.tc_url,
        )
        if self.transport is not None:
            stream.pause_reading = self.transport.pause_reading
            stream.resume_reading = self.transport.resume_reading
        sid = req.stream_id
        stream.close = lambda reason: self._close_publish(sid, reason)
        registry = self.server.registry
        if registry.refuses(stream):
            log.warning(
                "peer %s: publish %s/%s refused: already being published",
                self.peer,
                stream.app,
                stream.name,
            )
            conn.reject_publish(req, f"{req.name} is already being published.")
            return
        try:
            accepted = self.server.publish_handler(stream)
        except Exception:
            log.exception("peer %s: publish handler failed", self.peer)
            accepted = False
        if not accepted:
            registry.release(stream)
            log.warning(
                "peer %s: publish %s/%s refused: nobody takes this stream",
                self.peer,
                stream.app,
                stream.name,
            )
            conn.reject_publish(req, f"{req.name} is not accepted here.")
            return
        # Claimed only once accepted: a publish the handler refuses (no route for it, no
        # permission) never takes the name over from the one that has it.
        registry.claim(stream)
        self.published[req.stream_id] = stream
        conn.accept_publish(req)
        log.info(
            "publish start: peer=%s app=%s stream=%s%s flashVer=%r",
            self.peer,
            stream.app,
            stream.name,
            f"?{stream.query}" if stream.query else "",
            stream.flash_ver,
        )
        registry.started(stream)

    def _close_publish(self, stream_id: int, reason: str) -> None:
        """Another publisher takes this publish's name over: end it (its recording is
        finished) and close the connection. Aborted, not closed: a stalled or half-dead peer
        would never drain what we still had to send it."""
        if stream_id in self.published:
            self._end_publish(stream_id, reason)
            self.abort()

    def _end_publish(self, stream_id: int, why: str) -> None:
        stream = self.published.pop(stream_id, None)
        if stream is None:
            return
        self.server.registry.release(stream)
        log.info(
            "publish stop: peer=%s app=%s stream=%s duration=%.2fs video=%d audio=%d "
            "data=%d bytes=%d (%s)",
            self.peer,
            stream.app,
            stream.name,
            stream.duration,
            stream.video_frames,
            stream.audio_frames,
            stream.data_messages,
            stream.bytes,
            why,
        )


class RTMPServer:
    """An RTMP server on one host:port.

    `publish_handler` decides about each publish; the default records to
    `config.record_dir` (when set) and accepts everything. Unless a `play_handler` is given
    or `config.relay` is None, a `Relay` plays every publish to whoever asks.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        registry: StreamRegistry | None = None,
        publish_handler: PublishHandler | None = None,
        play_handler: PlayHandler | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        # `is None`, not `or`: an empty registry is falsy (it has a length).
        self.registry = registry if registry is not None else StreamRegistry()
        self.publish_handler: PublishHandler = publish_handler or self.record_publish
        self.play_handler: PlayHandler | None = play_handler
        self.relay: Relay | None = None
        if play_handler is None and self.config.relay is not None:
            self.relay = Relay(self.registry, self.config.relay)
            self.play_handler = self.relay.play
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        # One receive buffer for all sessions: a read is copied out of it before the next.
        self._read_view = memoryview(bytearray(READ_SIZE))

    def record_publish(self, stream: Stream) -> bool:
        """The default publish policy: accept, and record when a record dir is set."""
        if self.config.record_dir is not None:
            stream.add_sink(Recorder(self.config.record_dir))
        return True

    @property
    def port(self) -> int:
        """The bound port (useful with `port=0`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sessions(self) -> frozenset[Session]:
        return frozenset(self._sessions)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Session(self),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=128,
        )
        log.info("listening on %s:%d", self.config.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, close every connection (ending their publishes cleanly)."""
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.abort()
        # Let connection_lost callbacks run.
        for _ in range(3):
            if not self._sessions:
                break
            await asyncio.sleep(0)
        for session in list(self._sessions):
            session.connection_lost(None)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RTMPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
