"""`server.subscribe(app, name)`: in-process players against a real ffmpeg publisher.

What a subscription yields is written into an FLV file and compared with the server's own
recording of the publish (`test_e2e_play.assert_suffix_from_keyframe`): every frame from the
join keyframe to the end, bit-exact, timestamps rebased near zero and monotonic, after the
metadata and sequence headers. A subscription that does not read drops to keyframes within
its bound while an ffmpeg RTMP player beside it gets everything; one made before the publish
waits for it (or raises StreamNotFound after play_wait); and it shows in the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from rtmp2server.config import RelayConfig
from rtmp2server.protocol import amf0, enhanced, flv
from rtmp2server.protocol.messages import AUDIO, DATA_AMF0, VIDEO, Message
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.subscribe import StreamNotFound, Subscription
from support.clients import FFMPEG_DEBIAN, Publisher
from test_e2e_play import (  # noqa: F401  (media_dir: the fixture)
    Player,
    assert_suffix_from_keyframe,
    make_source,
    media_dir,
)
from test_relay import AAC_SEQ, AVC_SEQ, METADATA, Peer, av_frames, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def config(tmp_path: Path, http: bool = False, **relay: Any) -> ServerConfig:
    relay.setdefault("republish_grace", 0)  # the iteration ends with the publish
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        record_dir=tmp_path / "rec",
        http="127.0.0.1:0" if http else "",
        relay=RelayConfig(**relay),
    )


def publisher(src: Path, url: str) -> Publisher:
    args = ["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(src)]
    return Publisher([FFMPEG_DEBIAN, *args, "-c", "copy", "-f", "flv", url])


async def wait_until(pred: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


def recording_of(server: RTMPServer, name: str) -> Path:
    stream = server.registry.get("live", name)
    assert stream is not None
    return Path(next(s for s in stream.sinks if hasattr(s, "path")).path)


def write_flv(messages: list[Message], path: Path) -> None:
    body = [flv.tag(m.type_id, m.timestamp, m.payload) for m in messages]
    path.write_bytes(flv.file_header(audio=True, video=True) + b"".join(body))


def check_join(messages: list[Message], keyframe_first: bool = True) -> None:
    """Metadata, then the video and audio sequence headers, then a keyframe (a subscription
    that waited for the publish gets audio from its start, as a recording does)."""
    assert messages[0].type_id == DATA_AMF0
    assert amf0.decode_all(messages[0].payload)[0] == "onMetaData"
    video_seq, audio_seq, first = messages[1:4]
    assert video_seq.type_id == VIDEO and enhanced.classify_video(video_seq.payload).is_config
    assert audio_seq.type_id == AUDIO and enhanced.classify_audio(audio_seq.payload).is_config
    if keyframe_first:
        assert first.type_id == VIDEO and enhanced.classify_video(first.payload).is_keyframe
    assert [m.timestamp for m in messages[:4]] == [0, 0, 0, 0]


async def collect(sub: Subscription, into: list[Message]) -> None:
    async for message in sub:
        into.append(message)


def test_subscribe_mid_stream_is_bit_exact_from_the_join_keyframe(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    got: list[Message] = []

    async def main() -> Path:
        async with RTMPServer(config(tmp_path, http=True)) as server:
            assert server.http is not None
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/x")
            try:
                await wait_until(lambda: server.registry.get("live", "x") is not None)
                recording = recording_of(server, "x")
                await asyncio.sleep(1.5)  # join mid-stream: from the GOP cache
                task = asyncio.create_task(collect(server.subscribe("live", "x"), got))
                await wait_until(lambda: len(got) > 4)
                api = f"{server.http.url}/api/v1/streams/live/x"
                async with ClientSession() as http, http.get(api) as r:
                    [p] = (await r.json())["players"]
                assert p["protocol"] == "subscribe" and p["video_frames"] > 0
                await asyncio.to_thread(pub.wait, 30)
                # The publish ended (no grace): the iteration ends by itself.
                await asyncio.wait_for(task, 10)
                assert server.relay is not None and not server.relay.players()
            finally:
                pub.kill()
            return recording

    recording = asyncio.run(main())
    check_join(got)
    write_flv(got, tmp_path / "got.flv")
    joined = assert_suffix_from_keyframe(tmp_path / "got.flv", recording)
    assert joined.video_from > 0  # it joined mid-stream, not from the first frame


def test_a_slow_subscriber_drops_to_keyframes_and_an_rtmp_player_beside_it_gets_everything(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-heavy")  # ~10 Mbit/s
    bound = 256 * 1024
    got: list[Message] = []

    async def main() -> tuple[Path, Path, Any, int]:
        async with RTMPServer(config(tmp_path, player_max_buffer=bound, play_wait=10)) as server:
            url = f"rtmp://127.0.0.1:{server.port}/live/slow"
            played = tmp_path / "played.flv"
            player = Player("ffmpeg-debian", url, played)
            sub = server.subscribe("live", "slow")
            it = aiter(sub)
            first = asyncio.ensure_future(anext(it))  # joins (waiting for the publish)
            assert server.relay is not None
            relay = server.relay
            await wait_until(lambda: len(relay.players()) == 2)
            pub = publisher(src, url)
            try:
                await wait_until(lambda: server.registry.get("live", "slow") is not None)
                recording = recording_of(server, "slow")
                got.append(await first)
                # Now it does not read for 3 s: its queue grows to the bound, then it skips.
                peak = 0
                for _ in range(60):
                    peak = max(peak, sub.buffered())
                    await asyncio.sleep(0.05)
                (p,) = [q for q in relay.players() if q.out is sub]
                assert p.skips >= 1 and p.dropped > 0
                # Then it reads again, and goes on from a keyframe.
                async for message in it:
                    got.append(message)
                    peak = max(peak, sub.buffered())
                await asyncio.to_thread(pub.wait, 40)
                await asyncio.to_thread(player.wait, 30)
            finally:
                pub.kill()
                player.proc.kill()
            return recording, played, p, peak

    recording, played, p, peak = asyncio.run(main())
    print(f"slow subscriber: skips={p.skips} dropped={p.dropped} peak queue={peak} (bound {bound})")
    # The RTMP player lost nothing; it was there from the start of the publish.
    joined = assert_suffix_from_keyframe(played, recording)
    assert joined.video_from == 0 and joined.audio_from == 0
    # The subscriber's queue stayed near its bound (plus what one loop turn brings).
    assert peak < bound + 1024 * 1024
    # After each skip it resumed at a keyframe: every video frame after a gap is one.
    _, ref_tags = flv.read_flv(recording.read_bytes())
    ref = [t.body for t in ref_tags if t.tag_type == VIDEO]
    video = [m.payload for m in got if m.type_id == VIDEO]
    index = [ref.index(v) for v in video[1:]]  # [0] is the sequence header
    assert index == sorted(index)
    gaps = [i for a, i in itertools.pairwise(index) if i != a + 1]
    assert gaps, "no frame was dropped"
    assert all(enhanced.classify_video(ref[i]).is_keyframe for i in gaps)


def test_subscribe_waits_for_the_publisher_then_not_found(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    got: list[Message] = []

    async def main() -> Path:
        async with RTMPServer(config(tmp_path, play_wait=10)) as server:
            task = asyncio.create_task(collect(server.subscribe("live", "later"), got))
            await asyncio.sleep(0.5)
            assert not got and not task.done()
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/later")
            try:
                await wait_until(lambda: server.registry.get("live", "later") is not None)
                recording = recording_of(server, "later")
                await asyncio.to_thread(pub.wait, 30)
                await asyncio.wait_for(task, 10)
            finally:
                pub.kill()
        # Not published within play_wait: StreamNotFound, after the wait.
        async with RTMPServer(config(tmp_path, play_wait=0.3)) as server:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(StreamNotFound, match=r"not published within 0\.3 s"):
                async for _ in server.subscribe("live", "nobody"):
                    pass
            assert loop.time() - t0 >= 0.25
            assert server.relay is not None and not server.relay.players()
        # play_wait 0: at once.
        async with RTMPServer(config(tmp_path, play_wait=0)) as server:
            with pytest.raises(StreamNotFound, match="is not published"):
                async for _ in server.subscribe("live", "nobody"):
                    pass
        return recording

    recording = asyncio.run(main())
    check_join(got, keyframe_first=False)
    write_flv(got, tmp_path / "got.flv")
    joined = assert_suffix_from_keyframe(tmp_path / "got.flv", recording)
    assert joined.video_from == 0 and joined.audio_from == 0  # waiting: from the first frame


def test_leaving_the_loop_leaves_the_stream_and_close_ends_subscriptions(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")

    async def main() -> None:
        async with RTMPServer(config(tmp_path, play_wait=math.inf)) as server:
            assert server.relay is not None
            relay = server.relay
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/y")
            try:
                await wait_until(lambda: server.registry.get("live", "y") is not None)
                async with contextlib.aclosing(aiter(server.subscribe("live", "y"))) as it:
                    async for message in it:
                        if message.type_id == VIDEO:
                            break
                assert not relay.players()
                # A plain break: the iteration is closed when it is dropped (asyncio's
                # async generator hooks), a loop turn later.
                async for _message in server.subscribe("live", "y"):
                    break
                await wait_until(lambda: not relay.players(), timeout=2)
                # One waiting for a stream that never comes ends with the server.
                waiting: list[Message] = []
                task = asyncio.create_task(collect(server.subscribe("live", "never"), waiting))
                await wait_until(lambda: len(relay.players()) == 1)
            finally:
                pub.kill()
        await asyncio.wait_for(task, 5)
        assert waiting == []

    asyncio.run(main())


def readme_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## As a library") :]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "subscribe" in b)
    return str(block)


def test_the_readme_subscribe_example_finds_every_keyframe(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    space: dict[str, Any] = {}
    exec(readme_example(), space)  # the README's own code, as a user runs it

    async def main() -> tuple[list[int], Path]:
        async with RTMPServer(config(tmp_path, play_wait=10)) as server:
            task = asyncio.create_task(space["keyframes"](server, "kf"))
            await wait_until(lambda: server.relay is not None and server.relay.players())
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/kf")
            try:
                await wait_until(lambda: server.registry.get("live", "kf") is not None)
                recording = recording_of(server, "kf")
                await asyncio.to_thread(pub.wait, 30)
                return await asyncio.wait_for(task, 10), recording
            finally:
                pub.kill()

    found, recording = asyncio.run(main())
    _, tags = flv.read_flv(recording.read_bytes())
    keys = [
        t.timestamp
        for t in tags
        if t.tag_type == VIDEO
        and enhanced.classify_video(t.body).is_keyframe
        and not enhanced.classify_video(t.body).is_config
    ]
    assert len(found) == len(keys) >= 5  # a 6 s source with a keyframe a second
    assert [k - found[0] for k in found] == [k - keys[0] for k in keys]


def test_a_publisher_back_within_the_grace_goes_on_in_the_same_iteration() -> None:
    """The publisher drops and comes back within republish_grace: the subscription goes on,
    timestamps forward, from the new publish's first keyframe; it ends only when a gap
    outlasts the grace."""
    one, two = av_frames(40), av_frames(40)
    got: list[Message] = []

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, relay=RelayConfig(republish_grace=0.5))
        async with RTMPServer(cfg) as server:
            pub = await Peer.open(server.port)
            await pub.publish("back")
            await pub.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *one], METADATA)
            task = asyncio.create_task(collect(server.subscribe("live", "back"), got))
            await wait_until(lambda: len(got) >= 1 + 2 + 20)
            await pub.close()
            await asyncio.sleep(0.2)
            assert not task.done()
            pub2 = await Peer.open(server.port)
            await pub2.publish("back")
            await pub2.send([(VIDEO, 0, AVC_SEQ), (AUDIO, 0, AAC_SEQ), *two], METADATA)
            await wait_until(lambda: sum(m.payload == two[-1][2] for m in got) == 1)
            await pub2.close()
            await asyncio.wait_for(task, 5)  # the grace (0.5 s) ran out: it ended

    run(main())
    for kind in (AUDIO, VIDEO):
        ts = [m.timestamp for m in got if m.type_id == kind]
        assert ts == sorted(ts)
    frames = [m.payload for m in got if m.type_id in (AUDIO, VIDEO)]
    start = frames.index(two[0][2])  # the second publish, from its first keyframe
    assert frames[start - 2 : start] == [AVC_SEQ, AAC_SEQ]
    assert frames[start:] == [p for _, _, p in two]
