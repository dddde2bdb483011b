"""Events the server-side connection hands to its owner.

Small frozen dataclasses with slots, one per thing the owner may act on. Audio, video and
data messages are not wrapped: they come out as `messages.Message` objects (type 8, 9 or 18),
because one is made per frame and the hot path should not pay for a second object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Connected:
    """`connect` was accepted (the `_result` is already queued)."""

    app: str
    tc_url: str
    flash_ver: str
    object_encoding: float
    command_object: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """`publish` arrived; answer with `accept_publish` or `reject_publish`."""

    stream_id: int
    name: str  # the stream name without its query string
    query: str  # what followed '?', without the '?'
    publish_type: str  # "live", "record" or "append"
    transaction_id: float


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """`play` arrived; answer with `accept_play` or `reject_play`."""

    stream_id: int
    name: str
    query: str
    start: float
    duration: float
    reset: bool
    transaction_id: float


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The client ended what it did on a message stream (FCUnpublish, closeStream,
    deleteStream); the stream id may be reused."""

    stream_id: int
    command: str


@dataclass(frozen=True, slots=True)
class PauseRequest:
    stream_id: int
    pause: bool
    milliseconds: float


@dataclass(frozen=True, slots=True)
class ReceiveMedia:
    """`receiveAudio` / `receiveVideo` from a player."""

    stream_id: int
    kind: str  # "audio" or "video"
    enabled: bool


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A command the connection does not handle itself; already answered if it had to be."""

    name: str
    transaction_id: float
    stream_id: int
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The peer acknowledged `sequence` bytes (for back-pressure on players)."""

    sequence: int


Event = (
    Connected
    | PublishRequest
    | PlayRequest
    | StreamClosed
    | PauseRequest
    | ReceiveMedia
    | CommandReceived
    | Acknowledged
)
