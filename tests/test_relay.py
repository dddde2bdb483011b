"""The live relay in-process: our client (`rtmp2server.client`) over loopback publishes and plays.

Every byte a player gets is checked against what the publisher sent: the join point (GOP
cache), timestamps rebased to zero and monotonic, waiting for a publisher, StreamNotFound,
unpublish (with no grace; test_republish has the gaps players do not see) and a returning
publisher, pause, receiveVideo, back-pressure from a player that never reads, and multitrack
filtering for players without Enhanced RTMP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rtmp2server.client import Client, ClientError, connect
from rtmp2server.protocol import amf0, enhanced, flv
from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.protocol.messages import AUDIO, DATA_AMF0, VIDEO, Message
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.relay import RelayConfig

Media = list[tuple[int, int, bytes]]  # (type, timestamp, payload)

AVC_SEQ = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1avcC"
AAC_SEQ = b"\xaf\x00\x12\x10"
SAMPLE_ACCESS = amf0.encode("|RtmpSampleAccess")
METADATA = {"videocodecid": 7.0, "audiocodecid": 10.0, "width": 64.0, "height": 64.0}


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def av_frames(n: int, gop: int = 30, start: int = 0, size: int = 3000) -> Media:
    """Video at 30 fps (a keyframe every `gop` frames) interleaved with audio at ~43 fps."""
    out: Media = []
    for i in range(start, start + n):
        key = i % gop == 0
        out.append(
            (VIDEO, i * 33, (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" + os.urandom(size))
        )
        out.append((AUDIO, i * 33 + 10, b"\xaf\x01" + os.urandom(200)))
    return out


def is_key(t: int, payload: bytes) -> bool:
    return t == VIDEO and enhanced.classify_video(payload).is_keyframe


class Peer:
    """Our client (`rtmp2server.client`) over loopback, recording everything that arrives.

    Every command and message the server sends is kept as it comes (`event_received`), with
    its arrival time for media; a play is sent through the client's `conn` so that a refused
    play and every status after the start are recorded rather than raised. `close()` drops
    the connection without deleteStream (a player or encoder that goes away).
    """

    def __init__(self, port: int, **connect: Any) -> None:
        self.port = port
        self.connect_extra = connect
        self.client: _Recording | None = None
        self.items: list[Any] = []
        self.media: list[tuple[float, Message]] = []  # (arrival time, message) of types 8/9/18
        self.statuses: list[str] = []
        self._closed = asyncio.Event()

    @classmethod
    async def open(cls, port: int, **connect: Any) -> Peer:
        return cls(port, **connect)

    @property
    def conn(self) -> ClientConnection:
        assert self.client is not None, "not connected"
        return self.client.conn

    @property
    def sid(self) -> int:
        return 0 if self.client is None else self.client.stream_id

    @property
    def closed(self) -> asyncio.Event:
        return self._closed if self.client is None else self.client.closed

    async def flush(self) -> None:
        """Send what `conn` holds; nothing once the server closed the connection (tests
        wait for that)."""
        if self.client is not None and not self.client.closed.is_set():
            with contextlib.suppress(ClientError):
                await self.client.flush()

    def _take(self, item: Any) -> None:
        if isinstance(item, Message) and item.type_id in (AUDIO, VIDEO, DATA_AMF0):
            if not item.payload.startswith(SAMPLE_ACCESS):
                self.media.append((time.monotonic(), item))
        else:
            if isinstance(item, ClientCommand) and item.name == "onStatus":
                self.statuses.append(str(item.info.get("code")))
            self.items.append(item)

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.flush()
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; statuses {self.statuses}")
            if self.closed.is_set() and not pred():
                raise ConnectionError(f"closed; statuses {self.statuses}")
            await asyncio.sleep(0.005)

    async def command(self, name: str) -> ClientCommand:
        found: list[ClientCommand] = []

        def pred() -> bool:
            for item in self.items:
                if isinstance(item, ClientCommand) and item.name == name:
                    self.items.remove(item)
                    found.append(item)
                    return True
            return False

        await self.wait(pred)
        return found[0]

    async def status(self, code: str, timeout: float = 10.0) -> None:
        await self.wait(lambda: code in self.statuses, timeout)

    async def connect(self, app: str = "live") -> ClientCommand:
        """connect (its `_result` returned) and createStream."""
        url = f"rtmp://127.0.0.1:{self.port}/{app}"
        self.client = _Recording(self, url, connect_extra=self.connect_extra)
        await self.client.open()
        await self.client.create_stream()
        assert self.client.connect_result is not None
        return self.client.connect_result

    async def publish(self, name: str, app: str = "live") -> None:
        await self.connect(app)
        assert self.client is not None
        await self.client.publish(name)

    async def play(self, name: str, app: str = "live") -> None:
        await self.connect(app)
        self.conn.play(self.sid, name)
        await self.flush()

    async def send(self, media: Media, metadata: dict[str, Any] | None = None) -> None:
        """The messages in one write, as an encoder's burst."""
        if metadata is not None:
            self.conn.send_metadata(self.sid, metadata)
        for t, ts, payload in media:
            self.conn.send_media(self.sid, t, ts, payload)
        await self.flush()

    def av(self) -> list[Message]:
        return [m for _, m in self.media if m.type_id in (AUDIO, VIDEO)]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.abort()


class _Recording(Client):
    def __init__(self, peer: Peer, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.peer = peer

    def event_received(self, item: ClientCommand | Message) -> None:
        self.peer._take(item)


def server(tmp_path: Path | None = None, **relay: Any) -> RTMPServer:
    cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, relay=RelayConfig(**relay))
    return RTMPServer(cfg)


def check_stream(received: list[Message], sent: Media) -> None:
    """`received` (after config) is `sent` from some keyframe on, bit-exact, with timestamps
    rebased to start at 0 and monotonic per kind."""
    frames = [m for m in received if not _is_config(m.type_id, m.payload)]
    assert frames, "no frames"
    first = frames[0]
    assert is_key(first.type_id, first.payload), "the first frame is not a keyframe"
    assert first.timestamp == 0 or min(m.timestamp for m in frames) == 0
    start = next(i for i, (t, _, p) in enumerate(sent) if p == first.payload)
    expect = sent[start:]
    assert [(m.type_id, m.payload) for m in frames] == [(t, p) for t, _, p in expect]
    base = min(ts for _, ts, _ in expect)
    assert [m.timestamp for m in frames] == [ts - base for _, ts, _ in expect]


def _is_config(t: int, payload: bytes) -> bool:
    if t == VIDEO:
        return enhanced.classify_video(payload).is_config
    if t == AUDIO:
        return enhanced.classify_audio(payload).is_config
    return True


# --- tests ----------------------------------------------------------------------------------


def test_late_joiner_gets_metadata_headers_and_the_cached_gop(tmp_path: Path) -> None:
    first = av_frames(45)  # GOPs at frames 0 and 30: the cache holds 30..44
    rest = av_frames(40, start=45)

    async def main() -> None:
        async with server(tmp_path, republish_grace=0) as s:
            pub = await Peer.open(s.port)
            await pub.publish("cam")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *first], METADATA)
            await asyncio.sleep(0.05)
            player = await Peer.open(s.port)
            t0 = time.monotonic()
            await player.play("cam")
            await player.status("NetStream.Play.Start")
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 15)
            took = (time.monotonic() - t0) * 1000
            print(f"late joiner: play -> GOP cache delivered in {took:.1f} ms")
            await pub.send(rest)
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 55)
            await pub.close()
            await player.status("NetStream.Play.UnpublishNotify")
            await player.close()

            kinds = [m.type_id for _, m in player.media]
            assert kinds[0] == DATA_AMF0
            assert amf0.decode_all(player.media[0][1].payload)[0] == "onMetaData"
            av = player.av()
            assert [m.payload for m in av[:2]] == [AVC_SEQ, AAC_SEQ]
            assert [m.timestamp for m in av[:2]] == [0, 0]
            check_stream(av[2:], first + rest)
            assert av[2].payload == first[60][2]  # the keyframe of frame 30
            statuses = player.statuses
            assert statuses[:2] == ["NetStream.Play.Reset", "NetStream.Play.Start"]

    run(main())


def test_player_waits_for_publisher_gets_all_audio_and_video_from_its_first_keyframe() -> None:
    media = av_frames(70)

    async def main() -> None:
        async with server(play_wait=5.0, republish_grace=0) as s:
            player = await Peer.open(s.port)
            await player.play("later")
            await player.status("NetStream.Play.Start")
            await asyncio.sleep(0.1)
            pub = await Peer.open(s.port)
            await pub.publish("later")
            await player.status("NetStream.Play.PublishNotify")
            # A publisher that starts mid-GOP, before its metadata and sequence headers.
            await pub.send(media[10:20])
            await pub.send([(VIDEO, 165, AVC_SEQ), (AUDIO, 165, AAC_SEQ)], METADATA)
            await pub.send(media[20:])
            await player.wait(lambda: len(player.av()) >= 2 + 40 + 65)
            await pub.close()
            await player.status("NetStream.Play.UnpublishNotify")
            await player.close()
            got = [m for _, m in player.media]
            video = [m for m in got if m.type_id == VIDEO]
            audio = [m for m in got if m.type_id == AUDIO]
            # Video: the sequence header, then from the first keyframe (frame 30) on.
            assert [m.payload for m in video] == [AVC_SEQ] + [
                p for t, _, p in media[60:] if t == VIDEO
            ]
            # Audio: everything, as in a recording, with the header where it came.
            assert [m.payload for m in audio] == [p for t, _, p in media[10:20] if t == AUDIO] + [
                AAC_SEQ
            ] + [p for t, _, p in media[20:] if t == AUDIO]
            meta = next(i for i, m in enumerate(got) if m.type_id == DATA_AMF0)
            first_key = next(i for i, m in enumerate(got) if is_key(m.type_id, m.payload))
            assert meta < first_key
            assert got[0].timestamp == 0  # rebased: the first audio frame was at 175 ms
            for kind in (AUDIO, VIDEO):
                ts = [m.timestamp for m in got if m.type_id == kind]
                assert ts == sorted(ts)

    run(main())


def test_stream_not_found_after_the_wait_and_at_once_with_zero_wait() -> None:
    async def main() -> None:
        async with server(play_wait=0.3) as s:
            player = await Peer.open(s.port)
            t0 = time.monotonic()
            await player.play("nobody")
            await player.status("NetStream.Play.StreamNotFound", timeout=5)
            assert time.monotonic() - t0 >= 0.25
            assert player.statuses[:2] == ["NetStream.Play.Reset", "NetStream.Play.Start"]
            await player.close()
        async with server(play_wait=0) as s:
            player = await Peer.open(s.port)
            await player.play("nobody")
            await player.status("NetStream.Play.StreamNotFound", timeout=5)
            assert player.statuses == ["NetStream.Play.StreamNotFound"]
            await player.close()
            assert not s.relay or not s.relay.channels

    run(main())


def test_unpublish_then_a_returning_publisher_resumes_players_monotonic() -> None:
    """With no grace (test_republish has the gaps players do not see)."""
    one = av_frames(40)
    two = av_frames(40)  # the new publisher starts again at timestamp 0

    async def main() -> None:
        async with server(republish_grace=0) as s:
            pub = await Peer.open(s.port)
            await pub.publish("again")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *one], METADATA)
            player = await Peer.open(s.port)
            await player.play("again")
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 10)
            n1 = len(player.media)
            await pub.close()
            await player.status("NetStream.Play.UnpublishNotify")
            pub2 = await Peer.open(s.port)
            await pub2.publish("again")
            await player.status("NetStream.Play.PublishNotify")
            await pub2.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *two], METADATA)
            await player.wait(lambda: len(player.av()) >= 4 + 2 * 50)
            await pub2.close()
            await player.wait(lambda: player.statuses.count("NetStream.Play.UnpublishNotify") == 2)
            await player.close()
            before = [m for _, m in player.media[:n1] if m.type_id in (AUDIO, VIDEO)]
            after = [m for _, m in player.media[n1:] if m.type_id in (AUDIO, VIDEO)]
            for kind in (AUDIO, VIDEO):
                ts = [m.timestamp for m in before + after if m.type_id == kind]
                assert ts == sorted(ts), f"type {kind} timestamps go back"
            assert [m.payload for m in after[:2]] == [AVC_SEQ, AAC_SEQ]
            assert after[2].payload == two[0][2]
            last_before = max(m.timestamp for m in before)
            assert after[2].timestamp > last_before
            codes = player.statuses
            assert codes.count("NetStream.Play.PublishNotify") == 1
            assert codes.count("NetStream.Play.UnpublishNotify") == 2

    run(main())


def test_pause_and_receive_video() -> None:
    media = av_frames(120)

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("p")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:20]])
            player = await Peer.open(s.port)
            await player.play("p")
            await player.wait(lambda: len(player.av()) >= 22)
            player.conn.call("pause", None, True, 0.0, stream_id=player.sid)
            await player.status("NetStream.Pause.Notify")
            n = len(player.av())
            await pub.send(media[20:40])
            await asyncio.sleep(0.1)
            assert len(player.av()) == n
            player.conn.call("pause", None, False, 0.0, stream_id=player.sid)
            await player.status("NetStream.Unpause.Notify")
            await pub.send(media[40:160])  # frames 20..79, keyframes at 30 and 60
            await player.wait(lambda: len(player.av()) >= n + 100)
            resumed = player.av()[n:]
            assert resumed[0].payload == media[60][2]  # video frame 30, a keyframe
            assert [m.payload for m in resumed] == [p for _, _, p in media[60:160]]
            player.conn.call("receiveVideo", None, False, stream_id=player.sid)
            await player.flush()
            await asyncio.sleep(0.1)
            m = len(player.av())
            await pub.send(media[160:200])
            await player.wait(lambda: len(player.av()) >= m + 20)
            assert {x.type_id for x in player.av()[m:]} == {AUDIO}
            await pub.close()
            await player.close()

    run(main())


def test_connect_capability_negotiation() -> None:
    async def main() -> None:
        async with server() as s:
            legacy = await Peer.open(s.port)
            result = await legacy.connect()
            assert "capsEx" not in result.args[0]
            modern = await Peer.open(
                s.port,
                fourCcList=["av01", "hvc1", "vp09", "Opus"],
                videoFourCcInfoMap={"hvc1": 1.0},
                capsEx=2.0,
            )
            result = await modern.connect()
            props = result.args[0]
            assert props["capsEx"] == float(enhanced.CapsEx.MULTITRACK | enhanced.CapsEx.MOD_EX)
            assert props["videoFourCcInfoMap"]["*"] == 4.0
            assert props["audioFourCcInfoMap"]["Opus"] == 4.0
            sessions = sorted(s.sessions, key=lambda x: x.conn.capabilities.enhanced)
            caps = sessions[1].conn.capabilities
            assert caps.fourcc_list == ("av01", "hvc1", "vp09", "Opus")
            assert caps.multitrack and caps.supports("hvc1") and not caps.supports("vp08")
            assert not sessions[0].conn.capabilities.enhanced
            await legacy.close()
            await modern.close()

    run(main())


def multitrack_frames(n: int) -> Media:
    """HEVC on track 0 (plain E-RTMP) and AV1 on track 1 (multitrack OneTrack), as ffmpeg."""
    hvc_seq = b"\x90hvc1" + b"hvcC-config"
    av1_seq = b"\x96\x00av01\x01" + b"av1C-config"
    out: Media = [(VIDEO, 0, hvc_seq), (VIDEO, 0, av1_seq)]
    for i in range(n):
        ft = 0x10 if i % 30 == 0 else 0x20
        out.append((VIDEO, i * 33, bytes((0x80 | ft | 1,)) + b"hvc1\x00\x00\x00" + os.urandom(500)))
        out.append((VIDEO, i * 33, bytes((0x80 | ft | 6, 0x01)) + b"av01\x01" + os.urandom(400)))
    return out


def test_multitrack_only_default_track_for_legacy_players() -> None:
    media = multitrack_frames(40)

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("mt")
            await pub.send(media[:20])
            legacy = await Peer.open(s.port)
            await legacy.play("mt")
            modern = await Peer.open(s.port, fourCcList=["*"], capsEx=2.0)
            await modern.play("mt")
            await pub.send(media[20:])
            await modern.wait(lambda: len(modern.av()) >= 2 + 2 * 40)
            await legacy.wait(lambda: len(legacy.av()) >= 1 + 40)
            await asyncio.sleep(0.05)
            await pub.close()
            for p in (legacy, modern):
                await p.close()
            # Both joined from the GOP cache (keyframe at frame 0).
            assert [m.payload for m in modern.av()] == [p for _, _, p in media]
            got = legacy.av()
            assert all(enhanced.classify_video(m.payload).multitrack is None for m in got)
            assert {enhanced.classify_video(m.payload).codec for m in got} == {"hvc1"}
            assert [m.payload for m in got] == [p for t, _, p in media if p[:1] in b"\x90\x91\xa1"]

    run(main())


class Stalled:
    """A player that connects, plays, then never reads again: our client on a socket with a
    4 KiB receive buffer, whose play is never iterated past its first message (its queue of
    one message fills and it stops reading the socket). It runs on an event loop of its own
    in a thread, so that synchronous tests (against a server process) can hold it too."""

    def __init__(self, port: int, name: str) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = connect(f"rtmp://127.0.0.1:{port}/live", sock=sock, max_queued=1)
        self._first: asyncio.Future[Message] | None = None
        asyncio.run_coroutine_threadsafe(self._start(name), self.loop).result(10)

    async def _start(self, name: str) -> None:
        await self.client.open()
        # The play is sent and its first message awaited in the background, never the next.
        self._first = asyncio.ensure_future(anext(aiter(self.client.play(name))))
        await asyncio.wait_for(self.client.started.wait(), 10)

    async def _stop(self) -> None:
        await self.client.abort()
        if self._first is not None:
            self._first.cancel()
            with contextlib.suppress(BaseException):
                await self._first

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_stalled_player_is_bounded_and_others_and_recording_stay_complete(tmp_path: Path) -> None:
    media = av_frames(300, size=20000)  # ~6 MB of video, 10 s at 30 fps
    bound = 256 * 1024

    async def main() -> None:
        async with server(tmp_path, player_max_buffer=bound) as s:
            pub = await Peer.open(s.port)
            await pub.publish("crowd")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ)], METADATA)
            stalled = await asyncio.to_thread(Stalled, s.port, "crowd")
            players = [await Peer.open(s.port) for _ in range(19)]
            for p in players:
                await p.play("crowd")
            assert s.relay is not None
            await players[0].wait(lambda: len(s.relay.players()) == 20)
            peak = 0
            for i in range(0, len(media), 20):
                await pub.send(media[i : i + 20])
                await asyncio.sleep(0.01)
                for session in s.sessions:
                    if session.transport is not None:
                        peak = max(peak, session.transport.get_write_buffer_size())
            for p in players:
                await p.wait(lambda p=p: len(p.av()) >= 2 + len(media), timeout=20)
            (slow,) = [p for p in s.relay.players() if p.skips]
            print(
                f"stalled player: skips={slow.skips} dropped={slow.dropped} "
                f"peak queued={peak} bytes (bound {bound})"
            )
            await pub.close()
            for p in players:
                await p.close()
            stalled.close()
            assert slow.dropped > 0
            assert peak < bound + 2 * 20 * 20300  # the bound plus one publisher read
            for p in players:
                check_stream(p.av()[2:], media)

    run(main(), timeout=60)
    (path,) = (tmp_path / "live").glob("crowd-*.flv")
    _, tags = flv.read_flv(path.read_bytes())
    assert [(t.tag_type, t.body) for t in tags if t.tag_type != 18][2:] == [
        (t, p) for t, _, p in media
    ]


def test_play_wait_forever() -> None:
    async def main() -> None:
        async with server(play_wait=math.inf) as s:
            player = await Peer.open(s.port)
            await player.play("someday")
            await player.status("NetStream.Play.Start")
            await asyncio.sleep(0.3)
            assert s.relay is not None
            (p,) = s.relay.players()
            assert p.timer is None and "NetStream.Play.StreamNotFound" not in player.statuses
            pub = await Peer.open(s.port)
            await pub.publish("someday")
            await player.status("NetStream.Play.PublishNotify")
            await pub.close()
            await player.close()

    run(main())


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])


def test_gop_over_the_cache_bound_makes_joiners_wait_for_the_next_keyframe() -> None:
    media = av_frames(90, size=3000)  # GOPs of 30 frames, ~100 KB each

    async def main() -> None:
        async with server(gop_max_bytes=50_000) as s:
            pub = await Peer.open(s.port)
            await pub.publish("big")
            # Frames 0..59: the GOP from frame 30 outgrows the 50 KB bound.
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:120]], METADATA)
            player = await Peer.open(s.port)
            await player.play("big")
            await player.status("NetStream.Play.Start")
            await asyncio.sleep(0.05)
            assert player.av()[2:] == []  # nothing cached: it waits for a keyframe
            await pub.send(media[120:])
            await player.wait(lambda: len(player.av()) >= 2 + 60)
            await pub.close()
            await player.close()
            av = player.av()
            assert [m.payload for m in av[:2]] == [AVC_SEQ, AAC_SEQ]
            check_stream(av[2:], media)
            assert av[2].payload == media[120][2]  # frame 60, the next keyframe

    run(main())


def test_with_gop_cache_idle_only_played_streams_cache_their_gop() -> None:
    media = av_frames(150)  # keyframes at frames 0, 30, 60, 90, 120

    async def main() -> None:
        async with server(gop_cache_idle=0.3) as s:
            pub = await Peer.open(s.port)
            await pub.publish("cam")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:90]], METADATA)
            first = await Peer.open(s.port)
            await first.play("cam")
            await first.status("NetStream.Play.Start")
            await asyncio.sleep(0.05)
            assert first.av()[2:] == []  # never played: nothing cached, it waits
            await pub.send(media[90:150])  # frames 45..74: keyframe 60
            await first.wait(lambda: len(first.av()) >= 2 + 2 * 15)
            assert first.av()[2].payload == media[120][2]  # frame 60
            second = await Peer.open(s.port)
            await second.play("cam")
            await second.wait(lambda: len(second.av()) >= 2 + 2 * 15)
            assert second.av()[2].payload == media[120][2]  # from the cache
            await first.close()
            await second.close()
            await asyncio.sleep(0.5)  # beyond gop_cache_idle without a player
            await pub.send(media[150:240])  # frames 75..119: keyframe 90 is not cached
            late = await Peer.open(s.port)
            await late.play("cam")
            await late.status("NetStream.Play.Start")
            await asyncio.sleep(0.05)
            assert late.av()[2:] == []
            await pub.send(media[240:])
            await late.wait(lambda: len(late.av()) >= 2 + 2 * 30)
            assert late.av()[2].payload == media[240][2]  # frame 120, the next keyframe
            check_stream(late.av()[2:], media)
            await pub.close()
            await late.close()

    run(main())


def test_data_messages_are_relayed_and_metadata_updates_cached() -> None:
    media = av_frames(40)
    cue = amf0.encode("onCuePoint", {"name": "x", "time": 1.0})

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("d")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:10]], METADATA)
            early = await Peer.open(s.port)
            await early.play("d")
            await early.wait(lambda: len(early.av()) >= 12)
            pub.conn.send_media(pub.sid, DATA_AMF0, 170, cue)
            await pub.send(media[10:20], {"width": 128.0})  # a metadata update
            late = await Peer.open(s.port)
            await late.play("d")
            await late.wait(lambda: len(late.av()) >= 2 + 20)
            await early.wait(lambda: any(m.payload == cue for _, m in early.media))
            await pub.close()
            for p in (early, late):
                await p.close()
            data = [amf0.decode_all(m.payload) for _, m in early.media if m.type_id == DATA_AMF0]
            assert [d[0] for d in data] == ["onMetaData", "onCuePoint", "onMetaData"]
            late_data = [amf0.decode_all(m.payload) for _, m in late.media if m.type_id == 18]
            assert late_data == [["onMetaData", amf0.ECMAArray({"width": 128.0})]]

    run(main())


class _Count:
    n = 0


@pytest.fixture
def framings(monkeypatch: pytest.MonkeyPatch) -> _Count:
    """Counts the relay's framings of a message (its `frame_message` calls)."""
    from rtmp2server.server import relay

    count = _Count()
    real = relay.frame_message

    def counting(*args: Any) -> bytes:
        count.n += 1
        return real(*args)

    monkeypatch.setattr(relay, "frame_message", counting)
    return count


def test_each_message_is_framed_once_for_players_that_share_a_timeline(
    framings: _Count,
) -> None:
    media = av_frames(40)

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("shared")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:10]])
            players = [await Peer.open(s.port) for _ in range(10)]
            for p in players:
                await p.play("shared")
            for p in players:
                await p.wait(lambda p=p: len(p.av()) >= 12)
            framings.n = 0
            await pub.send(media[10:])
            for p in players:
                await p.wait(lambda p=p: len(p.av()) >= 2 + 80)
            await pub.close()
            for p in players:
                await p.close()
            # Ten players joined from the same cached keyframe: one framing per message.
            assert framings.n == len(media[10:])
            first = players[0].av()
            assert all(p.av() == first for p in players)

    run(main())


def test_joiners_of_one_gop_share_its_framing(framings: _Count) -> None:
    """Players that join one after another while the same GOP is cached: it is framed once
    for the first, each later one frames only what was cached since (and every player frames
    its own decoder configuration), and all get the same bytes."""
    media = av_frames(25)  # one GOP (keyframe at frame 0): the cache holds all 50 messages

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("joins")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:40]])
            await asyncio.sleep(0.05)
            players = []
            for _ in range(3):
                p = await Peer.open(s.port)
                await p.play("joins")
                await p.wait(lambda p=p: len(p.av()) >= 2 + 40)
                players.append(p)
            assert framings.n == 40 + 3 * 2
            await pub.send(media[40:])
            late = await Peer.open(s.port)
            await late.play("joins")
            await late.wait(lambda: len(late.av()) >= 2 + 50)
            # The late joiner framed its configuration and the 10 messages since; the first
            # three players got those 10 live, framed once for them.
            assert framings.n == 40 + 3 * 2 + 10 + 2 + 10
            for p in players:
                await p.wait(lambda p=p: len(p.av()) >= 2 + 50)
            await pub.close()
            for p in (*players, late):
                await p.close()
            first = players[0].av()
            assert all(p.av() == first for p in (*players, late))
            check_stream(first[2:], media)

    run(main())


def test_players_in_different_places_of_the_stream_each_get_their_own_timeline() -> None:
    """One write of the publisher, with a data message in its middle, fanned out to players
    that joined at different keyframes (a run is framed per place), one whose video is off
    and one that waits for a keyframe (message by message): each gets its own timeline,
    bit-exact and in order."""
    first = av_frames(45)  # keyframes at frames 0 and 30
    rest = av_frames(60, start=45)
    cue = amf0.encode("onCuePoint", {"name": "mid", "time": 2.0})

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("places")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *first[:20]], METADATA)
            early = await Peer.open(s.port)  # joins at frame 0
            await early.play("places")
            await early.wait(lambda: len(early.av()) >= 2 + 20)
            await pub.send(first[20:])
            late = await Peer.open(s.port)  # joins at frame 30: another offset
            await late.play("places")
            await late.wait(lambda: len(late.av()) >= 2 + 30)
            audio_only = await Peer.open(s.port)
            await audio_only.play("places")
            await audio_only.wait(lambda: len(audio_only.av()) >= 2)
            audio_only.conn.call("receiveVideo", None, False, stream_id=audio_only.sid)
            await audio_only.flush()
            await asyncio.sleep(0.1)
            got_before = len(audio_only.av())
            # One write: frames, then a cue point, then more frames (a keyframe among them).
            for t, ts, payload in rest[:30]:
                pub.conn.send_media(pub.sid, t, ts, payload)
            pub.conn.send_media(pub.sid, DATA_AMF0, rest[29][1], cue)
            for t, ts, payload in rest[30:]:
                pub.conn.send_media(pub.sid, t, ts, payload)
            await pub.flush()
            total = first + rest
            for p, start in ((early, 0), (late, 60)):
                await p.wait(lambda p=p, start=start: len(p.av()) >= 2 + len(total) - start)
            await audio_only.wait(lambda: any(m.payload == cue for _, m in audio_only.media))
            await pub.close()
            for p in (early, late, audio_only):
                await p.close()
            for p, start in ((early, 0), (late, 60)):
                av = p.av()
                check_stream(av[2:], total)
                assert av[2].payload == total[start][2]
                # The cue point between the same two frames as it was sent.
                kinds = [m.payload == cue or m.type_id for _, m in p.media]
                at = kinds.index(True)
                frames_before = sum(1 for k in kinds[:at] if k in (AUDIO, VIDEO))
                assert frames_before == 2 + len(first) + 30 - start
            later = audio_only.av()[got_before:]
            assert later and all(m.type_id == AUDIO for m in later)
            assert [m.payload for m in later] == [payload for t, _, payload in total if t == AUDIO][
                -len(later) :
            ]

    run(main())


def test_delete_stream_and_disconnect_remove_players() -> None:
    media = av_frames(10)

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("gone")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media])
            a = await Peer.open(s.port)
            await a.play("gone")
            b = await Peer.open(s.port)
            await b.play("gone")
            assert s.relay is not None
            await a.wait(lambda: len(s.relay.players()) == 2)
            a.conn.delete_stream(a.sid)
            await a.flush()
            await a.wait(lambda: len(s.relay.players()) == 1)
            await b.close()
            await a.wait(lambda: not s.relay.players())
            await pub.close()
            await a.wait(lambda: not s.relay.channels)
            await a.close()

    run(main())


def test_publisher_clock_jumping_back_keeps_player_timestamps_going_forward() -> None:
    before = av_frames(40)
    after = av_frames(40)  # timestamps start again at 0

    async def main() -> None:
        async with server() as s:
            pub = await Peer.open(s.port)
            await pub.publish("jump")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *before])
            player = await Peer.open(s.port)
            await player.play("jump")
            await player.wait(lambda: len(player.av()) >= 2 + 20)
            await pub.send(after)
            await player.wait(lambda: len(player.av()) >= 2 + 100)
            await pub.close()
            await player.close()
            video = [m.timestamp for m in player.av()[2:] if m.type_id == VIDEO]
            assert video == sorted(video)
            steps = {b - a for a, b in itertools.pairwise(video)}
            assert steps <= {33, 1, 0}, steps  # one frame apart, or the jump itself
            audio = [m.timestamp for m in player.av()[2:] if m.type_id == AUDIO]
            assert audio == sorted(audio)

    run(main())
