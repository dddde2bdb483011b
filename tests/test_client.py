"""The asyncio client (`rtmp2server.client`) against real servers over loopback sockets.

Our in-process `RTMPServer` records what the client publishes (bit-exact, over rtmp:// and
rtmps:// with trustme certificates); the client plays from it while a real ffmpeg publishes,
and every message it gets is checked against the server's recording of that publish. Status
errors (a second publisher of a name, an `_error` answer) raise `StatusError` with the code.
nginx-rtmp (Debian's libnginx-mod-rtmp) is the second, independent server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from rtmp2server.client import URL, Client, ClientError, StatusError, connect
from rtmp2server.config import Listener, RelayConfig
from rtmp2server.protocol import amf0, enhanced, flv
from rtmp2server.protocol.connection import ServerConnection, State
from rtmp2server.protocol.messages import AUDIO, DATA_AMF0, VIDEO, Message
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.registry import StreamRegistry
from support.clients import chunk_message, start_looping_publisher
from support.media import SourceMedia
from support.nginx import NginxRTMP
from test_server import frames, recording, run, wait_for

META = {"videocodecid": 7.0, "audiocodecid": 10.0}


async def publish_with_client(
    url: str, name: str, media: list[tuple[int, int, bytes]], **kw: object
) -> None:
    async with connect(url, **kw) as client:  # type: ignore[arg-type]
        await client.publish(name)
        await client.send_metadata(META)
        for type_id, ts, payload in media:
            await client.send_media(type_id, ts, payload)


def assert_recorded(record_dir: Path, name: str, media: list[tuple[int, int, bytes]]) -> None:
    tags = recording(record_dir, "live", name)
    assert tags[0].tag_type == 18
    assert amf0.decode_all(tags[0].body) == ["onMetaData", amf0.ECMAArray(META)]
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == media


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtmp://h/live", URL("rtmp", "h", 1935, "live", "rtmp://h/live")),
        ("rtmps://h:4443/live/", URL("rtmps", "h", 4443, "live", "rtmps://h:4443/live/")),
        ("rtmp://h/app/inst?k=1", URL("rtmp", "h", 1935, "app/inst?k=1", "rtmp://h/app/inst?k=1")),
    ],
)
def test_url_parse(url: str, expected: URL) -> None:
    assert URL.parse(url) == expected


@pytest.mark.parametrize("url", ["http://h/live", "rtmp:///live", "rtmp://h", "rtmp://h/"])
def test_url_parse_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        URL.parse(url)


def test_publish_is_recorded_bit_exact(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    media = frames(60)

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            await publish_with_client(f"rtmp://127.0.0.1:{s.port}/live", "cam", media)
            # The clean close (FCUnpublish, deleteStream) ends the publish at the server.
            await wait_for(lambda: len(s.registry) == 0)

    with caplog.at_level(logging.INFO):
        run(main())
    assert_recorded(tmp_path, "cam", media)
    (stop,) = [r.getMessage() for r in caplog.records if "publish stop" in r.getMessage()]
    assert "video=61 audio=61 data=1 " in stop, stop
    assert stop.endswith("(deleteStream)"), stop  # the clean close, not a dropped socket


def test_publish_over_rtmps_is_recorded_bit_exact(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    media = frames(40)
    cfg = ServerConfig(
        host="127.0.0.1",
        port=0,
        listen=[Listener("rtmps", "127.0.0.1", 0)],
        tls_cert=cert,
        tls_key=key,
        record_dir=tmp_path / "rec",
    )

    async def main() -> None:
        async with RTMPServer(cfg) as s:
            (tls,) = [lst for lst in s.listeners if lst.tls]
            await publish_with_client(
                f"rtmps://127.0.0.1:{tls.port}/live", "tls", media, ssl=context
            )
            await wait_for(lambda: len(s.registry) == 0)
            # Our certificate is checked: without the test CA the handshake fails.
            with pytest.raises(ClientError, match="cannot connect"):
                async with connect(f"rtmps://127.0.0.1:{tls.port}/live"):
                    pass

    run(main())
    assert_recorded(tmp_path / "rec", "tls", media)


def test_status_errors_raise_with_code_and_description(tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0)

    async def main() -> None:
        async with RTMPServer(cfg, registry=StreamRegistry(republish="refuse")) as s:
            url = f"rtmp://127.0.0.1:{s.port}/live"
            async with connect(url) as first:
                await first.publish("same")
                async with connect(url) as second:
                    with pytest.raises(StatusError) as info:
                        await second.publish("same")
                    assert info.value.code == "NetStream.Publish.BadName"
                    assert info.value.command == "publish"
                    assert "NetStream.Publish.BadName" in str(info.value)
                    # An `_error` answer (unknown method) raises the same way.
                    with pytest.raises(StatusError) as info:
                        await second._call("noSuchMethod", second.conn.call("noSuchMethod", None))
                    assert info.value.code == "NetConnection.Call.Failed"
                    assert info.value.description == "Method not found (noSuchMethod)."

    run(main())


def test_a_refused_connection_and_a_silent_server_are_client_errors() -> None:
    async def main() -> None:
        held: list[asyncio.StreamWriter] = []  # accepted, never answered

        def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        silent = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(ClientError, match=r"connect: no answer within 0\.3 s"):
            async with connect(f"rtmp://127.0.0.1:{port}/live", timeout=0.3):
                pass
        for w in held:
            w.close()
        silent.close()
        await silent.wait_closed()
        with pytest.raises(ClientError, match="cannot connect"):
            async with connect(f"rtmp://127.0.0.1:{port}/live", timeout=2):
                pass

    run(main())


def recorded_frames(path: Path) -> list[flv.Tag]:
    _header, tags = flv.read_flv(path.read_bytes())
    return tags


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_play_while_ffmpeg_publishes_every_message_checked(
    tmp_path: Path, source: SourceMedia
) -> None:
    played: list[Message] = []

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)
        async with RTMPServer(cfg) as s:
            publisher = start_looping_publisher(source.path, f"rtmp://127.0.0.1:{s.port}/live/loop")
            try:
                await wait_for(lambda: len(s.registry) == 1, timeout=15)
                async with connect(f"rtmp://127.0.0.1:{s.port}/live") as client:
                    async for message in client.play("loop"):
                        played.append(message)
                        videos = sum(1 for m in played if m.type_id == VIDEO)
                        if videos >= 150:  # more than two loops of the 2 s source
                            break
            finally:
                publisher.kill()
            await wait_for(lambda: len(s.registry) == 0)

    run(main())
    (path,) = (tmp_path / "live").glob("loop-*.flv")
    ref = recorded_frames(path)
    # Data first: |RtmpSampleAccess (our play answer) and onMetaData before any frame.
    datas = [amf0.decode_all(m.payload)[0] for m in played if m.type_id == DATA_AMF0]
    assert "onMetaData" in datas
    first_frame = next(i for i, m in enumerate(played) if m.type_id in (AUDIO, VIDEO))
    assert all(m.type_id == DATA_AMF0 for m in played[:first_frame])
    for kind in (VIDEO, AUDIO):
        got = [m for m in played if m.type_id == kind]
        rec = [t.body for t in ref if t.tag_type == kind]
        # Sequence header first, then a run of the recording's frames, every one, in order.
        if kind == VIDEO:
            assert enhanced.classify_video(got[0].payload).is_sequence_header
        else:
            assert got[0].payload[1] == 0  # AAC sequence header
        body = [m.payload for m in got[1:]]
        starts = [i for i in range(len(rec) - len(body) + 1) if rec[i : i + len(body)] == body]
        assert starts, f"type {kind}: the {len(body)} played frames are not a run of the recording"
        if kind == VIDEO:
            assert enhanced.classify_video(body[0]).is_keyframe, "playback starts mid-GOP"
        ts = [m.timestamp for m in got]
        assert ts == sorted(ts), f"type {kind}: timestamps go back"


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[int]:
    """nginx with libnginx-mod-rtmp (Debian's), one live application; its port."""
    with NginxRTMP(tmp_path) as nginx:
        yield nginx.port


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_publish_to_and_play_from_nginx_rtmp(nginx_rtmp: int) -> None:
    """A second, independent server: what one client publishes to nginx-rtmp, another plays
    back, every frame bit-exact and in order per kind (nginx sends a video sequence header
    and keyframe ahead of the audio sequence header), with nginx's own onMetaData."""
    media = frames(40)
    url = f"rtmp://127.0.0.1:{nginx_rtmp}/live"
    played: list[Message] = []

    async def player(client: Client) -> None:
        async for message in client.play("s"):
            played.append(message)
            if sum(1 for m in played if m.type_id in (AUDIO, VIDEO)) == len(media):
                break

    async def main() -> None:
        async with connect(url) as client:
            task = asyncio.create_task(player(client))
            # nginx answers Play.Start at once and holds the play until the publish comes.
            await asyncio.wait_for(client.started.wait(), 10)
            await publish_with_client(url, "s", media)
            await asyncio.wait_for(task, 20)

    run(main())
    for kind in (VIDEO, AUDIO):
        got = [(m.timestamp, m.payload) for m in played if m.type_id == kind]
        assert got == [(ts, p) for t, ts, p in media if t == kind], f"type {kind} differs"
    datas = [amf0.decode_all(m.payload)[0] for m in played if m.type_id == DATA_AMF0]
    assert "onMetaData" in datas


def test_bytes_that_break_the_protocol_are_a_client_error(caplog: pytest.LogCaptureFixture) -> None:
    """A server that completes the handshake, then sends an empty command message: the
    client raises `ClientError` naming what arrived, and logs one line."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = ServerConnection()
        while server.state is State.HANDSHAKE:
            server.receive_data(await reader.read(65536))
            writer.write(server.data_to_send())
        writer.write(chunk_message(3, 20, b""))
        await writer.drain()
        await reader.read(65536)
        writer.close()

    async def main() -> None:
        bad = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = bad.sockets[0].getsockname()[1]
        async with connect(f"rtmp://127.0.0.1:{port}/live", timeout=5) as client:
            # connect was answered in the read that ended the handshake; the bad command
            # follows it, and fails what comes next.
            with pytest.raises(ClientError, match="command message of 0 bytes") as info:
                await client.publish("x")
        assert not isinstance(info.value, StatusError)
        bad.close()
        await bad.wait_closed()

    with caplog.at_level(logging.WARNING):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "broke the protocol" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "command message of 0 bytes" in lines[0]


def test_play_ends_when_the_server_closes_the_connection(tmp_path: Path) -> None:
    """Every frame published while the play is on arrives, in order; when the server shuts
    down, the iteration ends without an error."""
    media = frames(20)
    played: list[Message] = []

    async def main() -> None:
        s = RTMPServer(ServerConfig(host="127.0.0.1", port=0))
        await s.start()
        url = f"rtmp://127.0.0.1:{s.port}/live"
        async with connect(url) as publisher, connect(url) as player:
            await publisher.publish("p")

            async def play() -> None:
                async for message in player.play("p"):
                    played.append(message)

            task = asyncio.create_task(play())
            await asyncio.wait_for(player.started.wait(), 10)
            for type_id, ts, payload in media:
                await publisher.send_media(type_id, ts, payload)
            await wait_for(lambda: sum(m.type_id in (AUDIO, VIDEO) for m in played) == len(media))
            await s.close()
            await asyncio.wait_for(task, 10)  # ended, and raised nothing
            assert player.closed.is_set()

    run(main())
    assert [
        (m.type_id, m.timestamp, m.payload) for m in played if m.type_id in (AUDIO, VIDEO)
    ] == media


class Observed(Client):
    """A client that keeps every command and message the server sends (`event_received`)."""

    def __init__(self, url: str, **kw: object) -> None:
        super().__init__(url, **kw)  # type: ignore[arg-type]
        self.events: list[object] = []

    def event_received(self, item: object) -> None:
        self.events.append(item)

    def codes(self) -> list[str]:
        statuses = [e for e in self.events if getattr(e, "name", "") == "onStatus"]
        return [str(e.info.get("code")) for e in statuses]  # type: ignore[attr-defined]


def test_chunk_size_data_messages_and_a_small_receive_buffer_are_recorded_bit_exact(
    tmp_path: Path,
) -> None:
    """set_chunk_size(128) re-chunks everything after it; send_data goes out as it is; the
    connection runs over a socket the caller connected (SO_RCVBUF set before connecting)."""
    media = frames(30)
    cue = amf0.encode("onCuePoint", {"name": "x"})

    async def main() -> None:
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)) as s:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", s.port))
            async with connect(f"rtmp://127.0.0.1:{s.port}/live", sock=sock) as client:
                await client.publish("small")
                await client.set_chunk_size(128)
                assert client.conn.out_chunk_size == 128
                await client.send_metadata(META)
                for type_id, ts, payload in media:
                    await client.send_media(type_id, ts, payload)
                await client.send_data(990, cue)
            await wait_for(lambda: len(s.registry) == 0)
        with pytest.raises(ValueError, match="chunk size 0"):
            await Client("rtmp://h/live").set_chunk_size(0)

    run(main())
    tags = recording(tmp_path, "live", "small")
    assert [(t.tag_type, t.timestamp, t.body) for t in tags[1:]] == [*media, (DATA_AMF0, 990, cue)]


def test_stream_commands_event_received_and_abort(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """create_stream then a publish sent through `conn` (its BadName seen by event_received,
    not raised); pause and receiveVideo answered with their statuses; abort drops the
    connection without deleteStream, which ends the publish as a lost connection."""
    media = frames(40)
    cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path)

    async def main() -> None:
        async with RTMPServer(cfg, registry=StreamRegistry(republish="refuse")) as s:
            url = f"rtmp://127.0.0.1:{s.port}/live"
            publisher = Observed(url)
            await publisher.open()
            sid = await publisher.create_stream()
            assert sid == await publisher.create_stream() == publisher.stream_id
            await publisher.publish("cmd")  # on the stream made above
            assert publisher.stream_id == sid
            second = Observed(url)
            await second.open()
            second.conn.publish(await second.create_stream(), "cmd")
            await second.flush()
            await wait_for(lambda: "NetStream.Publish.BadName" in second.codes())
            await second.close()
            for type_id, ts, payload in media[:20]:
                await publisher.send_media(type_id, ts, payload)
            player = Observed(url)
            await player.open()
            got: list[Message] = []

            async def play() -> None:
                async for message in player.play("cmd"):
                    got.append(message)

            task = asyncio.create_task(play())
            await wait_for(lambda: len(got) >= 20)
            await player.pause(True)
            await wait_for(lambda: "NetStream.Pause.Notify" in player.codes())
            await player.pause(False)
            await wait_for(lambda: "NetStream.Unpause.Notify" in player.codes())
            await player.receive_video(False)
            await player.receive_audio(True)
            kinds = [type(e).__name__ for e in player.events]
            assert "Message" in kinds and "ClientCommand" in kinds  # User Control too
            await publisher.abort()
            assert publisher.closed.is_set()
            await wait_for(lambda: len(s.registry) == 0)
            await player.close()
            task.cancel()

    with caplog.at_level(logging.INFO):
        run(main())
    with_log = [r.getMessage() for r in caplog.records]
    (stop,) = [line for line in with_log if "publish stop" in line and "cmd" in line]
    assert "deleteStream" not in stop, stop  # aborted: the server saw the connection drop


def test_an_error_status_after_the_start_ends_the_play_with_status_error() -> None:
    """The publisher leaves and does not come back within play_wait: the server says
    NetStream.Play.StreamNotFound on a connection it keeps open; the iteration raises."""
    media = frames(10)
    played: list[Message] = []

    async def main() -> None:
        relay = RelayConfig(republish_grace=0, play_wait=0.3)
        async with RTMPServer(ServerConfig(host="127.0.0.1", port=0, relay=relay)) as s:
            url = f"rtmp://127.0.0.1:{s.port}/live"
            async with connect(url) as publisher, connect(url) as player:
                await publisher.publish("gone")

                async def play() -> None:
                    async for message in player.play("gone"):
                        played.append(message)

                task = asyncio.create_task(play())
                await asyncio.wait_for(player.started.wait(), 10)
                for type_id, ts, payload in media:
                    await publisher.send_media(type_id, ts, payload)
                await wait_for(lambda: len(played) >= len(media))
                await publisher.close()
                with pytest.raises(StatusError, match=r"NetStream\.Play\.StreamNotFound"):
                    await asyncio.wait_for(task, 10)
                assert not player.closed.is_set()

    run(main())
