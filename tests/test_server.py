"""The asyncio server in-process, driven over real loopback sockets by the sans-IO client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rtmp2server.client import connect
from rtmp2server.protocol import amf0, flv
from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.registry import StreamRegistry


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


class AsyncClient:
    """The sans-IO client on an asyncio stream, driven by hand: for tests that control each
    write (media queued behind a `publish` not yet answered, a message cut short, an abort),
    which the asyncio client (`rtmp2server.client`, used by `publish_all`) does not allow."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = ClientConnection()
        self.items: list[Any] = []

    @classmethod
    async def open(cls, port: int) -> AsyncClient:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def until(self, pred: Callable[[Any], bool]) -> Any:
        await self.flush()
        while True:
            for item in self.items:
                if pred(item):
                    self.items.remove(item)
                    return item
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.items += self.conn.receive_data(data)
            await self.flush()

    async def command(self, name: str) -> ClientCommand:
        item = await self.until(lambda i: isinstance(i, ClientCommand) and i.name == name)
        assert isinstance(item, ClientCommand)
        return item

    async def start_publish(self, name: str, app: str = "live", **connect: Any) -> int:
        """connect and createStream, then `publish` queued but not sent: the caller may add
        media to go out in the same write, before the answer. The message stream id."""
        self.conn.connect(app, f"rtmp://127.0.0.1/{app}", **connect)
        await self.command("_result")
        self.conn.create_stream()
        sid = int((await self.command("_result")).args[1])
        self.conn.publish(sid, name)
        return sid

    async def publish(self, name: str, app: str = "live") -> tuple[int, ClientCommand]:
        self.conn.connect(app, f"rtmp://127.0.0.1/{app}")
        await self.command("_result")
        self.conn.create_stream()
        sid = int((await self.command("_result")).args[1])
        self.conn.publish(sid, name)
        status = await self.command("onStatus")
        return sid, status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def frames(n: int) -> list[tuple[int, int, bytes]]:
    """(type, timestamp, payload): AVC/AAC sequence headers, then keyframes and frames."""
    out = [(9, 0, b"\x17\x00\x00\x00\x00avcC"), (8, 0, b"\xaf\x00\x12\x10")]
    for i in range(n):
        out.append((9, i * 33, (b"\x17" if i % 30 == 0 else b"\x27") + b"\x01" + os.urandom(5000)))
        out.append((8, i * 23, b"\xaf\x01" + os.urandom(200)))
    return out


async def publish_all(port: int, name: str, media: list[tuple[int, int, bytes]]) -> None:
    """Publish with the asyncio client: it raises unless the answer is Publish.Start, and ends
    with FCUnpublish and deleteStream, then closes."""
    async with connect(f"rtmp://127.0.0.1:{port}/live") as c:
        await c.publish(name)
        await c.send_metadata({"videocodecid": 7.0, "audiocodecid": 10.0})
        for t, ts, payload in media:
            await c.send_media(t, ts, payload)


def recording(record_dir: Path, app: str, name: str) -> list[flv.Tag]:
    (path,) = (record_dir / app).glob(f"{name}-*.flv")
    _header, tags = flv.read_flv(path.read_bytes())
    return tags


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_publish_is_recorded_bit_exact(tmp_path: Path) -> None:
    media = frames(60)

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            await publish_all(s.port, "cam", media)
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    tags = recording(tmp_path, "live", "cam")
    assert tags[0].tag_type == 18
    meta = amf0.decode_all(tags[0].body)
    assert meta[0] == "onMetaData"  # @setDataFrame unwrapped
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media


def test_second_publisher_for_same_name_gets_bad_name_with_republish_refuse(
    tmp_path: Path,
) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)

    async def main() -> None:
        async with RTMPServer(cfg, registry=StreamRegistry(republish="refuse")) as s:
            a = await AsyncClient.open(s.port)
            _, status = await a.publish("same")
            assert status.info["code"] == "NetStream.Publish.Start"
            b = await AsyncClient.open(s.port)
            _, status = await b.publish("same")
            assert status.info["code"] == "NetStream.Publish.BadName"
            assert status.info["level"] == "error"
            # another app with the same stream name is a different stream
            c = await AsyncClient.open(s.port)
            _, status = await c.publish("same", app="other")
            assert status.info["code"] == "NetStream.Publish.Start"
            for cl in (a, b, c):
                await cl.close()

    run(main())


def test_three_publishers_at_once(tmp_path: Path) -> None:
    media = {f"s{i}": frames(40) for i in range(3)}

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            await asyncio.gather(*(publish_all(s.port, n, m) for n, m in media.items()))
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    for name, m in media.items():
        tags = recording(tmp_path, "live", name)
        assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == m


BAD_INPUTS = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(3000),
    "c0-version-6": b"\x06" + bytes(1536),
}


async def bad_handshaked(port: int, chunks: bytes) -> bool:
    """Do a simple handshake, send `chunks`; True if the server then closed the socket."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"\x03" + bytes(1536))
    s0s1s2 = await r.readexactly(3073)
    w.write(s0s1s2[1:1537])
    w.write(chunks)
    await w.drain()
    try:
        data = await asyncio.wait_for(r.read(), 5)
    except ConnectionError:
        return True
    w.close()
    return data is not None


def amf_command(body: bytes) -> bytes:
    return b"\x03" + bytes(3) + len(body).to_bytes(3, "big") + b"\x14" + bytes(4) + body


@pytest.mark.parametrize(
    "kind", ["garbage", "c0-version-6", "absurd-chunk-size", "malformed-amf", "huge-message"]
)
def test_bad_input_closes_only_its_connection(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    media = frames(60)
    caplog.set_level(logging.WARNING, logger="rtmp2server")

    async def bad(port: int) -> None:
        if kind in BAD_INPUTS:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(BAD_INPUTS[kind])
            await w.drain()
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(r.read(), 5) is not None
            w.close()
        elif kind == "absurd-chunk-size":
            body = struct.pack(">I", 0x80000000)
            msg = b"\x02" + bytes(3) + b"\x00\x00\x04\x01" + bytes(4) + body
            assert await bad_handshaked(port, msg)
        elif kind == "malformed-amf":
            assert await bad_handshaked(port, amf_command(b"\x02\x00\x07connect\x00\x3f\xf0\x03"))
        else:
            header = b"\x06" + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(4)
            assert await bad_handshaked(port, header)

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, max_message_size=1 << 20)
        async with RTMPServer(cfg) as s:
            good = asyncio.create_task(publish_all(s.port, "good", media))
            await asyncio.sleep(0.05)
            await bad(s.port)
            await good
            await wait_for(lambda: len(s.registry) == 0)
            assert s._server is not None and s._server.is_serving()

    run(main())
    tags = recording(tmp_path, "live", "good")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media
    lines = [r.getMessage() for r in caplog.records if "closing the connection" in r.getMessage()]
    assert lines, "a log line names the peer and the problem"
    assert lines[0].startswith("peer 127.0.0.1:")
    assert "expected" in lines[0]


def test_publisher_vanishing_mid_message_keeps_complete_frames(tmp_path: Path) -> None:
    media = frames(30)

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            c = await AsyncClient.open(s.port)
            sid, _ = await c.publish("cut")
            for t, ts, payload in media:
                c.conn.send_media(sid, t, ts, payload)
            c.conn.send_media(sid, 9, 5000, b"\x27\x01" + bytes(20000))
            data = c.conn.data_to_send()
            c.writer.write(data[:-7000])  # the last frame stops in the middle
            await c.writer.drain()
            c.writer.transport.abort()
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    tags = recording(tmp_path, "live", "cut")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags] == media


def test_close_finishes_recordings(tmp_path: Path) -> None:
    async def main() -> None:
        s = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path))
        await s.start()
        c = await AsyncClient.open(s.port)
        sid, _ = await c.publish("open")
        c.conn.send_media(sid, 8, 0, b"\xaf\x00\x12\x10")
        await c.flush()
        stream = s.registry.get("live", "open")
        assert stream is not None
        await wait_for(lambda: stream.audio_frames == 1)
        await s.close()

    run(main())
    (path,) = tmp_path.rglob("open-*.flv")
    header, tags = flv.read_flv(path.read_bytes())
    assert (header.audio, header.video) == (True, False)  # flags fixed from what came
    assert len(tags) == 1


def test_handshake_timeout_closes_silent_peer(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, handshake_timeout=0.3)
        async with RTMPServer(cfg) as s:
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(b"\x03")
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()

    run(main())


def test_recordings_never_overwrite(tmp_path: Path) -> None:
    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            for _ in range(3):
                await publish_all(s.port, "again", frames(1))
                await wait_for(lambda: len(s.registry) == 0)

    run(main())
    assert len(list((tmp_path / "live").glob("again-*.flv"))) == 3


def test_repeated_metadata_recorded_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            c = await AsyncClient.open(s.port)
            sid, _ = await c.publish("meta")
            for i in range(3):
                c.conn.send_metadata(sid, {"duration": float(i)})
                c.conn.send_media(sid, 9, i * 1000, b"\x17\x01frame")
            c.conn.send_media(sid, 18, 3000, amf0.encode("onCuePoint", {"name": "x"}))
            await c.flush()
            await c.close()
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    tags = recording(tmp_path, "live", "meta")
    assert [t.tag_type for t in tags] == [18, 9, 9, 9, 18]
    assert amf0.decode_all(tags[0].body)[1]["duration"] == 0.0
    assert amf0.decode_all(tags[-1].body)[0] == "onCuePoint"


def test_publish_under_uvloop(tmp_path: Path) -> None:
    """The CLI runs on uvloop when it is installed; its transports must work too."""
    import uvloop

    media = frames(30)

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            await publish_all(s.port, "uv", media)
            await wait_for(lambda: len(s.registry) == 0)

    uvloop.run(asyncio.wait_for(main(), 30))
    tags = recording(tmp_path, "live", "uv")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media


class _Batches:
    """A sink that counts the batches (one per read from the publisher) and keeps messages."""

    def __init__(self) -> None:
        self.batches = 0
        self.messages: list[tuple[int, int, bytes]] = []

    def on_message(self, stream: Any, msg: Any) -> None:
        self.on_messages(stream, [msg])

    def on_messages(self, stream: Any, msgs: list[Any]) -> None:
        self.batches += 1
        self.messages += [(m.type_id, m.timestamp, m.payload) for m in msgs]

    def on_end(self, stream: Any) -> None:
        pass


@pytest.mark.parametrize("merge", [0.0, 0.1])
def test_merged_reads_take_what_arrived_meanwhile_in_one_read(tmp_path: Path, merge: float) -> None:
    """`merge_reads`: a publisher writing a message every 5 ms is read once per merge tick
    (about every 0.1 s), with every message in order; without it, about once per write."""
    media = frames(40)
    sink = _Batches()

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, merge_reads=merge)
        async with RTMPServer(cfg) as s:
            s.registry.on_start.append(lambda stream: stream.add_sink(sink))
            c = await AsyncClient.open(s.port)
            sid, status = await c.publish("merged")
            assert status.info["code"] == "NetStream.Publish.Start"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for t, ts, payload in media:
                c.conn.send_media(sid, t, ts, payload)
                await c.flush()
                await asyncio.sleep(0.005)
            took = loop.time() - t0
            await wait_for(lambda: len(sink.messages) == len(media))
            await c.close()
            await wait_for(lambda: len(s.registry) == 0)
            print(
                f"merge_reads {merge}: {sink.batches} reads for {len(media)} writes in {took:.2f} s"
            )
            if merge:
                # Reads at most once a tick (plus the one that starts each).
                assert sink.batches <= 2 * (took / merge + 2), (sink.batches, took)
            else:
                assert sink.batches > len(media) / 2, sink.batches

    run(main())
    assert sink.messages == media
    tags = recording(tmp_path, "live", "merged")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags] == media


def test_merged_reads_do_not_slow_a_bulk_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher that sends more than a merge tick's worth at once (a file pushed without
    -re, a burst) is read at once: only small reads wait for the next tick."""
    media = frames(300)  # about 1.5 MB, written in one go
    waits = 0
    real = RTMPServer._merge_later

    def counting(self: RTMPServer, session: Any) -> None:
        nonlocal waits
        waits += 1
        real(self, session)

    monkeypatch.setattr(RTMPServer, "_merge_later", counting)

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, merge_reads=0.2)
        async with RTMPServer(cfg) as s:
            c = await AsyncClient.open(s.port)
            sid, status = await c.publish("bulk")
            assert status.info["code"] == "NetStream.Publish.Start"
            for t, ts, payload in media:
                c.conn.send_media(sid, t, ts, payload)
            await c.flush()
            await c.close()
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    # 1.5 MB is at least six full 256 KiB reads; throttled, each would have waited a tick.
    assert waits <= 3, waits
    tags = recording(tmp_path, "live", "bulk")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags] == media
