"""Legacy FLV and Enhanced RTMP tag headers, byte by byte, and connect negotiation.

Vectors are built from the bit layouts of the E-RTMP v2 specification
(veovera/enhanced-rtmp, docs/enhanced/enhanced-rtmp-v2.md, "Enhanced Audio", "Enhanced
Video", "Enhancing NetConnection connect Command") and the FLV 10.1 specification (E.4.2.1
AUDIODATA, E.4.3.1 VIDEODATA). Each first byte is spelled out bit by bit in its comment.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import amf0
from rtmp2server.protocol.enhanced import (
    AudioPacketType,
    CapsEx,
    FrameType,
    MediaError,
    MultitrackType,
    VideoPacketType,
    classify_audio,
    classify_video,
    client_capabilities,
    fourcc_number,
    select_track,
    server_capabilities,
)
from rtmp2server.protocol.errors import RemoteProtocolError


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


# --- legacy video ---------------------------------------------------------------------------

LEGACY_VIDEO = [
    # 0x17 = frameType 1 (key) | codecId 7 (AVC); AVCPacketType 0 = sequence header; CTS 0
    (b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f", "avc1", 1, VideoPacketType.SEQUENCE_START),
    # 0x17, AVCPacketType 1 = NALU, CTS 0x000021 = 33 ms: a keyframe
    (b"\x17\x01\x00\x00\x21\x00\x00\x00\x02\x09\xf0", "avc1", 1, VideoPacketType.CODED_FRAMES),
    # 0x27 = frameType 2 (inter) | AVC; NALU
    (b"\x27\x01\x00\x00\x00\x00\x00\x00\x02\x09\xf0", "avc1", 2, VideoPacketType.CODED_FRAMES),
    # 0x17, AVCPacketType 2 = end of sequence
    (b"\x17\x02\x00\x00\x00", "avc1", 1, VideoPacketType.SEQUENCE_END),
    # 0x1c = key | codecId 12: the HEVC extension of legacy FLV (SRS, CDNs), AVC layout
    (b"\x1c\x00\x00\x00\x00hvcC", "hvc1", 1, VideoPacketType.SEQUENCE_START),
    # 0x22 = inter | codecId 2, Sorenson H.263: every frame is coded data
    (b"\x22\x00\x00\x84", "h263", 2, VideoPacketType.CODED_FRAMES),
    # 0x14 = key | codecId 4, On2 VP6
    (b"\x14\x00\x00\x00", "vp6", 1, VideoPacketType.CODED_FRAMES),
]


@pytest.mark.parametrize(("payload", "codec", "frame_type", "packet_type"), LEGACY_VIDEO)
def test_legacy_video(payload: bytes, codec: str, frame_type: int, packet_type: int) -> None:
    info = classify_video(payload)
    assert (info.codec, info.frame_type, info.packet_type) == (codec, frame_type, packet_type)
    assert not info.enhanced
    assert info.multitrack is None
    assert info.track_ids == (0,)
    assert info.is_keyframe == (frame_type == 1 and packet_type == VideoPacketType.CODED_FRAMES)
    assert info.is_sequence_header == (packet_type == VideoPacketType.SEQUENCE_START)


def test_legacy_video_command_frame() -> None:
    # 0x57 = frameType 5 (video info/command) | AVC; VideoCommand 0 = StartSeek
    info = classify_video(b"\x57\x00")
    assert info.command == 0
    assert not info.is_keyframe and not info.is_config


# --- enhanced video -------------------------------------------------------------------------

ENHANCED_VIDEO = [
    # 0x90 = isExHeader 1 | frameType 1 (key) | VideoPacketType 0 (SequenceStart); FourCC
    (b"\x90hvc1\x01\x01\x60", "hvc1", 1, VideoPacketType.SEQUENCE_START, False, True),
    # 0x91 = ex | key | CodedFrames: HEVC carries a SI24 composition time first
    (b"\x91hvc1\x00\x00\x21\x00\x00\x00\x05", "hvc1", 1, VideoPacketType.CODED_FRAMES, True, False),
    # 0x93 = ex | key | CodedFramesX: composition time implied 0
    (b"\x93hvc1\x00\x00\x00\x05", "hvc1", 1, VideoPacketType.CODED_FRAMES_X, True, False),
    # 0xa3 = ex | frameType 2 (inter) | CodedFramesX
    (b"\xa3hvc1\x00\x00\x00\x05", "hvc1", 2, VideoPacketType.CODED_FRAMES_X, False, False),
    # 0x90 av01 + AV1CodecConfigurationRecord (marker 1, version 1 = 0x81)
    (b"\x90av01\x81\x08\x0c\x00", "av01", 1, VideoPacketType.SEQUENCE_START, False, True),
    # 0x91 av01: AV1 coded frames have no composition time
    (b"\x91av01\x12\x00\x0a", "av01", 1, VideoPacketType.CODED_FRAMES, True, False),
    # 0x95 = ex | key | MPEG2TSSequenceStart (AV1 video descriptor)
    (b"\x95av01\x80\x04", "av01", 1, VideoPacketType.MPEG2TS_SEQUENCE_START, False, True),
    # 0x90 vp09 + VPCodecConfigurationRecord
    (b"\x90vp09\x01\x00\x00\x00", "vp09", 1, VideoPacketType.SEQUENCE_START, False, True),
    (b"\xa1vp09\x86\x00", "vp09", 2, VideoPacketType.CODED_FRAMES, False, False),
    (b"\x91vp08\x9d\x01\x2a", "vp08", 1, VideoPacketType.CODED_FRAMES, True, False),
    # 0x92 = ex | key | SequenceEnd
    (b"\x92avc1", "avc1", 1, VideoPacketType.SEQUENCE_END, False, False),
    # 0x94 = ex | key | Metadata: AMF "colorInfo" object follows
    (b"\x94hvc1" + amf0.encode("colorInfo", {}), "hvc1", 1, VideoPacketType.METADATA, False, True),
]


@pytest.mark.parametrize(
    ("payload", "codec", "frame_type", "packet_type", "key", "config"), ENHANCED_VIDEO
)
def test_enhanced_video(
    payload: bytes, codec: str, frame_type: int, packet_type: int, key: bool, config: bool
) -> None:
    info = classify_video(payload)
    assert info.enhanced
    assert (info.codec, info.frame_type, info.packet_type) == (codec, frame_type, packet_type)
    assert info.is_keyframe is key
    assert info.is_config is config
    assert info.is_sequence_end == (packet_type == VideoPacketType.SEQUENCE_END)
    (track,) = info.tracks
    assert (track.track_id, track.start, track.end) == (0, 5, len(payload))


def test_enhanced_video_command() -> None:
    # 0xd1 = ex | frameType 5 (command) | CodedFrames: a VideoCommand byte, no FourCC
    info = classify_video(b"\xd1\x01")
    assert info.command == 1
    assert info.tracks == ()
    assert not info.is_keyframe


def test_mod_ex_timestamp_offset_nano() -> None:
    # 0x97 = ex | key | ModEx; size UI8+1 = 3; UI24 123456 ns; then
    # 0x01 = AudioPacketModExType 0 (TimestampOffsetNano) << 4 | next packet type 1 (CodedFrames)
    payload = b"\x97\x02" + u24(123456) + b"\x01hvc1\x00\x00\x00\xaa"
    info = classify_video(payload)
    assert info.nano_offset == 123456
    assert info.packet_type == VideoPacketType.CODED_FRAMES
    assert info.is_keyframe and info.codec == "hvc1"
    assert info.tracks[0].start == 10


def test_mod_ex_16_bit_size() -> None:
    # size byte 255 -> 256 means a UI16+1 size follows: 0x0101 + 1 = 258 bytes of data
    data = u24(999) + bytes(255)
    payload = b"\x97\xff\x01\x01" + data + b"\x01av01\x12"
    info = classify_video(payload)
    assert info.nano_offset == 999 and info.codec == "av01"


def test_video_multitrack_one_track() -> None:
    # 0x96 = ex | key | Multitrack; 0x00 = OneTrack << 4 | SequenceStart; FourCC; trackId 2
    payload = b"\x96\x00av01\x02\x81\x08\x0c\x00"
    info = classify_video(payload)
    assert info.multitrack == MultitrackType.ONE_TRACK
    assert info.packet_type == VideoPacketType.SEQUENCE_START
    assert info.track_ids == (2,)
    assert info.tracks[0].start == 7 and info.tracks[0].end == len(payload)
    assert select_track(payload, info, 2) == b"\x90av01\x81\x08\x0c\x00"
    assert select_track(payload, info, 0) is None


def test_video_multitrack_many_tracks() -> None:
    body0 = b"\x00\x00\x00" + b"A" * 10  # CodedFrames body: SI24 composition time, then data
    body1 = b"\x00\x00\x00" + b"B" * 7
    payload = (
        b"\x96\x11hvc1"  # ex | key | Multitrack; ManyTracks << 4 | CodedFrames; hvc1
        + b"\x01" + u24(len(body1)) + body1
        + b"\x00" + u24(len(body0)) + body0
    )  # fmt: skip
    info = classify_video(payload)
    assert info.multitrack == MultitrackType.MANY_TRACKS
    assert info.track_ids == (1, 0)
    assert info.is_keyframe
    assert select_track(payload, info, 0) == b"\x91hvc1" + body0
    assert select_track(payload, info, 1) == b"\x91hvc1" + body1
    assert select_track(payload, info, 2) is None


def test_video_multitrack_many_codecs_with_mod_ex() -> None:
    body_a = b"\x12\x00"
    body_h = b"\x00\x00\x00\x01\x02"
    payload = (
        b"\xa7\x02" + u24(500) + b"\x06"  # inter | ModEx (nano 500) -> Multitrack
        + b"\x21"  # ManyTracksManyCodecs << 4 | CodedFrames; no shared FourCC
        + b"av01\x00" + u24(len(body_a)) + body_a
        + b"hvc1\x01" + u24(len(body_h)) + body_h
    )  # fmt: skip
    info = classify_video(payload)
    assert info.multitrack == MultitrackType.MANY_TRACKS_MANY_CODECS
    assert [(t.track_id, t.codec) for t in info.tracks] == [(0, "av01"), (1, "hvc1")]
    assert info.nano_offset == 500 and info.frame_type == FrameType.INTER
    # The ModEx prefix is kept; its last byte now names CodedFrames instead of Multitrack.
    assert select_track(payload, info, 1) == b"\xa7\x02" + u24(500) + b"\x01hvc1" + body_h
    again = classify_video(select_track(payload, info, 1) or b"")
    assert again.multitrack is None and again.codec == "hvc1" and again.nano_offset == 500


def test_select_track_of_a_single_track_message() -> None:
    payload = b"\x91hvc1\x00\x00\x00\x05"
    info = classify_video(payload)
    assert select_track(payload, info, 0) is payload
    assert select_track(payload, info, 1) is None


BAD_VIDEO = [
    b"",  # no header at all
    b"\x17\x01\x00",  # AVC without a complete composition time
    b"\x17\x05\x00\x00\x00",  # AVCPacketType 5
    b"\x91hvc",  # FourCC cut short
    b"\x98hvc1",  # VideoPacketType 8 is reserved
    b"\x97\x05\x00",  # ModEx data cut short
    b"\x96\x00",  # Multitrack without FourCC
    b"\x96\x30hvc1\x00",  # multitrack type 3 is reserved
    b"\x96\x16hvc1\x00",  # Multitrack inside Multitrack
    b"\x96\x08hvc1\x00",  # reserved packet type 8 inside Multitrack
    b"\x96\x11hvc1\x00\x00\x00\x09ab",  # track size runs past the end
]


@pytest.mark.parametrize("payload", BAD_VIDEO)
def test_bad_video_raises_media_error(payload: bytes) -> None:
    with pytest.raises(MediaError):
        classify_video(payload)


# --- audio ----------------------------------------------------------------------------------

LEGACY_AUDIO = [
    # 0xaf = SoundFormat 10 (AAC) | rate 3 (44 kHz) | size 1 (16 bit) | type 1 (stereo)
    (b"\xaf\x00\x12\x10", "mp4a", AudioPacketType.SEQUENCE_START),
    (b"\xaf\x01\x21\x00", "mp4a", AudioPacketType.CODED_FRAMES),
    # 0x2f = SoundFormat 2 (MP3)
    (b"\x2f\xff\xfb\x90", ".mp3", AudioPacketType.CODED_FRAMES),
    # 0x72 = SoundFormat 7 (G.711 A-law), 5.5 kHz, 16 bit, mono
    (b"\x72\xd5\xd5", "alaw", AudioPacketType.CODED_FRAMES),
    # 0xb2 = SoundFormat 11 (Speex)
    (b"\xb2\x00", "speex", AudioPacketType.CODED_FRAMES),
]


@pytest.mark.parametrize(("payload", "codec", "packet_type"), LEGACY_AUDIO)
def test_legacy_audio(payload: bytes, codec: str, packet_type: int) -> None:
    info = classify_audio(payload)
    assert (info.codec, info.packet_type, info.enhanced) == (codec, packet_type, False)
    assert info.is_sequence_header == (packet_type == AudioPacketType.SEQUENCE_START)


def test_audio_silence_message() -> None:
    # An empty audio message is the RTMP "silence" message (E-RTMP v2, AudioPacketType notes).
    info = classify_audio(b"")
    assert info.codec == "" and not info.is_config


ENHANCED_AUDIO = [
    # 0x90 = SoundFormat 9 (ExHeader) | AudioPacketType 0 (SequenceStart); "Opus" + ID header
    (b"\x90OpusOpusHead\x01\x02", "Opus", AudioPacketType.SEQUENCE_START, True),
    (b"\x91Opus\xfc\xff\xfe", "Opus", AudioPacketType.CODED_FRAMES, False),
    # fLaC sequence start: "fLaC" signature then the STREAMINFO block
    (b"\x90fLaCfLaC\x80\x00\x00\x22", "fLaC", AudioPacketType.SEQUENCE_START, True),
    (b"\x91fLaC\xff\xf8\x69", "fLaC", AudioPacketType.CODED_FRAMES, False),
    # AC-3 / E-AC-3 need no sequence start: every frame is self-describing
    (b"\x91ac-3\x0b\x77\x00", "ac-3", AudioPacketType.CODED_FRAMES, False),
    (b"\x91ec-3\x0b\x77\x00", "ec-3", AudioPacketType.CODED_FRAMES, False),
    (b"\x90mp4a\x12\x10", "mp4a", AudioPacketType.SEQUENCE_START, True),
    (b"\x91.mp3\xff\xfb", ".mp3", AudioPacketType.CODED_FRAMES, False),
    (b"\x92Opus", "Opus", AudioPacketType.SEQUENCE_END, False),
]


@pytest.mark.parametrize(("payload", "codec", "packet_type", "config"), ENHANCED_AUDIO)
def test_enhanced_audio(payload: bytes, codec: str, packet_type: int, config: bool) -> None:
    info = classify_audio(payload)
    assert info.enhanced and info.sound_format == 9
    assert (info.codec, info.packet_type, info.is_config) == (codec, packet_type, config)
    assert info.tracks[0].start == 5


def test_audio_multichannel_config() -> None:
    # 0x94 = ExHeader | MultichannelConfig; "Opus"; AudioChannelOrder 1 (Native); 6 channels;
    # audioChannelFlags UI32 = FL|FR|FC|LFE1|BL|BR = 0x3f (5.1)
    info = classify_audio(b"\x94Opus\x01\x06\x00\x00\x00\x3f")
    assert info.packet_type == AudioPacketType.MULTICHANNEL_CONFIG
    assert (info.channel_order, info.channel_count) == (1, 6)
    assert info.is_config
    # AudioChannelOrder 2 (Custom): one AudioChannel byte per channel
    info = classify_audio(b"\x94Opus\x02\x02\x00\x01")
    assert (info.channel_order, info.channel_count) == (2, 2)
    with pytest.raises(MediaError):
        classify_audio(b"\x94Opus\x02\x03\x00\x01")  # 3 channels, 2 mapping bytes


def test_audio_multitrack() -> None:
    # 0x95 = ExHeader | Multitrack; 0x11 = ManyTracks << 4 | CodedFrames; "Opus"
    payload = b"\x95\x11Opus" + b"\x00" + u24(2) + b"\xfc\x01" + b"\x03" + u24(3) + b"\xfc\x02\x03"
    info = classify_audio(payload)
    assert info.multitrack == MultitrackType.MANY_TRACKS
    assert info.track_ids == (0, 3)
    assert select_track(payload, info, 0) == b"\x91Opus\xfc\x01"
    assert select_track(payload, info, 3) == b"\x91Opus\xfc\x02\x03"
    # OneTrack: the rest of the message is the track
    payload = b"\x95\x00mp4a\x01\x12\x10"
    info = classify_audio(payload)
    assert info.is_sequence_header and info.track_ids == (1,)
    assert select_track(payload, info, 1) == b"\x90mp4a\x12\x10"


def test_audio_mod_ex() -> None:
    payload = b"\x97\x02" + u24(7) + b"\x01Opus\xfc"
    info = classify_audio(payload)
    assert info.nano_offset == 7 and info.codec == "Opus"
    assert info.packet_type == AudioPacketType.CODED_FRAMES


BAD_AUDIO = [
    b"\xaf",  # AAC without AACPacketType
    b"\xaf\x02",  # AACPacketType 2
    b"\x91Op",  # FourCC cut short
    b"\x93Opus",  # AudioPacketType 3 is reserved
    b"\x95\x15Opus",  # Multitrack inside Multitrack
    b"\x94Opus\x01",  # multichannel config without a count
]


@pytest.mark.parametrize("payload", BAD_AUDIO)
def test_bad_audio_raises_media_error(payload: bytes) -> None:
    with pytest.raises(MediaError):
        classify_audio(payload)


# --- fuzz: the promise of the parsers ---------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_parse_or_raise_media_error(data: bytes) -> None:
    for classify in (classify_video, classify_audio):
        try:
            info = classify(data)
        except MediaError as err:
            assert isinstance(err, RemoteProtocolError)
            continue
        for track in info.tracks:
            assert 0 <= track.start <= track.end <= len(data)
            out = select_track(data, info, track.track_id)
            assert out is not None
            again = classify(out)
            assert again.multitrack is None
            assert again.packet_type == info.packet_type


# --- connect negotiation ----------------------------------------------------------------------


def test_fourcc_numbers_from_the_spec() -> None:
    # "Opus" == 0x4F707573 == 1332770163.0 and "av01" == 0x61763031 == 1635135537.0
    assert fourcc_number("Opus") == 1332770163.0
    assert fourcc_number("av01") == 1635135537.0


def test_client_capabilities() -> None:
    legacy = client_capabilities({"app": "live", "tcUrl": "rtmp://h/live"})
    assert not legacy.enhanced and not legacy.multitrack and not legacy.supports("hvc1")
    # E-RTMP v1: fourCcList only (ffmpeg -rtmp_enhanced_codecs, OBS 29.1)
    v1 = client_capabilities({"fourCcList": ["av01", "vp09", "hvc1"]})
    assert v1.enhanced and v1.multitrack and v1.supports("hvc1") and not v1.supports("Opus")
    # E-RTMP v2: info maps and capsEx
    v2 = client_capabilities(
        {
            "videoFourCcInfoMap": amf0.ECMAArray({"*": 4.0, "vp09": 3.0}),
            "audioFourCcInfoMap": {"Opus": 1.0, "fLaC": 2.0},
            "capsEx": float(CapsEx.RECONNECT | CapsEx.MOD_EX),
        }
    )
    assert v2.enhanced and not v2.multitrack  # capsEx without the Multitrack bit
    assert v2.supports("av01")  # "*" forwards anything
    assert v2.supports("Opus")  # CanDecode
    assert not v2.supports("fLaC")  # CanEncode only; the video "*" says nothing of audio
    wild = client_capabilities({"fourCcList": ["*"], "capsEx": 2.0})
    assert wild.supports("vvc1") and wild.multitrack
    odd = client_capabilities({"fourCcList": "hvc1", "capsEx": True, "videoFourCcInfoMap": 3})
    assert odd.enhanced and odd.fourcc_list == () and odd.caps_ex == 0


def test_server_capabilities_encode_as_amf0() -> None:
    caps = server_capabilities()
    assert caps["capsEx"] == float(CapsEx.MULTITRACK | CapsEx.MOD_EX)
    assert caps["videoFourCcInfoMap"]["hvc1"] == 4.0
    assert amf0.decode_all(amf0.encode(caps)) == [caps]
