"""The live relay: players of published streams, a GOP cache, and back-pressure per player.

This module owns everything between a publish and the clients that `play` it. One `Channel`
per (app, stream name) is attached as a sink to each publish of that name (through the
registry's `on_start` observers, independently of the publish handler that records or routes
it). A channel keeps what a player joining mid-stream needs: the last `onMetaData`, the
decoder configuration of every track (AVC/HEVC/AV1/VP9 sequence headers, AAC/Opus/FLAC
sequence headers, multichannel configs, video metadata frames), and the messages since the
last keyframe (the GOP cache, bounded in messages and bytes). A joining player gets them in
that order, so its first decoded frame is the cached keyframe, then live messages.

Players are fanned out to without slowing anyone down:

- what one read of the publisher brought is framed once for each cohort of players that
  stand in the same place of the same timeline (timestamp offset, last timestamps, message
  stream id, framing) and the same bytes, joined into one piece, are queued to each of them;
  players that are paused, filtered or waiting for a keyframe, and configuration and
  multitrack messages, go message by message, framed once per distinct (timestamp, message
  stream id, variant). Every message starts with a type-0 chunk header, so its bytes do not
  depend on what a player got before. Players joining in the same loop turn share the
  framed GOP the same way;
- queued bytes go out in one write per player per event-loop turn;
- a player whose socket buffer grows past its bound stops receiving until the next keyframe
  (logged and counted): its memory stays bounded and the publisher and the other players never
  wait for it.

Timestamps are rebased per player: the first media message it gets is at (about) zero and
they never go backwards, across an unpublish and a returning publisher, or a publisher whose
clock jumps back, too. A player of a stream that is not published waits
(`NetStream.Play.PublishNotify` when it starts) or gets `NetStream.Play.StreamNotFound` after
`RelayConfig.play_wait`.

When the publisher stops (or is taken over, see `StreamRegistry`), its players are told
nothing for `RelayConfig.republish_grace` seconds: a publisher that comes back within that
gap (an encoder reconnecting) is played on as if it had never left, with timestamps going on
from where they were, its metadata and sequence headers, and video from its first keyframe.
Only when the gap outlasts the grace do players get `NetStream.Play.UnpublishNotify` and then
User Control Stream EOF; ffmpeg, rtmpdump (librtmp) and GStreamer's rtmp2src end their play on
those, so a gap must be hidden from them or it ends them. A player that stays connected after
that waits `RelayConfig.play_wait` more for a publisher to come back
(`NetStream.Play.PublishNotify`), as a new player would, then gets
`NetStream.Play.StreamNotFound` and is detached.

Players that did not announce Enhanced RTMP multitrack support in `connect` get only the
default track (track id 0) of multitrack streams, rewritten as ordinary E-RTMP messages.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..config import RelayConfig as RelayConfig  # its old home: re-exported
from ..logs import get_logger
from ..protocol.chunk import ChunkWriter
from ..protocol.connection import CSID_AUDIO, CSID_DATA, CSID_VIDEO
from ..protocol.enhanced import (
    AudioInfo,
    MediaError,
    VideoInfo,
    classify_audio,
    classify_video,
    select_track,
)
from ..protocol.events import PauseRequest, PlayRequest, ReceiveMedia, StreamClosed
from ..protocol.messages import (
    AUDIO,
    DATA_AMF0,
    ON_METADATA,
    PLAIN_KEY,
    PLAIN_VIDEO,
    VIDEO,
    Message,
    UserControlEvent,
    plain_frame,
    plain_frames,
)
from .registry import Stream, StreamKey, StreamRegistry

if TYPE_CHECKING:
    from .server import Session

log = get_logger(__name__)

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_METADATA_KEY = (DATA_AMF0, 0, 0)
DEFAULT_TRACK = 0
_UNSET: Any = object()
STREAM_EOF_DELAY = 0.25  # seconds between UnpublishNotify and User Control Stream EOF
DISCONTINUITY = 1000  # ms a publisher's timestamp may go back before it counts as a restart


def frame_message(
    csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes, chunk_size: int
) -> bytes:
    """One message as chunks with a type-0 first header: bytes valid whatever came before."""
    return ChunkWriter(chunk_size).write(csid, timestamp, type_id, stream_id, payload)


class Output(Protocol):
    """Where a player's messages go: the relay's whole view of a player's connection.

    The relay frames each media message once per distinct `framing` (`frame`) and queues the
    same bytes to every player that shares it (`write`); `flush` writes out what was queued;
    `buffered` says how many bytes are still waiting in the socket's buffer (the slow-player
    rule); `drain` does both at once. The rest are the notices of a play's life, which an
    output that has no such messages (HTTP-FLV) may ignore, or answer by ending
    (`stream_eof`, `not_found`).
    """

    owner: Any  # the connection (an RTMP `Session`, an HTTP player): .id, .ip, .peer
    multitrack: bool  # takes E-RTMP multitrack messages as they are
    framing: int  # equal for outputs whose `frame` gives the same bytes

    @property
    def closed(self) -> bool: ...

    def frame(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def send_data(self, sid: int, ts: int, payload: bytes) -> None: ...

    def flush(self) -> None: ...

    def buffered(self) -> int: ...

    def drain(self) -> int | None:
        """`flush`, then `buffered`; None, writing nothing, when the output is closed."""
        ...

    def publish_notify(self, sid: int, name: str) -> None: ...

    def unpublish_notify(self, sid: int, name: str) -> None: ...

    def stream_eof(self, sid: int) -> None: ...

    def not_found(self, sid: int, name: str, description: str) -> None: ...


def flush_then_buffered(out: Output) -> int | None:
    """`Output.drain` for an output with no faster way: `flush`, then `buffered`."""
    if out.closed:
        return None
    out.flush()
    return out.buffered()


class RTMPOutput:
    """An RTMP session's message stream as a player `Output`."""

    __slots__ = ("conn", "framing", "multitrack", "owner", "session", "write")

    def __init__(self, session: Session) -> None:
        self.session = self.owner = session
        self.conn = conn = session.conn
        self.write = conn.send_raw
        self.framing = conn.out_chunk_size
        self.multitrack = conn.capabilities.multitrack

    @property
    def closed(self) -> bool:
        return self.session.closed

    def frame(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> bytes:
        return frame_message(csid, ts, type_id, sid, payload, self.framing)

    def send_data(self, sid: int, ts: int, payload: bytes) -> None:
        self.conn.send_message(CSID_DATA, ts, DATA_AMF0, sid, payload)

    def flush(self) -> None:
        self.session.flush()

    def buffered(self) -> int:
        transport = self.session.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def drain(self) -> int | None:
        session = self.session
        transport = session.transport
        if session.closed or transport is None:
            return None
        session.flush()
        return transport.get_write_buffer_size()

    def publish_notify(self, sid: int, name: str) -> None:
        self.conn.send_user_control(UserControlEvent.STREAM_BEGIN, sid)
        self.conn.send_status(
            sid, "status", "NetStream.Play.PublishNotify", f"{name} is now published.", details=name
        )

    def unpublish_notify(self, sid: int, name: str) -> None:
        self.conn.send_status(
            sid,
            "status",
            "NetStream.Play.UnpublishNotify",
            f"{name} is now unpublished.",
            details=name,
        )

    def stream_eof(self, sid: int) -> None:
        self.conn.send_user_control(UserControlEvent.STREAM_EOF, sid)

    def not_found(self, sid: int, name: str, description: str) -> None:
        self.conn.end_play(sid)
        self.conn.send_status(
            sid, "error", "NetStream.Play.StreamNotFound", description, details=name
        )


class _Entry:
    """A relayed media message and what it means to a player."""

    __slots__ = ("_legacy", "info", "msg")

    def __init__(self, msg: Message, info: VideoInfo | AudioInfo | None) -> None:
        self.msg = msg
        self.info = info  # set only for multitrack messages (those need a legacy variant)
        self._legacy: bytes | None = _UNSET

    def legacy_payload(self) -> bytes | None:
        """The payload for players without multitrack support (None: nothing for them)."""
        info = self.info
        if info is None:
            return self.msg.payload
        if self._legacy is _UNSET:
            self._legacy = select_track(self.msg.payload, info, DEFAULT_TRACK)
        return self._legacy


class Player:
    """One (connection, message stream) playing a channel, through its `Output`."""

    __slots__ = (
        "audio",
        "audio_frames",
        "bytes_out",
        "channel",
        "data_messages",
        "dirty",
        "dropped",
        "first_key",
        "floor",
        "frame",
        "framing",
        "gated",
        "headers_sent",
        "joined",
        "last",
        "limit",
        "max_buffer",
        "multitrack",
        "name",
        "need_key",
        "offset",
        "out",
        "paused",
        "send_raw",
        "session",
        "sid",
        "skipping",
        "skips",
        "timer",
        "video",
        "video_frames",
        "video_key",
        "waiting",
    )

    def __init__(self, out: Output, sid: int, name: str, limit: int) -> None:
        self.out = out
        self.session = out.owner  # the connection: .id, .ip, .peer (webhooks, the API)
        self.send_raw = out.write
        self.frame = out.frame
        self.sid = sid
        self.name = name
        self.framing = out.framing
        self.multitrack = out.multitrack
        self.channel: Channel | None = None
        self.audio = True  # receiveAudio
        self.video = True  # receiveVideo
        self.paused = False
        self.need_key = True  # video (and audio with it) waits for a keyframe
        self.video_key = True  # video alone waits for a keyframe (audio flows)
        self.skipping = False  # fell behind: dropping until a keyframe
        self.gated = True  # any of the above: `Channel._admit` decides per message
        self.offset: int | None = None  # out timestamp = publisher timestamp - offset
        self.floor = 0  # the out timestamp the current publish starts at
        self.last = [0, 0, 0]  # last out timestamp per kind (index: type id & 3)
        self.limit = limit
        # Its own bound instead of `RelayConfig.player_max_buffer` (a push target's).
        self.max_buffer: int | None = None
        self.dirty = False
        self.headers_sent: dict[tuple[int, int, int], Message] = {}
        self.timer: asyncio.TimerHandle | None = None
        # Told that nothing is published (joined before the publisher, or the grace of a gap
        # ran out): a publish that starts is announced to it with PublishNotify.
        self.waiting = False
        self.joined = time.monotonic()
        self.first_key: float | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.data_messages = 0
        self.dropped = 0
        self.skips = 0
        self.bytes_out = 0  # media bytes queued to it (the HTTP API's bytes out)

    def regate(self) -> None:
        self.gated = (
            self.paused or self.need_key or self.video_key or not self.audio or not self.video
        )

    @property
    def peer(self) -> str:
        return str(self.session.peer)

    def out_ts(self, ts: int, type_id: int) -> int:
        """The player's timestamp for a message of `type_id` at publisher timestamp `ts`:
        rebased to start at `floor`, and never before the last one of the same kind."""
        off = self.offset
        if off is None:
            self.offset = off = (ts - self.floor) & _MASK
        out = (ts - off) & _MASK
        last = self.last
        i = type_id & 3  # data 18 -> 2, audio 8 -> 0, video 9 -> 1
        if (out - last[i]) & _MASK >= _HALF:
            return self.behind(ts, out, i)
        last[i] = out
        return out

    def behind(self, ts: int, out: int, i: int) -> int:
        """`out` is before the last timestamp of its kind: hold it there, or, when the
        publisher's clock jumped back (it restarted its timestamps), continue from there."""
        last = self.last[i]
        if (last - out) & _MASK <= DISCONTINUITY:
            return last  # ordinary jitter between interleaved messages
        out = (last + 1) & _MASK
        self.offset = (ts - out) & _MASK
        self.last[i] = out
        return out

    def rebase(self) -> None:
        """The next message (of a new publish) comes just after everything sent so far."""
        top = self.floor
        for value in self.last:
            if (value - top) & _MASK < _HALF:
                top = value
        self.floor = (top + 1) & _MASK
        self.last = [self.floor] * 3
        self.offset = None


class Channel:
    """One stream name: its live publish (if any), its caches and its players."""

    def __init__(self, relay: Relay, key: StreamKey) -> None:
        self.relay = relay
        self.key = key
        self.stream: Stream | None = None
        self.players: list[Player] = []
        self.headers: dict[tuple[int, int, int], _Entry] = {}
        self.gop: list[Message | _Entry] = []
        self.gop_headers: list[_Entry] = []
        self.gop_bytes = 0
        self.gop_min_ts = 0
        self.caching = False
        # Until when a stream nobody plays caches its GOP (`RelayConfig.gop_cache_idle`).
        self.cache_until = -math.inf
        # The bounds of the GOP being cached (the configuration's as of its keyframe).
        self.gop_max_messages = 0
        self.gop_max_bytes = 0
        # The cached GOP as framed for the players that joined since its keyframe, by where
        # they stood (`_send_gop`).
        self._joins: dict[tuple[Any, ...], _Run] = {}
        self.has_video = False
        self._dirty: list[Player] = []
        self._flush_pending = False
        self._bad_media_logged = False
        # A publisher gap (publish ended, players kept), until `republish_grace` runs out.
        self.gap = False
        self.grace: asyncio.TimerHandle | None = None
        self.gap_started = 0.0

    def __repr__(self) -> str:
        return f"<Channel {self.key[0]}/{self.key[1]} players={len(self.players)}>"

    # --- the publish side (Sink) ---------------------------------------------------------

    def attach(self, stream: Stream) -> None:
        self.stream = stream
        stream.add_sink(self)
        gap = time.monotonic() - self.gap_started if self.gap else None
        self._end_gap()
        waiting = 0
        for p in self.players:
            if p.timer is not None:
                p.timer.cancel()
                p.timer = None
            if p.waiting:
                p.waiting = False
                waiting += 1
                p.out.publish_notify(p.sid, p.name)
            # Players kept through a gap get nothing that could end or reset their play:
            # the new publish goes on in their timeline (`Player.rebase`).
            self._restart(p)
            p.out.flush()
        if gap is not None:
            log.info(
                "relay %s/%s: publisher back after %.2f s; %d player(s) go on from its first "
                "keyframe",
                *self.key,
                gap,
                len(self.players) - waiting,
            )
        if waiting:
            log.info(
                "relay %s/%s: publish started, %d waiting player(s) notified",
                *self.key,
                waiting,
            )

    def on_end(self, stream: Stream) -> None:
        if stream is not self.stream:
            return
        self.stream = None
        for p in self.players:
            p.rebase()
        self.headers = {}
        self._drop_gop()
        self.has_video = False
        if not self.players:
            self.relay._forget(self)
            return
        grace = self.relay.config.republish_grace
        if grace > 0:
            self.gap_started = time.monotonic()
            self.gap = True
            if math.isfinite(grace):
                self.grace = asyncio.get_running_loop().call_later(grace, self._grace_over)
            log.info(
                "relay %s/%s: publish ended; %d player(s) kept for %g s for a publisher to return",
                *self.key,
                len(self.players),
                grace,
            )
        else:
            self._unpublished()

    def _end_gap(self) -> None:
        self.gap = False
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None

    def _grace_over(self) -> None:
        self.grace = None
        self.gap = False
        if self.stream is not None:
            return
        log.info(
            "relay %s/%s: no publisher within %g s",
            *self.key,
            self.relay.config.republish_grace,
        )
        self._unpublished()

    def _unpublished(self) -> None:
        """Tell every player the publish is over (UnpublishNotify, then Stream EOF); those
        that stay wait `play_wait` for one that comes back."""
        for p in self.players:
            if p.waiting:
                continue
            p.waiting = True
            p.out.unpublish_notify(p.sid, p.name)
            p.out.flush()
            # Stream EOF a moment later: GStreamer's rtmp2src stops at once on it and drops
            # the message it has not handed downstream yet (the stream's last one).
            if p.timer is not None:
                p.timer.cancel()
            p.timer = asyncio.get_running_loop().call_later(STREAM_EOF_DELAY, _stream_eof, p)
        log.info(
            "relay %s/%s: publish ended; %d player(s) told so",
            *self.key,
            len(self.players),
        )

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.on_messages(stream, [msg])

    def on_messages(self, stream: Stream, msgs: list[Message]) -> None:
        if not self.players:
            # The usual read of a stream nobody plays: plain frames and no keyframe, looked
            # over in one compiled step, then cached as they are (if a GOP is) in one step.
            kind, size, min_ts = plain_frames(msgs, self.gop_min_ts)
            if kind >= 0 and not kind & PLAIN_KEY:
                if kind & PLAIN_VIDEO:
                    self.has_video = True
                if self.caching and self.relay.config.gop_cache:
                    self.gop += msgs
                    self.gop_bytes += size
                    self.gop_min_ts = min_ts
                    if len(self.gop) > self.gop_max_messages or (
                        self.gop_bytes > self.gop_max_bytes
                    ):
                        self._gop_too_long()
                return
        cache = self.relay.config.gop_cache
        # Plain frames go to the players as one run (`_fan_out_run`) once the read's messages
        # are looked at, or before the first message that needs more (configuration, data,
        # multitrack), so that every player gets them in order. They are cached as they are
        # (`Message`s; only multitrack messages need an `_Entry`).
        run: list[tuple[Message, bool, bool, bool]] = []
        for msg in msgs:
            t = msg.type_id
            if t == DATA_AMF0:
                if run:
                    self._fan_out_run(run)
                    run = []
                self._on_data(msg)
                continue
            is_video = t == VIDEO
            # The common case first, from the first two bytes: an H.264 frame (AVC NALU
            # packet) or an AAC frame (raw packet): no configuration, no multitrack.
            plain = plain_frame(msg)
            if plain >= 0:
                key = (plain & PLAIN_KEY) != 0
                if is_video:
                    self.has_video = True
                if cache:
                    if key:
                        self._cache(msg, msg, True)
                    elif self.caching:
                        # `_cache`, inlined: this runs for every frame of every publish.
                        self.gop.append(msg)
                        self.gop_bytes += msg.size
                        if (msg.timestamp - self.gop_min_ts) & _MASK >= _HALF:
                            self.gop_min_ts = msg.timestamp
                        if len(self.gop) > self.gop_max_messages or (
                            self.gop_bytes > self.gop_max_bytes
                        ):
                            self._gop_too_long()
                if self.players:
                    run.append((msg, is_video, key, self.has_video))
                continue
            entry, key, hkeys = self._on_media(msg, is_video)
            if not self.players:
                continue
            if hkeys is None and entry.info is None:
                run.append((msg, is_video, key, self.has_video))
                continue
            if run:
                self._fan_out_run(run)
                run = []
            self._fan_out(entry, is_video, key, hkeys)
        if run:
            self._fan_out_run(run)

    def _on_media(
        self, msg: Message, is_video: bool
    ) -> tuple[_Entry, bool, list[tuple[int, int, int]] | None]:
        """Any audio or video message: classified in full (the Enhanced RTMP path), cached;
        returns what its fan-out needs: the entry, whether it is a keyframe, and the header
        keys it sets (None: it is no configuration)."""
        t = msg.type_id
        key = False
        hkeys: list[tuple[int, int, int]] | None = None
        info: VideoInfo | AudioInfo | None = None
        try:
            info = classify_video(msg.payload) if is_video else classify_audio(msg.payload)
        except MediaError as err:
            if not self._bad_media_logged:
                self._bad_media_logged = True
                log.warning(
                    "relay %s/%s: %s; relaying such messages as plain frames", *self.key, err
                )
        if is_video:
            self.has_video = True
        entry = _Entry(msg, None if info is None or info.multitrack is None else info)
        if info is not None:
            if info.is_config:
                hkeys = [(t, track_id, info.packet_type) for track_id in info.track_ids]
                for hkey in hkeys:
                    self.headers[hkey] = entry
            elif info.is_sequence_end:
                ended = set(info.track_ids)
                self.headers = {
                    k: e for k, e in self.headers.items() if k[0] != t or k[1] not in ended
                }
            elif type(info) is VideoInfo:
                key = info.is_keyframe and (
                    info.multitrack is None or DEFAULT_TRACK in info.track_ids
                )
        if self.relay.config.gop_cache:
            self._cache(msg if entry.info is None else entry, msg, key)
        return entry, key, hkeys

    def _on_data(self, msg: Message) -> None:
        metadata = msg.payload.startswith(ON_METADATA)
        if metadata:
            self.headers[_METADATA_KEY] = _Entry(msg, None)
        for p in self.players:
            if p.paused or p.need_key:
                continue
            p.out.send_data(p.sid, p.out_ts(msg.timestamp, DATA_AMF0), msg.payload)
            p.data_messages += 1
            if metadata:
                p.headers_sent[_METADATA_KEY] = msg
            self._mark(p)

    # --- GOP cache -----------------------------------------------------------------------

    def _cache(self, item: Message | _Entry, msg: Message, key: bool) -> None:
        """Cache `msg` (as `item`: itself, or its `_Entry` when it is multitrack)."""
        if key:
            if not self.players and not self._cache_unplayed():
                if self.caching:
                    self._drop_gop()
                return
            self.gop = [item]
            if self._joins:
                self._joins = {}
            # Decoder configuration as of this keyframe (metadata is sent as of the join).
            self.gop_headers = _unique(e for k, e in self.headers.items() if k != _METADATA_KEY)
            self.gop_bytes = msg.size
            self.gop_min_ts = msg.timestamp
            self.caching = True
            cfg = self.relay.config
            self.gop_max_messages = cfg.gop_max_messages
            self.gop_max_bytes = cfg.gop_max_bytes
            return
        if not self.caching:
            return
        self.gop.append(item)
        self.gop_bytes += msg.size
        ts = msg.timestamp
        if (ts - self.gop_min_ts) & _MASK >= _HALF:
            self.gop_min_ts = ts
        if len(self.gop) > self.gop_max_messages or self.gop_bytes > self.gop_max_bytes:
            self._gop_too_long()

    def _cache_unplayed(self) -> bool:
        """May this stream, which nobody plays, cache the GOP that starts now?"""
        idle = self.relay.config.gop_cache_idle
        return idle == math.inf or time.monotonic() < self.cache_until

    def _gop_too_long(self) -> None:
        log.info(
            "relay %s/%s: GOP of more than %d messages / %d bytes; not cached until the "
            "next keyframe",
            *self.key,
            self.gop_max_messages,
            self.gop_max_bytes,
        )
        self._drop_gop()

    def _drop_gop(self) -> None:
        self.gop = []
        self._joins = {}
        self.gop_headers = []
        self.gop_bytes = 0
        self.caching = False

    # --- players -------------------------------------------------------------------------

    def add(self, p: Player) -> None:
        p.channel = self
        self.players = [*self.players, p]
        if self.stream is not None:
            self._restart(p)

    def remove(self, p: Player) -> None:
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        self.players = [q for q in self.players if q is not p]
        p.channel = None
        if not self.players:
            self.cache_until = time.monotonic() + self.relay.config.gop_cache_idle
        if not self.players and self.stream is None:
            self._end_gap()
            self.relay._forget(self)

    def _restart(self, p: Player) -> None:
        """Start `p` on the live publish: metadata, decoder configuration, cached GOP."""
        p.offset = None
        p.skipping = False
        p.headers_sent = {}
        if self.gop:
            metadata = self.headers.get(_METADATA_KEY)
            headers = self.gop_headers if metadata is None else [metadata, *self.gop_headers]
            self._send_headers(p, headers, p.floor)
            p.offset = (self.gop_min_ts - p.floor) & _MASK
            self._send_gop(p)
            p.need_key = p.video_key = False
            p.regate()
            p.first_key = time.monotonic()
            log.info(
                "play %s/%s: peer=%s joins from the GOP cache (%d messages, %d bytes)",
                *self.key,
                p.peer,
                len(self.gop),
                self.gop_bytes,
            )
            p.limit = (p.max_buffer or self.relay.config.player_max_buffer) + self.gop_bytes
        else:
            self._send_headers(p, _unique(self.headers.values()), p.floor)
            # No video yet (a player waiting when the publish starts): audio and configuration
            # flow from the start, as the recording gets them, video from its first keyframe.
            # Mid-stream without a cached GOP: everything waits for the next keyframe.
            p.need_key = self.has_video
            p.video_key = True
            p.regate()
        self._mark(p)

    def _send_headers(self, p: Player, entries: list[_Entry], ts: int) -> None:
        """Send metadata and decoder configuration at timestamp `ts`."""
        for entry in sorted(entries, key=_header_order):
            msg = entry.msg
            t = msg.type_id
            if t == DATA_AMF0:
                p.out.send_data(p.sid, ts, msg.payload)
                p.data_messages += 1
                continue
            payload = msg.payload if p.multitrack else entry.legacy_payload()
            if payload is not None:
                csid = CSID_VIDEO if t == VIDEO else CSID_AUDIO
                p.send_raw(p.frame(csid, ts, t, p.sid, payload))
        for k, entry in self.headers.items():
            if any(entry is e for e in entries):
                p.headers_sent[k] = entry.msg

    def _send_gop(self, p: Player) -> None:
        """The cached GOP to a joining `p`. Players that join in the same place of the same
        timeline, with the same filters, get the same bytes: the GOP is framed once for them
        (each later joiner frames only what was cached since) and they share those pieces, so
        that a joiner that does not read holds no copy of its own. Forgotten at each
        keyframe."""
        gop = self.gop
        last = p.last
        key = (
            p.offset,
            last[0],
            last[1],
            last[2],
            p.sid,
            p.framing,
            p.multitrack,
            p.video,
            p.audio,
        )
        run = self._joins.get(key)
        if run is not None and run.count <= len(gop):
            p.offset = run.offset
            last[0], last[1], last[2] = run.last
            pieces = list(run.pieces)
            start, size, video, audio = run.count, run.size, run.video, run.audio
        else:
            pieces = []
            start = size = video = audio = 0
        if start < len(gop):
            new = _frame_items(p, itertools.islice(gop, start, None))
            pieces += new.pieces
            size += new.size
            video += new.video
            audio += new.audio
        assert p.offset is not None
        run = self._joins[key] = _Run(
            pieces, p.offset, (last[0], last[1], last[2]), size, video, audio, len(gop)
        )
        run.send_to(p)

    def _resume(self, p: Player, ts: int) -> bool:
        """At a keyframe (publisher timestamp `ts`): may `p` start receiving again? Sends the
        metadata and configuration it has not got yet."""
        if p.skipping:
            size = p.out.buffered()
            if size > p.limit // 2:
                return False
            log.info(
                "play %s/%s: peer=%s caught up (%d bytes queued); resuming at a keyframe "
                "after %d dropped messages",
                *self.key,
                p.peer,
                size,
                p.dropped,
            )
            p.skipping = False
            p.limit = p.max_buffer or self.relay.config.player_max_buffer
        p.need_key = p.video_key = False
        p.regate()
        stale = [e for k, e in self.headers.items() if p.headers_sent.get(k) is not e.msg]
        if stale:
            self._send_headers(p, _unique(stale), p.out_ts(ts, DATA_AMF0))
        if p.first_key is None:
            p.first_key = time.monotonic()
            log.info(
                "play %s/%s: peer=%s first keyframe %.0f ms after play",
                *self.key,
                p.peer,
                (p.first_key - p.joined) * 1000,
            )
        return True

    def _fan_out(
        self, entry: _Entry, is_video: bool, key: bool, hkeys: list[tuple[int, int, int]] | None
    ) -> None:
        """One message to every player (configuration and multitrack messages)."""
        memo: dict[tuple[int, int, bool, int], bytes | None] = {}
        has_video = self.has_video
        msg = entry.msg
        for p in self.players:
            self._send_one(p, msg, entry, is_video, key, hkeys, has_video, memo)
        self._schedule_flush()

    def _fan_out_run(self, run: list[tuple[Message, bool, bool, bool]]) -> None:
        """Plain frames of one read (no configuration, no multitrack), in order, to every
        player: (entry, is_video, is_keyframe, has_video as of that message).

        Players that take everything as it comes (not gated) and stand in the same place of
        the same timeline (timestamp offset, last timestamp of each kind, message stream id,
        framing) get the same bytes: the run is framed once for each such cohort, and each of
        its players gets the same one piece. Gated players go message by message."""
        cohorts: dict[tuple[int, int, int, int, int, int], _Run] = {}
        memos: list[dict[tuple[int, int, bool, int], bytes | None]] | None = None
        dirty = self._dirty
        for p in self.players:
            off = p.offset
            if p.gated or off is None:
                if memos is None:
                    memos = [{} for _ in run]
                for (msg, is_video, key, has_video), memo in zip(run, memos, strict=True):
                    self._send_one(p, msg, None, is_video, key, None, has_video, memo)
                continue
            last = p.last
            ckey = (off, last[0], last[1], last[2], p.sid, p.framing)
            framed = cohorts.get(ckey)
            if framed is None:
                framed = cohorts[ckey] = _frame_items(p, (msg for msg, *_ in run))
            else:
                p.offset = framed.offset
                last[0], last[1], last[2] = framed.last
            framed.send_to(p)
            p.bytes_out += framed.size
            if not p.dirty:
                p.dirty = True
                dirty.append(p)
        self._schedule_flush()

    def _send_one(
        self,
        p: Player,
        msg: Message,
        entry: _Entry | None,
        is_video: bool,
        key: bool,
        hkeys: list[tuple[int, int, int]] | None,
        has_video: bool,
        memo: dict[tuple[int, int, bool, int], bytes | None],
    ) -> None:
        """One message to one player, if it is admitted; `entry` is set for a multitrack
        message; `memo` shares the framed bytes between the players of the same message."""
        t = msg.type_id
        ts = msg.timestamp
        if p.gated and not self._admit(p, is_video, key, hkeys is not None, has_video, ts):
            return
        legacy = entry is not None and entry.info is not None and not p.multitrack
        out = p.out_ts(ts, t)
        mkey = (out, p.sid, legacy, p.framing)
        data = memo.get(mkey, _UNSET)
        if data is _UNSET:
            payload = entry.legacy_payload() if entry is not None and legacy else msg.payload
            csid = CSID_VIDEO if is_video else CSID_AUDIO
            data = memo[mkey] = None if payload is None else p.frame(csid, out, t, p.sid, payload)
        if data is None:
            return
        p.send_raw(data)
        p.bytes_out += len(data)
        if is_video:
            p.video_frames += 1
        else:
            p.audio_frames += 1
        if hkeys is not None:
            for hkey in hkeys:
                p.headers_sent[hkey] = msg
        if not p.dirty:
            p.dirty = True
            self._dirty.append(p)

    def _schedule_flush(self) -> None:
        if self._dirty and not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _admit(
        self, p: Player, is_video: bool, key: bool, config: bool, has_video: bool, ts: int
    ) -> bool:
        """The slow path of `_fan_out` for a player that is paused, filtered or waiting for a
        keyframe: does this message go to it?"""
        if p.paused:
            return False
        if is_video:
            if not p.video:
                return False
            if (p.need_key or p.video_key) and not config and (not key or not self._resume(p, ts)):
                p.dropped += p.skipping
                return False
        else:
            if not p.audio:
                return False
            if p.need_key and not config and ((has_video and p.video) or not self._resume(p, ts)):
                p.dropped += p.skipping
                return False
        return True

    def _mark(self, p: Player) -> None:
        if not p.dirty:
            p.dirty = True
            self._dirty.append(p)
        self._schedule_flush()

    def _flush(self) -> None:
        """Write what each player got this loop turn; start skipping for those behind."""
        self._flush_pending = False
        dirty = self._dirty
        self._dirty = []
        base_limit = self.relay.config.player_max_buffer
        for p in dirty:
            p.dirty = False
            size = p.out.drain()
            if size is None or p.skipping:
                continue
            base = p.max_buffer or base_limit
            limit = p.limit
            if limit > base and size <= base:
                p.limit = limit = base  # the join burst has drained
            if size > limit:
                p.skipping = True
                p.need_key = True
                p.regate()
                p.skips += 1
                log.warning(
                    "play %s/%s: peer=%s is %d bytes behind (bound %d); dropping until a "
                    "keyframe (skip #%d)",
                    *self.key,
                    p.peer,
                    size,
                    p.limit,
                    p.skips,
                )


class _Run:
    """A run of messages framed for one cohort of players (`Channel._fan_out_run`), and
    where it leaves their timeline."""

    __slots__ = ("audio", "count", "last", "offset", "pieces", "size", "video")

    def __init__(
        self,
        pieces: list[bytes],
        offset: int,
        last: tuple[int, int, int],
        size: int,
        video: int,
        audio: int,
        count: int = 0,
    ) -> None:
        self.pieces = pieces
        self.count = count  # the messages framed (of a GOP, for joiners)
        self.offset = offset
        self.last = last
        self.size = size
        self.video = video
        self.audio = audio

    def send_to(self, p: Player) -> None:
        """Queue the run to `p` (whose timeline is where the run leaves it)."""
        for data in self.pieces:
            p.send_raw(data)
        p.video_frames += self.video
        p.audio_frames += self.audio


def _frame_entry(p: Player, item: Message | _Entry) -> bytes | None:
    """A message framed for `p` (moving its timeline on), or None when it gets nothing of it
    (filtered, or no default track for a player without multitrack)."""
    if type(item) is Message:
        msg = item
        payload: bytes | None = msg.payload
    else:
        entry = cast(_Entry, item)
        msg = entry.msg
        payload = msg.payload if p.multitrack else entry.legacy_payload()
    t = msg.type_id
    if (t == VIDEO and not p.video) or (t == AUDIO and not p.audio):
        return None
    if payload is None:
        return None
    csid = CSID_VIDEO if t == VIDEO else CSID_AUDIO
    ts = p.out_ts(msg.timestamp, t)
    return p.frame(csid, ts, t, p.sid, payload)


def _frame_items(p: Player, items: Iterable[Message | _Entry]) -> _Run:
    """Frame `items` for `p` (its offset set), moving its timeline on: what every player in
    the same place of the same timeline gets. Outputs whose framed messages are bytes (RTMP
    chunks, FLV tags) get them joined into one piece."""
    pieces: list[bytes] = []
    video = audio = 0
    for item in items:
        data = _frame_entry(p, item)
        if data is not None:
            pieces.append(data)
            if _type_of(item) == VIDEO:
                video += 1
            else:
                audio += 1
    size = sum(map(len, pieces))
    if len(pieces) > 1 and p.framing >= -1:
        pieces = [b"".join(pieces)]
    assert p.offset is not None
    return _Run(pieces, p.offset, (p.last[0], p.last[1], p.last[2]), size, video, audio)


def _type_of(item: Message | _Entry) -> int:
    return item.type_id if type(item) is Message else cast(_Entry, item).msg.type_id


def _stream_eof(p: Player) -> None:
    p.timer = None
    channel = p.channel
    if channel is not None and channel.stream is None and not p.out.closed:
        p.out.stream_eof(p.sid)
        p.out.flush()
        # ffmpeg, rtmpdump and rtmp2src have left by now; a player that stays waits for a
        # publisher as a new one would (`play_wait`), so that it is bounded too.
        relay = channel.relay
        wait = relay.config.play_wait
        if math.isfinite(wait):
            p.timer = asyncio.get_running_loop().call_later(max(wait, 0), relay._not_found, p)


def _header_order(entry: _Entry) -> int:
    """Metadata first, then video configuration, then audio (the order of FLV files)."""
    return {DATA_AMF0: 0, VIDEO: 1}.get(entry.msg.type_id, 2)


def _unique(entries: Iterable[_Entry]) -> list[_Entry]:
    out: list[_Entry] = []
    for e in entries:
        if not any(e is o for o in out):
            out.append(e)
    return out


class Relay:
    """Plays every publish of a registry to whoever asks, as `RTMPServer.play_handler`."""

    def __init__(self, registry: StreamRegistry, config: RelayConfig | None = None) -> None:
        self.registry = registry
        self.config = config or RelayConfig()
        self.channels: dict[StreamKey, Channel] = {}
        self._players: dict[Session, dict[int, Player]] = {}
        # Told of every play start and stop (event name, app, stream, player, details): the
        # server's webhooks.
        self.notify: Callable[..., None] | None = None
        # Asked when a player wants (app, name) and nothing is published there: True when a
        # publish is on its way (a pull on demand, `pull.py`), so the player waits for it.
        self.demand: Callable[[str, str], bool] | None = None
        registry.on_start.append(self._on_start)
        for stream in registry:
            self._on_start(stream)

    def players(self) -> list[Player]:
        return [p for ch in self.channels.values() for p in ch.players]

    def channel(self, app: str, name: str) -> Channel | None:
        return self.channels.get((app, name))

    # --- registry ------------------------------------------------------------------------

    def _on_start(self, stream: Stream) -> None:
        channel = self.channels.get(stream.key)
        if channel is None:
            channel = self.channels[stream.key] = Channel(self, stream.key)
        channel.attach(stream)

    def _forget(self, channel: Channel) -> None:
        if self.channels.get(channel.key) is channel:
            del self.channels[channel.key]

    # --- sessions ------------------------------------------------------------------------

    def play(self, session: Session, req: PlayRequest) -> None:
        """Answer `play`: join the live stream, or wait for it."""
        conn = session.conn
        key = (conn.app, req.name)
        players = self._players.get(session)
        if players is None:
            players = self._players[session] = {}
            session.on_close.append(self._on_close)
            session.on_event.append(self._on_event)
        old = players.pop(req.stream_id, None)
        if old is not None:
            self._stop(old, "play again")
        channel = self.channels.get(key)
        live = channel is not None and channel.stream is not None
        # In a publisher gap the stream is as good as published: a new player joins the kept
        # ones (told nothing, no play_wait) and goes on with them.
        gap = channel is not None and channel.gap
        wait = self.config.play_wait
        if not live and not gap and self.demand is not None:
            self.demand(*key)
        if not live and not gap and wait <= 0:
            conn.reject_play(req, f"{req.name} is not published.")
            log.info("play %s/%s: peer=%s refused: not published", *key, session.peer)
            return
        conn.accept_play(req)
        p = Player(RTMPOutput(session), req.stream_id, req.name, self.config.player_max_buffer)
        players[req.stream_id] = p
        if channel is None:
            channel = self.channels[key] = Channel(self, key)
        p.waiting = not live and not gap
        log.info(
            "play start: peer=%s app=%s stream=%s%s multitrack=%s",
            session.peer,
            key[0],
            key[1],
            " (in a publisher gap)" if gap else "" if live else " (waiting for a publisher)",
            p.multitrack,
        )
        channel.add(p)
        if self.notify is not None:
            self.notify("play_start", key[0], key[1], p)
        if p.waiting and math.isfinite(wait):
            p.timer = asyncio.get_running_loop().call_later(wait, self._not_found, p)

    def add_player(self, out: Output, app: str, name: str, *, wait: bool = False) -> Player | None:
        """Play the live stream app/name to `out` (a player that is not an RTMP session: an
        HTTP-FLV response, a subscription), with the same join (GOP cache) and slow-player
        rule as RTMP play. None when nothing is published there (nor in a publisher gap),
        unless `wait`: then it waits `play_wait` for a publisher as an RTMP play does
        (`out.not_found` at the end; None when play_wait is 0). Its owner calls
        `remove_player` when it leaves."""
        key = (app, name)
        channel = self.channels.get(key)
        live = channel is not None and (channel.stream is not None or channel.gap)
        play_wait = self.config.play_wait
        if not live:
            # A pull may bring it (`demand`, server/pull.py): then the player waits for it as
            # an RTMP one does, asked to wait or not.
            if play_wait <= 0:
                return None
            demanded = self.demand is not None and self.demand(app, name)
            if not (wait or demanded):
                return None
        p = Player(out, 1, name, self.config.player_max_buffer)
        if channel is None:
            channel = self.channels[key] = Channel(self, key)
        p.waiting = not live
        log.info(
            "play start: peer=%s app=%s stream=%s (%s)%s",
            p.peer,
            app,
            name,
            type(out).__name__,
            " (waiting for a publisher)" if p.waiting else "",
        )
        channel.add(p)
        if self.notify is not None:
            self.notify("play_start", app, name, p)
        if p.waiting and math.isfinite(play_wait):
            p.timer = asyncio.get_running_loop().call_later(play_wait, self._not_found, p)
        return p

    def remove_player(self, p: Player, why: str) -> None:
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        if p.channel is not None:
            self._stop(p, why)

    def _not_found(self, p: Player) -> None:
        p.timer = None
        channel = p.channel
        if channel is None or channel.stream is not None:
            return
        players = self._players.get(p.session)
        if players is not None and players.get(p.sid) is p:
            del players[p.sid]
        channel.remove(p)
        p.out.not_found(
            p.sid, p.name, f"{p.name} was not published within {self.config.play_wait:g} s."
        )
        p.out.flush()
        log.info(
            "play %s/%s: peer=%s %s after %g s",
            *channel.key,
            p.peer,
            "no publisher came back" if p.video_frames or p.audio_frames else "stream not found",
            self.config.play_wait,
        )

    def _on_event(self, session: Session, event: Any) -> None:
        players = self._players.get(session)
        if not players:
            return
        kind = type(event)
        if kind is StreamClosed:
            p = players.pop(event.stream_id, None)
            if p is not None:
                self._stop(p, event.command)
        elif kind is PauseRequest:
            p = players.get(event.stream_id)
            if p is not None:
                p.paused = event.pause
                if not event.pause:
                    p.need_key = True
                p.regate()
        elif kind is ReceiveMedia:
            p = players.get(event.stream_id)
            if p is not None:
                if event.kind == "audio":
                    p.audio = event.enabled
                else:
                    if event.enabled and not p.video:
                        p.video_key = True
                    p.video = event.enabled
                p.regate()

    def _on_close(self, session: Session) -> None:
        players = self._players.pop(session, None)
        for p in (players or {}).values():
            self._stop(p, "disconnected")

    def _stop(self, p: Player, why: str) -> None:
        channel = p.channel
        key = channel.key if channel is not None else ("?", p.name)
        if channel is not None:
            channel.remove(p)
        log.info(
            "play stop: peer=%s app=%s stream=%s duration=%.2fs video=%d audio=%d data=%d "
            "dropped=%d skips=%d (%s)",
            p.peer,
            key[0],
            key[1],
            time.monotonic() - p.joined,
            p.video_frames,
            p.audio_frames,
            p.data_messages,
            p.dropped,
            p.skips,
            why,
        )
        if self.notify is not None:
            self.notify("play_stop", key[0], key[1], p, reason=why, dropped=p.dropped)
