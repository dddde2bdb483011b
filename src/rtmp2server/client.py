"""An asyncio RTMP client: publish to or play from any RTMP server, over rtmp:// or rtmps://.

    async with connect("rtmp://127.0.0.1:1935/live") as client:
        await client.publish("cam")
        await client.send_metadata({"videocodecid": 7.0})
        await client.send_media(9, 0, payload)

    async with connect("rtmps://host/live", ssl=context) as client:
        async for message in client.play("cam"):
            ...

This module owns the socket side of one client connection: the stream, one task that reads
and feeds the sans-IO `ClientConnection` (`protocol/client.py`), the matching of `_result` /
`_error` answers to the calls waiting on them, the wait for each `onStatus`, timeouts and a
clean close (deleteStream, then close). A status of level error, or an `_error` answer,
raises `StatusError` naming the server's code and description; bytes that break the protocol
raise `ClientError` from the `RemoteProtocolError` behind them.

For tests, monitors and benchmarks, a subclass may override `event_received`, which sees every
command and message the server sends, in order (User Control, statuses after the start, ...);
`conn` is the sans-IO connection, for commands this module has no method for (then `flush()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket as _socket
import ssl as _ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .logs import get_logger
from .protocol.client import ClientCommand, ClientConnection
from .protocol.errors import RemoteProtocolError
from .protocol.messages import AUDIO, DATA_AMF0, DATA_AMF3, VIDEO, Message

log = get_logger(__name__)

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
READ_SIZE = 256 * 1024


class ClientError(Exception):
    """The connection failed: refused, timed out, closed by the server, or the server's bytes
    broke the protocol."""


class StatusError(ClientError):
    """The server answered with an error: an `onStatus` of level error, or `_error`."""

    def __init__(self, command: str, code: str, description: str) -> None:
        super().__init__(
            f"{command}: {code}: {description}" if description else f"{command}: {code}"
        )
        self.command = command
        self.code = code
        self.description = description


@dataclass(frozen=True, slots=True)
class URL:
    """An `rtmp://` or `rtmps://` URL split the way connect needs it."""

    scheme: str
    host: str
    port: int
    app: str
    tc_url: str

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @classmethod
    def parse(cls, url: str) -> URL:
        """`rtmp[s]://host[:port]/app` (the app may hold a slash, `app/instance`, and a query
        string). ValueError says what is wrong."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{url!r}: expected rtmp:// or rtmps://")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        app = parts.path.strip("/")
        if not app:
            raise ValueError(f"{url!r}: no application (rtmp://host/APP)")
        if parts.query:
            app += "?" + parts.query
        return cls(
            scheme, parts.hostname, parts.port or DEFAULT_PORTS[scheme], app, url.split("#")[0]
        )


class Client:
    """One connection to a server; made by `connect()`. Not for concurrent publish and play
    on one connection: one stream per client, as ffmpeg and OBS do."""

    def __init__(
        self,
        url: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        timeout: float = 10.0,
        chunk_size: int = 4096,
        max_queued: int = 256,
        connect_extra: dict[str, Any] | None = None,
        sock: _socket.socket | None = None,
    ) -> None:
        self.url = URL.parse(url)
        self._sock = sock
        if self.url.tls and ssl is None:
            ssl = _ssl.create_default_context()
        self._ssl = ssl if self.url.tls else None
        self.timeout = timeout
        self.conn = ClientConnection(chunk_size=chunk_size)
        self._connect_extra = connect_extra or {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[float, asyncio.Future[ClientCommand]] = {}
        self._status: asyncio.Queue[ClientCommand] = asyncio.Queue()
        # Media and data of the stream being played: bounded, so a slow consumer slows the
        # reading of the socket (TCP back-pressure) rather than growing memory.
        self._media: asyncio.Queue[Message | None] = asyncio.Queue(max_queued)
        self._failure: ClientError | None = None
        self.stream_id = 0
        self._stream_used = False  # a publish or play was sent on `stream_id`
        self._playing = False  # a play() is on: its media are queued for it
        self._play_on = False  # NetStream.Play.Start came
        self._play_error: StatusError | None = None  # an error status after it
        self._publishing = ""
        self.closed = asyncio.Event()
        # Set once the publish or play is answered with its Start status (a play is then on
        # at the server even before the first message comes).
        self.started = asyncio.Event()
        self.connect_result: ClientCommand | None = None

    # --- connection ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the socket (TLS for rtmps://), handshake, and connect to the application."""
        u = self.url
        where: dict[str, Any] = (
            {"sock": self._sock} if self._sock is not None else {"host": u.host, "port": u.port}
        )
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    ssl=self._ssl, server_hostname=u.host if self._ssl else None, **where
                ),
                self.timeout,
            )
        except (OSError, TimeoutError) as err:
            raise ClientError(f"{u.scheme}://{u.host}:{u.port}: cannot connect: {err!r}") from err
        self._task = asyncio.create_task(self._read_loop())
        self.connect_result = await self._call(
            "connect", self.conn.connect(u.app, u.tc_url, **self._connect_extra)
        )

    async def close(self) -> None:
        """deleteStream (after FCUnpublish, for a publish) if a stream is open, then close."""
        if self._writer is None:
            return
        if self.stream_id and self._failure is None and not self._writer.is_closing():
            if self._publishing:
                self.conn.call("FCUnpublish", None, self._publishing)
            self.conn.delete_stream(self.stream_id)
            self.stream_id = 0
            with contextlib.suppress(ClientError):
                await self._flush()
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), self.timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.closed.set()

    async def abort(self) -> None:
        """Close the socket with no deleteStream: the server sees the connection drop, as
        when an encoder or a player goes away without a word. Returns once the server has
        closed its side too (or after `timeout`)."""
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            while not self._task.done() and loop.time() < deadline:
                # What a play has not taken is dropped, so that a reader blocked on a full
                # queue goes on to the server's end of the connection.
                while not self._media.empty():
                    self._media.get_nowait()
                await asyncio.wait({self._task}, timeout=0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.closed.set()

    async def __aenter__(self) -> Client:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def failure(self) -> ClientError | None:
        """Why the connection ended: refused, broken, closed by the server; None while open."""
        return self._failure

    # --- publish -------------------------------------------------------------------------

    async def publish(self, name: str, kind: str = "live") -> None:
        """Publish `name` (a stream key, query string allowed), the way ffmpeg does:
        releaseStream, FCPublish, createStream, publish; returns on NetStream.Publish.Start."""
        # releaseStream and FCPublish: answers not awaited (servers differ in whether they
        # answer at all; nginx-rtmp answers neither with a transaction id we can rely on).
        self.conn.call("releaseStream", None, name)
        self.conn.call("FCPublish", None, name)
        await self._create_stream()
        self.conn.publish(self.stream_id, name, kind)
        await self._flush()
        await self._wait_status("publish", ("NetStream.Publish.Start",))
        self._publishing = name
        self.started.set()

    async def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Send one audio (8) or video (9) message, FLV tag body as the payload."""
        self._check()
        self.conn.send_media(self.stream_id, type_id, timestamp, payload)
        await self._flush()

    async def send_metadata(self, metadata: dict[str, Any]) -> None:
        """`@setDataFrame onMetaData`, as publishers send it."""
        self._check()
        self.conn.send_metadata(self.stream_id, metadata)
        await self._flush()

    def send_raw(self, data: bytes) -> None:
        """Write chunks framed elsewhere (a relay's fan-out, `server/push.py`) at once, without
        waiting for the socket: the caller bounds what it writes with `buffered()`. Each
        message must start with a type-0 header (at `conn.out_chunk_size`, for `stream_id`),
        and a connection that sends raw chunks does not also use `send_media` or
        `send_metadata` (their chunk streams would share header state)."""
        self._check()
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ClientError(f"{self.url.host}:{self.url.port}: not connected")
        pending = self.conn.data_to_send()  # acknowledgements first, in order
        writer.write(pending + data if pending else data)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        writer = self._writer
        return 0 if writer is None else writer.transport.get_write_buffer_size()

    async def send_data(self, timestamp: int, payload: bytes) -> None:
        """One AMF0 data message (18) as it is: a cue point, an `onMetaData` of a file."""
        await self.send_media(DATA_AMF0, timestamp, payload)

    async def set_chunk_size(self, size: int) -> None:
        """Send Set Chunk Size and chunk what follows at `size` bytes (128 .. 2**31-1)."""
        if not 1 <= size < 2**31:
            raise ValueError(f"chunk size {size}: expected 1 .. 2**31-1")
        self.conn.set_chunk_size(size)
        await self._flush()

    # --- play ----------------------------------------------------------------------------

    async def play(self, name: str, start: float = -2.0) -> AsyncIterator[Message]:
        """Play `name`: yields its audio, video and data `Message`s once NetStream.Play.Start
        came, until the server closes the connection or ends the play (Play.Stop or
        Play.Complete). A status of level error, before the start or after it (such as
        StreamNotFound when the publisher stayed away), raises `StatusError`."""
        await self._create_stream()
        self._playing = True
        self.conn.play(self.stream_id, name, start)
        await self._flush()
        await self._wait_status("play", ("NetStream.Play.Start",))
        self.started.set()
        while True:
            if self._failure is not None and self._media.empty():
                item = None  # the end marker did not fit in a full queue
            else:
                item = await self._media.get()
            if item is None:
                if self._play_error is not None:
                    raise self._play_error
                if self._failure is not None and not isinstance(self._failure, _Ended):
                    raise self._failure
                return
            yield item

    # --- stream commands -----------------------------------------------------------------

    async def create_stream(self) -> int:
        """createStream now (publish and play make one when there is none): the stream id.
        For owners that send their own publish or play through `conn`."""
        if not self.stream_id:
            await self._create_stream()
            self._stream_used = False
        return self.stream_id

    async def send_command(self, name: str, *args: Any) -> None:
        """A command on the stream whose answer is not awaited (statuses come to
        `event_received`): pause, receiveVideo, seek, ..."""
        self.conn.call(name, None, *args, stream_id=self.stream_id)
        await self._flush()

    async def pause(self, paused: bool, position: float = 0.0) -> None:
        """`pause` the play (True) or resume it (False) at `position` ms."""
        await self.send_command("pause", paused, position)

    async def receive_video(self, enabled: bool) -> None:
        await self.send_command("receiveVideo", enabled)

    async def receive_audio(self, enabled: bool) -> None:
        await self.send_command("receiveAudio", enabled)

    async def flush(self) -> None:
        """Send what the connection has queued (commands sent through `conn`)."""
        await self._flush()

    def event_received(self, item: ClientCommand | Message) -> None:
        """Called with every command and message from the server, in order, before this
        client handles it. Does nothing; override it to observe the connection."""

    # --- internals -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _flush(self) -> None:
        self._check()
        data = self.conn.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)
            try:
                await asyncio.wait_for(self._writer.drain(), self.timeout)
            except (OSError, TimeoutError) as err:
                raise ClientError(f"sending to {self.url.host}:{self.url.port}: {err!r}") from err

    async def _call(self, name: str, tid: float) -> ClientCommand:
        fut: asyncio.Future[ClientCommand] = asyncio.get_running_loop().create_future()
        self._calls[tid] = fut
        await self._flush()
        try:
            reply = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise ClientError(f"{name}: no answer within {self.timeout:g} s") from None
        finally:
            self._calls.pop(tid, None)
        if reply.name != "_result":
            info = reply.info
            raise StatusError(
                name,
                str(info.get("code", reply.name)),
                str(info.get("description", "")),
            )
        return reply

    async def _create_stream(self) -> None:
        if self.stream_id and not self._stream_used:
            self._stream_used = True  # made by create_stream(): publish or play use it
            return
        if self.stream_id:
            raise ClientError("one stream per client: this one already has a stream")
        result = await self._call("createStream", self.conn.create_stream())
        sid = next(
            (a for a in result.args if isinstance(a, (int, float)) and not isinstance(a, bool)),
            None,
        )
        if sid is None or not 0 < sid < 2**32:
            raise ClientError(f"createStream: answer {result.args!r}, expected a stream id")
        self.stream_id = int(sid)
        self._stream_used = True

    async def _wait_status(self, command: str, success: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            try:
                status = await asyncio.wait_for(self._status.get(), max(left, 0.0))
            except TimeoutError:
                raise ClientError(
                    f"{command}: no {' or '.join(success)} within {self.timeout:g} s"
                ) from None
            if status.name == "_closed":
                self._check()
            info = status.info
            code = str(info.get("code", ""))
            if info.get("level") == "error" or status.name == "_error":
                raise StatusError(command, code, str(info.get("description", "")))
            if code in success:
                return

    async def _read_loop(self) -> None:
        assert self._reader is not None
        peer = f"{self.url.host}:{self.url.port}"
        try:
            while True:
                try:
                    data = await self._reader.read(READ_SIZE)
                except OSError as err:
                    self._fail(ClientError(f"{peer}: {err!r}"))
                    return
                if not data:
                    self._fail(_Ended(f"{peer} closed the connection"))
                    return
                try:
                    items = self.conn.receive_data(data)
                except RemoteProtocolError as err:
                    log.warning("server %s broke the protocol: %s", peer, err)
                    for item in err.partial:
                        await self._dispatch(item)
                    self._fail(ClientError(f"{peer}: {err}"))
                    return
                for item in items:
                    await self._dispatch(item)
                await self._flush()  # acknowledgements, ping responses
        except ClientError as err:
            self._fail(err)
        finally:
            if self._writer is not None:
                self._writer.close()

    async def _dispatch(self, item: ClientCommand | Message) -> None:
        self.event_received(item)
        if isinstance(item, ClientCommand):
            fut = self._calls.get(item.transaction_id)
            if item.name in ("_result", "_error") and fut is not None and not fut.done():
                fut.set_result(item)
            elif item.name == "onStatus":
                self._status.put_nowait(item)
                info = item.info
                code = info.get("code")
                if code in ("NetStream.Play.Stop", "NetStream.Play.Complete"):
                    await self._media.put(None)
                elif code == "NetStream.Play.Start":
                    self._play_on = True
                elif info.get("level") == "error" and self._playing and self._play_on:
                    # After the start: the play is over at the server (StreamNotFound once
                    # a publisher stayed away for its play_wait, a failed seek, ...).
                    self._play_error = StatusError(
                        "play", str(code), str(info.get("description", ""))
                    )
                    await self._media.put(None)
        elif (
            item.type_id in (AUDIO, VIDEO, DATA_AMF0, DATA_AMF3)
            and item.stream_id == self.stream_id
            and self._playing
        ):
            await self._media.put(item)

    def _fail(self, err: ClientError) -> None:
        if self._failure is None:
            self._failure = err
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(err)
        self._status.put_nowait(ClientCommand("_closed", 0.0, 0, ()))
        with contextlib.suppress(asyncio.QueueFull):
            self._media.put_nowait(None)
        self.closed.set()


class _Ended(ClientError):
    """The server closed the connection (the end of a play, or a failure of a call)."""


def connect(
    url: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    timeout: float = 10.0,
    chunk_size: int = 4096,
    max_queued: int = 256,
    sock: _socket.socket | None = None,
    **connect_extra: Any,
) -> Client:
    """A client for `url` (`rtmp://host[:port]/app` or `rtmps://...`), to use as
    `async with connect(url) as client:`. `ssl`: the context for rtmps:// (default: the
    system's trust store, host name checked). `timeout`: seconds for connecting and for each
    answer awaited. `max_queued`: messages held for a player that is not reading. `sock`: a
    socket already connected to the server (options such as SO_RCVBUF set before it
    connected); the URL still names the app and tcUrl. `connect_extra`: more properties of
    the connect command object."""
    return Client(
        url,
        ssl=ssl,
        timeout=timeout,
        chunk_size=chunk_size,
        max_queued=max_queued,
        connect_extra=connect_extra,
        sock=sock,
    )
