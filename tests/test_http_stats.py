"""`StreamStats`: the figures of a stream from its messages, with a clock the test drives.

The media is the real source file's tags (made by ffmpeg), fed as RTMP messages; the health
cases are hand-built tag headers with chosen timestamps. Arbitrary bytes never raise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.http.stats import StreamStats
from rtmp2server.protocol import enhanced, flv
from rtmp2server.protocol.messages import AUDIO, VIDEO, Message
from rtmp2server.server.registry import Stream
from support.media import SourceMedia
from test_e2e_play import make_source, media_dir  # noqa: F401  (the fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed_tags(path: Path, speed: float = 1.0) -> tuple[StreamStats, Clock]:
    """Every tag of `path` in order, the clock moving with media time / `speed`."""
    clock = Clock()
    stream = Stream("live", "x")
    stats = StreamStats(stream, clock=clock)
    start = clock.now
    _, tags, _ = flv.parse_flv(path.read_bytes())
    for tag in tags:
        clock.now = start + tag.timestamp / 1000 / speed
        msg = Message(6 if tag.tag_type == AUDIO else 7, tag.timestamp, tag.tag_type, 1, tag.body)
        stream.deliver(msg)
        stats.on_messages(stream, [msg])
    return stats, clock


def test_source_file_figures(source: SourceMedia) -> None:
    stats, _ = feed_tags(source.path)
    tracks = {t.kind: t.to_json() for t in stats.tracks.values()}
    assert tracks["video"]["codec"] == "avc1"
    assert (tracks["video"]["width"], tracks["video"]["height"]) == (320, 240)
    assert tracks["video"]["profile"]
    assert (tracks["audio"]["codec"], tracks["audio"]["sample_rate"]) == ("mp4a", 44100)
    assert stats.video_frames == source.video
    assert stats.audio_frames == source.audio
    assert stats.keyframes == 2  # -g 30 over 2 s
    h = stats.health()
    assert h["fps"] == pytest.approx(30, abs=0.5)
    assert h["keyframe_interval"] == pytest.approx(1.0, abs=0.04)
    assert h["timestamp_backward"] == 0 and h["timestamp_jumps"] == 0
    assert abs(h["av_drift_ms"]) < 100
    assert h["realtime_ratio"] == pytest.approx(1.0, abs=0.05)
    assert stats.warnings() == []


def test_slow_encoder_is_warned(source: SourceMedia) -> None:
    stats, _ = feed_tags(source.path, speed=0.8)
    assert stats.health()["realtime_ratio"] == pytest.approx(0.8, abs=0.05)
    assert "encoder at 0.8x real time" in stats.warnings()


def _avc(ts: int, key: bool) -> Message:
    # Legacy AVC tag header: frame type << 4 | codec 7, AVCPacketType 1 (NALU), CTS 0.
    return Message(7, ts, VIDEO, 1, bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + b"\0" * 8)


def _aac(ts: int) -> Message:
    return Message(6, ts, AUDIO, 1, bytes([0xAF, 1]) + b"\x21" * 8)  # AAC raw frame


def _run(msgs: list[Message]) -> StreamStats:
    stream = Stream("live", "x")
    stats = StreamStats(stream, clock=Clock())
    stats.on_messages(stream, msgs)
    return stats


def test_backward_steps_and_jumps_are_counted() -> None:
    ts = [0, 33, 66, 40, 73, 3000, 3033]
    stats = _run([_avc(t, i == 0) for i, t in enumerate(ts)])
    assert stats.video.backward == 1
    assert stats.video.jumps == 1
    warnings = stats.warnings()
    assert "timestamps went backwards 1 times" in warnings
    assert "timestamps jumped 1 times" in warnings


def test_timestamp_wrap_is_not_a_backward_step() -> None:
    top = 0xFFFFFFFF
    stats = _run([_avc(top - 33, True), _avc(top, False), _avc(32, False)])
    assert stats.video.backward == 0 and stats.video.jumps == 0


def test_drift_and_keyframe_interval() -> None:
    msgs = [_avc(i * 100, i % 30 == 0) for i in range(61)] + [_aac(3000)]
    stats = _run(msgs)
    assert stats.key_interval() == pytest.approx(3.0)
    assert stats.drift_ms() == 3000  # video at 6.0 s, audio at 3.0 s
    assert "audio/video drift 3000 ms" in stats.warnings()


def test_a_long_gop_is_warned_before_its_second_keyframe() -> None:
    stats = _run([_avc(i * 33, i == 0) for i in range(0, 300)])  # 9.9 s, one keyframe
    assert stats.key_interval() == pytest.approx(9.867, abs=0.01)
    assert "keyframe interval 10 s" in stats.warnings()


def test_no_keyframe_is_warned() -> None:
    stats = _run([_avc(i * 33, False) for i in range(10)])
    assert "no keyframe yet" in stats.warnings()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([AUDIO, VIDEO]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=64)
        ),
        max_size=20,
    )
)
def test_arbitrary_media_never_raises(items: list[tuple[int, int, bytes]]) -> None:
    stats = _run([Message(6, ts, t, 1, body) for t, ts, body in items])
    stats.health()
    stats.warnings()
    for track in stats.tracks.values():
        track.to_json()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.sampled_from([0x17, 0x1C, 0x90, 0x80, 0xAF, 0x9F]))
def test_arbitrary_sequence_headers_never_raise(body: bytes, first: int) -> None:
    kind = AUDIO if first in (0xAF, 0x9F) else VIDEO
    # A sequence-start header with an arbitrary record (fourcc-bearing headers get real ones).
    fourccs = {0x90: b"hvc1", 0x80: b"av01", 0x9F: b"Opus"}
    head = bytes([first & 0xF0 if first in (0x90, 0x80, 0x9F) else first, 0])
    if first in fourccs:
        head = bytes([first & 0xF0]) + fourccs[first]
    _run([Message(6, 0, kind, 1, head + body)])


@pytest.mark.parametrize("name", ["hevc-opus", "av1-flac", "vp9-ac3", "multitrack"])
def test_cheap_counts_agree_with_the_full_classification(
    name: str,
    media_dir: Path,  # noqa: F811
) -> None:
    """The sink reads tag headers only; what it counts is what `classify_video` says of each
    tag of ffmpeg 9's files (E-RTMP, multitrack included)."""
    path = make_source(media_dir, name)
    stats, _ = feed_tags(path)
    _, tags, _ = flv.parse_flv(path.read_bytes())
    coded = keys = 0
    for tag in tags:
        if tag.tag_type != VIDEO:
            continue
        info = enhanced.classify_video(tag.body)
        if info.command is None and info.packet_type in (1, 3):
            coded += 1
            keys += info.is_keyframe
    assert (stats.video_frames, stats.keyframes) == (coded, keys)
    kinds = sorted((t.kind, t.track_id) for t in stats.tracks.values())
    if name == "multitrack":
        assert kinds == [("audio", 0), ("audio", 1), ("video", 0), ("video", 1)], kinds
    else:
        assert kinds == [("audio", 0), ("video", 0)]
    for track in stats.tracks.values():
        assert track.config is not None, track
        if track.kind == "video":
            assert (track.to_json()["width"], track.to_json()["height"]) == (320, 240), track
        else:
            assert track.to_json()["sample_rate"] == 48000, track
