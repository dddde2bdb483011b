"""RTMP messages: the `Message` record, message type ids, and the protocol control messages.

This module owns what a complete RTMP message is once the chunk layer has reassembled it
(RTMP 1.0 section 6), the numbering of message types, and the encoding and decoding of the
small fixed-layout control messages (Set Chunk Size, Abort, Acknowledgement, Window
Acknowledgement Size, Set Peer Bandwidth, User Control). Commands (AMF) live in
`connection.py`; the chunk framing in `chunk.py`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

from .errors import RemoteProtocolError

_T = TypeVar("_T")
try:
    from mypy_extensions import mypyc_attr
except ImportError:  # not needed to run: GStreamer's plugin loader's interpreter has no venv

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U16_U32 = struct.Struct(">HI")
_U16_U32_U32 = struct.Struct(">HII")
_U32_U8 = struct.Struct(">IB")


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


# Plain ints for the hot path (IntEnum comparisons are slower).
AUDIO = 8
VIDEO = 9
DATA_AMF0 = 18
DATA_AMF3 = 15
COMMAND_AMF0 = 20
COMMAND_AMF3 = 17
AGGREGATE = 22

CONTROL_TYPES = frozenset({1, 2, 3, 5, 6})

# AMF0 string prefixes of data messages: "@setDataFrame" wraps metadata from publishers,
# "onMetaData" is what recordings and players get.
SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"
ON_METADATA = b"\x02\x00\x0aonMetaData"


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


# Compiled (see `_compiled.py`), a native class: the compiled chunk reader makes one per frame
# without going through the interpreter. Its attributes hold ints, bytes and a list of views,
# never anything that could lead back to it, so it stays out of the cycle collector
# (`acyclic`): a message costs the collector no tracking, and the frames held in queues do not
# bring collections on sooner.
@mypyc_attr(acyclic=True)
class Message:
    """One complete RTMP message.

    A plain class with `__slots__` rather than a dataclass: one is made per audio/video frame,
    so construction cost matters. `timestamp` is the absolute 32-bit message timestamp in
    milliseconds, `size` the payload length. No subclasses, no other attributes, no weak
    references (compiled, it is a native class).

    `payload` is immutable `bytes`. A message the chunk reader reassembled from several chunks
    arrives as `pieces` (views of the bytes read from the socket) and is joined into one
    `bytes` only when someone asks for `payload`: the recorder writes the pieces as they are,
    so a frame that is only recorded is never copied in user space.
    """

    __slots__ = ("_parts", "_payload", "csid", "size", "stream_id", "timestamp", "type_id")

    def __init__(
        self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes
    ) -> None:
        self.csid = csid
        self.timestamp = timestamp
        self.type_id = type_id
        self.stream_id = stream_id
        self.size = len(payload)
        self._payload: bytes | None = payload
        self._parts: list[memoryview] | None = None

    @staticmethod
    def from_pieces(
        csid: int,
        timestamp: int,
        type_id: int,
        stream_id: int,
        parts: list[memoryview],
        size: int,
    ) -> Message:
        """A message whose payload is the concatenation of `parts` (read-only buffers that
        nobody changes), `size` bytes in all."""
        # Made through `__init__` and then changed: compiled, that is a direct call into C,
        # where `cls.__new__(cls)` would go through the interpreter.
        msg = Message(csid, timestamp, type_id, stream_id, b"")
        msg.size = size
        msg._payload = None
        msg._parts = parts
        return msg

    @property
    def payload(self) -> bytes:
        payload = self._payload
        if payload is None:
            # Safe from two threads at once: each joins its own reference to the parts.
            parts = self._parts
            if parts is None:  # another thread finished the join in between
                return self._payload  # type: ignore[return-value]
            payload = self._payload = b"".join(parts)
            self._parts = None
        return payload

    @property
    def head(self) -> bytes | memoryview:
        """The first bytes of the payload (at least one chunk's worth), without a join."""
        parts = self._parts
        return self._payload if parts is None else parts[0]  # type: ignore[return-value]

    def pieces(self) -> list[memoryview] | list[bytes]:
        """The payload as buffers to write in order (one `bytes` once it was joined)."""
        parts = self._parts
        return [self.payload] if parts is None else parts

    def __repr__(self) -> str:
        return (
            f"Message(csid={self.csid}, timestamp={self.timestamp}, type_id={self.type_id}, "
            f"stream_id={self.stream_id}, payload=<{len(self.payload)} bytes>)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.csid == other.csid
            and self.timestamp == other.timestamp
            and self.type_id == other.type_id
            and self.stream_id == other.stream_id
            and self.payload == other.payload
        )

    __hash__ = None  # type: ignore[assignment]


def media_run(items: list[Any]) -> tuple[int, int, int, int]:
    """Look over a read's items at once: (stream id, video messages, audio messages, payload
    bytes of all of them). The stream id is that of the one message stream when every item is
    an audio or video message of it, else -1 (also for no items). An item that is no
    `Message` (an event) gives (-1, 0, 0, 0).

    The live path's one look at what a publisher's read brought (the connection's filter, the
    session's dispatch and the stream's counters): compiled, it costs a read a fraction of
    what a loop over the messages in each of them did."""
    sid = -1
    mixed = False
    video = audio = size = 0
    for item in items:
        if not isinstance(item, Message):
            return -1, 0, 0, 0
        t = item.type_id
        if t == VIDEO:
            video += 1
        elif t == AUDIO:
            audio += 1
        else:
            mixed = True
        if sid == -1:
            sid = item.stream_id
        elif item.stream_id != sid:
            mixed = True
        size += item.size
    return -1 if mixed else sid, video, audio, size


class MediaCounts:
    """A publish's running totals: video and audio messages, other messages, payload bytes.

    Compiled, a native object: four machine integers in one struct. As four `int` attributes
    of the stream, a read of a publisher made four new objects and, with many publishers,
    found each old one out of the CPU caches (bench/README.md, "Where a publisher's read
    goes")."""

    def __init__(self) -> None:
        self.video = 0
        self.audio = 0
        self.data = 0
        self.bytes = 0

    def add(self, video: int, audio: int, data: int, size: int) -> None:
        self.video += video
        self.audio += audio
        self.data += data
        self.bytes += size


PLAIN_VIDEO = 1  # `plain_frames`: the run has video
PLAIN_KEY = 2  # `plain_frames`: the run has a keyframe
AVC_KEY = 0x17  # VideoTagHeader: keyframe (1) << 4 | AVC (7); then AVCPacketType 1 is a NALU
AVC_INTER = 0x27  # inter frame (2) << 4 | AVC
SOUND_AAC = 10  # AudioTagHeader's SoundFormat; then AACPacketType 1 is a raw frame
_MASK = 0xFFFFFFFF
_HALF = 0x80000000


def plain_frame(msg: Message) -> int:
    """-1 unless `msg` is a plain frame: an H.264 NALU packet (a keyframe or an inter frame) or
    an AAC raw frame, which a player is sent and a GOP cache keeps as it is (no configuration,
    no multitrack, no other codec, no data message), told from its first two bytes; else its
    `PLAIN_VIDEO` and `PLAIN_KEY` bits (0 for audio). A message of another type than video
    counts as audio, as the relay looks at it."""
    t = msg.type_id
    if t == DATA_AMF0 or msg.size <= 4:
        return -1
    head = msg.head
    if len(head) < 2 or head[1] != 1:
        return -1
    b0 = head[0]
    if t == VIDEO:
        if b0 == AVC_KEY:
            return PLAIN_VIDEO | PLAIN_KEY
        return PLAIN_VIDEO if b0 == AVC_INTER else -1
    return 0 if b0 >> 4 == SOUND_AAC else -1


def plain_frames(msgs: list[Message], min_ts: int) -> tuple[int, int, int]:
    """Look over a read's media at once for the relay: (kind, payload bytes, earliest
    timestamp). `kind` is -1 unless every message is a plain frame (`plain_frame`), else the
    union of their bits. The earliest timestamp starts at `min_ts` and moves back to every
    message's that is before it in RTMP's 32-bit serial order (half the range)."""
    kind = 0
    size = 0
    low = min_ts
    for msg in msgs:
        bits = plain_frame(msg)
        if bits < 0:
            return -1, 0, min_ts
        kind |= bits
        size += msg.size
        ts = msg.timestamp
        if (ts - low) & _MASK >= _HALF:
            low = ts
    return kind, size, low


# --- control message bodies -------------------------------------------------------------

MAX_CHUNK_SIZE = 0x7FFFFFFF


def _u32_body(what: str, payload: bytes) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError(f"{what}: {len(payload)}-byte body, expected 4 bytes")
    value: int = _U32.unpack_from(payload)[0]
    return value


def parse_set_chunk_size(payload: bytes) -> int:
    """The new chunk size; RTMP 1.0 5.4.1 allows 1..2^31-1 (the top bit must be zero)."""
    size = _u32_body("Set Chunk Size", payload)
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise RemoteProtocolError(
            f"Set Chunk Size {size} (0x{size:08x}), expected 1..{MAX_CHUNK_SIZE}"
        )
    return size


def parse_abort(payload: bytes) -> int:
    return _u32_body("Abort Message", payload)


def parse_acknowledgement(payload: bytes) -> int:
    return _u32_body("Acknowledgement", payload)


def parse_window_ack_size(payload: bytes) -> int:
    return _u32_body("Window Acknowledgement Size", payload)


def parse_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    if len(payload) < 5:
        raise RemoteProtocolError(f"Set Peer Bandwidth: {len(payload)}-byte body, expected 5 bytes")
    size, limit = _U32_U8.unpack_from(payload)
    return size, limit


def parse_user_control(payload: bytes) -> tuple[int, int, int]:
    """(event type, first u32 argument or 0, second u32 argument or 0)."""
    if len(payload) < 2:
        raise RemoteProtocolError(
            f"User Control: {len(payload)}-byte body, expected at least 2 bytes"
        )
    if len(payload) >= 10:
        return _U16_U32_U32.unpack_from(payload)
    if len(payload) >= 6:
        event, arg = _U16_U32.unpack_from(payload)
        return event, arg, 0
    return _U16.unpack_from(payload)[0], 0, 0


def u32(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)


def set_peer_bandwidth_body(size: int, limit_type: int) -> bytes:
    return _U32_U8.pack(size, limit_type)


def user_control_body(event: int, *args: int) -> bytes:
    return _U16.pack(event) + b"".join([_U32.pack(a & 0xFFFFFFFF) for a in args])
