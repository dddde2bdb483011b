"""The stream registry: who publishes what, and who receives it.

A `Stream` is one live publish, keyed by (application, stream name). Whatever wants its
messages (the recorder, a GStreamer element, players) is a `Sink` attached to it. The
registry guarantees one publisher per key, decides what a second publish of a taken key does
(the republish policy: take over or refuse), and tells observers when streams start and end.
No sockets here: sessions call into it from the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..logs import get_logger
from ..protocol.messages import MediaCounts, Message, media_run

log = get_logger(__name__)

StreamKey = tuple[str, str]

Republish = Literal["takeover", "refuse"]
REPUBLISH_POLICIES: tuple[Republish, ...] = ("takeover", "refuse")


class Sink(Protocol):
    """Receives a stream's messages (audio 8, video 9, AMF0 data 18) in order.

    A sink may also define `on_messages(stream, msgs)`: it then gets what one read from the
    publisher completed as one list (in order), instead of one `on_message` call per message.
    """

    def on_message(self, stream: Stream, msg: Message) -> None: ...

    def on_end(self, stream: Stream) -> None: ...


@dataclass(eq=False)
class Stream:
    """One live publish."""

    app: str
    name: str
    query: str = ""
    peer: str = ""
    flash_ver: str = ""
    tc_url: str = ""
    # A stream pulled from another server (`pull.py`): that server's URL, redacted.
    source: str = ""
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    sinks: list[Sink] = field(default_factory=list)
    counts: MediaCounts = field(default_factory=MediaCounts, repr=False)
    ended: bool = False
    # Push targets of this publish alone (the on_publish callback's answer; `server/push.py`).
    push: list[Any] = field(default_factory=list)
    # Flow control towards the publisher, set by its session: a sink that cannot keep up
    # pauses reading from the publisher's socket (TCP back-pressure) instead of dropping.
    pause_reading: Callable[[], None] = field(default=lambda: None, repr=False)
    resume_reading: Callable[[], None] = field(default=lambda: None, repr=False)
    # Set by its session: end this publish and close the publisher's connection, because
    # `reason` (a takeover: "replaced by peer X"). The registry releases the stream itself
    # if the callback did not.
    close: Callable[[str], None] = field(default=lambda reason: None, repr=False)

    @property
    def key(self) -> StreamKey:
        return (self.app, self.name)

    @property
    def video_frames(self) -> int:
        return self.counts.video

    @property
    def audio_frames(self) -> int:
        return self.counts.audio

    @property
    def data_messages(self) -> int:
        return self.counts.data

    @property
    def bytes(self) -> int:
        return self.counts.bytes

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started

    def totals(self) -> str:
        """What this publish brought, for its stop log line (a session's or a pull's)."""
        return (
            f"duration={self.duration:.2f}s video={self.video_frames} audio={self.audio_frames} "
            f"data={self.data_messages} bytes={self.bytes}"
        )

    def deliver(self, msg: Message) -> None:
        """Count `msg` and hand it to every sink (see `deliver_all`)."""
        self.deliver_all([msg])

    def deliver_all(self, msgs: list[Message]) -> None:
        """Count `msgs` and hand them to every sink, in order. A failing sink is detached and
        logged; the publisher and the other sinks go on."""
        _, video, audio, size = media_run(msgs)
        self.deliver_counted(msgs, video, audio, size)

    def deliver_counted(self, msgs: list[Message], video: int, audio: int, size: int) -> None:
        """`deliver_all` for a caller that has already counted `msgs` (`media_run`)."""
        self.counts.add(video, audio, len(msgs) - video - audio, size)
        for sink in self.sinks:
            try:
                batch = getattr(sink, "on_messages", None)
                if batch is not None:
                    batch(self, msgs)
                else:
                    for msg in msgs:
                        sink.on_message(self, msg)
            except Exception:
                log.exception("stream %s/%s: sink %r failed; detaching it", *self.key, sink)
                self.remove_sink(sink)

    def add_sink(self, sink: Sink) -> None:
        self.sinks = [*self.sinks, sink]

    def remove_sink(self, sink: Sink) -> None:
        self.sinks = [s for s in self.sinks if s is not sink]

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for sink in self.sinks:
            try:
                sink.on_end(self)
            except Exception:
                log.exception("stream %s/%s: sink %r failed at end", *self.key, sink)


StreamObserver = Callable[[Stream], None]


class StreamRegistry:
    """The live streams of one server, by (app, name).

    `republish` says what a publish of a name that is already being published does:

    - ``"takeover"`` (the default, as in MediaMTX): the new publisher replaces the old one.
      The old publish ends at once (its recording is finished, its connection closed, its
      stop logged as "replaced by peer X") and the new one starts; players stay attached
      (see `RelayConfig.republish_grace`). It is the default because the common case is an
      encoder reconnecting: OBS or ffmpeg whose old connection is stalled or half-dead (a
      dropped network link, a NAT that forgot it) is otherwise refused as "already being
      published" until the server notices the old connection is gone (the idle timeout,
      30 s, or TCP's own much longer timeouts). A session claims the name only after its
      publish handler accepted the publish, so with access control on publish only a
      holder of the stream's key can take it over.
    - ``"refuse"``: the second publish is refused with NetStream.Publish.BadName and the
      first goes on (nginx-rtmp's and node-media-server's behaviour).
    """

    def __init__(self, republish: Republish = "takeover") -> None:
        if republish not in REPUBLISH_POLICIES:
            raise ValueError(
                f"republish must be one of {', '.join(REPUBLISH_POLICIES)}, not {republish!r}"
            )
        self.republish: Republish = republish
        self._streams: dict[StreamKey, Stream] = {}
        self.on_start: list[StreamObserver] = []
        self.on_stop: list[StreamObserver] = []

    def get(self, app: str, name: str) -> Stream | None:
        return self._streams.get((app, name))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def refuses(self, stream: Stream) -> bool:
        """Whether `claim(stream)` would refuse it: its key is taken and the policy is
        "refuse". A session asks before the publish handler runs, and claims after it
        accepted, so that only an accepted publish can take a name over."""
        return self.republish == "refuse" and stream.key in self._streams

    def claim(self, stream: Stream) -> bool:
        """Register `stream` as the publisher of its key. If the key is taken: with the
        "takeover" policy the publish holding it is closed (`Stream.close`, reason "replaced
        by peer X") and released first; with "refuse", False."""
        old = self._streams.get(stream.key)
        if old is not None:
            if self.republish != "takeover":
                return False
            log.info(
                "stream %s/%s: peer=%s takes over from peer=%s",
                *stream.key,
                stream.peer,
                old.peer,
            )
            try:
                old.close(f"replaced by peer {stream.peer}")
            except Exception:
                log.exception("stream %s/%s: closing the replaced publish failed", *old.key)
            if self._streams.get(stream.key) is old:
                self.release(old)  # its session did not (a stream made by the library)
        self._streams[stream.key] = stream
        return True

    def started(self, stream: Stream) -> None:
        for observer in list(self.on_start):
            observer(stream)

    def release(self, stream: Stream) -> None:
        """End `stream` (its sinks get `on_end`) and free its key."""
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        stream.end()
        for observer in list(self.on_stop):
            observer(stream)
