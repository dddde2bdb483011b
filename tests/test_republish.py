"""Reconnects in-process: the republish policy (takeover or refuse) and players kept through a
publisher gap (`RelayConfig.republish_grace`).

Sans-IO clients over loopback publish and play, as in test_relay. A takeover must end the old
publish (recording finished, connection closed, "replaced by peer" logged) and start the new
one; the players of the name must see neither the takeover nor a gap shorter than the grace:
no UnpublishNotify, no Stream EOF, timestamps monotonic, the new publisher's metadata and
sequence headers, video from its first keyframe. After the grace they get the end.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from rtmp2server.protocol import amf0, flv
from rtmp2server.protocol.messages import (
    AUDIO,
    DATA_AMF0,
    VIDEO,
    Message,
    MessageType,
    UserControlEvent,
    parse_user_control,
)
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.registry import Stream, StreamRegistry
from rtmp2server.server.relay import RelayConfig
from test_relay import AAC_SEQ, AVC_SEQ, METADATA, Media, Peer, av_frames, is_key, run

AVC_SEQ_2 = b"\x17\x00\x00\x00\x00\x01\x4d\x00\x1f\xff\xe1avcC-two"  # the second encoder's
METADATA_2 = {**METADATA, "width": 128.0, "encoder": "second"}
UNPUBLISHED = "NetStream.Play.UnpublishNotify"
ENDED = (UNPUBLISHED, "NetStream.Play.Stop")


def server(tmp_path: Path | None = None, republish: Any = "takeover", **relay: Any) -> RTMPServer:
    cfg = ServerConfig(host="127.0.0.1", port=0, record_dir=tmp_path, relay=RelayConfig(**relay))
    return RTMPServer(cfg, registry=StreamRegistry(republish=republish))


def user_events(peer: Peer) -> list[UserControlEvent]:
    return [
        UserControlEvent(parse_user_control(m.payload)[0])
        for m in peer.items
        if isinstance(m, Message) and m.type_id == MessageType.USER_CONTROL
    ]


def video_count(peer: Peer, start: int = 0) -> int:
    return sum(1 for _, m in peer.media[start:] if m.type_id == VIDEO)


def ends(peer: Peer) -> list[str]:
    """Everything that ends a play for ffmpeg, librtmp or rtmp2src that `peer` got."""
    found = [s for s in peer.statuses if s in ENDED]
    return found + [e.name for e in user_events(peer) if e == UserControlEvent.STREAM_EOF]


def check_timeline(peer: Peer) -> None:
    """Timestamps never go back, per kind, over everything the player got."""
    for kind in (AUDIO, VIDEO, DATA_AMF0):
        ts = [m.timestamp for _, m in peer.media if m.type_id == kind]
        assert ts == sorted(ts), f"type {kind} timestamps go back: {ts}"


def check_second_publish(after: list[Message], sent: Media) -> None:
    """What a kept player got from the second publisher (whose first video frames are inter
    frames): its metadata, its sequence headers, its audio from the start and its video from
    its first keyframe, bit-exact."""
    assert after[0].type_id == DATA_AMF0
    assert amf0.decode_all(after[0].payload)[1]["encoder"] == "second"
    av = [m for m in after if m.type_id in (AUDIO, VIDEO)]
    assert [m.payload for m in av[:2]] == [AVC_SEQ_2, AAC_SEQ]
    video = [m.payload for m in av[2:] if m.type_id == VIDEO]
    first_key = next(i for i, (t, _, p) in enumerate(sent) if is_key(t, p))
    assert video == [p for t, _, p in sent[first_key:] if t == VIDEO]
    assert is_key(VIDEO, video[0])
    audio = [m.payload for m in av[2:] if m.type_id == AUDIO]
    assert audio == [p for t, _, p in sent if t == AUDIO]


async def second_publish(port: int, name: str, media: Media) -> Peer:
    pub = await Peer.open(port)
    await pub.publish(name)
    await pub.send([(VIDEO, 0, AVC_SEQ_2), (AUDIO, 0, AAC_SEQ)], METADATA_2)
    await pub.send(media)
    return pub


# --- the registry ---------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.ended = 0

    def on_message(self, stream: Stream, msg: Message) -> None:
        pass

    def on_end(self, stream: Stream) -> None:
        self.ended += 1


def test_registry_takeover_closes_the_old_publish_refuse_keeps_it() -> None:
    reg = StreamRegistry()
    assert reg.republish == "takeover"
    stopped: list[Stream] = []
    reg.on_stop.append(stopped.append)
    closed: list[str] = []
    old = Stream("live", "cam", peer="1.2.3.4:5")
    sink = Sink()
    old.add_sink(sink)

    def close(reason: str) -> None:  # what a session does: end its publish, then close
        closed.append(reason)
        reg.release(old)

    old.close = close
    assert reg.claim(old)
    new = Stream("live", "cam", peer="6.7.8.9:10")
    assert reg.claim(new)
    assert closed == ["replaced by peer 6.7.8.9:10"]
    assert sink.ended == 1 and old.ended and stopped == [old]
    assert reg.get("live", "cam") is new

    # A stream whose close does nothing (made by a library user) is released by the registry.
    newer = Stream("live", "cam", peer="11.12.13.14:15")
    assert reg.claim(newer)
    assert new.ended and stopped == [old, new] and reg.get("live", "cam") is newer

    refusing = StreamRegistry(republish="refuse")
    first = Stream("live", "cam")
    first.close = closed.append
    assert refusing.claim(first)
    assert not refusing.claim(Stream("live", "cam"))
    assert refusing.get("live", "cam") is first and not first.ended and len(closed) == 1
    with pytest.raises(ValueError, match="takeover, refuse"):
        StreamRegistry(republish="replace")  # type: ignore[arg-type]


# --- takeover ---------------------------------------------------------------------------------


def test_takeover_ends_the_old_publish_and_players_go_on_across_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one = av_frames(40)
    more = av_frames(5, start=40)
    two = av_frames(50, start=5)  # the second encoder starts mid-GOP: keyframe at frame 30

    async def main() -> None:
        async with server(tmp_path) as s:
            a = await Peer.open(s.port)
            await a.publish("cam")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *one], METADATA)
            player = await Peer.open(s.port)
            await player.play("cam")
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 10)
            await a.send(more)  # frames the player gets from `a` live
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 15)
            n = len(player.media)
            # `a` is still connected (a stalled encoder looks the same to the server).
            b = await second_publish(s.port, "cam", two)
            await a.wait(lambda: a.closed.is_set())
            await player.wait(lambda: len(player.media) >= n + 1 + 2 + 50 + 20)
            assert s.relay is not None
            (kept,) = s.relay.players()
            assert kept.waiting is False
            await b.close()
            await player.close()
            assert ends(player) == []
            assert player.statuses.count("NetStream.Play.PublishNotify") == 0
            check_timeline(player)
            check_second_publish([m for _, m in player.media[n:]], two)
            last_a = max(m.timestamp for _, m in player.media[:n])
            assert min(m.timestamp for _, m in player.media[n:]) > last_a

    with caplog.at_level(logging.INFO):
        run(main())
    stops = [r.getMessage() for r in caplog.records if "publish stop" in r.getMessage()]
    assert len(stops) == 2 and "(replaced by peer 127.0.0.1:" in stops[0], stops
    # Two recordings, each whole: the old one finished at the takeover.
    recorded = []
    for path in (tmp_path / "live").glob("cam-*.flv"):
        _, tags = flv.read_flv(path.read_bytes())
        recorded.append([t.body for t in tags if t.tag_type != DATA_AMF0])
    assert len(recorded) == 2
    expected = [
        [AVC_SEQ, AAC_SEQ, *(p for _, _, p in one + more)],
        [AVC_SEQ_2, AAC_SEQ, *(p for _, _, p in two)],
    ]
    assert sorted(recorded) == sorted(expected)


def test_refuse_keeps_the_first_publisher_and_its_players() -> None:
    media = av_frames(40)

    async def main() -> None:
        async with server(republish="refuse") as s:
            a = await Peer.open(s.port)
            await a.publish("only")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:20]])
            player = await Peer.open(s.port)
            await player.play("only")
            await player.wait(lambda: len(player.av()) >= 22)
            b = await Peer.open(s.port)
            await b.connect()
            b.conn.publish(b.sid, "only")
            await b.status("NetStream.Publish.BadName")
            await a.send(media[20:])
            await player.wait(lambda: len(player.av()) >= 2 + len(media))
            assert not a.closed.is_set()
            await b.close()
            await a.close()
            await player.close()
            assert [m.payload for m in player.av()[2:]] == [p for _, _, p in media]

    run(main())


# --- a publisher gap --------------------------------------------------------------------------


def test_gap_shorter_than_the_grace_is_invisible_then_the_end_after_it() -> None:
    one = av_frames(40)
    two = av_frames(60, start=10)  # keyframe at frame 30
    three = av_frames(31)

    async def main() -> None:
        async with server(republish_grace=1.0) as s:
            a = await Peer.open(s.port)
            await a.publish("gap")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *one], METADATA)
            player = await Peer.open(s.port)
            await player.play("gap")
            await player.wait(lambda: len(player.av()) >= 2 + 2 * 10)
            n = len(player.media)
            await a.close()  # the encoder's connection drops ...
            await asyncio.sleep(0.4)  # ... and it reconnects 0.4 s later
            assert ends(player) == []
            b = await second_publish(s.port, "gap", two)
            await player.wait(lambda: len(player.media) >= n + 1 + 2 + 60 + 30)
            assert ends(player) == []
            check_second_publish([m for _, m in player.media[n:]], two)
            check_timeline(player)
            # The second publisher leaves for good: the end comes once the grace is over.
            await b.close()
            await asyncio.sleep(0.5)
            assert ends(player) == []
            await player.wait(lambda: ends(player) == [UNPUBLISHED, "STREAM_EOF"])
            # Still connected: a publisher that comes back later is announced and played.
            m = len(player.media)
            c = await Peer.open(s.port)
            await c.publish("gap")
            await player.status("NetStream.Play.PublishNotify")
            await c.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *three])
            await player.wait(lambda: video_count(player, m) >= 1 + 31)
            await c.close()
            await player.close()
            check_timeline(player)
            assert player.statuses.count("NetStream.Play.PublishNotify") == 1

    run(main())


def test_grace_zero_ends_players_at_once() -> None:
    media = av_frames(20)

    async def main() -> None:
        async with server(republish_grace=0) as s:
            a = await Peer.open(s.port)
            await a.publish("now")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media])
            player = await Peer.open(s.port)
            await player.play("now")
            await player.wait(lambda: len(player.av()) >= 2 + 40)
            # A takeover too is a gap of zero length: with no grace, players see it.
            b = await second_publish(s.port, "now", av_frames(5))
            await player.status("NetStream.Play.PublishNotify")
            assert ends(player) == ["NetStream.Play.UnpublishNotify"]
            await b.close()
            await player.wait(lambda: len(ends(player)) == 3)
            assert ends(player)[1:] == ["NetStream.Play.UnpublishNotify", "STREAM_EOF"]
            await a.close()
            await player.close()

    run(main())


def test_a_player_joining_in_a_gap_goes_on_with_the_kept_ones() -> None:
    one = av_frames(30)
    two = av_frames(40)

    async def main() -> None:
        async with server(republish_grace=5.0, play_wait=0) as s:
            a = await Peer.open(s.port)
            await a.publish("join")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *one], METADATA)
            kept = await Peer.open(s.port)
            await kept.play("join")
            await kept.wait(lambda: len(kept.av()) >= 2 + 2 * 30)
            await a.close()
            assert s.relay is not None
            await kept.wait(lambda: s.relay is not None and not s.registry.get("live", "join"))
            # play_wait 0 would refuse a play of an unpublished name; in a gap it joins.
            late = await Peer.open(s.port)
            await late.play("join")
            await late.status("NetStream.Play.Start")
            b = await second_publish(s.port, "join", two)
            await kept.wait(lambda: video_count(kept) >= 1 + 30 + 1 + 40)
            await late.wait(lambda: video_count(late) >= 1 + 40)
            await b.close()
            for p in (kept, late):
                await p.close()
                assert ends(p) == [] and "NetStream.Play.PublishNotify" not in p.statuses
                check_timeline(p)
            check_second_publish([m for _, m in late.media], two)

    run(main())


def test_players_leaving_in_a_gap_free_the_channel() -> None:
    async def main() -> None:
        async with server(republish_grace=30.0) as s:
            a = await Peer.open(s.port)
            await a.publish("bye")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *av_frames(10)])
            player = await Peer.open(s.port)
            await player.play("bye")
            await player.wait(lambda: len(player.av()) >= 2 + 20)
            await a.close()
            assert s.relay is not None
            relay = s.relay
            await player.wait(lambda: bool(relay.channels) and relay.channels[("live", "bye")].gap)
            channel = relay.channels[("live", "bye")]
            timer = channel.grace
            assert timer is not None
            await player.close()
            await a.wait(lambda: not relay.channels)
            assert timer.cancelled() and not channel.gap

    run(main())


def test_after_the_grace_a_player_that_stays_waits_play_wait_then_is_detached() -> None:
    async def main() -> None:
        async with server(republish_grace=0.2, play_wait=0.3) as s:
            a = await Peer.open(s.port)
            await a.publish("over")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *av_frames(10)])
            player = await Peer.open(s.port)
            await player.play("over")
            await player.wait(lambda: len(player.av()) >= 2 + 20)
            await a.close()
            await player.status("NetStream.Play.StreamNotFound")
            assert ends(player) == [UNPUBLISHED, "STREAM_EOF"]
            assert player.statuses[-2:] == [UNPUBLISHED, "NetStream.Play.StreamNotFound"]
            assert s.relay is not None and not s.relay.players() and not s.relay.channels
            assert not player.closed.is_set()  # the connection stays; only its play ended
            await player.close()

    run(main())


def test_a_publish_the_handler_refuses_does_not_take_over() -> None:
    media = av_frames(40)

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, relay=RelayConfig())
        s = RTMPServer(cfg, publish_handler=lambda stream: stream.query != "key=wrong")
        async with s:
            a = await Peer.open(s.port)
            await a.publish("mine")
            await a.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *media[:20]])
            player = await Peer.open(s.port)
            await player.play("mine")
            await player.wait(lambda: len(player.av()) >= 22)
            intruder = await Peer.open(s.port)
            await intruder.connect()
            intruder.conn.publish(intruder.sid, "mine?key=wrong")
            await intruder.status("NetStream.Publish.BadName")
            await a.send(media[20:])
            await player.wait(lambda: len(player.av()) >= 2 + len(media))
            assert not a.closed.is_set() and s.registry.get("live", "mine") is not None
            # The right key takes over.
            b = await Peer.open(s.port)
            await b.publish("mine?key=right")
            await a.wait(lambda: a.closed.is_set())
            for p in (b, intruder, player):
                await p.close()
            assert [m.payload for m in player.av()[2:]] == [p for _, _, p in media]
            assert ends(player) == []

    run(main())
