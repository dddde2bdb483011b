"""FLV (Adobe FLV 10.1, annex E): the file header, tags, and a reader for tests and tools.

This module owns the byte layout of FLV: the 9-byte header with its audio/video flags,
PreviousTagSize0, and tags (11-byte header with the 24+8-bit extended timestamp, the
body, then the 4-byte PreviousTagSize). RTMP audio (8), video (9) and AMF0 data (18)
messages map one to one onto FLV tags, so a tag body is an RTMP message payload unchanged.
No I/O: the encoder returns what to write; writing files is `server.flvfile`'s business.
`FLVFramer` makes one FLV stream per live publish (the GStreamer element's output), with a
header whose audio/video flags match what the publisher really sends (onMetaData's codec ids,
or the first media message and what is queued behind it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from . import amf0
from .errors import RemoteProtocolError
from .messages import AUDIO, DATA_AMF0, VIDEO, Message

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

FLAG_AUDIO = 0x04
FLAG_VIDEO = 0x01
HEADER_SIZE = 9
FLAGS_OFFSET = 4  # byte of the header that holds the audio/video flags

_U32 = struct.Struct(">I")
# Tag header as two words and the 3-byte stream id (0): type << 24 | size, and the lower 24
# timestamp bits << 8 | TimestampExtended; with the previous tag's PreviousTagSize in front.
_HEADER = struct.Struct(">IIxxx")
_PREV_AND_HEADER = struct.Struct(">IIIxxx")


class FLVError(RemoteProtocolError):
    """Bytes that are not a valid FLV file."""


def file_header(*, audio: bool, video: bool) -> bytes:
    """The FLV header plus PreviousTagSize0 (13 bytes)."""
    flags = (FLAG_AUDIO if audio else 0) | (FLAG_VIDEO if video else 0)
    return b"FLV\x01" + bytes((flags,)) + _U32.pack(HEADER_SIZE) + b"\x00\x00\x00\x00"


def _stamp(timestamp: int) -> int:
    """The tag header's second word: the lower 24 timestamp bits, then TimestampExtended."""
    return (timestamp & 0xFFFFFF) << 8 | (timestamp >> 24) & 0xFF


def tag_header(tag_type: int, timestamp: int, size: int) -> bytes:
    """The 11-byte tag header; the timestamp's upper 8 bits go in TimestampExtended."""
    return _HEADER.pack(tag_type << 24 | size, _stamp(timestamp))


def tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    """One whole tag: header, body, PreviousTagSize."""
    size = len(body)
    return tag_header(tag_type, timestamp, size) + body + _U32.pack(size + 11)


class FLVEncoder:
    """The bytes of one FLV stream, as pieces for the caller to write (no I/O here).

    `file_header()` gives the 9-byte header and PreviousTagSize0, its audio/video flags set
    from what the caller expects (for example from onMetaData). `encode(msgs, out)` appends
    one tag per message to `out`: header words as small `bytes`, the message's own pieces
    (views of what arrived, uncopied) as its body. Each call's pieces end with the last tag's
    PreviousTagSize, so a file cut after any whole call is a complete FLV file. `flags_fixup()`
    says what to write at `FLAGS_OFFSET` when the stream carried other tracks than the header
    announced (a reader that trusts the flags, like flvdemux, then sees the real tracks).
    """

    __slots__ = ("_announced", "flags", "size", "tags")

    def __init__(self, *, audio: bool = True, video: bool = True) -> None:
        self._announced = (FLAG_AUDIO if audio else 0) | (FLAG_VIDEO if video else 0)
        #: The FLAG_AUDIO/FLAG_VIDEO bits of the tags encoded so far.
        self.flags = 0
        #: Tags encoded so far.
        self.tags = 0
        #: Bytes of the stream so far, the file header included.
        self.size = HEADER_SIZE + 4

    def file_header(self) -> bytes:
        """The FLV header plus PreviousTagSize0 (13 bytes), with the announced flags."""
        return file_header(
            audio=bool(self._announced & FLAG_AUDIO), video=bool(self._announced & FLAG_VIDEO)
        )

    def encode(self, msgs: Iterable[TagSource], out: list[bytes | memoryview]) -> int:
        """Append one tag per message (type id, timestamp and payload unchanged) to `out`;
        the number of bytes appended (0, and nothing appended, for no messages)."""
        append = out.append
        extend = out.extend
        pack = _PREV_AND_HEADER.pack
        prev = -1
        written = count = 0
        seen = self.flags
        for msg in msgs:
            size = msg.size
            tag_type = msg.type_id
            stamp = _stamp(msg.timestamp)
            if prev < 0:
                append(_HEADER.pack(tag_type << 24 | size, stamp))
            else:
                # The previous tag's PreviousTagSize and this tag's header in one piece.
                append(pack(prev, tag_type << 24 | size, stamp))
            extend(msg.pieces())
            prev = size + 11
            written += size + 15
            count += 1
            if tag_type == TAG_VIDEO:
                seen |= FLAG_VIDEO
            elif tag_type == TAG_AUDIO:
                seen |= FLAG_AUDIO
        if prev < 0:
            return 0
        append(_U32.pack(prev))
        self.flags = seen
        self.tags += count
        self.size += written
        return written

    def flags_fixup(self) -> bytes | None:
        """The flags byte to write at `FLAGS_OFFSET` once the stream is complete, or None when
        the header already says what the stream carried."""
        if self.flags == self._announced:
            return None
        return bytes((self.flags,))


class TagSource(Protocol):
    """What `FLVEncoder.encode` needs of a message (an RTMP `Message` has it)."""

    @property
    def type_id(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def size(self) -> int: ...
    def pieces(self) -> list[memoryview] | list[bytes]: ...


class TagItem(NamedTuple):
    """A tag to write from a whole body."""

    type_id: int
    timestamp: int
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload)

    def pieces(self) -> list[bytes]:
        return [self.payload]


@dataclass(frozen=True, slots=True)
class Tag:
    tag_type: int
    timestamp: int
    body: bytes


@dataclass(frozen=True, slots=True)
class FLVHeader:
    version: int
    audio: bool
    video: bool


def read_flv(data: bytes) -> tuple[FLVHeader, list[Tag]]:
    """Parse a whole FLV file. A truncated last tag is an error (use `iter_tags` to tolerate)."""
    header, tags, rest = parse_flv(data)
    if rest:
        raise FLVError(f"FLV: {rest} trailing bytes after the last complete tag")
    return header, tags


def parse_flv(data: bytes) -> tuple[FLVHeader, list[Tag], int]:
    """Parse an FLV file; return the header, the complete tags and how many bytes trail."""
    if len(data) < 13 or data[:3] != b"FLV":
        raise FLVError(f"FLV: file starts {bytes(data[:3])!r}, expected b'FLV' and 13 bytes")
    offset = _U32.unpack_from(data, 5)[0]
    if offset < 9 or offset + 4 > len(data):
        raise FLVError(f"FLV: header size {offset}, expected 9 or more within the file")
    flags = data[4]
    header = FLVHeader(data[3], bool(flags & FLAG_AUDIO), bool(flags & FLAG_VIDEO))
    tags = list(_iter_tags(data, offset + 4))
    consumed = offset + 4 + sum(len(t.body) + 15 for t in tags)
    return header, tags, len(data) - consumed


def _iter_tags(data: bytes, pos: int) -> Iterator[Tag]:
    n = len(data)
    while pos + 15 <= n:
        tag_type = data[pos] & 0x1F
        size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        ts = (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6] | (data[pos + 7] << 24)
        end = pos + 11 + size
        if end + 4 > n:
            return
        prev = _U32.unpack_from(data, end)[0]
        if prev != size + 11:
            raise FLVError(f"FLV: PreviousTagSize {prev} at offset {end}, expected {size + 11}")
        yield Tag(tag_type, ts, bytes(data[pos + 11 : end]))
        pos = end + 4


# ---------------------------------------------------------------------------------------------
# FLV streams of live publishes (the GStreamer element's output)
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
_MAX_PENDING_DATA: Final = 16  # data messages held back waiting for the first media message


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
        out = [Chunk(file_header(audio=audio, video=video), 0, 0, header=True)]
        self._offset = HEADER_SIZE + 4
        pending, self._pending = self._pending, []
        out += [self._tag(msg, pts) for msg, pts in pending]
        return out

    def _tag(self, msg: Message, pts: int) -> Chunk:
        payload = msg.payload
        type_id = msg.type_id
        data = tag(type_id, msg.timestamp, payload)
        if type_id == VIDEO:
            # frame type 1 is a keyframe (legacy and Enhanced RTMP alike)
            delta_unit = not payload or (payload[0] >> 4) & 0x7 != 1
        else:
            delta_unit = type_id == AUDIO and self._flags is not None and self._flags[1]
        chunk = Chunk(data, self._offset, pts, delta_unit=delta_unit)
        self._offset += len(data)
        return chunk
