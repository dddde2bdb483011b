"""The RTMP chunk stream: reassembling messages from chunks, and splitting messages into chunks.

This module owns RTMP 1.0 section 5.3: chunk basic headers (chunk stream ids in the 1-, 2- and
3-byte forms, the 3-byte form little-endian), the four message header formats (fmt 0 absolute,
fmt 1 and 2 deltas, fmt 3 nothing), extended timestamps (also on type-3 chunks), interleaving
of chunk streams, and the two control messages that change how the following bytes are framed:
Set Chunk Size and Abort. They take effect for the very next chunk, even inside one read.

`ChunkReader.feed(data)` accepts any split of the byte stream, one byte at a time or a whole
recording at once, and returns the messages completed so far. A chunk is consumed only once all
of its bytes are there, so no state changes on a partial chunk; the remainder waits in one
buffer. A message of several chunks is handed out as views of the reads (`Message.pieces`),
joined only if someone asks for its `payload`.

`ChunkWriter.write(...)` returns the bytes of one message, with the smallest header the
previous message on that chunk stream allows.
"""

from __future__ import annotations

import struct

from .errors import ChunkError, RemoteProtocolError
from .messages import MAX_CHUNK_SIZE, Message, parse_abort, parse_set_chunk_size

_U32 = struct.Struct(">I")
_STREAM_ID = struct.Struct("<I")
_TS_LEN_TYPE = struct.Struct(">HBHBB")  # 24-bit timestamp, 24-bit length, type id
_FIELDS_BY_FMT = (7, 7, 3)

DEFAULT_CHUNK_SIZE = 128
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
_EXTENDED = 0xFFFFFF
_MAX_HEADER = 18  # 3-byte basic header, 11-byte type-0 header, extended timestamp


class _InStream:
    """Reader state of one chunk stream id."""

    __slots__ = (
        "delta",
        "ext_value",
        "extended",
        "length",
        "parts",
        "remaining",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0  # timestamp of the current/last message
        self.delta = 0  # the timestamp field a type-3 chunk that starts a message reuses
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False  # the last fmt 0/1/2 header carried an extended timestamp
        self.ext_value = 0
        self.remaining = 0  # payload bytes still due for the message in progress
        self.parts: list[memoryview] = []  # views of the reads, joined at the end


class ChunkReader:
    """Reassembles RTMP messages from a chunk stream (the bytes after the handshake)."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self._pending = b""  # the start of a chunk whose bytes have not all arrived
        self._streams: dict[int, _InStream] = {}
        self.error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back because the chunk they start is not complete yet."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Consume `data`; return the messages it completes, in arrival order."""
        if self.error is not None:
            raise self.error
        if type(data) is not bytes:
            # Messages in progress keep views into `data`: it must not change under them.
            data = bytes(data)
        out: list[Message] = []
        try:
            start = 0
            pending = self._pending
            if pending:
                # Finish the chunk the last read ended in: it needs at most a whole header
                # and one chunk of payload more. Only those bytes are copied, not the read.
                head = pending + data[: _MAX_HEADER + self.chunk_size]
                pos = self._parse(head, 0, out)
                if pos == 0:  # still not complete: `data` was shorter than that
                    self._pending = head
                    return out
                start = pos - len(pending)
                self._pending = b""
            pos = self._parse(data, start, out)
        except RemoteProtocolError as err:
            # Hand out what completed before the bad chunk; the error stays in `error`.
            self.error = err
            if not out:
                raise
            return out
        if pos < len(data):
            self._pending = data[pos:]
        return out

    def _parse(self, data: bytes, pos: int, out: list[Message]) -> int:
        """Consume the whole chunks of `data` from `pos`; return where the first incomplete
        one starts. Payload pieces are views of `data`, joined when their message completes."""
        n = len(data)
        view = memoryview(data)
        streams = self._streams
        chunk_size = self.chunk_size
        u32 = _U32.unpack_from
        while pos < n:
            b0 = data[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid < 2:
                if csid == 0:
                    if p + 1 > n:
                        break
                    csid = 64 + data[p]
                    p += 1
                else:
                    if p + 2 > n:
                        break
                    csid = 64 + data[p] + (data[p + 1] << 8)
                    p += 2
            cs = streams.get(csid)
            if fmt == 3:
                if cs is None:
                    raise ChunkError(
                        f"chunk stream {csid}: type-3 chunk with no previous header, "
                        "expected a type-0 header first"
                    )
                remaining = cs.remaining
                if remaining:
                    # Continuation chunk of the message in progress.
                    if cs.extended:
                        if p + 4 > n:
                            break
                        # Adobe sends the extended timestamp again on every type-3 chunk;
                        # some encoders do not. Accept both, as SRS and nginx-rtmp do.
                        if u32(data, p)[0] == cs.ext_value:
                            p += 4
                    elif remaining > chunk_size and p == pos + 1 and pos + chunk_size < n:
                        # Clients write a message's chunks back to back, so this is usually
                        # a run of full chunks of this message, each behind this same one-byte
                        # header. Take every whole one in one step (the last chunk of the
                        # message, with the message's end, goes the ordinary way below).
                        step = chunk_size + 1
                        count = (n - pos) // step  # >= 1: this chunk is whole
                        full = (remaining - 1) // chunk_size
                        if count > full:
                            count = full
                        if count > 1:
                            heads = data[pos : pos + count * step : step]
                            # Stop at the first header that is another chunk stream's.
                            count -= len(heads.lstrip(heads[:1]))
                        end = pos + count * step
                        cs.parts += [view[a : a + chunk_size] for a in range(p, end, step)]
                        cs.remaining = remaining - count * chunk_size
                        pos = end
                        continue
                    take = chunk_size if remaining > chunk_size else remaining
                    end = p + take
                    if end > n:
                        break
                    cs.parts.append(view[p:end])
                    pos = end
                    remaining -= take
                    cs.remaining = remaining
                    if remaining:
                        continue
                    msg = Message.from_pieces(
                        csid, cs.timestamp, cs.type_id, cs.stream_id, cs.parts, cs.length
                    )
                    cs.parts = []
                    if msg.type_id < 3:
                        chunk_size = self._control(msg)
                    out.append(msg)
                    continue
                # Type-3 chunk starting a new message: same header, add the previous delta.
                delta = cs.delta
                if cs.extended:
                    if p + 4 > n:
                        break
                    delta = u32(data, p)[0]
                    p += 4
                timestamp = (cs.timestamp + delta) & 0xFFFFFFFF
                length = cs.length
                type_id = cs.type_id
                stream_id = cs.stream_id
                extended = cs.extended
                ext_value = delta if extended else 0
            else:
                if fmt == 0:
                    hlen = 11
                elif fmt == 1:
                    hlen = 7
                else:
                    hlen = 3
                if p + hlen > n:
                    break
                field = (data[p] << 16) | (data[p + 1] << 8) | data[p + 2]
                if cs is None:
                    if fmt != 0:
                        raise ChunkError(
                            f"chunk stream {csid}: type-{fmt} header with no previous header, "
                            "expected a type-0 header first"
                        )
                    cs = streams[csid] = _InStream()
                elif cs.remaining:
                    raise ChunkError(
                        f"chunk stream {csid}: type-{fmt} header in the middle of a message "
                        f"({cs.length - cs.remaining} of {cs.length} bytes received), "
                        "expected a type-3 continuation chunk"
                    )
                if fmt == 2:
                    length = cs.length
                    type_id = cs.type_id
                    stream_id = cs.stream_id
                else:
                    length = (data[p + 3] << 16) | (data[p + 4] << 8) | data[p + 5]
                    type_id = data[p + 6]
                    stream_id = _STREAM_ID.unpack_from(data, p + 7)[0] if fmt == 0 else cs.stream_id
                p += hlen
                extended = field == _EXTENDED
                ext_value = 0
                if extended:
                    if p + 4 > n:
                        break
                    field = ext_value = u32(data, p)[0]
                    p += 4
                delta = field
                timestamp = field if fmt == 0 else cs.timestamp + field & 4294967295
                if length > self.max_message_size:
                    raise ChunkError(
                        f"chunk stream {csid}: message of {length} bytes (type {type_id}), "
                        f"expected at most {self.max_message_size} bytes"
                    )
            # First chunk of a new message: commit the header only once its payload is here.
            take = chunk_size if length > chunk_size else length
            end = p + take
            if end > n:
                break
            cs.timestamp = timestamp
            cs.delta = delta
            cs.length = length
            cs.type_id = type_id
            cs.stream_id = stream_id
            cs.extended = extended
            cs.ext_value = ext_value
            pos = end
            if take < length:
                cs.parts = [view[p:end]]
                cs.remaining = length - take
                continue
            msg = Message(csid, timestamp, type_id, stream_id, data[p:end])
            if type_id < 3:
                chunk_size = self._control(msg)
            out.append(msg)
        return pos

    def _control(self, msg: Message) -> int:
        """Apply Set Chunk Size (1) and Abort (2) at once; return the chunk size in force."""
        if msg.type_id == 1:
            self.chunk_size = parse_set_chunk_size(msg.payload)
        elif msg.type_id == 2:
            cs = self._streams.get(parse_abort(msg.payload))
            if cs is not None:
                cs.remaining = 0
                cs.parts = []
        return self.chunk_size


class _OutStream:
    __slots__ = ("delta", "length", "stream_id", "timestamp", "type_id")

    def __init__(
        self, timestamp: int, delta: int, type_id: int, length: int, stream_id: int
    ) -> None:
        self.timestamp = timestamp
        self.delta = delta
        self.type_id = type_id
        self.length = length
        self.stream_id = stream_id


def basic_header(fmt: int, csid: int) -> bytes:
    """The 1-, 2- or 3-byte chunk basic header (RTMP 1.0 5.3.1.1)."""
    if 2 <= csid < 64:
        return bytes((fmt << 6 | csid,))
    if 64 <= csid < 320:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid < 65600:
        v = csid - 64
        return bytes((fmt << 6 | 1, v & 0xFF, v >> 8))
    raise ValueError(f"chunk stream id {csid} outside 2..65599")


class ChunkWriter:
    """Splits outgoing messages into chunks of `chunk_size`, compressing headers."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._last: dict[int, _OutStream] = {}

    def set_chunk_size(self, size: int) -> None:
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = size

    def write(
        self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes
    ) -> bytes:
        """The chunks of one message. The caller sends them in order with all others."""
        length = len(payload)
        timestamp &= 0xFFFFFFFF
        last = self._last.get(csid)
        if last is None or last.stream_id != stream_id or timestamp < last.timestamp:
            fmt = 0
            field = timestamp
        else:
            field = timestamp - last.timestamp
            if last.type_id != type_id or last.length != length:
                fmt = 1
            elif field != last.delta or field >= _EXTENDED:
                fmt = 2
            else:
                fmt = 3
        extended = field >= _EXTENDED
        ts = _EXTENDED if extended else field
        if last is None:
            self._last[csid] = _OutStream(timestamp, field, type_id, length, stream_id)
        else:
            last.timestamp = timestamp
            last.delta = field
            last.type_id = type_id
            last.length = length
            last.stream_id = stream_id
        header = basic_header(fmt, csid)
        if fmt < 3:
            # fmt 2 carries the timestamp; fmt 1 adds length and type; fmt 0 the stream id.
            header += _TS_LEN_TYPE.pack(ts >> 8, ts & 0xFF, length >> 8, length & 0xFF, type_id)[
                : _FIELDS_BY_FMT[fmt]
            ]
            if fmt == 0:
                header += _STREAM_ID.pack(stream_id)
        ext = _U32.pack(field) if extended else b""
        size = self.chunk_size
        if length <= size:
            return header + ext + payload
        cont = basic_header(3, csid) + ext
        view = memoryview(payload)
        parts: list[bytes | memoryview] = [header, ext, view[:size]]
        for off in range(size, length, size):
            parts.append(cont)
            parts.append(view[off : off + size])
        return b"".join(parts)
