"""Issue 9's findings, one regression test each: what a hostile or careless peer could do.

In-process tests drive `RTMPServer` over real loopback sockets; the end-to-end ones run
`rtmp2-server` as a user would, with real publishers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import socket
import struct
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from rtmp2server.logs import escape, redact_query
from rtmp2server.protocol import amf0
from rtmp2server.server import RTMPServer, ServerConfig
from support.clients import RawClient, chunk_message, publish
from support.media import SourceMedia
from support.probe import av_counts
from support.server import running_server
from test_server import AsyncClient, frames, recording, run, wait_for

BAD_CHUNK = b"\xc9"  # a type-3 chunk on a chunk stream never opened

# --- 1. media sent straight after publish ----------------------------------------------------


def test_media_pipelined_with_publish_is_recorded(tmp_path: Path) -> None:
    """publish, metadata, sequence headers and frames in one write, before Publish.Start."""
    media = frames(30)

    async def main() -> None:
        async with RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)
        ) as server:
            c = await AsyncClient.open(server.port)
            sid = await c.start_publish("eager")
            c.conn.send_metadata(sid, {"videocodecid": 7.0})
            for t, ts, payload in media:
                c.conn.send_media(sid, t, ts, payload)
            c.conn.delete_stream(sid)
            data = c.conn.data_to_send()
            c.writer.write(data)  # one write: the server reads it in as few reads as it can
            status = await c.command("onStatus")
            assert status.info["code"] == "NetStream.Publish.Start"
            await c.close()
            await wait_for(lambda: not server.registry.get("live", "eager"))

    run(main())
    tags = recording(tmp_path, "live", "eager")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media
    assert amf0.decode_all(tags[0].body)[0] == "onMetaData"


# --- 5. a closed connection is freed by reference counting -----------------------------------


@pytest.mark.parametrize("ending", ["deleteStream", "protocol error", "reset"])
def test_closed_connection_freed_without_gc(tmp_path: Path, ending: str) -> None:
    async def main() -> None:
        async with RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)
        ) as server:
            c = await AsyncClient.open(server.port)
            sid, _ = await c.publish("freed")
            for t, ts, payload in frames(10):
                c.conn.send_media(sid, t, ts, payload)
            await c.flush()
            await wait_for(lambda: bool(server.sessions))
            (session,) = server.sessions
            refs = [weakref.ref(session)]
            # The compiled connection and reader are native objects, which take no weak
            # reference: they are looked for among the objects the collector tracks (a freed
            # one leaves them).
            native = {id(o): type(o) for o in (session.conn, session.conn._reader)}
            del session
            if ending == "deleteStream":
                c.conn.delete_stream(sid)
                await c.flush()
            elif ending == "protocol error":
                c.writer.write(BAD_CHUNK)
                await c.writer.drain()
            else:
                c.writer.transport.abort()
            await c.close()
            await wait_for(lambda: not server.sessions)
            for _ in range(5):
                await asyncio.sleep(0)
            alive = [r() for r in refs if r() is not None]
            alive += [o for o in gc.get_objects() if native.get(id(o)) is type(o)]
            assert not alive, f"still referenced without gc.collect(): {alive}"

    gc.disable()
    try:
        run(main())
    finally:
        gc.enable()


# --- 7. connection limits --------------------------------------------------------------------


def _idle_sockets(port: int, count: int, source: str) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, timeout: float = 2.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_over_the_limits_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rtmp2server")

    async def main() -> None:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            record_dir=tmp_path,
            max_connections=6,
            max_connections_per_ip=3,
        )
        async with RTMPServer(config) as server:
            loop = asyncio.get_running_loop()
            a = await loop.run_in_executor(None, _idle_sockets, server.port, 4, "127.0.0.2")
            closed = await asyncio.gather(
                *(loop.run_in_executor(None, _closed_by_server, s, 0.5) for s in a)
            )
            assert closed.count(True) == 1 and not closed[0], closed
            # Another address still gets in, up to the total limit.
            await wait_for(lambda: len(server.sessions) == 3)
            b = await loop.run_in_executor(None, _idle_sockets, server.port, 3, "127.0.0.3")
            await wait_for(lambda: len(server.sessions) == 6)
            c = await AsyncClient.open(server.port)
            with pytest.raises(ConnectionError):
                await c.publish("late")
            await c.close()
            for s in a + b:
                s.close()
            await wait_for(lambda: not server.sessions)
            await publish_all_ok(server.port)

    run(main())
    lines = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert any("the limit per address is 3" in ln for ln in lines), lines
    assert any("the limit is 6" in ln for ln in lines), lines


async def publish_all_ok(port: int) -> None:
    c = await AsyncClient.open(port)
    _, status = await c.publish("after")
    assert status.info["code"] == "NetStream.Publish.Start"
    await c.close()


def _soft_fd_limit_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.e2e
def test_idle_sockets_do_not_lock_out_a_publisher(tmp_path: Path, source: SourceMedia) -> None:
    """The finding: with a soft limit of 1024 fds, 1100 idle sockets locked every publisher
    out. Now one address holds at most 64 of them, and an ffmpeg publish is recorded whole."""
    with running_server(
        tmp_path / "rec", tmp_path / "log", preexec_fn=_soft_fd_limit_1024
    ) as server:
        socks = _idle_sockets(server.port, 1100, "127.0.0.2")
        try:
            server.wait_for_log("connection refused: 64 connections open from 127.0.0.2")
            result = publish("ffmpeg-debian", source.path, server.url("locked"), timeout=60)
            assert result.returncode == 0, result.stdout
            server.wait_publish("stop", "locked")
            assert av_counts(server.recording("locked")) == source.counts
        finally:
            for s in socks:
                s.close()
    assert "accepting up to 480 connections" in server.log()


def _soft_1024_hard_4096() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))


@pytest.mark.e2e
def test_soft_fd_limit_raised_at_start(tmp_path: Path) -> None:
    with running_server(
        tmp_path / "rec", tmp_path / "log", preexec_fn=_soft_1024_hard_4096
    ) as server:
        server.wait_for_log("accepting up to")
    assert "open file limit raised from 1024 to 4096" in server.log()
    assert "accepting up to 2016 connections" in server.log()


# --- 8. deadlines from the accept ------------------------------------------------------------


def test_dribbled_handshake_is_cut_at_its_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s kept a connection for 51 minutes; the deadline counts from accept."""

    async def main() -> float:
        config = ServerConfig(host="127.0.0.1", port=0, handshake_timeout=1.0)
        async with RTMPServer(config) as server:
            _r, w = await asyncio.open_connection("127.0.0.1", server.port)
            start = time.monotonic()
            try:
                for _ in range(100):
                    w.write(b"\x03")
                    await w.drain()
                    await asyncio.sleep(0.2)
            except ConnectionError:
                pass
            else:
                raise AssertionError("still open after 20 s of dribbling")
            return time.monotonic() - start

    elapsed = run(main())
    assert 0.9 < elapsed < 3.0, elapsed


def test_connected_peer_that_never_publishes_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rtmp2server")

    async def main() -> None:
        config = ServerConfig(host="127.0.0.1", port=0, start_timeout=1.0, idle_timeout=0)
        async with RTMPServer(config) as server:
            c = await AsyncClient.open(server.port)
            c.conn.connect("live", "rtmp://127.0.0.1/live")
            await c.command("_result")
            start = time.monotonic()
            # Pings keep bytes flowing, but a ping is no publish.
            with pytest.raises(ConnectionError):
                for _ in range(50):
                    c.conn.create_stream()
                    await c.command("_result")
                    await asyncio.sleep(0.1)
            assert time.monotonic() - start < 3.0

    run(main())
    assert any("no publish or play within 1 s" in r.getMessage() for r in caplog.records)


async def _read_until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 16):
            pass


def test_publisher_idle_by_messages_not_bytes(tmp_path: Path) -> None:
    """A publisher that sends one byte of a message at a time, never completing it, is idle."""

    async def main() -> float:
        config = ServerConfig(host="127.0.0.1", port=0, idle_timeout=1.0)
        async with RTMPServer(config) as server:
            c = await AsyncClient.open(server.port)
            sid, _ = await c.publish("drip")
            eof = asyncio.ensure_future(_read_until_eof(c.reader))
            header = bytes([6]) + b"\x00\x00\x00" + struct.pack(">I", 100000)[1:] + b"\x09"
            c.writer.write(header + struct.pack("<I", sid))
            start = time.monotonic()
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    if eof.done():
                        break
                    c.writer.write(b"x")
                    await c.writer.drain()
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(eof, 5)
            return time.monotonic() - start

    elapsed = run(main())
    assert elapsed < 3.0, elapsed


# --- 9, 10. escaped names, redacted secrets, and the name limit ------------------------------


def test_escape_and_redact() -> None:
    assert escape("a\nb\x1b[31m\x00\\") == "a\\x0ab\\x1b[31m\\x00\\\\"
    assert escape("caméra-直播") == "caméra-直播"
    assert escape("\u202eevil\u2028") == "\\u202eevil\\u2028"
    assert escape("x" * 1000, 10) == "xxxxxxxxxx...(1000 characters)"
    assert redact_query("key=secret&x=1") == "key=***&x=***"
    assert redact_query("secret") == "***"
    assert redact_query("") == ""


def test_forged_newline_name_and_secret_query_are_logged_safely(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rtmp2server")
    forged = "cam\n2026-12-01 12:00:00,000 INFO rtmp2server: publish start: peer=evil"

    async def main() -> None:
        async with RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)
        ) as server:
            c = await AsyncClient.open(server.port)
            sid, status = await c.publish(f"{forged}\x1b[2J?key=hunter2&token=abc")
            assert status.info["code"] == "NetStream.Publish.Start"
            c.conn.delete_stream(sid)
            await c.flush()
            await c.close()
            await wait_for(lambda: not server.sessions)

    run(main())
    text = "\n".join(logging.Formatter("%(message)s").format(r) for r in caplog.records)
    assert "hunter2" not in text and "token=abc" not in text
    assert "?key=***&token=***" in text
    assert "\x1b" not in text
    for line in text.splitlines():
        assert not line.startswith("2026-12-01"), line
    assert "cam\\x0a2026-12-01" in text
    assert "\\x1b[2J" in text


def test_long_names_are_refused_at_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rtmp2server")

    async def main() -> None:
        async with RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)
        ) as server:
            c = await AsyncClient.open(server.port)
            _, status = await c.publish("n" * 5000)
            assert status.info["code"] == "NetStream.Publish.BadName"
            assert status.info["level"] == "error"
            await c.close()
            c = await AsyncClient.open(server.port)
            _, status = await c.publish("ok", app="a" * 300)
            assert status.info["code"] == "NetStream.Publish.BadName"
            await c.close()
            c = await AsyncClient.open(server.port)
            _, status = await c.publish("é" * 256)
            assert status.info["code"] == "NetStream.Publish.Start"
            await c.close()

    run(main())
    assert not list((tmp_path / "live").glob("nnn*"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("stream name of 5000 characters, expected at most 256" in m for m in messages)


# --- 11. stop reasons ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("deleteStream", "(deleteStream)"),
        ("close", "(closed by the peer)"),
        ("reset", "(reset by the peer)"),
        ("shutdown", "(server shutdown)"),
        ("timeout", "(timeout)"),
        ("protocol", "(protocol error)"),
    ],
)
def test_stop_reasons(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ending: str, reason: str
) -> None:
    caplog.set_level(logging.INFO, "rtmp2server")

    async def main() -> None:
        config = ServerConfig(host="127.0.0.1", port=0, idle_timeout=0.5)
        server = RTMPServer(config)
        await server.start()
        c = await AsyncClient.open(server.port)
        sid, _ = await c.publish("why")
        c.conn.send_media(sid, 9, 0, b"\x17\x00\x00\x00\x00avcC")
        await c.flush()
        if ending == "deleteStream":
            c.conn.delete_stream(sid)
            await c.flush()
        elif ending == "close":
            c.writer.close()
        elif ending == "reset":
            sock = c.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.writer.close()
        elif ending == "protocol":
            c.writer.write(BAD_CHUNK)
        if ending == "shutdown":
            await wait_for(lambda: server.registry.get("live", "why") is not None)
            await server.close()
        else:
            await wait_for(lambda: server.registry.get("live", "why") is None, timeout=5)
            await server.close()

    run(main())
    (stop,) = [r.getMessage() for r in caplog.records if "publish stop" in r.getMessage()]
    assert stop.endswith(reason), stop


# --- 14. Enhanced RTMP v2 Reconnect Request --------------------------------------------------


def test_reconnect_request_on_drain_only_to_clients_that_announced_it(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], bool]:
        server = RTMPServer(ServerConfig(host="127.0.0.1", port=0, drain_timeout=5.0))
        await server.start()
        capable = await AsyncClient.open(server.port)
        await capable.start_publish("obs", capsEx=1.0)
        await capable.command("onStatus")
        plain = await AsyncClient.open(server.port)
        await plain.publish("ffmpeg")
        drained = asyncio.ensure_future(server.drain())
        request = await capable.command("onStatus")
        # The client reconnects: it leaves, and the drain ends without waiting its bound.
        await capable.close()
        started = time.monotonic()
        assert await drained == 1
        quick = time.monotonic() - started < 2.0
        got_request_too = False
        try:
            item = await asyncio.wait_for(plain.command("onStatus"), 0.3)
            got_request_too = item.info.get("code") == "NetConnection.Connect.ReconnectRequest"
        except (TimeoutError, ConnectionError):
            pass
        await server.close()
        assert quick
        return request.info, got_request_too

    info, plain_got_it = run(main())
    assert info["code"] == "NetConnection.Connect.ReconnectRequest"
    assert info["level"] == "status"
    assert not plain_got_it


@pytest.mark.e2e
def test_sigterm_sends_reconnect_request_and_exits(tmp_path: Path) -> None:
    """The CLI drains on SIGTERM: a client that announced capsEx reconnect gets the request,
    and the server still exits 0 within its drain bound although the client stays."""
    args = ["--drain-timeout", "1"]
    with (
        running_server(tmp_path / "rec", tmp_path / "log", args=args) as srv,
        RawClient(srv.port) as raw,
    ):
        if True:
            raw.handshake()
            connect = amf0.encode(
                "connect",
                1.0,
                {"app": "live", "tcUrl": "rtmp://127.0.0.1/live", "capsEx": 1.0},
            )
            raw.send(chunk_message(3, 20, connect))
            raw.send(chunk_message(3, 20, amf0.encode("createStream", 2.0, None)))
            publish_cmd = amf0.encode("publish", 3.0, None, "cam", "live")
            raw.send(chunk_message(8, 20, publish_cmd, stream_id=1))
            srv.wait_publish("start", "cam")
            started = time.monotonic()
            srv.proc.send_signal(15)  # type: ignore[union-attr]
            received = b""
            raw.sock.settimeout(5)
            while b"ReconnectRequest" not in received:
                data = raw.sock.recv(65536)
                if not data:
                    break
                received += data
            assert b"NetConnection.Connect.ReconnectRequest" in received
            assert srv.proc.wait(10) == 0  # type: ignore[union-attr]
            assert time.monotonic() - started < 4
    assert "drain: asked 1 publisher(s) to reconnect" in srv.log()
    assert "(server shutdown)" in srv.log()


# --- asynchronous publish decisions (the foundation of HTTP callbacks) -----------------------


@pytest.mark.parametrize("answer", [True, False])
def test_media_sent_while_a_coroutine_decides_is_held(tmp_path: Path, answer: bool) -> None:
    """A publisher that sends media while the handler is still deciding: after a yes its
    recording is complete from the first frame; after a no nothing is recorded."""
    media = frames(60)
    gate = asyncio.Event()

    async def main() -> tuple[str, int]:
        async def decide(stream: Any) -> bool:
            await gate.wait()
            if answer:
                server.record_publish(stream)
            return answer

        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, max_pending_bytes=100_000),
            publish_handler=decide,
        )
        await server.start()
        c = await AsyncClient.open(server.port)
        sid = await c.start_publish("held")
        c.conn.send_metadata(sid, {"videocodecid": 7.0})
        for t, ts, payload in media:
            c.conn.send_media(sid, t, ts, payload)
        c.writer.write(c.conn.data_to_send())
        await asyncio.sleep(0.5)  # the server holds what arrived, and stops reading past 100 kB
        (session,) = server.sessions
        held = session.pending[sid].held_bytes
        gate.set()
        status = await c.command("onStatus")
        c.conn.delete_stream(sid)
        await c.flush()
        await c.close()
        await wait_for(lambda: not server.sessions)
        await server.close()
        return status.info["code"], held

    code, held = run(main())
    assert 100_000 < held < 400_000, held  # bounded: reading paused soon after the bound
    if answer:
        assert code == "NetStream.Publish.Start"
        tags = recording(tmp_path, "live", "held")
        assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media
    else:
        assert code == "NetStream.Publish.BadName"
        assert not (tmp_path / "live").exists()


def test_a_late_answer_for_a_publisher_that_left_does_nothing(tmp_path: Path) -> None:
    gate = asyncio.Event()
    answered: list[bool] = []

    async def main() -> None:
        async def decide(stream: Any) -> bool:
            await gate.wait()
            answered.append(True)
            return True

        server = RTMPServer(
            ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path), publish_handler=decide
        )
        await server.start()
        c = await AsyncClient.open(server.port)
        await c.start_publish("gone")
        await c.flush()
        await wait_for(lambda: any(s.pending for s in server.sessions))
        await c.close()
        await wait_for(lambda: not server.sessions)
        gate.set()
        await asyncio.sleep(0.1)
        assert server.registry.get("live", "gone") is None
        # The name is free again for the next publisher.
        d = await AsyncClient.open(server.port)
        gate.set()
        _, status = await d.publish("gone")
        assert status.info["code"] == "NetStream.Publish.Start"
        await d.close()
        await server.close()

    run(main())
    assert answered == [True]  # the first handler was cancelled; only the second answered


def test_a_publish_that_cannot_be_recorded_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The publisher is not told Publish.Start and then silently left unrecorded."""
    caplog.set_level(logging.WARNING, "rtmp2server")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    async def main() -> str:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=blocker)) as server:
            c = await AsyncClient.open(server.port)
            _, status = await c.publish("cam")
            await c.close()
            return str(status.info["code"]) + " " + str(status.info["description"])

    answer = run(main())
    assert answer.startswith("NetStream.Publish.BadName cam cannot be recorded"), answer
    assert str(blocker) not in answer  # no server path to the client
    assert any("refused: cannot record" in r.getMessage() for r in caplog.records)


# --- 4. a peer over its budget beside a good publisher ---------------------------------------


def _partial_messages(first_csid: int, count: int) -> bytes:
    """`count` chunk streams (3-byte ids), each starting a 1 MiB message it never finishes."""
    out = bytearray()
    for csid in range(first_csid, first_csid + count):
        v = csid - 64
        out += bytes((0x01, v & 0xFF, v >> 8))  # fmt 0, 3-byte chunk stream id
        out += b"\x00\x00\x00" + (1 << 20).to_bytes(3, "big") + b"\x09" + b"\x01\x00\x00\x00"
        out += b"x" * 128
    return bytes(out)


@pytest.mark.e2e
@pytest.mark.parametrize("attack", ["chunk streams", "partial bytes"])
def test_budget_exceeding_peer_beside_a_good_publisher(
    tmp_path: Path, source: SourceMedia, attack: str
) -> None:
    with running_server(tmp_path / "rec", tmp_path / "log") as server:
        from support.clients import start_publish

        good = start_publish("ffmpeg-debian", source.path, server.url("good"))
        with RawClient(server.port) as raw:
            raw.handshake()
            raw.send(chunk_message(3, 20, amf0.encode("connect", 1.0, {"app": "live"})))
            if attack == "chunk streams":
                raw.send(_partial_messages(400, 5000))  # 1 MiB messages, 128 bytes each
            else:
                # Few chunk streams, each announcing the largest message: 17 MiB of budget.
                raw.send(chunk_message(2, 1, struct.pack(">I", 1 << 16)))
                for csid in range(4, 12):
                    head = bytes([csid]) + b"\x00\x00\x00" + ((16 << 20) - 1).to_bytes(3, "big")
                    raw.send(head + b"\x09\x01\x00\x00\x00" + b"y" * (1 << 16))
            assert raw.wait_closed(10), "the server kept a peer over its budget"
        result = good.wait(30)
        assert result.returncode == 0, result.stdout
        server.wait_publish("stop", "good")
        assert av_counts(server.recording("good")) == source.counts
    log_text = server.log()
    assert "expected at most" in log_text and "closing the connection" in log_text
    assert "Traceback" not in log_text


@pytest.mark.e2e
@pytest.mark.parametrize("client", ["ffmpeg-debian", "ffmpeg-9"])
def test_a_normal_ffmpeg_end_is_not_logged_as_a_reset(
    tmp_path: Path, source: SourceMedia, client: str
) -> None:
    """ffmpeg sends FCUnpublish and deleteStream and closes at once; our answers then make
    its kernel reset the connection, which may discard the unread deleteStream. The stop
    reason was "connection lost: [Errno 104] ..." for a perfectly normal end."""
    with running_server(tmp_path / "rec", tmp_path / "log") as server:
        for i in range(4):
            result = publish(client, source.path, server.url(f"end{i}"), timeout=30)
            assert result.returncode == 0, result.stdout
            line = server.wait_publish("stop", f"end{i}")
            assert line.endswith(("(deleteStream)", "(FCUnpublish)")), line
