"""Audio and video tag headers: legacy FLV and Enhanced RTMP (veovera E-RTMP v1 and v2).

This module owns what the server needs to know about a media message without decoding it:
which codec, whether it is a keyframe, a sequence header (decoder configuration), a sequence
end, a video command or metadata frame, and for multitrack messages which tracks it carries
and where each track's body lies. It also owns the `connect` capability negotiation of
E-RTMP (`fourCcList`, `videoFourCcInfoMap`, `audioFourCcInfoMap`, `capsEx`).

Bit layouts, from the E-RTMP v2 specification (github.com/veovera/enhanced-rtmp,
docs/enhanced/enhanced-rtmp-v2.md) and the FLV 10.1 specification (annex E.4.2, E.4.3):

- Video, first byte: `isExHeader UB[1]`, `frameType UB[3]`, then either the legacy
  `codecId UB[4]` (7 = AVC, followed by `AVCPacketType UI8` and `CompositionTime SI24`) or,
  when isExHeader is set, `videoPacketType UB[4]`. ModEx packets (type 7) come first:
  `size UI8+1` (256 means `UI16+1` follows), the data, then `modExType UB[4]` and the next
  packet type `UB[4]`. A Multitrack packet (type 6) is followed by `multitrackType UB[4]`
  and the real packet type `UB[4]`, then the FourCC unless the tracks each carry their own
  (ManyTracksManyCodecs). Each track: [FourCC], `trackId UI8`, and unless OneTrack a
  `sizeOfTrack UI24` counting the bytes after it.
- Audio, first byte: `soundFormat UB[4]`; 9 (ExHeader) means the low nibble is an
  `audioPacketType` with the same ModEx and Multitrack framing as video, else the legacy
  `soundRate UB[2] soundSize UB[1] soundType UB[1]` (10 = AAC, followed by
  `AACPacketType UI8`).

Everything here is pure: bytes in, small frozen records out. Malformed input raises
`MediaError` (a `RemoteProtocolError`); a relay or recorder should then pass the message on
unchanged and treat it as an ordinary inter frame rather than close the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, Final

from .errors import RemoteProtocolError

__all__ = [
    "AudioInfo",
    "AudioPacketType",
    "CapsEx",
    "ClientCapabilities",
    "FourCcInfo",
    "FrameType",
    "MediaError",
    "MultitrackType",
    "Track",
    "VideoInfo",
    "VideoPacketType",
    "classify_audio",
    "classify_video",
    "client_capabilities",
    "fourcc_number",
    "select_track",
    "server_capabilities",
]

_U16 = struct.Struct(">H")


class MediaError(RemoteProtocolError):
    """An audio or video tag header that cannot be parsed."""


class FrameType(IntEnum):
    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    COMMAND = 5


class VideoPacketType(IntEnum):
    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6
    MOD_EX = 7


class AudioPacketType(IntEnum):
    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    MULTICHANNEL_CONFIG = 4
    MULTITRACK = 5
    MOD_EX = 7


class MultitrackType(IntEnum):
    ONE_TRACK = 0
    MANY_TRACKS = 1
    MANY_TRACKS_MANY_CODECS = 2


class FourCcInfo(IntFlag):
    """`[audio|video]FourCcInfoMap` values."""

    CAN_DECODE = 0x01
    CAN_ENCODE = 0x02
    CAN_FORWARD = 0x04


class CapsEx(IntFlag):
    """`capsEx` of the E-RTMP `connect` command."""

    RECONNECT = 0x01
    MULTITRACK = 0x02
    MOD_EX = 0x04
    TIMESTAMP_NANO_OFFSET = 0x08


VIDEO_FOURCCS: Final = ("avc1", "hvc1", "vvc1", "av01", "vp09", "vp08")
AUDIO_FOURCCS: Final = ("mp4a", ".mp3", "Opus", "fLaC", "ac-3", "ec-3")

# Legacy FLV codec ids. 12 is the HEVC extension many CDNs and SRS use (same layout as AVC).
LEGACY_VIDEO_CODECS: Final = {
    2: "h263",
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
    7: "avc1",
    12: "hvc1",
}
LEGACY_AUDIO_CODECS: Final = {
    0: "lpcm",
    1: "adpcm",
    2: ".mp3",
    3: "lpcm-le",
    4: "nellymoser16k",
    5: "nellymoser8k",
    6: "nellymoser",
    7: "alaw",
    8: "ulaw",
    10: "mp4a",
    11: "speex",
    14: ".mp3",
    15: "native",
}
_AVC_LIKE = frozenset({7, 12})
_VIDEO_CONFIG = frozenset(
    {
        VideoPacketType.SEQUENCE_START,
        VideoPacketType.MPEG2TS_SEQUENCE_START,
        VideoPacketType.METADATA,
    }
)
_VIDEO_CODED = frozenset({VideoPacketType.CODED_FRAMES, VideoPacketType.CODED_FRAMES_X})
_AUDIO_MEDIA = frozenset({0, 1, 2, 4})
_VIDEO_MEDIA = frozenset(range(6))  # SequenceStart .. MPEG2TSSequenceStart
_KEY_FRAME_TYPES = frozenset({FrameType.KEY, FrameType.GENERATED_KEY})


def fourcc_number(fourcc: str) -> float:
    """The number `onMetaData` carries for a FourCC ("av01" -> 1635135537.0)."""
    return float(int.from_bytes(fourcc.encode("latin-1"), "big"))


@dataclass(frozen=True, slots=True)
class Track:
    """One track of a media message: its id, codec and where its body lies in the payload."""

    track_id: int
    codec: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video message is.

    `packet_type` is a `VideoPacketType`; legacy AVC/HEVC packet types map onto it (0 sequence
    header -> SEQUENCE_START, 1 NALU -> CODED_FRAMES, 2 end of sequence -> SEQUENCE_END) and
    other legacy codecs are CODED_FRAMES. `multitrack` is None for single-track messages.
    """

    codec: str
    frame_type: int
    packet_type: int
    enhanced: bool
    tracks: tuple[Track, ...]
    multitrack: int | None = None
    command: int | None = None
    nano_offset: int = 0

    @property
    def is_keyframe(self) -> bool:
        """A coded keyframe: a point where a decoder (with the sequence header) can start."""
        return self.frame_type in _KEY_FRAME_TYPES and self.packet_type in _VIDEO_CODED

    @property
    def is_sequence_header(self) -> bool:
        return self.packet_type in (
            VideoPacketType.SEQUENCE_START,
            VideoPacketType.MPEG2TS_SEQUENCE_START,
        )

    @property
    def is_config(self) -> bool:
        """Decoder configuration a late joiner needs: sequence headers and metadata frames."""
        return self.command is None and self.packet_type in _VIDEO_CONFIG

    @property
    def is_sequence_end(self) -> bool:
        return self.packet_type == VideoPacketType.SEQUENCE_END

    @property
    def track_ids(self) -> tuple[int, ...]:
        return tuple(t.track_id for t in self.tracks)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What an audio message is.

    `packet_type` is an `AudioPacketType`; the legacy AACPacketType maps onto it (0 sequence
    header, 1 raw) and other legacy formats are CODED_FRAMES. An empty message is the RTMP
    "silence" message: codec "", sound format -1, no tracks.
    """

    codec: str
    sound_format: int
    packet_type: int
    enhanced: bool
    tracks: tuple[Track, ...]
    multitrack: int | None = None
    nano_offset: int = 0
    channel_order: int | None = None  # MultichannelConfig
    channel_count: int | None = None

    @property
    def is_sequence_header(self) -> bool:
        return self.packet_type == AudioPacketType.SEQUENCE_START

    @property
    def is_config(self) -> bool:
        return self.packet_type in (
            AudioPacketType.SEQUENCE_START,
            AudioPacketType.MULTICHANNEL_CONFIG,
        )

    @property
    def is_sequence_end(self) -> bool:
        return self.packet_type == AudioPacketType.SEQUENCE_END

    @property
    def track_ids(self) -> tuple[int, ...]:
        return tuple(t.track_id for t in self.tracks)


# --- parsing ------------------------------------------------------------------------------


def _need(payload: bytes, pos: int, n: int, what: str, kind: str) -> None:
    if pos + n > len(payload):
        raise MediaError(
            f"{kind} message of {len(payload)} bytes: {what} needs bytes {pos}..{pos + n - 1}, "
            "expected a complete header"
        )


def _fourcc(payload: bytes, pos: int, kind: str) -> str:
    _need(payload, pos, 4, "FourCC", kind)
    return payload[pos : pos + 4].decode("latin-1")


def _mod_ex(payload: bytes, pos: int, packet_type: int, kind: str) -> tuple[int, int, int]:
    """Skip ModEx packets starting at `pos` (just after the first byte).

    Returns (position after them, the packet type they lead to, TimestampOffsetNano or 0).
    """
    nano = 0
    while packet_type == 7:
        _need(payload, pos, 1, "ModEx size", kind)
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            _need(payload, pos, 2, "ModEx 16-bit size", kind)
            size = _U16.unpack_from(payload, pos)[0] + 1
            pos += 2
        _need(payload, pos, size + 1, f"{size}-byte ModEx data and type", kind)
        data = payload[pos : pos + size]
        pos += size
        b = payload[pos]
        pos += 1
        if b >> 4 == 0 and size >= 3:  # TimestampOffsetNano, UI24
            nano = (data[0] << 16) | (data[1] << 8) | data[2]
        packet_type = b & 0x0F
    return pos, packet_type, nano


def _tracks(payload: bytes, pos: int, mt_type: int, fourcc: str, kind: str) -> tuple[Track, ...]:
    """The tracks of a multitrack message; `pos` is where the first track starts."""
    if mt_type > MultitrackType.MANY_TRACKS_MANY_CODECS:
        raise MediaError(
            f"{kind} message: multitrack type {mt_type}, expected 0 (OneTrack), "
            "1 (ManyTracks) or 2 (ManyTracksManyCodecs)"
        )
    n = len(payload)
    tracks: list[Track] = []
    while True:
        if mt_type == MultitrackType.MANY_TRACKS_MANY_CODECS:
            fourcc = _fourcc(payload, pos, kind)
            pos += 4
        _need(payload, pos, 1, "track id", kind)
        track_id = payload[pos]
        pos += 1
        if mt_type == MultitrackType.ONE_TRACK:
            tracks.append(Track(track_id, fourcc, pos, n))
            break
        _need(payload, pos, 3, "track size", kind)
        size = (payload[pos] << 16) | (payload[pos + 1] << 8) | payload[pos + 2]
        pos += 3
        end = pos + size
        if end > n:
            raise MediaError(
                f"{kind} message of {n} bytes: track {track_id} of {size} bytes at offset "
                f"{pos} runs past the end, expected it to fit"
            )
        tracks.append(Track(track_id, fourcc, pos, end))
        pos = end
        if pos >= n:
            break
    return tuple(tracks)


def _multitrack(
    payload: bytes, pos: int, kind: str, media_types: frozenset[int], expected: str
) -> tuple[int, int, tuple[Track, ...], str]:
    """The multitrack header at `pos`: (multitrack type, inner packet type, tracks, codec)."""
    _need(payload, pos, 1, "multitrack type", kind)
    b = payload[pos]
    pos += 1
    mt_type = b >> 4
    packet_type = b & 0x0F
    if packet_type not in media_types:
        raise MediaError(
            f"{kind} multitrack message: inner packet type {packet_type}, "
            f"expected a media packet type ({expected})"
        )
    fourcc = ""
    if mt_type != MultitrackType.MANY_TRACKS_MANY_CODECS:
        fourcc = _fourcc(payload, pos, kind)
        pos += 4
    tracks = _tracks(payload, pos, mt_type, fourcc, kind)
    return mt_type, packet_type, tracks, fourcc or tracks[0].codec


def classify_video(payload: bytes) -> VideoInfo:
    """Parse the (Ex)VideoTagHeader of a video message payload."""
    if not payload:
        raise MediaError("video message of 0 bytes, expected at least a tag header")
    b0 = payload[0]
    frame_type = (b0 >> 4) & 0x07
    n = len(payload)
    if not b0 & 0x80:
        codec_id = b0 & 0x0F
        codec = LEGACY_VIDEO_CODECS.get(codec_id, f"codec{codec_id}")
        if frame_type == FrameType.COMMAND:
            command = payload[1] if n > 1 else 0
            return VideoInfo(
                codec, frame_type, VideoPacketType.CODED_FRAMES, False, (), command=command
            )
        if codec_id in _AVC_LIKE:
            if n < 5:
                raise MediaError(
                    f"{codec} video message of {n} bytes, expected at least 5 "
                    "(header, packet type, composition time)"
                )
            avc_type = payload[1]
            if avc_type > 2:
                raise MediaError(
                    f"{codec} video message: AVCPacketType {avc_type}, expected 0, 1 or 2"
                )
            return VideoInfo(codec, frame_type, avc_type, False, (Track(0, codec, 1, n),))
        track = Track(0, codec, 1, n)
        return VideoInfo(codec, frame_type, VideoPacketType.CODED_FRAMES, False, (track,))
    packet_type = b0 & 0x0F
    pos = 1
    nano = 0
    if packet_type == VideoPacketType.MOD_EX:
        pos, packet_type, nano = _mod_ex(payload, pos, packet_type, "video")
    if packet_type != VideoPacketType.METADATA and frame_type == FrameType.COMMAND:
        _need(payload, pos, 1, "video command", "video")
        return VideoInfo(
            "", frame_type, packet_type, True, (), command=payload[pos], nano_offset=nano
        )
    if packet_type == VideoPacketType.MULTITRACK:
        mt_type, packet_type, tracks, codec = _multitrack(
            payload, pos, "video", _VIDEO_MEDIA, "0-5"
        )
        return VideoInfo(
            codec, frame_type, packet_type, True, tracks, multitrack=mt_type, nano_offset=nano
        )
    if packet_type > VideoPacketType.MPEG2TS_SEQUENCE_START:
        raise MediaError(f"video message: packet type {packet_type}, expected 0-7")
    fourcc = _fourcc(payload, pos, "video")
    pos += 4
    track = Track(0, fourcc, pos, n)
    return VideoInfo(fourcc, frame_type, packet_type, True, (track,), nano_offset=nano)


def classify_audio(payload: bytes) -> AudioInfo:
    """Parse the (Ex)AudioTagHeader of an audio message payload."""
    n = len(payload)
    if not n:
        return AudioInfo("", -1, AudioPacketType.CODED_FRAMES, False, ())
    b0 = payload[0]
    sound_format = b0 >> 4
    if sound_format != 9:
        codec = LEGACY_AUDIO_CODECS.get(sound_format, f"format{sound_format}")
        packet_type: int = AudioPacketType.CODED_FRAMES
        start = 1
        if sound_format == 10:
            if n < 2:
                raise MediaError("AAC audio message of 1 byte, expected an AACPacketType")
            aac_type = payload[1]
            if aac_type > 1:
                raise MediaError(f"AAC audio message: AACPacketType {aac_type}, expected 0 or 1")
            packet_type = aac_type
            start = 2
        track = Track(0, codec, start, n)
        return AudioInfo(codec, sound_format, packet_type, False, (track,))
    packet_type = b0 & 0x0F
    pos = 1
    nano = 0
    if packet_type == AudioPacketType.MOD_EX:
        pos, packet_type, nano = _mod_ex(payload, pos, packet_type, "audio")
    mt_type: int | None = None
    if packet_type == AudioPacketType.MULTITRACK:
        mt_type, packet_type, tracks, codec = _multitrack(
            payload, pos, "audio", _AUDIO_MEDIA, "0, 1, 2, 4"
        )
    else:
        fourcc = _fourcc(payload, pos, "audio")
        pos += 4
        tracks = (Track(0, fourcc, pos, n),)
        codec = fourcc
    if packet_type not in _AUDIO_MEDIA:
        raise MediaError(f"audio message: packet type {packet_type}, expected 0, 1, 2, 4, 5 or 7")
    order = count = None
    if packet_type == AudioPacketType.MULTICHANNEL_CONFIG:
        first = tracks[0]
        _need(payload, first.start, 2, "channel order and count", "audio")
        order = payload[first.start]
        count = payload[first.start + 1]
        need = count if order == 2 else 4 if order == 1 else 0
        _need(payload, first.start + 2, need, "channel mapping", "audio")
    return AudioInfo(
        codec,
        9,
        packet_type,
        True,
        tracks,
        multitrack=mt_type,
        nano_offset=nano,
        channel_order=order,
        channel_count=count,
    )


def select_track(payload: bytes, info: VideoInfo | AudioInfo, track_id: int) -> bytes | None:
    """The message as a single-track message carrying only `track_id`, or None if absent.

    For players that did not announce multitrack support: a multitrack message becomes an
    ordinary E-RTMP message (ModEx packets kept) with the track's FourCC and body; a message
    that is not multitrack is returned unchanged when `track_id` is 0 (its implicit id).
    """
    if info.multitrack is None:
        return payload if track_id == 0 else None
    for track in info.tracks:
        if track.track_id == track_id:
            break
    else:
        return None
    is_video = isinstance(info, VideoInfo)
    multitrack_type = 6 if is_video else 5
    # Find the byte whose low nibble says "Multitrack": the first byte, or the last byte of
    # the ModEx chain. Rebuild the prefix up to it with the inner packet type in its place.
    b0 = payload[0]
    if b0 & 0x0F == multitrack_type:
        prefix = bytes(((b0 & 0xF0) | info.packet_type,))
    else:
        end, packet_type, _ = _mod_ex(payload, 1, b0 & 0x0F, "video" if is_video else "audio")
        if packet_type != multitrack_type:  # pragma: no cover - classify said multitrack
            return None
        last = payload[end - 1]
        prefix = payload[: end - 1] + bytes(((last & 0xF0) | info.packet_type,))
    return b"".join((prefix, track.codec.encode("latin-1"), payload[track.start : track.end]))


# --- connect negotiation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCapabilities:
    """What a client announced in its `connect` command object."""

    fourcc_list: tuple[str, ...] = ()
    video_fourcc_info: tuple[tuple[str, int], ...] = ()
    audio_fourcc_info: tuple[tuple[str, int], ...] = ()
    caps_ex: int = 0
    announced: bool = False  # any of the E-RTMP properties was present

    @property
    def enhanced(self) -> bool:
        """The client announced E-RTMP support."""
        return self.announced

    @property
    def multitrack(self) -> bool:
        """The client may be sent multitrack messages.

        CapsEx.Multitrack says so explicitly; a client that announced E-RTMP codecs but no
        capsEx at all (E-RTMP v1, before capsEx existed) is trusted to parse them too.
        """
        if self.caps_ex:
            return bool(self.caps_ex & CapsEx.MULTITRACK)
        return self.announced

    def supports(self, fourcc: str) -> bool:
        """The client said it can decode or forward `fourcc` (or any codec, "*")."""
        if "*" in self.fourcc_list or fourcc in self.fourcc_list:
            return True
        info = self.audio_fourcc_info if fourcc in AUDIO_FOURCCS else self.video_fourcc_info
        for name, flags in info:
            if (name == "*" or name == fourcc) and flags & (
                FourCcInfo.CAN_DECODE | FourCcInfo.CAN_FORWARD
            ):
                return True
        return False


NO_CAPABILITIES: Final = ClientCapabilities()


def _info_map(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        return ()
    out: list[tuple[str, int]] = []
    for key, flags in value.items():
        if isinstance(key, str) and isinstance(flags, (int, float)) and not isinstance(flags, bool):
            out.append((key, int(flags)))
    return tuple(out)


def client_capabilities(command_object: Mapping[str, Any]) -> ClientCapabilities:
    """Read the E-RTMP properties of a `connect` command object, ignoring malformed ones."""
    keys = ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx")
    if not any(k in command_object for k in keys):
        return NO_CAPABILITIES
    raw_list = command_object.get("fourCcList")
    fourccs: tuple[str, ...] = ()
    if isinstance(raw_list, (list, tuple)):
        fourccs = tuple(v for v in raw_list if isinstance(v, str))
    elif isinstance(raw_list, Mapping):  # some clients send an ECMA array
        fourccs = tuple(v for v in raw_list.values() if isinstance(v, str))
    caps = command_object.get("capsEx", 0)
    caps_ex = int(caps) if isinstance(caps, (int, float)) and not isinstance(caps, bool) else 0
    return ClientCapabilities(
        fourccs,
        _info_map(command_object.get("videoFourCcInfoMap")),
        _info_map(command_object.get("audioFourCcInfoMap")),
        caps_ex,
        True,
    )


def server_capabilities() -> dict[str, Any]:
    """The E-RTMP properties the server adds to connect's `_result`: it forwards (relays and
    records) every codec unchanged, parses ModEx and relays multitrack messages."""
    forward = float(FourCcInfo.CAN_FORWARD)
    return {
        "videoFourCcInfoMap": {"*": forward, **{f: forward for f in VIDEO_FOURCCS}},
        "audioFourCcInfoMap": {"*": forward, **{f: forward for f in AUDIO_FOURCCS}},
        "capsEx": float(CapsEx.MULTITRACK | CapsEx.MOD_EX),
    }
