"""The element's GStreamer-free parts: the lossless feed with back-pressure, the FLV framing,
and the shared server's publish routing (driven with the sans-IO client over loopback)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gst_support import publish
from rtmp2server.gst import shared
from rtmp2server.gst.feed import (
    Feed,
    Flushing,
    FLVFramer,
    PublishEnded,
    PublishInfo,
    PublishStarted,
    metadata_flags,
)
from rtmp2server.protocol import amf0, flv
from rtmp2server.protocol.messages import Message
from rtmp2server.server.registry import Stream


def media(type_id: int, ts: int, body: bytes = b"\x17\x01xxxx") -> Message:
    return Message(4, ts, type_id, 1, body)


def meta(ts: int = 0, **fields: Any) -> Message:
    return Message(5, ts, 18, 1, amf0.encode("onMetaData", amf0.ECMAArray(fields)))


class ImmediateLoop:
    """Stands in for the event loop: runs what is scheduled at once, in the calling thread."""

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        fn(*args)


class FlowStream(Stream):
    def __init__(self) -> None:
        super().__init__(app="live", name="s")
        self.calls: list[str] = []
        self.pause_reading = lambda: self.calls.append("pause")
        self.resume_reading = lambda: self.calls.append("resume")


# --- Feed ------------------------------------------------------------------------------------


def test_feed_keeps_order_and_everything() -> None:
    feed = Feed()
    items = [media(9, i) for i in range(1000)]
    for item in items:
        feed.put(item)
    assert [feed.get(0) for _ in items] == items
    assert feed.get(0) is None
    assert feed.queued_bytes == 0


def test_feed_pauses_the_publisher_above_high_water_and_resumes_below_low_water() -> None:
    feed = Feed(high_water=1000, low_water=300)
    feed.bind_loop(ImmediateLoop())  # type: ignore[arg-type]
    stream = FlowStream()
    for i in range(20):
        feed.put(media(9, i, bytes(100)), stream)
    assert stream.calls == ["pause"], "paused once, nothing dropped"
    assert len(feed) == 20
    got = []
    while (item := feed.get(0)) is not None:
        got.append(item)
        if feed.queued_bytes > 300:
            assert stream.calls == ["pause"]
    assert len(got) == 20
    assert stream.calls == ["pause", "resume"]
    assert feed.pauses == 1


def test_feed_get_times_out_and_flushing_interrupts_it() -> None:
    feed = Feed()
    t0 = time.monotonic()
    assert feed.get(0.1) is None
    assert time.monotonic() - t0 >= 0.1

    raised = threading.Event()

    def waiter() -> None:
        try:
            feed.get(None)
        except Flushing:
            raised.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    feed.set_flushing(True)
    t.join(2)
    assert raised.is_set()
    feed.put(media(9, 0))
    with pytest.raises(Flushing):
        feed.get(0)
    feed.set_flushing(False)
    assert feed.get(0) is not None


def test_feed_media_types_queued_stop_at_the_end_of_a_publish() -> None:
    feed = Feed()
    info = PublishInfo("live", "s", "", "", "", "")
    feed.put(media(9, 0))
    feed.put(PublishEnded(info, 1, 0, 0, 0, 0.0))
    feed.put(media(8, 0))
    assert feed.media_types_queued() == {9}
    feed.clear()
    assert len(feed) == 0 and feed.media_types_queued() == set()


# --- FLV framing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        ({"videocodecid": 7.0, "audiocodecid": 10.0}, (True, True)),
        ({"videocodecid": 7.0}, (False, True)),
        ({"audiocodecid": 2.0, "videocodecid": None}, (True, False)),
        ({"width": 320.0}, None),
    ],
)
def test_metadata_decides_header_flags(fields: dict[str, Any], flags: Any) -> None:
    assert metadata_flags(meta(**fields).payload) == flags


def test_metadata_flags_of_garbage_is_none() -> None:
    assert metadata_flags(b"\x02\x00") is None
    assert metadata_flags(amf0.encode("onCuePoint", {"a": 1.0})) is None


def _frame(msgs: list[Message], queued: set[int] | None = None) -> bytes:
    framer = FLVFramer()
    framer.start()
    chunks = []
    for m in msgs:
        chunks += framer.push(m, lambda: queued or set())
    chunks += framer.end()
    data = b"".join(c.data for c in chunks)
    assert [c.offset for c in chunks] == [
        sum(len(x.data) for x in chunks[:i]) for i in range(len(chunks))
    ]
    assert chunks[0].header and not any(c.header for c in chunks[1:])
    return data


def test_framer_waits_for_metadata_or_first_media_to_write_the_header() -> None:
    msgs = [meta(videocodecid=7.0), media(9, 0), media(9, 33)]
    header, tags = flv.read_flv(_frame(msgs))
    assert (header.audio, header.video) == (False, True)
    assert [(t.tag_type, t.timestamp, t.body) for t in tags] == [
        (m.type_id, m.timestamp, m.payload) for m in msgs
    ]


def test_framer_without_metadata_looks_at_what_is_queued() -> None:
    header, _ = flv.read_flv(_frame([media(9, 0)], queued={8}))
    assert (header.audio, header.video) == (True, True)
    header, _ = flv.read_flv(_frame([media(8, 0, b"\xaf\x01x")]))
    assert (header.audio, header.video) == (True, False)


def test_framer_data_only_publish_still_gets_a_header() -> None:
    header, tags = flv.read_flv(_frame([meta(width=1.0)]))
    assert (header.audio, header.video) == (False, False)
    assert len(tags) == 1


def test_framer_marks_delta_units_and_times_relative_to_the_first_message() -> None:
    framer = FLVFramer()
    framer.start()
    out = framer.push(meta(1000, videocodecid=7.0, audiocodecid=10.0))
    out += framer.push(media(9, 1000, b"\x17\x00"))
    out += framer.push(media(9, 1033, b"\x27\x01"))
    out += framer.push(media(8, 1020, b"\xaf\x01"))
    assert [c.pts for c in out] == [0, 0, 0, 33_000_000, 20_000_000]
    assert [c.delta_unit for c in out] == [False, False, False, True, True]


@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, 5000), max_size=30))
def test_framer_times_unwrap_the_32_bit_clock(start: int, steps: list[int]) -> None:
    framer = FLVFramer()
    framer.start()
    ts = start
    expected = [0]
    chunks = framer.push(media(9, ts, b"\x17\x01"))[1:]  # after the header
    total = 0
    for step in steps:
        ts = (ts + step) & 0xFFFFFFFF
        total += step
        expected.append(total * 1_000_000)
        chunks += framer.push(media(9, ts, b"\x27\x01"))
    assert [c.pts for c in chunks] == expected


def test_framer_starts_each_publish_afresh() -> None:
    framer = FLVFramer()
    framer.start()
    first = framer.push(media(9, 500)) + framer.end()
    framer.start()
    second = framer.push(media(8, 9000, b"\xaf\x01")) + framer.end()
    assert first[0].header and second[0].header and second[0].offset == 0
    assert second[1].pts == 0 and second[1].offset == 13
    assert framer.streams == 2


# --- routing on a shared server --------------------------------------------------------------


def _publish(port: int, name: str, app: str = "live") -> str:
    return publish(port, name, [flv.Tag(9, 0, b"\x17\x01x")], app=app)


def _drain(feed: Feed) -> list[Any]:
    out = []
    while (item := feed.get(0.5)) is not None:
        out.append(item)
        if type(item) is PublishEnded:
            break
    return out


def test_routing_most_specific_route_wins_and_unwanted_is_refused() -> None:
    feeds = {k: Feed() for k in ("any", "key", "app+key", "other-app")}
    server = shared.acquire("127.0.0.1", 0)
    routes = [
        shared.Route(None, None, feeds["any"], loop=True),
        shared.Route(None, "cam", feeds["key"], loop=True),
        shared.Route("live", "cam", feeds["app+key"], loop=True),
        shared.Route("studio", None, feeds["other-app"], loop=False),
    ]
    try:
        for r in routes:
            server.add_route(r)
        assert _publish(server.port, "cam") == "NetStream.Publish.Start"
        assert type(_drain(feeds["app+key"])[0]) is PublishStarted
        assert _publish(server.port, "cam", app="tv") == "NetStream.Publish.Start"
        assert _drain(feeds["key"])[0].info.application == "tv"
        assert _publish(server.port, "x", app="studio") == "NetStream.Publish.Start"
        assert len(_drain(feeds["other-app"])) == 3  # start, message, end
        # the non-looping route had its publish: studio/* now falls through to "any"
        assert _publish(server.port, "y", app="studio") == "NetStream.Publish.Start"
        assert _drain(feeds["any"])[0].info.stream_key == "y"
        server.remove_route(routes[0])
        assert _publish(server.port, "nobody") == "NetStream.Publish.BadName"
    finally:
        for r in routes:
            server.remove_route(r)
        shared.release(server)
    assert shared.running() == []


def test_a_server_is_shared_by_port_and_released_by_the_last_user() -> None:
    a = shared.acquire("127.0.0.1", 0)
    b = shared.acquire("127.0.0.1", a.port)
    assert a is b and a.refs == 2
    shared.release(b)
    assert shared.running() == [a]
    shared.release(a)
    assert shared.running() == []

    async def connect() -> None:
        await asyncio.open_connection("127.0.0.1", a.port)

    with pytest.raises(OSError):
        asyncio.run(connect())
