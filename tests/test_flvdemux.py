"""The sans-IO FLV demuxer and the codec-header parsers: byte vectors and properties.

The codec vectors are the sequence headers ffmpeg 9 writes (H.264, HEVC, AV1, VP9, AAC, Opus,
FLAC, AC-3 from `-f lavfi -i testsrc=size=320x240` and a 48 kHz mono sine), so the parsers are
checked against what a real encoder emits, plus hand-built edge cases.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import flv, media
from rtmp2server.protocol.flvdemux import (
    FLVDemuxer,
    Frame,
    StreamStarted,
    TagSkipped,
    TrackConfigured,
    TracksComplete,
)

H = bytes.fromhex

# ffmpeg 9, libx264 -preset ultrafast 320x240 30 fps, yuv420p (AVCDecoderConfigurationRecord).
AVC_RECORD = H("0142c00dffe100166742c00dda0507ec0440000003004000000f03c50aa801000468ce0fc8")
# ffmpeg 9, libx265 320x240: the HEVCDecoderConfigurationRecord's VPS, SPS and PPS arrays.
HVCC = H(
    "0101600000009000000000003cf000fcfdf8f800000f03200001001840010c01ffff01600000030090000003"
    "000003003c959409210001002a42010101600000030090000003000003003ca00a080f16595952930bc05a02"
    "0000030002000003003c1022000100064401c073c189"
)
AV1C = H("81000c000a0b0200000521e7fde017c002")
VPCC = H("010000000014820202020000")
VP9_KEYFRAME = H("8249834200 13f00ef606".replace(" ", ""))
AAC_ASC_44K_STEREO = H("121056e500")  # with the SBR sync extension ffmpeg adds
OPUS_HEAD = H("4f707573486561640101380180bb0000000000")
FLAC_STREAMINFO = H("040004000000000008150bb800f0") + bytes(20)
AC3_FRAME = H("0b77cfb610402f842bc1c77aaf5e1be7ef9f3e86")


def tag(tag_type: int, ts: int, body: bytes) -> bytes:
    return flv.tag(tag_type, ts, body)


HEADER = flv.file_header(audio=True, video=True)


def avc_seq(record: bytes = AVC_RECORD) -> bytes:
    return b"\x17\x00\x00\x00\x00" + record


def avc_frame(key: bool, cts: int, data: bytes) -> bytes:
    return bytes((0x17 if key else 0x27, 1)) + (cts & 0xFFFFFF).to_bytes(3, "big") + data


def aac_seq() -> bytes:
    return b"\xaf\x00" + AAC_ASC_44K_STEREO


def aac_frame(data: bytes) -> bytes:
    return b"\xaf\x01" + data


def ex_video(packet_type: int, fourcc: bytes, body: bytes, key: bool = True) -> bytes:
    return bytes((0x80 | (0x10 if key else 0x20) | packet_type,)) + fourcc + body


def ex_audio(packet_type: int, fourcc: bytes, body: bytes) -> bytes:
    return bytes((0x90 | packet_type,)) + fourcc + body


def demux(data: bytes, step: int = 0, **kw: object) -> list[object]:
    d = FLVDemuxer(**kw)  # type: ignore[arg-type]
    if not step:
        return list(d.receive_data(data))
    out: list[object] = []
    for i in range(0, len(data), step):
        out += d.receive_data(data[i : i + step])
    return out


def frames(events: list[object]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


# --- codec headers ---------------------------------------------------------------------------


def test_avc_record() -> None:
    c = media.avc_config(AVC_RECORD)
    assert (c.codec, c.width, c.height, c.profile, c.level) == ("avc1", 320, 240, "baseline", "1.3")
    assert (c.bit_depth, c.chroma_format, c.nal_length_size, c.record) == (
        8,
        "4:2:0",
        4,
        AVC_RECORD,
    )
    assert c.fps == 30.0


def test_hevc_record() -> None:
    c = media.hevc_config(HVCC)
    assert (c.codec, c.width, c.height, c.profile, c.level, c.tier) == (
        "hvc1",
        320,
        240,
        "main",
        "2",
        "main",
    )
    assert (c.bit_depth, c.chroma_format, c.nal_length_size) == (8, "4:2:0", 4)


def test_av1_record_and_sequence_header() -> None:
    c = media.av1_config(AV1C)
    assert (c.width, c.height, c.profile, c.level, c.bit_depth, c.chroma_format) == (
        320,
        240,
        "main",
        "2.0",
        8,
        "4:2:0",
    )
    assert c.sequence_header == AV1C[4:]
    assert media.av1_has_sequence_header(b"\x12\x00" + AV1C[4:])
    assert not media.av1_has_sequence_header(b"\x12\x00\x32\x01\x00")


def test_vp9_record_and_keyframe() -> None:
    c = media.vp9_config(VPCC)
    assert (c.profile, c.level, c.bit_depth, c.chroma_format) == ("0", "2.0", 8, "4:2:0")
    k = media.vp9_frame_config(VP9_KEYFRAME)
    assert k is not None and (k.width, k.height, k.profile) == (320, 240, "0")
    assert media.vp9_frame_config(b"\x86\x00\x00") is None  # an inter frame


def test_aac_asc() -> None:
    c = media.aac_config(AAC_ASC_44K_STEREO)
    assert (c.rate, c.channels, c.profile) == (44100, 2, "lc")
    bits = (2 << 32 | 15 << 28 | 48000 << 4 | 2) << 3  # LC, index 15: an explicit 24-bit rate
    explicit = media.aac_config(bits.to_bytes(5, "big"))
    assert explicit.rate == 48000 and explicit.channels == 2 and explicit.profile == "lc"


def test_opus_head() -> None:
    c = media.opus_config(OPUS_HEAD)
    assert (c.rate, c.channels, c.mapping_family, c.stream_count, c.coupled_count) == (
        48000,
        1,
        0,
        1,
        0,
    )
    assert c.pre_skip == 312
    surround = b"OpusHead\x01\x06" + struct.pack("<HIh", 312, 48000, 0) + b"\x01\x04\x02"
    c6 = media.opus_config(surround + bytes((0, 4, 1, 2, 3, 5)))
    assert (c6.channels, c6.mapping_family, c6.stream_count, c6.coupled_count) == (6, 1, 4, 2)
    assert c6.channel_mapping == (0, 4, 1, 2, 3, 5)


def test_flac_streaminfo_bare_and_with_stream_header() -> None:
    c = media.flac_config(FLAC_STREAMINFO)
    assert (c.rate, c.channels, c.bit_depth, c.record) == (48000, 1, 16, FLAC_STREAMINFO)
    wrapped = b"fLaC\x80\x00\x00\x22" + FLAC_STREAMINFO
    assert media.flac_config(wrapped) == c


def test_ac3_and_eac3_frames() -> None:
    c = media.ac3_config(AC3_FRAME)
    assert (c.codec, c.rate, c.channels) == ("ac-3", 48000, 1)
    # E-AC-3: bsid 16, fscod 0 (48 kHz), acmod 7 (3/2), lfe on: 5.1
    eac3 = b"\x0b\x77\x00\x3f" + bytes((0b00_00_111_1, 0b10000_000))
    e = media.ac3_config(eac3 + b"\x00" * 4)
    assert (e.codec, e.rate, e.channels) == ("ec-3", 48000, 6)


@pytest.mark.parametrize(
    ("parser", "data"),
    [
        (media.avc_config, b"\x01\x64"),
        (media.avc_config, b"\x02" + AVC_RECORD[1:]),
        (media.avc_config, AVC_RECORD[:12]),
        (media.hevc_config, HVCC[:30]),
        (media.av1_config, b"\x80\x00\x0c\x00"),
        (media.av1_config, AV1C[:8]),
        (media.vp9_config, VPCC[:5]),
        (media.aac_config, b"\x17"),
        (media.aac_config, b"\x17\x00"),  # sampling frequency index 14
        (media.opus_config, b"OpusTags" + bytes(11)),
        (media.opus_config, OPUS_HEAD[:18] + b"\x01"),  # family 1 without its table
        (media.flac_config, FLAC_STREAMINFO[:20]),
        (media.ac3_config, b"\x0b\x78" + AC3_FRAME[2:]),
        (media.vp9_frame_config, b"\x02"),
    ],
)
def test_bad_codec_headers_raise_codec_config_error(parser: object, data: bytes) -> None:
    with pytest.raises(media.CodecConfigError):
        parser(data)  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(media._VIDEO) + sorted(media._AUDIO)), st.binary(max_size=80))
def test_any_bytes_parse_or_raise_codec_config_error(codec: str, data: bytes) -> None:
    try:
        if codec in media._VIDEO:
            media.video_config(codec, data)
        else:
            media.audio_config(codec, data)
    except media.CodecConfigError:
        pass


# --- the demuxer -----------------------------------------------------------------------------

LEGACY = (
    HEADER
    + tag(18, 0, b"\x02\x00\x0aonMetaData\x05")
    + tag(9, 0, avc_seq())
    + tag(8, 0, aac_seq())
    + tag(9, 0, avc_frame(True, 66, b"\x00\x00\x00\x02\x09\x10"))
    + tag(8, 10, aac_frame(b"\x21\x22"))
    + tag(9, 33, avc_frame(False, -33, b"\x00\x00\x00\x02\x01\x02"))
    + tag(9, 66, b"\x17\x02\x00\x00\x00")  # end of sequence
)


def test_legacy_avc_aac() -> None:
    events = demux(LEGACY)
    assert isinstance(events[0], StreamStarted) and events[0].audio and events[0].video
    configured = [e for e in events if isinstance(e, TrackConfigured)]
    assert [(e.kind, e.track_id, e.config.codec, e.new) for e in configured] == [
        ("video", 0, "avc1", True),
        ("audio", 0, "mp4a", True),
    ]
    assert configured[0].config.record == AVC_RECORD
    got = [(f.kind, f.dts, f.pts, f.keyframe, f.data) for f in frames(events)]
    assert got == [
        ("video", 0, 66, True, b"\x00\x00\x00\x02\x09\x10"),
        ("audio", 10, 10, True, b"\x21\x22"),
        ("video", 33, 0, False, b"\x00\x00\x00\x02\x01\x02"),
    ]
    # Both announced tracks configured: complete before the first frame later than them.
    i = next(i for i, e in enumerate(events) if isinstance(e, TracksComplete))
    assert isinstance(events[i + 1], Frame) and events[i + 1].dts == 10  # type: ignore[union-attr]
    assert not [e for e in events if isinstance(e, TagSkipped)]


@pytest.mark.parametrize("step", [1, 2, 7, 100])
def test_any_split_gives_the_same_events(step: int) -> None:
    assert demux(LEGACY, step) == demux(LEGACY)


def test_rebase_counts_from_the_first_tag() -> None:
    data = HEADER + tag(9, 5000, avc_seq()) + tag(9, 5040, avc_frame(True, 0, b"\x00\x01"))
    assert [f.dts for f in frames(demux(data, rebase=True))] == [40]
    assert [f.dts for f in frames(demux(data))] == [5040]


ENHANCED = (
    HEADER
    + tag(9, 0, ex_video(0, b"hvc1", HVCC))
    + tag(8, 0, ex_audio(0, b"Opus", OPUS_HEAD))
    + tag(8, 0, ex_audio(4, b"Opus", b"\x01\x01\x00\x00\x00\x04"))  # MultichannelConfig
    + tag(9, 0, ex_video(4, b"hvc1", b"\x02\x00\x09colorInfo\x03\x00\x00\x09"))  # metadata
    + tag(9, 0, ex_video(1, b"hvc1", b"\x00\x00\x43" + b"hevc-key"))
    + tag(9, 33, ex_video(3, b"hvc1", b"hevc-inter", key=False))
    + tag(8, 20, ex_audio(1, b"Opus", b"opus-packet"))
)


def test_enhanced_hevc_opus() -> None:
    events = demux(ENHANCED)
    configured = [e for e in events if isinstance(e, TrackConfigured)]
    assert [(e.kind, e.config.codec) for e in configured] == [("video", "hvc1"), ("audio", "Opus")]
    got = [(f.codec, f.dts, f.pts, f.keyframe, f.data) for f in frames(events)]
    assert got == [
        ("hvc1", 0, 67, True, b"hevc-key"),
        ("hvc1", 33, 33, False, b"hevc-inter"),
        ("Opus", 20, 20, True, b"opus-packet"),
    ]


def test_av1_keyframe_without_sequence_header_gets_it_after_the_temporal_delimiter() -> None:
    seq = AV1C[4:]
    frame_obu = b"\x32\x02\xaa\xbb"  # OBU_FRAME with a size field
    data = (
        HEADER
        + tag(9, 0, ex_video(0, b"av01", AV1C))
        + tag(9, 0, ex_video(1, b"av01", b"\x12\x00" + frame_obu))
        + tag(9, 33, ex_video(1, b"av01", b"\x12\x00" + frame_obu))
    )
    got = [f.data for f in frames(demux(data))]
    assert got == [b"\x12\x00" + seq + frame_obu, b"\x12\x00" + frame_obu]
    # A keyframe that carries it (as ffmpeg writes) is left as it is.
    already = HEADER + tag(9, 0, ex_video(0, b"av01", AV1C))
    already += tag(9, 0, ex_video(1, b"av01", b"\x12\x00" + seq + frame_obu))
    assert [f.data for f in frames(demux(already))] == [b"\x12\x00" + seq + frame_obu]


def test_codecs_without_sequence_header_are_configured_from_their_first_frame() -> None:
    vp9 = ex_video(1, b"vp09", VP9_KEYFRAME)
    ac3_empty_seq = ex_audio(0, b"ac-3", b"")
    data = HEADER + tag(8, 0, ac3_empty_seq) + tag(8, 0, ex_audio(1, b"ac-3", AC3_FRAME))
    data += tag(9, 0, vp9) + tag(8, 9, b"\x2f\xff\xfb\x90")  # legacy MP3, 44.1 kHz stereo
    events = demux(data)
    configs = {e.config.codec: e.config for e in events if isinstance(e, TrackConfigured)}
    assert (configs["ac-3"].rate, configs["ac-3"].channels) == (48000, 1)  # type: ignore[union-attr]
    assert (configs["vp09"].width, configs["vp09"].height) == (320, 240)  # type: ignore[union-attr]
    assert len(frames(events)) == 3


def test_frames_before_their_sequence_header_are_dropped_with_one_notice() -> None:
    data = HEADER + b"".join(tag(9, t, avc_frame(False, 0, b"\x00\x01")) for t in (0, 33, 66))
    data += tag(9, 100, avc_seq()) + tag(9, 100, avc_frame(True, 0, b"\x00\x02"))
    events = demux(data)
    assert len([e for e in events if isinstance(e, TagSkipped)]) == 1
    assert [f.data for f in frames(events)] == [b"\x00\x02"]


def test_multitrack_tracks_are_their_own_tracks() -> None:
    # Multitrack, OneTrack (as ffmpeg 9 writes track 1) and ManyTracksManyCodecs.
    one = bytes((0x90 | 6, 0x00 | 0)) + b"av01" + b"\x01" + AV1C
    many = bytes((0x90 | 6, 0x20 | 1))
    many += b"hvc1\x00" + len(b"\x00\x00\x00k0").to_bytes(3, "big") + b"\x00\x00\x00k0"
    many += b"av01\x01" + len(b"\x12\x00").to_bytes(3, "big") + b"\x12\x00"
    data = HEADER + tag(9, 0, ex_video(0, b"hvc1", HVCC)) + tag(9, 0, one) + tag(9, 0, many)
    events = demux(data)
    configured = [
        (e.kind, e.track_id, e.config.codec) for e in events if isinstance(e, TrackConfigured)
    ]
    assert configured == [("video", 0, "hvc1"), ("video", 1, "av01")]
    got = [(f.track_id, f.codec, f.data) for f in frames(events)]
    assert got == [(0, "hvc1", b"k0"), (1, "av01", b"\x12\x00" + AV1C[4:])]


def test_a_changed_sequence_header_reconfigures_and_a_repeated_one_does_not() -> None:
    other = AVC_RECORD[:-1] + b"\xc1"
    data = HEADER + tag(9, 0, avc_seq()) + tag(9, 10, avc_seq()) + tag(9, 20, avc_seq(other))
    configured = [e for e in demux(data) if isinstance(e, TrackConfigured)]
    got = [(e.config.record[-1], e.new) for e in configured]
    assert got == [(AVC_RECORD[-1], True), (0xC1, False)]


def test_a_new_flv_header_starts_a_new_stream() -> None:
    second = HEADER + tag(9, 0, ex_video(0, b"hvc1", HVCC))
    second += tag(9, 0, ex_video(1, b"hvc1", b"\x00\x00\x00hk"))
    events = demux(LEGACY + second, rebase=True)
    starts = [i for i, e in enumerate(events) if isinstance(e, StreamStarted)]
    assert len(starts) == 2
    after = events[starts[1] :]
    configured = [e for e in after if isinstance(e, TrackConfigured)]
    assert [(e.config.codec, e.new) for e in configured] == [("hvc1", True)]
    assert frames(after)[0].data == b"hk"


def test_a_bad_body_is_skipped_and_the_stream_goes_on() -> None:
    bad = tag(9, 40, ex_video(0, b"hvc1", b"\x01\x01"))  # a truncated hvcC
    events = demux(LEGACY[:-20] + bad + LEGACY[-20:])
    skipped = [e for e in events if isinstance(e, TagSkipped)]
    assert len(skipped) == 1 and "HEVCDecoderConfigurationRecord" in skipped[0].reason
    assert len(frames(events)) == 3


def test_a_corrupted_tag_header_is_skipped_by_resynchronising() -> None:
    good = tag(9, 33, avc_frame(False, 0, b"\x00\x09"))
    broken = b"\x77" + bytes(30)  # not a tag: the framing is lost here
    data = LEGACY + broken + good + tag(8, 50, aac_frame(b"\x33"))
    for step in (0, 1, 5):
        events = demux(data, step)
        skipped = [e for e in events if isinstance(e, TagSkipped)]
        assert len(skipped) == 1 and "expected type 8, 9 or 18" in skipped[0].reason
        assert [f.data for f in frames(events)][-2:] == [b"\x00\x09", b"\x33"]


def test_a_stream_not_starting_with_a_header_is_demuxed_from_its_first_tag() -> None:
    events = demux(b"junk" + LEGACY[13:])
    assert isinstance(events[0], TagSkipped)
    assert len(frames(events)) == 3


def test_tracks_complete_after_the_bounded_wait_when_an_announced_track_never_comes() -> None:
    data = HEADER + tag(9, 0, avc_seq())
    data += b"".join(tag(9, t, avc_frame(True, 0, b"\x00\x01")) for t in range(0, 3000, 500))
    events = demux(data, tracks_wait_ms=1000)
    i = next(i for i, e in enumerate(events) if isinstance(e, TracksComplete))
    assert events[i + 1].dts == 1000  # type: ignore[union-attr]


def test_tag_size_above_the_bound_is_not_buffered() -> None:
    d = FLVDemuxer(max_tag_size=1000)
    events = d.receive_data(HEADER + flv.tag_header(9, 0, 5000))
    assert [type(e) for e in events] == [StreamStarted, TagSkipped]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_any_bytes_give_events_and_never_raise(data: bytes, step: int) -> None:
    assert demux(HEADER + data, step) == demux(HEADER + data)
    demux(data, step)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(LEGACY) - 1), st.integers(0, 255))
def test_one_flipped_byte_never_raises(pos: int, value: int) -> None:
    data = bytearray(LEGACY)
    data[pos] = value
    demux(bytes(data), 3)


def test_vp9_size_comes_from_the_first_keyframe_after_vpcc() -> None:
    data = HEADER + tag(9, 0, ex_video(0, b"vp09", VPCC))
    data += tag(9, 0, ex_video(1, b"vp09", VP9_KEYFRAME))
    data += tag(9, 33, ex_video(1, b"vp09", VP9_KEYFRAME))
    events = demux(data)
    configured = [e for e in events if isinstance(e, TrackConfigured)]
    sizes = [(e.config.width, e.config.height, e.new) for e in configured]  # type: ignore[union-attr]
    assert sizes == [(None, None, True), (320, 240, False)]
    assert configured[1].config.record == VPCC and configured[1].config.level == "2.0"
    assert len(frames(events)) == 2


def test_codecs_without_caps_are_announced_once_and_their_frames_not_decoded() -> None:
    h263 = b"".join(tag(9, t, b"\x22" + bytes(20)) for t in (0, 33, 66))  # Sorenson H.263
    speex = b"".join(tag(8, t, b"\xb2" + bytes(10)) for t in (0, 20))
    events = demux(HEADER + h263 + speex)
    configured = [(e.kind, e.config.codec) for e in events if isinstance(e, TrackConfigured)]
    assert configured == [("video", "h263"), ("audio", "speex")]
    assert not [e for e in events if isinstance(e, TagSkipped)]
    assert {f.codec for f in frames(events)} <= {"speex"}


PREFIXES = [
    (9, b"\x17\x00\x00\x00\x00"),
    (9, b"\x17\x01\x00\x00\x00"),
    (9, b"\x27\x01\xff\xff\xf0"),
    *[(9, bytes((0x90 | pt,)) + cc) for pt in (0, 1, 3) for cc in (b"hvc1", b"av01", b"vp09")],
    (9, b"\x96\x00av01\x01"),
    (9, b"\x96\x10hvc1\x00"),
    (8, b"\xaf\x00"),
    (8, b"\xaf\x01"),
    (8, b"\x2f"),
    *[
        (8, bytes((0x90 | pt,)) + cc)
        for pt in (0, 1)
        for cc in (b"Opus", b"fLaC", b"ac-3", b"ec-3")
    ],
    (8, b"\x95\x00Opus\x01"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=60), st.integers(0, 5000)),
        max_size=12,
    ),
    st.integers(1, 40),
)
def test_tags_with_real_headers_and_random_bodies_never_raise(
    tags: list[tuple[tuple[int, bytes], bytes, int]], step: int
) -> None:
    """Every codec parser, reached through the demuxer, with arbitrary bodies."""
    data = HEADER + b"".join(tag(kind, ts, prefix + body) for (kind, prefix), body, ts in tags)
    whole = demux(data)
    assert demux(data, step) == whole
    assert (
        sum(1 for e in whole if isinstance(e, Frame | TagSkipped | TrackConfigured))
        <= 2 * len(tags) + 1
    )


def test_the_demuxer_and_the_caps_logic_import_no_gstreamer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rtmp2server.protocol.flvdemux, rtmp2server.gst.caps; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'gi'); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
