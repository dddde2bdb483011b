"""FLV (Adobe FLV 10.1, annex E): the file header, tags, and a reader for tests and tools.

This module owns the byte layout of FLV: the 9-byte header with its audio/video flags,
PreviousTagSize0, and tags (11-byte header with the 24+8-bit extended timestamp, the
body, then the 4-byte PreviousTagSize). RTMP audio (8), video (9) and AMF0 data (18)
messages map one to one onto FLV tags, so a tag body is an RTMP message payload unchanged.
No I/O: the encoder returns what to write; writing files is `server.flvfile`'s business.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .errors import RemoteProtocolError

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
