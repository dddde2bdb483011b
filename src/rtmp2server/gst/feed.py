"""The hand-over from the server's event loop to the element's streaming thread.

This module owns, without importing GStreamer:

- `Feed`, the thread-safe queue between the two threads. The event loop puts what a publish
  delivers (a `PublishStarted`, its messages, a `PublishEnded`); the streaming thread takes
  it out in order. It never drops anything. Instead it is bounded by back-pressure: when more
  than `high_water` bytes (or `max_items` items) wait, the publisher's socket stops being
  read (`Stream.pause_reading`, so TCP slows the publisher down), and once the streaming
  thread has brought the backlog under `low_water`, reading resumes on the event loop.
- the re-export of `FLVFramer` (now `protocol.flv.FLVFramer`, shared with HTTP-FLV), which
  turns one publish after another into FLV byte streams for the element.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from ..protocol.flv import Chunk as Chunk  # the framer's old home: re-exported
from ..protocol.flv import FLVFramer as FLVFramer
from ..protocol.flv import metadata_flags as metadata_flags
from ..protocol.messages import AUDIO, VIDEO, Message
from ..server.registry import Stream

HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024
MAX_ITEMS: Final = 8192


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
