"""Live figures of one publish: its tracks, rates and media health, read cheaply as it flows.

This module owns `StreamStats`, a sink attached to every `Stream` by the HTTP side. It never
holds or copies media: per message it reads the tag header (to tell keyframes, frames and
sequence headers apart), the timestamp and the size. Only sequence headers (and, for codecs
that have none, the first frame of a track: AC-3, E-AC-3, MP3, VP9's size) are parsed, with
`protocol.media`, to learn each track's codec, size, frame rate, sample rate and channels.
Wall-clock samples are taken at most once a second, so rates over the sliding window
(`WINDOW` seconds) cost one small ring buffer per stream.

Media health, from the timestamps the publisher sent:

- the measured frame rate (video frames per second of media time over the window);
- the keyframe interval (media time between the last two keyframes);
- audio/video drift (the last video timestamp minus the last audio one);
- timestamp jumps (a step forward of more than `JUMP_MS` in one track) and backward steps;
- the real-time ratio: media time against wall time over the window. An encoder that cannot
  keep up sends less than a second of media per second (ffmpeg prints "speed=0.8x");
- frames dropped for slow players (the relay's count).

`warnings()` turns these into short sentences for the API ("keyframe interval 10 s").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..logs import get_logger
from ..protocol import enhanced, media
from ..protocol.messages import AUDIO, VIDEO, Message
from ..server.registry import Stream

log = get_logger(__name__)

WINDOW: Final = 5.0
"""Seconds of the sliding window of bitrates, frame rate and the real-time ratio."""
JUMP_MS: Final = 1000
"""A forward step of one track's timestamps above this many milliseconds is a jump."""
KEYFRAME_WARN_S: Final = 5.0
"""Keyframe intervals above this many seconds are warned about (a late joiner waits that long;
Twitch and YouTube ask for 2 s, at most 4 s)."""
REALTIME_WARN: Final = 0.9
DRIFT_WARN_MS: Final = 1000
_MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000
# E-RTMP / legacy video: configuration-carrying packet types whose body is parsed.
_LEGACY_CONFIG_CODECS: Final = frozenset({7, 12})  # AVC, HEVC (the FLV 10.1 + ffmpeg id)
# Audio codecs whose configuration (a sequence header or, for AC-3, the first frame) is awaited.
_AUDIO_CONFIGURED: Final = frozenset({"mp4a", "Opus", "fLaC", "ac-3", "ec-3"})


@dataclass
class Track:
    """One track as its sequence header (or first frame) describes it."""

    kind: str
    track_id: int
    codec: str
    config: media.VideoConfig | media.AudioConfig | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "track_id": self.track_id, "codec": self.codec}
        cfg = self.config
        if self.kind == "video":
            cfg = cfg if isinstance(cfg, media.VideoConfig) else media.VideoConfig(self.codec)
            out.update(
                width=cfg.width,
                height=cfg.height,
                fps=cfg.fps,
                profile=cfg.profile,
                level=cfg.level,
                bit_depth=cfg.bit_depth,
            )
        elif self.kind == "audio":
            cfg = cfg if isinstance(cfg, media.AudioConfig) else media.AudioConfig(self.codec)
            out.update(
                sample_rate=cfg.rate,
                channels=cfg.channels,
                profile=cfg.profile,
                bit_depth=cfg.bit_depth,
            )
        return out


class _Clock:
    """One track kind's timestamps: last, steps back, jumps."""

    __slots__ = ("backward", "first", "jumps", "last")

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None
        self.backward = 0
        self.jumps = 0

    def step(self, ts: int) -> None:
        last = self.last
        if last is None:
            self.first = ts
        else:
            delta = (ts - last) & _MASK
            if delta >= _HALF:
                self.backward += 1
            elif delta > JUMP_MS:
                self.jumps += 1
        self.last = ts


class StreamStats:
    """The sink that keeps one stream's figures (see the module docstring).

    `bytes_out` and `dropped` are callables that ask the relay for the totals of the
    stream's players (they are read once a second and when a report is made).
    """

    def __init__(
        self,
        stream: Stream,
        bytes_out: Callable[[], int] = lambda: 0,
        dropped: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.bytes_out = bytes_out
        self.dropped = dropped
        self.clock = clock
        self.tracks: dict[tuple[str, int], Track] = {}
        self.keyframes = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.config_messages = 0
        self.video = _Clock()
        self.audio = _Clock()
        self.last_key_ts: int | None = None
        self.key_interval_ms: int | None = None
        # Video timestamps of the window (for the measured frame rate).
        self.frame_ts: deque[int] = deque(maxlen=4096)
        # (wall time, bytes in, bytes out, media time) about once a second, over the window.
        now = clock()
        self.samples: deque[tuple[float, int, int, int | None]] = deque(
            [(now, 0, 0, None)], maxlen=int(WINDOW) + 3
        )
        self.next_sample = now + 1.0
        self.bad_logged = False
        # Whether the default tracks are configured: coded frames then need no parsing.
        self._video_ready = False
        self._audio_ready = False

    # --- the sink ----------------------------------------------------------------------

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.on_messages(stream, [msg])

    def on_messages(self, stream: Stream, msgs: list[Message]) -> None:
        for msg in msgs:
            t = msg.type_id
            if t == VIDEO:
                self._video(msg)
            elif t == AUDIO:
                self._audio(msg)
        now = self.clock()
        if now >= self.next_sample:
            self.next_sample = now + 1.0
            self.samples.append((now, stream.bytes, self.bytes_out(), self.media_time()))

    def on_end(self, stream: Stream) -> None:
        pass

    def _video(self, msg: Message) -> None:
        p = msg.payload
        if not p:
            return
        b = p[0]
        if b & 0x80:  # E-RTMP ExVideoTagHeader: frame type, then the packet type
            frame_type = (b >> 4) & 7
            packet_type = b & 0x0F
        else:  # legacy: frame type and codec id; AVC and HEVC then an AVCPacketType
            frame_type = b >> 4
            legacy_seq = (b & 0x0F) in _LEGACY_CONFIG_CODECS and len(p) > 1
            packet_type = p[1] if legacy_seq else 1
            if packet_type == 2:
                return
        if frame_type == enhanced.FrameType.COMMAND:
            return
        # Multitrack and ModEx wrap the real packet type: those are parsed to learn it (only
        # E-RTMP multitrack streams pay for that, once per such message).
        wrapped = packet_type in (6, 7)
        coded = packet_type in (1, 3)
        if wrapped or not coded or (not self._video_ready and self._wants_video(frame_type)):
            info = self._parse_video(p)
            if info is None:
                return
            if wrapped:
                packet_type = info.packet_type
                coded = packet_type in (1, 3)
        if not coded:
            return  # sequence start or end, metadata
        ts = msg.timestamp
        self.video.step(ts)
        self.video_frames += 1
        self.frame_ts.append(ts)
        if frame_type in (enhanced.FrameType.KEY, enhanced.FrameType.GENERATED_KEY):
            self.keyframes += 1
            if self.last_key_ts is not None:
                self.key_interval_ms = (ts - self.last_key_ts) & _MASK
            self.last_key_ts = ts

    def _wants_video(self, frame_type: int) -> bool:
        """Whether a coded frame is worth parsing: no video track is known yet, or it is the
        keyframe that gives a VP9 track (whose vpcC has no size) its size."""
        track = self.tracks.get(("video", 0))
        if track is None:
            return True
        cfg = track.config
        if cfg is not None and (track.codec != "vp09" or getattr(cfg, "width", None)):
            self._video_ready = True  # nothing more to learn from coded frames
            return False
        return track.codec == "vp09" and frame_type == enhanced.FrameType.KEY

    def _parse_video(self, p: bytes) -> enhanced.VideoInfo | None:
        """Learn the tracks' configuration from `p`; its classification (None: not valid)."""
        try:
            info = enhanced.classify_video(p)
            for track in info.tracks:
                key = ("video", track.track_id)
                data = p[track.start : track.end]
                if not info.enhanced:
                    data = data[4:]  # AVCPacketType and the composition time
                config: media.VideoConfig | None = None
                if info.is_sequence_header and data:
                    self.config_messages += 1
                    config = media.video_config(track.codec, data)
                elif track.codec == "vp09" and info.is_keyframe:
                    known = self.tracks.get(key)
                    if known is not None and getattr(known.config, "width", None):
                        continue
                    sized = media.vp9_frame_config(data)
                    if sized is not None and known is not None and known.config is not None:
                        old = known.config
                        assert isinstance(old, media.VideoConfig)
                        config = media.VideoConfig(
                            "vp09",
                            record=old.record,
                            width=sized.width,
                            height=sized.height,
                            profile=old.profile,
                            level=old.level,
                            bit_depth=old.bit_depth,
                        )
                    else:
                        config = sized
                if config is not None:
                    self.tracks[key] = Track("video", track.track_id, track.codec, config)
                elif key not in self.tracks:
                    self.tracks[key] = Track("video", track.track_id, track.codec)
        except enhanced.MediaError as err:
            self._bad("video", err)
            return None
        except media.CodecConfigError as err:
            self._bad("video", err)
        return info

    def _audio(self, msg: Message) -> None:
        p = msg.payload
        if not p:
            return
        b = p[0]
        fmt = b >> 4
        if fmt == 9:  # E-RTMP ExAudioTagHeader
            packet_type = b & 0x0F
            config = packet_type in (0, 4, 5)
        elif fmt == 10:  # AAC
            config = len(p) > 1 and p[1] == 0
        else:
            config = False
        # Until a track is configured its frames are looked at: AC-3 and E-AC-3 have no
        # sequence header (ffmpeg 9 sends an empty one), their first frame says the rate.
        if config or not self._audio_ready:
            self._parse_audio(p)
            if config and not (fmt == 9 and b & 0x0F == 5):
                self.config_messages += 1
                return
        ts = msg.timestamp
        self.audio.step(ts)
        self.audio_frames += 1

    def _parse_audio(self, p: bytes) -> None:
        try:
            info = enhanced.classify_audio(p)
            for track in info.tracks:
                key = ("audio", track.track_id)
                data = p[track.start : track.end]
                codec = track.codec
                config: media.AudioConfig | None = None
                if info.is_sequence_header:
                    if data:
                        config = media.audio_config(codec, data)
                elif data and codec in ("ac-3", "ec-3"):
                    config = media.ac3_config(data)
                if config is not None:
                    self.tracks[key] = Track("audio", track.track_id, codec, config)
                elif key not in self.tracks:
                    self.tracks[key] = Track("audio", track.track_id, codec)
        except media.CodecConfigError as err:
            self._bad("audio", err)
        except enhanced.MediaError as err:
            self._bad("audio", err)
        known = self.tracks.get(("audio", 0))
        # Ready once configured, or for a codec whose frames say nothing more (PCM, MP3...).
        self._audio_ready = known is not None and (
            known.config is not None or known.codec not in _AUDIO_CONFIGURED
        )

    def _bad(self, kind: str, err: Exception) -> None:
        if not self.bad_logged:  # the relay and the recorder log the stream's bad media
            self.bad_logged = True
            log.info("stream %s/%s: %s header not understood: %s", *self.stream.key, kind, err)

    # --- figures -----------------------------------------------------------------------

    def media_time(self) -> int | None:
        """The latest timestamp of any track, in ms."""
        lasts = [c.last for c in (self.video, self.audio) if c.last is not None]
        return max(lasts) if lasts else None

    def _base(self) -> tuple[float, int, int, int | None]:
        """The oldest sample inside the window (or the oldest there is)."""
        now = self.clock()
        for sample in self.samples:
            if now - sample[0] <= WINDOW + 0.5:
                return sample
        return self.samples[-1]

    def rates(self) -> tuple[float, float]:
        """Bits per second in and out over the window."""
        when, bytes_in, bytes_out, _ = self._base()
        span = self.clock() - when
        if span <= 0:
            return 0.0, 0.0
        return (
            (self.stream.bytes - bytes_in) * 8 / span,
            (self.bytes_out() - bytes_out) * 8 / span,
        )

    def fps(self) -> float | None:
        """Video frames per second of media time over the last `WINDOW` seconds of it."""
        frames = self.frame_ts
        if len(frames) < 2:
            return None
        last = frames[-1]
        count = 0
        first = last
        for ts in reversed(frames):
            if (last - ts) & _MASK > WINDOW * 1000:
                break
            first = ts
            count += 1
        span = (last - first) & _MASK
        if count < 2 or span <= 0:
            return None
        return (count - 1) * 1000 / span

    def realtime_ratio(self) -> float | None:
        """Media time against wall time over the window; None before half a second of both."""
        now = self.clock()
        media_now = self.media_time()
        for when, _bi, _bo, media_then in self.samples:
            if media_then is None or now - when > WINDOW + 0.5:
                continue
            span = now - when
            if span < 0.5 or media_now is None:
                return None
            return ((media_now - media_then) & _MASK) / 1000 / span
        return None

    def drift_ms(self) -> int | None:
        v, a = self.video.last, self.audio.last
        if v is None or a is None:
            return None
        d = (v - a) & _MASK
        return d - (1 << 32) if d >= _HALF else d

    def key_interval(self) -> float | None:
        """Seconds between the last two keyframes, or since the last one when that is longer
        (a 10 s GOP shows before its second keyframe arrives)."""
        iv = self.key_interval_ms
        if self.last_key_ts is not None and self.video.last is not None:
            since = (self.video.last - self.last_key_ts) & _MASK
            if since < _HALF and (iv is None or since > iv) and since > KEYFRAME_WARN_S * 1000:
                iv = since
        return None if iv is None else iv / 1000

    def health(self) -> dict[str, Any]:
        return {
            "fps": _round(self.fps(), 2),
            "keyframe_interval": _round(self.key_interval(), 3),
            "av_drift_ms": self.drift_ms(),
            "timestamp_jumps": self.video.jumps + self.audio.jumps,
            "timestamp_backward": self.video.backward + self.audio.backward,
            "realtime_ratio": _round(self.realtime_ratio(), 3),
            "dropped_frames": self.dropped(),
        }

    def warnings(self, health: dict[str, Any] | None = None) -> list[str]:
        h = health if health is not None else self.health()
        out = []
        iv = h["keyframe_interval"]
        if iv is not None and iv > KEYFRAME_WARN_S:
            out.append(f"keyframe interval {iv:.0f} s")
        if self.video_frames and self.keyframes == 0:
            out.append("no keyframe yet")
        ratio = h["realtime_ratio"]
        if ratio is not None and ratio < REALTIME_WARN:
            out.append(f"encoder at {ratio:.1f}x real time")
        drift = h["av_drift_ms"]
        if drift is not None and abs(drift) > DRIFT_WARN_MS:
            out.append(f"audio/video drift {drift} ms")
        if h["timestamp_backward"]:
            out.append(f"timestamps went backwards {h['timestamp_backward']} times")
        if h["timestamp_jumps"]:
            out.append(f"timestamps jumped {h['timestamp_jumps']} times")
        if h["dropped_frames"]:
            out.append(f"{h['dropped_frames']} frames dropped for slow players")
        return out


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
