"""`rtmp2serversrc` in-process: registered with `rtmp2server.gst.register()`, fed over loopback.

Publishes come from the sans-IO client sending the tags of a real H.264/AAC FLV file made by
ffmpeg, so what comes out can be compared with what went in, tag for tag and byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gst_support import (
    Gst,
    Pipeline,
    collect,
    init_gst,
    port_is_free,
    publish,
    publish_all,
    publish_async,
    pull_from_appsink,
    source_tags,
    threads_and_fds,
    video_frames,
)
from rtmp2server.gst import shared
from rtmp2server.gst.element import START_MESSAGE, STOP_MESSAGE
from rtmp2server.protocol import flv
from support.media import SourceMedia, source_media


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SourceMedia:
    return source_media(tmp_path_factory.getbasetemp().parent / "media")


@pytest.fixture(scope="session")
def tags(media: SourceMedia) -> list[flv.Tag]:
    return source_tags(media.path)


def started_port(p: Pipeline, name: str = "src") -> int:
    port = int(p[name].get_property("port"))
    assert port > 0
    return port


def flv_streams(data: bytes) -> list[tuple[flv.FLVHeader, list[flv.Tag]]]:
    """Parse concatenated FLV streams, each beginning with its own header."""
    streams = []
    while data:
        header, tags, rest = flv.parse_flv(data)
        streams.append((header, tags))
        data = data[len(data) - rest :]
    return streams


def as_tuples(tags: list[flv.Tag]) -> list[tuple[int, int, bytes]]:
    return [(t.tag_type, t.timestamp, t.body) for t in tags]


def test_register_gives_the_element_with_its_properties() -> None:
    init_gst()
    factory = Gst.ElementFactory.find("rtmp2serversrc")
    assert factory is not None
    el = factory.create(None)
    assert el.get_property("host") == "0.0.0.0"
    assert el.get_property("port") == 1935
    assert el.get_property("application") is None
    assert el.get_property("stream-key") is None
    assert el.get_property("timeout") == 0
    assert el.get_property("loop") is False
    caps = el.get_static_pad("src").get_pad_template_caps()
    assert caps.to_string() == "video/x-flv"


def test_flvdemux_pipeline_gets_every_video_frame_in_order(tags: list[flv.Tag]) -> None:
    p = Pipeline(
        "rtmp2serversrc name=src port=0 ! flvdemux name=d "
        "d.video ! queue ! h264parse ! appsink name=sink sync=false "
        "d.audio ! queue ! fakesink sync=false"
    )
    got = pull_from_appsink(p["sink"])
    p.play()
    try:
        assert publish(started_port(p), "test", tags) == "NetStream.Publish.Start"
        p.wait_eos()
    finally:
        p.stop()
    frames = got.buffers
    assert len(frames) == video_frames(tags) == 60
    dts = [f["dts"] for f in frames]
    pts = [f["pts"] for f in frames]
    assert all(t != Gst.CLOCK_TIME_NONE for t in pts)
    assert dts == sorted(dts) and len(set(dts)) == len(dts), "DTS strictly increasing"
    assert pts == sorted(pts) and len(set(pts)) == len(pts), "PTS increasing (no B-frames)"
    assert pts[-1] - pts[0] == pytest.approx(59 / 30 * Gst.SECOND, abs=2 * Gst.MSECOND)


def test_output_is_the_published_stream_tag_for_tag(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 ! fakesink name=sink sync=false")
    got = collect(p["sink"])
    p.play()
    try:
        publish(started_port(p), "test", tags)
        p.wait_eos()
    finally:
        p.stop()
    ((header, out),) = flv_streams(got.data())
    assert (header.audio, header.video) == (True, True)
    assert as_tuples(out) == as_tuples(tags)
    bufs = got.buffers
    assert len(bufs) == len(tags) + 1, "the header, then one buffer per tag"
    assert bufs[0]["flags"] & Gst.BufferFlags.DISCONT and bufs[0]["offset"] == 0
    offsets = [b["offset"] for b in bufs]
    assert offsets == [sum(b["size"] for b in bufs[:i]) for i in range(len(bufs))]
    pts = [b["pts"] for b in bufs[1:]]
    first = tags[0].timestamp
    assert pts == [max(0, t.timestamp - first) * Gst.MSECOND for t in tags]


def test_bus_messages_on_publish_start_and_stop(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 application=live stream-key=cam ! fakesink")
    p.play()
    try:
        publish(started_port(p), "cam?token=1", tags)
        p.wait_eos()
    finally:
        p.stop()
    (start,) = p.element_messages(START_MESSAGE)
    (stop,) = p.element_messages(STOP_MESSAGE)
    for s in (start, stop):
        assert s.get_value("application") == "live"
        assert s.get_value("stream-key") == "cam"
        assert s.get_value("query") == "token=1"
        assert s.get_value("peer").startswith("127.0.0.1:")
        assert "rtmp2server-client" in s.get_value("flash-ver")
    assert stop.get_value("video-frames") == sum(1 for t in tags if t.tag_type == 9)
    assert stop.get_value("audio-frames") == sum(1 for t in tags if t.tag_type == 8)


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_header_flags_follow_what_is_published(tags: list[flv.Tag], kind: str) -> None:
    keep = 9 if kind == "video" else 8
    media = [t for t in tags if t.tag_type == keep]  # no onMetaData: the first frame decides
    p = Pipeline("rtmp2serversrc name=src port=0 ! fakesink name=sink sync=false")
    got = collect(p["sink"])
    p.play()
    try:
        publish(started_port(p), "one", media)
        p.wait_eos()
    finally:
        p.stop()
    ((header, out),) = flv_streams(got.data())
    assert (header.audio, header.video) == (kind == "audio", kind == "video")
    assert as_tuples(out) == as_tuples(media)


def test_two_elements_share_a_port_each_gets_only_its_stream(tags: list[flv.Tag]) -> None:
    a = Pipeline("rtmp2serversrc name=src port=0 stream-key=a ! fakesink name=sink sync=false")
    got_a = collect(a["sink"])
    a.play()
    port = started_port(a)
    b = Pipeline(
        f"rtmp2serversrc name=src port={port} stream-key=b ! fakesink name=sink sync=false"
    )
    got_b = collect(b["sink"])
    b.play()
    stream_a = tags
    stream_b = [t for t in tags if t.tag_type != 8][:40]  # different content: video only, shorter
    try:
        assert len(shared.running()) >= 1
        codes = publish_all(port, [("a", stream_a), ("b", stream_b)])
        assert codes == ["NetStream.Publish.Start"] * 2
        a.wait_eos()
        b.wait_eos()
    finally:
        b.stop()
        a.stop()
    ((_, out_a),) = flv_streams(got_a.data())
    ((_, out_b),) = flv_streams(got_b.data())
    assert as_tuples(out_a) == as_tuples(stream_a)
    assert as_tuples(out_b) == as_tuples(stream_b)
    assert port_is_free(port), "the last element on the port released it"


def test_publish_nobody_wants_is_refused_and_taken_key_too(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 application=live stream-key=wanted ! fakesink")
    p.play()
    port = started_port(p)
    try:
        assert publish(port, "other", tags[:5]) == "NetStream.Publish.BadName"
        assert publish(port, "wanted", tags[:5], app="elsewhere") == "NetStream.Publish.BadName"

        # while "wanted" is being published, a second publisher for it is refused
        async def both() -> list[str]:
            first = asyncio.create_task(publish_async(port, "wanted", tags[:5], hold=1.0))
            while not any(len(s.server.registry) for s in shared.running()):
                await asyncio.sleep(0.01)
            return [await publish_async(port, "wanted", tags[:5]), await first]

        assert asyncio.run(both()) == ["NetStream.Publish.BadName", "NetStream.Publish.Start"]
        p.wait_eos()
    finally:
        p.stop()


def test_loop_takes_publishers_one_after_the_other(tags: list[flv.Tag]) -> None:
    p = Pipeline(
        # async=false: with a tee, a sink that prerolled early would hold up the allocation
        # query (serialized) that reaches it through its queue, and the others never preroll
        "rtmp2serversrc name=src port=0 loop=true ! tee name=t "
        "t. ! queue ! fakesink name=raw sync=false async=false "
        "t. ! queue ! flvdemux name=d "
        "d.video ! queue ! h264parse ! fakesink name=video sync=false async=false "
        "d.audio ! queue ! fakesink sync=false async=false"
    )
    raw = collect(p["raw"])
    video = collect(p["video"], data=False)
    p.play()
    port = started_port(p)
    second = [t for t in tags if t.tag_type == 9]  # no onMetaData: the first frame decides
    try:
        assert publish(port, "first", tags) == "NetStream.Publish.Start"
        p.wait_for(lambda m: _is(m, STOP_MESSAGE))
        assert publish(port, "second", second) == "NetStream.Publish.Start"
        p.wait_for(lambda m: _is(m, STOP_MESSAGE) and m.get_structure()["stream-key"] == "second")
        # the stop message follows the last buffer out of the source; the queues may lag
        expected_raw = 2 + len(tags) + len(second)
        wait_until(lambda: len(video) >= 120 and len(raw) >= expected_raw)
        p.drain()
        assert not any(m.type == Gst.MessageType.EOS for m in p.messages), "loop=true: no EOS"
    finally:
        p.stop()
    (h1, out1), (h2, out2) = flv_streams(raw.data())
    assert (h1.audio, h1.video) == (True, True)
    assert (h2.audio, h2.video) == (False, True)
    assert as_tuples(out1) == as_tuples(tags)
    assert as_tuples(out2) == as_tuples(second)
    headers = [b for b in raw.buffers if b["offset"] == 0]
    assert len(headers) == 2 and all(b["flags"] & Gst.BufferFlags.DISCONT for b in headers)
    assert len(video) == 120, "flvdemux restarted cleanly on the second stream"
    assert [s.get_value("stream-key") for s in p.element_messages(START_MESSAGE)] == [
        "first",
        "second",
    ]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)


def _is(msg: Gst.Message, name: str) -> bool:
    s = msg.get_structure()
    return msg.type == Gst.MessageType.ELEMENT and s is not None and s.get_name() == name


def test_slow_pipeline_pauses_the_publisher_and_loses_nothing(tags: list[flv.Tag]) -> None:
    p = Pipeline(
        "rtmp2serversrc name=src port=0 ! identity sleep-time=2000 ! fakesink name=sink sync=false"
    )
    got = collect(p["sink"])
    src = p["src"]
    src._feed.high_water = 32 * 1024
    src._feed.low_water = 8 * 1024
    p.play()
    many = _repeat(tags, 4)
    try:
        publish(started_port(p), "big", many)
        p.wait_eos(30)
    finally:
        p.stop()
    assert src._feed.pauses > 0, "back-pressure paused the publisher"
    ((_, out),) = flv_streams(got.data())
    assert as_tuples(out) == as_tuples(many)


def _repeat(tags: list[flv.Tag], n: int) -> list[flv.Tag]:
    """`tags` n times over, later copies shifted in time after the earlier ones."""
    span = max(t.timestamp for t in tags) + 40
    out = list(tags)
    for i in range(1, n):
        out += [
            flv.Tag(t.tag_type, t.timestamp + i * span, t.body) for t in tags if t.tag_type != 18
        ]
    return out


def test_timeout_without_publisher_posts_an_error() -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 timeout=1 ! fakesink")
    t0 = time.monotonic()
    p.play()
    try:
        msg = p.wait_for(lambda m: m.type == Gst.MessageType.ERROR, 10)
    finally:
        p.stop()
    assert 0.9 <= time.monotonic() - t0 < 5
    assert "No RTMP publisher" in msg.parse_error()[0].message


def test_timeout_when_the_publisher_goes_silent_posts_an_error(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 timeout=1 ! fakesink")
    p.play()
    try:
        publish(started_port(p), "quiet", tags[:10], hold=1.8)
        msg = p.wait_for(lambda m: m.type == Gst.MessageType.ERROR, 5)
    finally:
        p.stop()
    assert "No data from the RTMP publisher of live/quiet" in msg.parse_error()[0].message


def test_paused_and_playing_again_mid_publish_loses_nothing(tags: list[flv.Tag]) -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 ! fakesink name=sink sync=false")
    got = collect(p["sink"])
    p.play()
    publisher = threading.Thread(
        target=publish, args=(started_port(p), "live", tags), kwargs={"realtime": True}
    )
    publisher.start()
    try:
        wait_until(lambda: len(got) > 20)
        p.pipeline.set_state(Gst.State.PAUSED)
        time.sleep(0.4)
        p.pipeline.set_state(Gst.State.PLAYING)
        publisher.join(20)
        p.wait_eos()
    finally:
        p.stop()
    ((_, out),) = flv_streams(got.data())
    assert as_tuples(out) == as_tuples(tags)


def test_playing_to_null_while_create_waits_returns_promptly() -> None:
    p = Pipeline("rtmp2serversrc name=src port=0 ! fakesink")
    p.play()
    port = started_port(p)
    time.sleep(0.3)  # create() is now blocked waiting for a publisher
    t0 = time.monotonic()
    done = threading.Event()

    def stop() -> None:
        p.pipeline.set_state(Gst.State.NULL)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(5), "set_state(NULL) hung"
    assert time.monotonic() - t0 < 1.0
    assert port_is_free(port)


def test_null_playing_null_thirty_times_leaks_no_threads_or_sockets(tags: list[flv.Tag]) -> None:
    init_gst()
    pipeline = Pipeline("rtmp2serversrc name=src port=0 ! fakesink sync=false")

    def cycle(with_publisher: bool) -> None:
        pipeline.play()
        if with_publisher:
            # a publisher that is still connected when the element goes to NULL
            port = started_port(pipeline)
            t = threading.Thread(target=_publish_quietly, args=(port, tags), daemon=True)
            t.start()
            pipeline.wait_for(lambda m: _is(m, START_MESSAGE), 10)
            pipeline.messages.clear()
        pipeline.stop()
        if with_publisher:
            t.join(10)
            assert not t.is_alive()

    cycle(True)  # warm up GStreamer's and Python's own pools
    time.sleep(0.2)
    threads0, fds0 = threads_and_fds()
    for i in range(30):
        cycle(with_publisher=i % 10 == 0)
    # Threads that are winding down get a few seconds to finish; a leaked one never does.
    deadline = time.monotonic() + 5
    threads, fds = threads_and_fds()
    while (threads > threads0 or fds > fds0) and time.monotonic() < deadline:
        time.sleep(0.05)
        threads, fds = threads_and_fds()
    assert shared.running() == []
    assert threads <= threads0, f"threads {threads0} -> {threads}"
    assert fds <= fds0, f"open fds {fds0} -> {fds}"


def _publish_quietly(port: int, tags: list[flv.Tag]) -> None:
    with contextlib.suppress(OSError, ConnectionError, TimeoutError):
        publish(port, "stress", tags, realtime=True)


def test_port_in_use_fails_to_start_with_an_error() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        p = Pipeline(f"rtmp2serversrc name=src port={port} ! fakesink")
        assert p.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE
        p.stop()
        assert any("Could not listen" in e for e in p.errors())


def test_media_fixture_is_sane(media: SourceMedia, tags: list[flv.Tag]) -> None:
    assert video_frames(tags) == media.video == 60
    assert sum(1 for t in tags if t.tag_type == 8 and t.body[1:2] == b"\x01") == media.audio
    assert isinstance(media.path, Path)
