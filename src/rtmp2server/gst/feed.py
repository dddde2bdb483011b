"""The hand-over from the server's event loop to the element's streaming thread.

This module owns two things, neither of which imports GStreamer:

- `Feed`, the thread-safe queue between the two threads. The event loop puts what a publish
  delivers (a `PublishStarted`, its messages, a `PublishEnded`); the streaming thread takes
  it out in order. It never drops anything. Instead it is bounded by back-pressure: when more
  than `high_water` bytes (or `max_items` items) wait, the publisher's socket stops being
  read (`Stream.pause_reading`, so TCP slows the publisher down), and once the streaming
  thread has brought the backlog under `low_water`, reading resumes on the event loop.
- `FLVFramer`, which turns one publish after another into FLV byte streams: a header whose
  audio/video flags match what the publisher really sends (decided by onMetaData's
  audiocodecid/videocodecid, or else by the first audio/video message and what is already
  queued behind it), then one `Chunk` per message (tag header, body unchanged,
  PreviousTagSize) timed relative to the first message of the publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..protocol import amf0, flv
from ..protocol.errors import RemoteProtocolError
from ..protocol.messages import AUDIO, DATA_AMF0, VIDEO, Message
from ..server.registry import Stream

HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024
MAX_ITEMS: Final = 8192
_MAX_PENDING_DATA: Final = 16  # data messages held back waiting for the first media message


@dataclass(frozen=True, slots=True)
class PublishInfo:
    """Who publishes what: the fields of the element's bus messages."""

    application: str
    stream_key: str
    query: str
    peer: str
    flash_ver: str
    tc_url: str

    @classmethod
    def of(cls, stream: Stream) -> PublishInfo:
        return cls(stream.app, stream.name, stream.query, stream.peer, stream.flash_ver,
                   stream.tc_url)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PublishStarted:
    info: PublishInfo


@dataclass(frozen=True, slots=True)
class PublishEnded:
    info: PublishInfo
    video_frames: int
    audio_frames: int
    data_messages: int
    bytes: int
    duration: float

    @classmethod
    def of(cls, stream: Stream) -> PublishEnded:
        return cls(
            PublishInfo.of(stream),
            stream.video_frames,
            stream.audio_frames,
            stream.data_messages,
            stream.bytes,
            stream.duration,
        )


FeedItem = PublishStarted | Message | PublishEnded


class Flushing(Exception):
    """`Feed.get` was interrupted by `set_flushing(True)` (the element's unlock)."""


class Feed:
    """A lossless queue from the event loop to one streaming thread, with back-pressure."""

    def __init__(
        self,
        *,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        max_items: int = MAX_ITEMS,
    ) -> None:
        self.high_water = high_water
        self.low_water = low_water
        self.max_items = max_items
        self._cond = threading.Condition()
        self._items: deque[FeedItem] = deque()
        self._bytes = 0
        self._flushing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: list[Stream] = []
        self._resume_scheduled = False
        self.pauses = 0  # how often back-pressure paused a publisher (for tests and stats)

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The event loop that owns the publishers' transports (resumes are run there)."""
        with self._cond:
            self._loop = loop

    # --- producer side: the event loop thread --------------------------------------------

    def put(self, item: FeedItem, stream: Stream | None = None) -> None:
        """Queue `item`. With `stream`, pause that publisher when the backlog is too big."""
        size = len(item.payload) if type(item) is Message else 0
        with self._cond:
            self._items.append(item)
            self._bytes += size
            over = self._bytes > self.high_water or len(self._items) > self.max_items
            pause = over and stream is not None and stream not in self._paused
            if pause:
                assert stream is not None
                self._paused.append(stream)
                self.pauses += 1
            self._cond.notify()
        if pause:
            assert stream is not None
            stream.pause_reading()

    def _resume(self) -> None:
        """On the event loop: resume the paused publishers if the backlog is still low."""
        with self._cond:
            self._resume_scheduled = False
            if self._bytes > self.low_water or len(self._items) > self.max_items // 2:
                return
            paused, self._paused = self._paused, []
        for stream in paused:
            stream.resume_reading()

    # --- consumer side: the streaming thread ---------------------------------------------

    def get(self, timeout: float | None = None) -> FeedItem | None:
        """The next item; None after `timeout` seconds without one (None: wait forever).

        Raises `Flushing` while the feed is flushing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._flushing:
                    raise Flushing
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
            if self._flushing:
                raise Flushing
            item = self._items.popleft()
            if type(item) is Message:
                self._bytes -= len(item.payload)
            loop = None
            if (
                self._paused
                and not self._resume_scheduled
                and self._bytes <= self.low_water
                and len(self._items) <= self.max_items // 2
            ):
                self._resume_scheduled = True
                loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._resume)
            except RuntimeError:  # the loop is closed: nothing left to resume
                with self._cond:
                    self._resume_scheduled = False
        return item

    def media_types_queued(self) -> set[int]:
        """The message types (8, 9) queued before the next end of a publish."""
        types: set[int] = set()
        with self._cond:
            for item in self._items:
                if type(item) is not Message:
                    break
                if item.type_id in (AUDIO, VIDEO):
                    types.add(item.type_id)
        return types

    def set_flushing(self, flushing: bool) -> None:
        with self._cond:
            self._flushing = flushing
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop everything queued and forget paused publishers (the element stopped)."""
        with self._cond:
            self._items.clear()
            self._bytes = 0
            paused, self._paused = self._paused, []
            loop = self._loop
        if paused and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resume_all, paused)

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._bytes

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def _resume_all(streams: list[Stream]) -> None:
    for stream in streams:
        stream.resume_reading()


# ---------------------------------------------------------------------------------------------
# FLV framing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """One output buffer: the FLV header or one tag, with its place and time in the stream."""

    data: bytes
    offset: int  # byte offset in the current FLV stream (the header is at 0)
    pts: int  # nanoseconds since the first message of the publish
    header: bool = False  # the FLV file header (starts a fresh stream: discontinuity)
    delta_unit: bool = False  # not a point a decoder can start from


def metadata_flags(payload: bytes) -> tuple[bool, bool] | None:
    """(audio, video) from an onMetaData body's audiocodecid/videocodecid, if it names them."""
    try:
        values = amf0.decode_all(payload)
    except RemoteProtocolError:
        return None
    if len(values) < 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
        return None
    meta: dict[str, Any] = values[1]
    present = [meta.get(k) not in (None, amf0.UNDEFINED, False) for k in _CODEC_KEYS]
    if not any(k in meta for k in _CODEC_KEYS):
        return None
    return present[0], present[1]


_CODEC_KEYS = ("audiocodecid", "videocodecid")


class FLVFramer:
    """One FLV stream per publish: the header once the flags are known, then a tag per message.

    `start()` begins a publish, `push()` frames one message, `end()` closes the publish and
    returns whatever was still held back. Tags are the messages unchanged (timestamp and
    body); chunk times are the message timestamps relative to the first message of the
    publish, unwrapped over the 32-bit RTMP clock, never negative.
    """

    def __init__(self) -> None:
        self.streams = 0  # FLV streams begun (publishes seen)
        self._reset()

    def _reset(self) -> None:
        self._flags: tuple[bool, bool] | None = None
        self._pending: list[tuple[Message, int]] = []
        self._offset = 0
        self._first: int | None = None
        self._last = 0
        self._clock = 0  # unwrapped milliseconds

    def start(self) -> None:
        self._reset()
        self.streams += 1

    def push(self, msg: Message, queued_types: Callable[[], set[int]] = set) -> list[Chunk]:
        """Frame `msg`. `queued_types` tells which media types already wait behind it."""
        pts = self._advance_clock(msg.timestamp)
        if self._flags is not None:
            return [self._tag(msg, pts)]
        self._pending.append((msg, pts))
        type_id = msg.type_id
        if type_id == DATA_AMF0 and len(self._pending) < _MAX_PENDING_DATA:
            self._flags = metadata_flags(msg.payload)
            return self._release() if self._flags is not None else []
        if type_id in (AUDIO, VIDEO):
            seen = {type_id} | queued_types()
            self._flags = (AUDIO in seen, VIDEO in seen)
        else:
            self._flags = (False, False)
        return self._release()

    def end(self) -> list[Chunk]:
        """The publish is over: release held-back messages (with a header if any)."""
        out: list[Chunk] = []
        if self._flags is None and self._pending:
            self._flags = (False, False)
            out = self._release()
        self._flags = None
        return out

    @property
    def header_flags(self) -> tuple[bool, bool] | None:
        """(audio, video) of the current stream's header, once decided."""
        return self._flags

    def _advance_clock(self, timestamp: int) -> int:
        """Nanoseconds from the publish's first message to one stamped `timestamp`."""
        if self._first is None:
            self._first = self._clock = self._last = timestamp
            return 0
        delta = (timestamp - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        self._clock += delta
        self._last = timestamp
        return max(0, self._clock - self._first) * 1_000_000

    def _release(self) -> list[Chunk]:
        assert self._flags is not None
        audio, video = self._flags
        out = [Chunk(flv.file_header(audio=audio, video=video), 0, 0, header=True)]
        self._offset = flv.HEADER_SIZE + 4
        pending, self._pending = self._pending, []
        out += [self._tag(msg, pts) for msg, pts in pending]
        return out

    def _tag(self, msg: Message, pts: int) -> Chunk:
        payload = msg.payload
        type_id = msg.type_id
        data = flv.tag(type_id, msg.timestamp, payload)
        if type_id == VIDEO:
            # frame type 1 is a keyframe (legacy and Enhanced RTMP alike)
            delta_unit = not payload or (payload[0] >> 4) & 0x7 != 1
        else:
            delta_unit = type_id == AUDIO and self._flags is not None and self._flags[1]
        chunk = Chunk(data, self._offset, pts, delta_unit=delta_unit)
        self._offset += len(data)
        return chunk
