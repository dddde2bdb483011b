"""In-process players: `async for message in server.subscribe(app, name)`.

This module owns the subscription: a player of the relay that lives in the same process as the
server and yields `Message`s instead of writing bytes to a socket. It is an `Output` of the
relay (`server/relay.py`), so it gets exactly what an RTMP player gets:

- the join from the GOP cache (the last `onMetaData`, the decoder configuration of each track,
  then the cached keyframe and what followed it), then the live messages;
- timestamps rebased as a player's (its first message at about zero, never going back, across
  a publisher that returns within the grace too);
- the slow-player rule: a consumer that does not keep up lets its queue grow to
  `RelayConfig.player_max_buffer` bytes, then drops to the next keyframe (counted in the API's
  `dropped_frames` and `skips`), so neither the publisher nor the other players wait for it;
- a stream that is not published yet is waited for up to `RelayConfig.play_wait` seconds, then
  `StreamNotFound` is raised (at once when play_wait is 0, as a play is refused);
- the iteration ends when the publish ends past `RelayConfig.republish_grace` (where RTMP
  players get Stream EOF).

It appears among the stream's players in the HTTP API with protocol "subscribe". Leaving the
`async for` (break, an exception, or `aclose()`) leaves the stream.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..logs import get_logger
from ..protocol.connection import CSID_DATA
from ..protocol.messages import DATA_AMF0, Message
from .relay import flush_then_buffered

if TYPE_CHECKING:
    from .relay import Player, Relay

log = get_logger(__name__)

# Ids of subscriptions, apart from RTMP sessions' and HTTP-FLV players' (the API shows all).
_IDS = itertools.count(2_000_000_001)


class StreamNotFound(LookupError):
    """Nothing was published under the name within `play_wait` seconds."""


class _Framed(bytes):
    """A payload and where it goes in the player's timeline: what `frame` gives the relay.

    The relay frames each message once per distinct (timestamp, framing) and hands the same
    object to every output that shares it; it counts `len()` of it as bytes out. A bytes
    subclass keeps both true without a second type in the relay (one copy of the payload,
    made once for all the subscriptions on one timeline).
    """

    csid: int
    timestamp: int
    type_id: int


class Subscription:
    """One in-process player of app/name, as a relay `Output` and an async iterator."""

    framing = -2  # `Message`s: the same for every subscription (-1 is HTTP-FLV's FLV tags)
    protocol = "subscribe"
    ip = ""
    port = 0

    def __init__(self, relay: Relay, app: str, name: str, *, multitrack: bool = False) -> None:
        self.relay = relay
        self.app = app
        self.name = name
        self.owner = self
        self.multitrack = multitrack
        self.id = next(_IDS)
        self.peer = f"subscribe#{self.id}"
        self.connected = time.time()
        self._queue: collections.deque[Message] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._player: Player | None = None
        self._error: Exception | None = None
        self._why = "closed"
        self._started = False
        self.ended = False

    def __repr__(self) -> str:
        return f"<Subscription {self.app}/{self.name} id={self.id}>"

    # --- Output --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.ended

    def frame(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> bytes:
        data = _Framed(payload)
        data.csid = csid
        data.timestamp = ts
        data.type_id = type_id
        return data

    def write(self, data: bytes) -> None:
        assert isinstance(data, _Framed)
        self._put(Message(data.csid, data.timestamp, data.type_id, 1, data))

    def send_data(self, sid: int, ts: int, payload: bytes) -> None:
        self._put(Message(CSID_DATA, ts, DATA_AMF0, 1, payload))

    def _put(self, msg: Message) -> None:
        if self.ended:
            return
        self._queue.append(msg)
        self._queued += msg.size
        self._wake.set()

    def flush(self) -> None:
        pass  # `write` queues for the consumer at once

    def buffered(self) -> int:
        return self._queued

    drain = flush_then_buffered

    def publish_notify(self, sid: int, name: str) -> None:
        pass  # no such message in the iteration: the messages just go on

    def unpublish_notify(self, sid: int, name: str) -> None:
        pass

    def stream_eof(self, sid: int) -> None:
        self._end(None, "ended")

    def not_found(self, sid: int, name: str, description: str) -> None:
        self._end(StreamNotFound(f"{self.app}/{name}: {description}"), "stream not found")

    # --- the iteration -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        if self._started:
            raise RuntimeError(f"{self!r} is iterated once")
        self._started = True
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        self._join()
        try:
            queue = self._queue
            while True:
                while not queue:
                    if self.ended:
                        if self._error is not None:
                            raise self._error
                        return
                    self._wake.clear()
                    await self._wake.wait()
                msg = queue.popleft()
                self._queued -= msg.size
                yield msg
        finally:
            self.close()

    def _join(self) -> None:
        p = self.relay.add_player(self, self.app, self.name, wait=True)
        if p is None:
            self.ended = True
            self._error = StreamNotFound(f"{self.app}/{self.name} is not published")
            log.info("subscribe %s/%s: %s refused: not published", self.app, self.name, self.peer)
        self._player = p

    def _end(self, error: Exception | None, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self._error = error
        self._why = why
        self._wake.set()
        # Out of the relay once its own call (a timer callback walking its players) is over.
        asyncio.get_running_loop().call_soon(self._leave, why)

    def _leave(self, why: str) -> None:
        p, self._player = self._player, None
        if p is not None:
            self.relay.remove_player(p, why)

    def close(self) -> None:
        """Leave the stream (what leaving the `async for` does)."""
        self.ended = True
        self._wake.set()
        self._queue.clear()
        self._queued = 0
        self._leave(self._why)

    async def aclose(self) -> None:
        self.close()


def end_all(relay: Relay, why: str = "server shutdown") -> None:
    """End every subscription to `relay`'s streams (what remains queued is still yielded)."""
    for p in relay.players():
        if isinstance(p.out, Subscription):
            p.out._end(None, why)
