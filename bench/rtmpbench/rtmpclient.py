"""An asyncio RTMP client for the benchmark: our sans-IO `ClientConnection` over a socket.

Used where ffmpeg cannot tell us what we need: the relay latency (a publisher that stamps
each video message with its send time, and a player that reads the stamps back) and the
memory per connection (hundreds of publishers held open at little client cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.protocol.messages import Message

MediaCallback = Callable[[Message, int], None]
"""Called with each media message and its arrival time (`time.monotonic_ns()`)."""


class RTMPError(Exception):
    pass


class Client:
    """One connection. `lenient`: if the server's bytes cannot be parsed (pyrtmp starts a
    chunk stream with a type-1 header, which our strict chunk reader refuses), stop reading
    them and go on as if every command succeeded (stream id 1); used only to hold
    connections open for the memory figure."""

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
        self.conn = ClientConnection(chunk_size=4096)
        self.on_media = on_media
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._results: dict[float, asyncio.Future[ClientCommand]] = {}
        self._status: asyncio.Queue[ClientCommand] = asyncio.Queue()
        self.stream_id = 0
        self.closed = asyncio.Event()

    async def open(self, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), timeout
        )
        self._task = asyncio.create_task(self._pump())
        tc_url = f"rtmp://127.0.0.1:{self.port}/{self.app}"
        await self._call(self.conn.connect(self.app, tc_url), timeout)
        result = await self._call(self.conn.create_stream(), timeout)
        self.stream_id = int(next(a for a in result.args if isinstance(a, (int, float))))

    async def publish(self, name: str, timeout: float = 10.0) -> None:
        self.conn.publish(self.stream_id, name)
        self.flush()
        await self._wait_status("NetStream.Publish.Start", timeout)

    async def play(self, name: str, timeout: float = 10.0) -> None:
        self.conn.play(self.stream_id, name)
        self.flush()
        await self._wait_status("NetStream.Play.Start", timeout)

    def send(self, type_id: int, timestamp: int, payload: bytes) -> None:
        self.conn.send_media(self.stream_id, type_id, timestamp, payload)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._task

    async def _call(self, tid: float, timeout: float) -> ClientCommand:
        fut: asyncio.Future[ClientCommand] = asyncio.get_running_loop().create_future()
        self._results[tid] = fut
        self.flush()
        if self.broken is not None:
            self._assume_success()
        reply = await asyncio.wait_for(fut, timeout)
        if reply.name != "_result":
            raise RTMPError(f"{reply.name}: {reply.args}")
        return reply

    def _assume_success(self) -> None:
        for tid, fut in self._results.items():
            if not fut.done():
                fut.set_result(ClientCommand("_result", tid, 0, (None, 1.0)))
        self._results.clear()
        self._status.put_nowait(ClientCommand("onStatus", 0.0, 1, ({"code": "*"},)))

    async def _wait_status(self, code: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            status = await asyncio.wait_for(self._status.get(), max(left, 0.001))
            got = status.info.get("code")
            if got == code or (self.broken is not None and got == "*"):
                return
            if status.info.get("level") == "error":
                raise RTMPError(f"{got}: {status.info.get('description')}")

    async def _pump(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(256 * 1024):
                now = time.monotonic_ns()
                if self.broken is not None:
                    continue
                try:
                    items = self.conn.receive_data(data)
                except Exception as err:
                    if not self.lenient:
                        raise
                    self.broken = err
                    self._assume_success()
                    continue
                for item in items:
                    if isinstance(item, ClientCommand):
                        fut = self._results.pop(item.transaction_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(item)
                        elif item.name == "onStatus":
                            self._status.put_nowait(item)
                    elif item.type_id in (8, 9) and self.on_media is not None:
                        self.on_media(item, now)
                self.flush()
        finally:
            self.closed.set()
            for fut in self._results.values():
                if not fut.done():
                    fut.set_exception(RTMPError("connection closed"))
