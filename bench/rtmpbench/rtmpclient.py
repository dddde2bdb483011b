"""The benchmark's RTMP client: our asyncio client (`rtmp2server.client`) with the bench's shape.

Used where ffmpeg cannot tell us what we need: the relay latency (a publisher that stamps
each video message with its send time, and a player that reads the stamps back) and the
memory per connection (hundreds of publishers held open at little client cost).

`send` queues a message and `drain` writes what is queued, so that a publisher's burst goes
out in one write, as before. The one-process load generator (`loadgen.py`) does not use this
client on purpose: it writes pre-serialized chunks to thousands of sockets from one process,
which a general client that frames each message cannot do at that rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from rtmp2server.client import Client as _Client
from rtmp2server.client import ClientError
from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.protocol.errors import RemoteProtocolError
from rtmp2server.protocol.messages import Message

MediaCallback = Callable[[Message, int], None]
"""Called with each media message and its arrival time (`time.monotonic_ns()`)."""


class RTMPError(Exception):
    pass


class _Observed(_Client):
    """Our client, handing each audio and video message to `on_media` as it is parsed."""

    def __init__(self, url: str, on_media: MediaCallback | None) -> None:
        super().__init__(url, chunk_size=4096)
        self.on_media = on_media

    def event_received(self, item: ClientCommand | Message) -> None:
        if self.on_media is not None and isinstance(item, Message) and item.type_id in (8, 9):
            self.on_media(item, time.monotonic_ns())


class Client:
    """One connection. `lenient`: if the server's bytes cannot be parsed (pyrtmp starts a
    chunk stream with a type-1 header, which our strict chunk reader refuses, and our client
    then closes, as it must), hold the publish open on a second connection that does not
    read the server's bytes at all and assumes every command succeeded (stream id 1); used
    only to hold connections open for the memory figure."""

    def __init__(
        self,
        port: int,
        app: str = "live",
        *,
        on_media: MediaCallback | None = None,
        lenient: bool = False,
    ):
        self.port = port
        self.app = app
        self.lenient = lenient
        self.broken: Exception | None = None
        self.url = f"rtmp://127.0.0.1:{port}/{app}"
        self.client = _Observed(self.url, on_media)
        self._blind: _Blind | None = None
        self._play: asyncio.Task[None] | None = None

    @property
    def conn(self) -> ClientConnection:
        return self._blind.conn if self._blind is not None else self.client.conn

    @property
    def stream_id(self) -> int:
        return 1 if self._blind is not None else self.client.stream_id

    @property
    def closed(self) -> asyncio.Event:
        return self.client.closed

    async def open(self, timeout: float = 10.0) -> None:
        """Connect and createStream."""
        self.client.timeout = timeout
        try:
            await self.client.open()
            await self.client.create_stream()
        except ClientError as err:
            await self._lenient(err, timeout)

    async def publish(self, name: str, timeout: float = 10.0) -> None:
        if self._blind is not None:
            self._blind.publish(name)
            return
        self.client.timeout = timeout
        try:
            await self.client.publish(name)
        except ClientError as err:
            await self._lenient(err, timeout)
            assert self._blind is not None
            self._blind.publish(name)

    async def play(self, name: str, timeout: float = 10.0) -> None:
        """Play `name` until the connection closes; media go to `on_media` as they are
        parsed (the arrival time is taken there, not when the play's iteration gets them)."""
        self.client.timeout = timeout
        self._play = asyncio.create_task(self._iterate(name))
        started = asyncio.create_task(self.client.started.wait())
        await asyncio.wait({self._play, started}, timeout=timeout)
        started.cancel()
        if self._play.done():
            err = self._play.exception()
            raise RTMPError(f"play {name}: {err or 'ended'}") from err
        if not self.client.started.is_set():
            raise RTMPError(f"play {name}: no NetStream.Play.Start within {timeout:g} s")

    async def _iterate(self, name: str) -> None:
        async for _ in self.client.play(name):
            pass

    def send(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one message; `drain` writes it."""
        self.conn.send_media(self.stream_id, type_id, timestamp, payload)

    async def drain(self) -> None:
        if self._blind is not None:
            await self._blind.flush()
            return
        with contextlib.suppress(ClientError):
            await self.client.flush()

    async def close(self) -> None:
        if self._blind is not None:
            await self._blind.close()
        await self.client.abort()
        if self._play is not None:
            self._play.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await self._play

    async def _lenient(self, err: ClientError, timeout: float) -> None:
        if not self.lenient:
            raise RTMPError(str(err)) from err
        self.broken = err
        await self.client.abort()
        self._blind = _Blind(self.port, self.app)
        await self._blind.open(timeout)


class _Blind:
    """A connection that completes the handshake, then writes connect, createStream and
    publish without reading the answers (stream id 1 assumed): for a server whose bytes do
    not parse, to hold a publish open for the memory figure. Not a client: it never reads
    what the server says after the handshake."""

    def __init__(self, port: int, app: str) -> None:
        self.port = port
        self.app = app
        self.conn = ClientConnection(chunk_size=4096)
        self._writer: asyncio.StreamWriter | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def open(self, timeout: float) -> None:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), timeout
        )
        await self.flush()  # C0 + C1
        while not self.conn.handshake_done:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise RTMPError("closed in the handshake")
            with contextlib.suppress(RemoteProtocolError):
                self.conn.receive_data(data)  # S0 S1 S2; what follows is not parsed
            await self.flush()
        self._drain_task = asyncio.create_task(self._discard(reader))
        self.conn.connect(self.app, f"rtmp://127.0.0.1:{self.port}/{self.app}")
        self.conn.create_stream()
        await self.flush()

    def publish(self, name: str) -> None:
        self.conn.publish(1, name)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
            with contextlib.suppress(OSError):
                await self._writer.drain()

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(256 * 1024):
                pass

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._drain_task
