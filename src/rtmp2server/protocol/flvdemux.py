"""A sans-IO FLV demuxer: bytes of an FLV stream in, tracks and elementary-stream frames out.

This module owns turning an FLV byte stream (a file, or `rtmp2serversrc`'s output) into what
a player needs per track: a `TrackConfigured` event whenever a track's decoder configuration
is new or changes (a sequence header, or for AC-3, E-AC-3, MP3 and VP9 without one the first
frame), and one `Frame` per coded frame with its decode and presentation times, keyframe
flag and the elementary-stream bytes (the tag body after its (Ex)VideoTagHeader /
(Ex)AudioTagHeader, and for AVC/HEVC after the composition time). Tracks are keyed by kind
("video"/"audio") and the Enhanced RTMP track id (0 for ordinary single-track tags).

Framing is FLV 10.1 annex E (via `flv`), tag headers are parsed by `enhanced`, codec headers
by `media`. A new FLV header in the middle of the bytes (a new publisher behind a looping
`rtmp2serversrc`) starts a new stream: `StreamStarted` again, and every track must send its
configuration again.

Bad input never raises: a tag whose header or body cannot be parsed gives one `TagSkipped`
event (with the offset, what arrived and what was expected) and the demuxer goes on. A tag
header that cannot be a tag (an unknown type, a non-zero stream id, a size above
`max_tag_size`) means the framing was lost: the demuxer then scans forward for the next
position where a plausible tag header is followed by its matching PreviousTagSize.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Final

from . import enhanced, media
from .errors import RemoteProtocolError
from .flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO

__all__ = [
    "Event",
    "FLVDemuxer",
    "Frame",
    "StreamStarted",
    "TagSkipped",
    "TrackConfigured",
    "TracksComplete",
]

DEFAULT_MAX_TAG_SIZE: Final = 16 * 1024 * 1024
DEFAULT_TRACKS_WAIT_MS: Final = 2000

_U32 = struct.Struct(">I")
_TAG_TYPES: Final = frozenset({TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT})
# Codecs whose frames a decoder cannot use without the sequence header that precedes them.
_NEEDS_CONFIG: Final = frozenset({"avc1", "hvc1", "av01", "mp4a", "Opus", "fLaC"})
# E-RTMP CodedFrames of these carry an SI24 composition time first (E-RTMP v2, ExVideoTagBody).
_HAS_CTS: Final = frozenset({"avc1", "hvc1"})
_LEGACY_MP3_RATES: Final = (5512, 11025, 22050, 44100)


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """An FLV header: a new stream begins; `audio`/`video` are the header's flags."""

    audio: bool
    video: bool


@dataclass(frozen=True, slots=True)
class TrackConfigured:
    """A track's configuration is new or changed; `new` is True the first time in a stream."""

    kind: str  # "video" or "audio"
    track_id: int
    config: media.VideoConfig | media.AudioConfig
    new: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """One coded frame of a track. Times are milliseconds; `pts` = `dts` + composition time."""

    kind: str
    track_id: int
    codec: str
    dts: int
    pts: int
    keyframe: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class TracksComplete:
    """Every track the header announced has its configuration (or the wait for them ended);
    later tracks may still appear."""


@dataclass(frozen=True, slots=True)
class TagSkipped:
    """A tag (or a stretch of bytes) that was not understood and was skipped."""

    offset: int
    tag_type: int
    timestamp: int
    reason: str


Event = StreamStarted | TrackConfigured | Frame | TracksComplete | TagSkipped


class _Track:
    __slots__ = ("config", "need_sequence_header")

    def __init__(self, config: media.VideoConfig | media.AudioConfig) -> None:
        self.config = config
        self.need_sequence_header = True  # AV1: until a keyframe has carried one in-band


class FLVDemuxer:
    """Feed bytes with `receive_data`; it returns the events they complete.

    `rebase`: times count from the first tag after each FLV header (for a live source whose
    segment starts at its first buffer); otherwise they are the tag timestamps.
    `tracks_wait_ms`: how much stream time after the first tag `TracksComplete` waits for
    the announced tracks' configurations.
    """

    def __init__(
        self,
        *,
        max_tag_size: int = DEFAULT_MAX_TAG_SIZE,
        rebase: bool = False,
        tracks_wait_ms: int = DEFAULT_TRACKS_WAIT_MS,
    ) -> None:
        self.max_tag_size = max_tag_size
        self.rebase = rebase
        self.tracks_wait_ms = tracks_wait_ms
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._have_header = False
        self._lost_sync = False
        self._begin_stream()

    def _begin_stream(self) -> None:
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._expected: set[str] = set()
        self._complete = False
        self._first_ts: int | None = None
        self._last_config_ts = 0
        self._warned_unconfigured: set[tuple[str, int]] = set()

    @property
    def tracks(self) -> dict[tuple[str, int], media.VideoConfig | media.AudioConfig]:
        """The configuration of each track seen in the current stream."""
        return {key: t.config for key, t in self._tracks.items()}

    def reset(self) -> None:
        """Forget everything (a flush, a seek): the next bytes start with an FLV header."""
        self._buf.clear()
        self._offset = 0
        self._have_header = False
        self._lost_sync = False
        self._begin_stream()

    def receive_data(self, data: bytes) -> list[Event]:
        """Add `data`; return the events of every tag it completes."""
        self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    # --- framing -------------------------------------------------------------------------

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _step(self, events: list[Event]) -> bool:
        buf = self._buf
        if len(buf) >= 3 and buf[:3] == b"FLV":  # at a tag boundary: "F" (70) is no tag type
            if len(buf) < 13:
                return False
            size = _U32.unpack_from(buf, 5)[0]
            if size < 9 or size > 1024:
                events.append(TagSkipped(self._offset, 0, 0, f"FLV header size {size}, expected 9"))
                self._consume(3)
                self._lost_sync = True
                return True
            if len(buf) < size + 4:
                return False
            flags = buf[4]
            self._consume(size + 4)
            self._have_header = True
            self._lost_sync = False
            self._begin_stream()
            audio, video = bool(flags & 0x04), bool(flags & 0x01)
            self._expected = {k for k, on in (("audio", audio), ("video", video)) if on}
            events.append(StreamStarted(audio, video))
            return True
        if not self._have_header:
            if len(buf) >= 3:
                events.append(
                    TagSkipped(
                        self._offset, 0, 0, f"stream starts {bytes(buf[:3])!r}, expected b'FLV'"
                    )
                )
                self._have_header = True  # demux what follows as tags, resynchronising
                self._lost_sync = True
                return True
            return False
        if self._lost_sync:
            return self._resync(events)
        if len(buf) < 11:
            return False
        tag_type, size, timestamp = self._tag_header(0)
        if tag_type not in _TAG_TYPES or buf[8:11] != b"\x00\x00\x00" or size > self.max_tag_size:
            events.append(
                TagSkipped(
                    self._offset,
                    tag_type,
                    timestamp,
                    f"tag header type {tag_type}, {size} bytes, stream id {buf[8:11].hex()}; "
                    f"expected type 8, 9 or 18, at most {self.max_tag_size} bytes, stream id 0",
                )
            )
            self._lost_sync = True
            self._consume(1)
            return True
        if len(buf) < 15 + size:
            return False
        body = bytes(buf[11 : 11 + size])
        offset = self._offset
        self._consume(15 + size)
        self._tag(offset, tag_type, timestamp, body, events)
        return True

    def _tag_header(self, pos: int) -> tuple[int, int, int]:
        buf = self._buf
        tag_type = buf[pos] & 0x1F
        size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
        ts = (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6] | (buf[pos + 7] << 24)
        return tag_type, size, ts

    def _plausible(self, pos: int) -> bool | None:
        """A tag header at `pos` followed by its PreviousTagSize; None: not enough bytes."""
        buf = self._buf
        if buf[pos : pos + 3] == b"FLV":
            return True
        if pos + 11 > len(buf):
            return None
        tag_type, size, _ = self._tag_header(pos)
        if tag_type not in _TAG_TYPES or buf[pos + 8 : pos + 11] != b"\x00\x00\x00":
            return False
        if size > self.max_tag_size:
            return False
        end = pos + 11 + size
        if end + 4 > len(buf):
            return None
        return bool(_U32.unpack_from(buf, end)[0] == size + 11)

    def _resync(self, events: list[Event]) -> bool:
        buf = self._buf
        pos = 0
        while pos < len(buf):
            found = self._plausible(pos)
            if found is None:
                break
            if found:
                self._consume(pos)
                self._lost_sync = False
                return True
            pos += 1
        # Keep what may still start a tag; drop the rest. A candidate that waits for its
        # PreviousTagSize can hold at most max_tag_size + 15 bytes.
        if pos:
            self._consume(pos)
        return False

    # --- tags ----------------------------------------------------------------------------

    def _time(self, timestamp: int) -> int:
        if self._first_ts is None:
            self._first_ts = timestamp
        if self.rebase:
            return max(0, timestamp - self._first_ts)
        return timestamp

    def _tag(
        self, offset: int, tag_type: int, timestamp: int, body: bytes, out: list[Event]
    ) -> None:
        if tag_type == TAG_SCRIPT:
            self._time(timestamp)
            return
        try:
            if tag_type == TAG_VIDEO:
                self._video(timestamp, body, out)
            else:
                self._audio(timestamp, body, out)
        except RemoteProtocolError as err:
            kind = "video" if tag_type == TAG_VIDEO else "audio"
            out.append(
                TagSkipped(offset, tag_type, timestamp, f"{kind} tag of {len(body)} bytes: {err}")
            )

    def _configure(
        self,
        kind: str,
        track_id: int,
        config: media.VideoConfig | media.AudioConfig,
        dts: int,
        out: list[Event],
    ) -> None:
        key = (kind, track_id)
        track = self._tracks.get(key)
        self._last_config_ts = max(self._last_config_ts, dts)
        if track is not None and track.config == config:
            return
        self._tracks[key] = _Track(config)
        out.append(TrackConfigured(kind, track_id, config, track is None))

    def _frame(self, frame: Frame, out: list[Event]) -> None:
        if not self._complete and self._first_ts is not None:
            have = {kind for kind, _ in self._tracks}
            waited = frame.dts - (0 if self.rebase else self._first_ts)
            if (self._expected <= have and frame.dts > self._last_config_ts) or (
                waited >= self.tracks_wait_ms
            ):
                self._complete = True
                out.append(TracksComplete())
        out.append(frame)

    def _video(self, timestamp: int, body: bytes, out: list[Event]) -> None:
        info = enhanced.classify_video(body)
        dts = self._time(timestamp)
        if info.command is not None or info.packet_type in (
            enhanced.VideoPacketType.METADATA,
            enhanced.VideoPacketType.SEQUENCE_END,
            enhanced.VideoPacketType.MPEG2TS_SEQUENCE_START,
        ):
            return
        for track in info.tracks:
            data = body[track.start : track.end]
            codec = track.codec
            cts = 0
            if not info.enhanced:
                if codec not in ("avc1", "hvc1"):
                    # Sorenson H.263, VP6, Screen video: announced once as a track of that
                    # codec (the element reports it has no caps for it), frames not passed on.
                    self._configure("video", track.track_id, media.VideoConfig(codec), dts, out)
                    continue
                cts = _si24(data, 1)
                data = data[4:]
            elif info.packet_type == enhanced.VideoPacketType.CODED_FRAMES and codec in _HAS_CTS:
                cts = _si24(data, 0)
                data = data[3:]
            key = ("video", track.track_id)
            if info.is_sequence_header:
                if data:
                    self._configure(
                        "video", track.track_id, media.video_config(codec, data), dts, out
                    )
                continue
            if not data:  # an empty packet (ffmpeg ends FLAC so) is nothing to decode
                continue
            state = self._tracks.get(key)
            if state is None or state.config.codec != codec:
                if codec == "vp09":
                    config = media.vp9_frame_config(data) if info.is_keyframe else None
                    if config is None:
                        self._unconfigured(key, codec, out, timestamp)
                        continue
                    self._configure("video", track.track_id, config, dts, out)
                    state = self._tracks[key]
                else:
                    self._unconfigured(key, codec, out, timestamp)
                    continue
            keyframe = info.is_keyframe
            current = state.config
            if (
                codec == "vp09"
                and keyframe
                and isinstance(current, media.VideoConfig)
                and current.width is None
            ):
                # vpcC has no size: the first keyframe's header gives it (for caps and for
                # anyone reporting the track's resolution).
                sized = media.vp9_frame_config(data)
                if sized is not None:
                    resized = dataclasses.replace(current, width=sized.width, height=sized.height)
                    self._configure("video", track.track_id, resized, dts, out)
                    state = self._tracks[key]
            if codec == "av01" and keyframe:
                data = self._av1_in_band(state, data)
            self._frame(
                Frame("video", track.track_id, codec, dts, max(0, dts + cts), keyframe, data), out
            )

    def _av1_in_band(self, track: _Track, data: bytes) -> bytes:
        """Make sure a decoder that ignores codec_data (av1parse 1.22) meets the sequence
        header: if the first keyframe after a configuration lacks one, insert the record's
        after the temporal delimiter. ffmpeg and OBS repeat it on keyframes anyway."""
        if not track.need_sequence_header:
            return data
        track.need_sequence_header = False
        if media.av1_has_sequence_header(data):
            return data
        header = getattr(track.config, "sequence_header", b"")
        if not header:
            return data
        obus = media.av1_obus(data)
        cut = obus[0][2] if obus and obus[0][0] == media.OBU_TEMPORAL_DELIMITER else 0
        return data[:cut] + header + data[cut:]

    def _unconfigured(self, key: tuple[str, int], codec: str, out: list[Event], ts: int) -> None:
        """A frame before its track's sequence header: dropped (a decoder could not use it),
        with one notice per track."""
        if key in self._warned_unconfigured:
            return
        self._warned_unconfigured.add(key)
        out.append(
            TagSkipped(
                self._offset,
                TAG_VIDEO if key[0] == "video" else TAG_AUDIO,
                ts,
                f"{key[0]} track {key[1]}: {codec} frame before its sequence header, "
                "expected the sequence header first (frames dropped until it arrives)",
            )
        )

    def _audio(self, timestamp: int, body: bytes, out: list[Event]) -> None:
        info = enhanced.classify_audio(body)
        dts = self._time(timestamp)
        if not info.tracks or info.packet_type in (
            enhanced.AudioPacketType.MULTICHANNEL_CONFIG,
            enhanced.AudioPacketType.SEQUENCE_END,
        ):
            return
        for track in info.tracks:
            data = body[track.start : track.end]
            codec = track.codec
            key = ("audio", track.track_id)
            if info.is_sequence_header:
                if data or codec not in ("ac-3", "ec-3"):
                    config = media.audio_config(codec, data)
                    self._configure("audio", track.track_id, config, dts, out)
                continue
            if not data:
                continue
            state = self._tracks.get(key)
            if state is None or state.config.codec != codec:
                if codec in _NEEDS_CONFIG:
                    self._unconfigured(key, codec, out, timestamp)
                    continue
                if codec in ("ac-3", "ec-3"):
                    config = media.ac3_config(data)
                elif codec == ".mp3" and not info.enhanced:
                    config = _legacy_mp3(body[0])
                elif codec == ".mp3":
                    config = media.AudioConfig(".mp3")
                else:  # PCM, Nellymoser, Speex, G.711: a track without caps (see video)
                    config = media.AudioConfig(codec)
                self._configure("audio", track.track_id, config, dts, out)
            self._frame(Frame("audio", track.track_id, codec, dts, dts, True, data), out)


def _si24(data: bytes, pos: int) -> int:
    if len(data) < pos + 3:
        raise media.CodecConfigError(
            f"video packet of {len(data)} bytes, expected a 3-byte composition time"
        )
    value = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
    return value - (1 << 24) if value & 0x800000 else value


def _legacy_mp3(flags: int) -> media.AudioConfig:
    """MP3 in a legacy audio tag: rate and channels from the tag's flags (format 14: 8 kHz)."""
    rate = 8000 if flags >> 4 == 14 else _LEGACY_MP3_RATES[(flags >> 2) & 3]
    return media.AudioConfig(".mp3", b"", rate=rate, channels=2 if flags & 1 else 1)
