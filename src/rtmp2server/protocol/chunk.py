"""The RTMP chunk stream: reassembling messages from chunks, and splitting messages into chunks.

This module owns RTMP 1.0 section 5.3: chunk basic headers (chunk stream ids in the 1-, 2- and
3-byte forms, the 3-byte form little-endian), the four message header formats (fmt 0 absolute,
fmt 1 and 2 deltas, fmt 3 nothing), extended timestamps (also on type-3 chunks), interleaving
of chunk streams, and the two control messages that change how the following bytes are framed:
Set Chunk Size and Abort. They take effect for the very next chunk, even inside one read.

`ChunkReader.feed(data)` accepts any split of the byte stream, one byte at a time or a whole
recording at once, and returns the messages completed so far. A chunk is consumed only once all
of its bytes are there, so no state changes on a partial chunk. The bytes of an incomplete chunk
wait as a list of pieces with the count the chunk needs (worked out from as much of its header
as has arrived), and are joined once that many are there: the cost stays linear in the bytes
whatever the chunk size or the way the peer dribbles them. A message of several chunks is kept
as views of the reads while it is in progress, and joined into one `bytes` once complete: a
cached message then holds one object the garbage collector does not track instead of a list
of views that it does, and pins no read (a relay keeps a GOP of them per publish; joining cost
a publisher's read 29 instead of 37 us in `bench/rtmpbench/hotpath.py`, 200 publishers).
What unfinished messages hold in a costly way (views holding little of an earlier read, runs of
tiny chunks' views) is copied out from time to time, so that what they pin stays a small
multiple of what they hold.

The reader also owns the per-connection bounds on what a peer can make it hold
(`BudgetExceeded`): chunk stream ids in use, bytes of unfinished messages (counted at their
announced length, from their first header on), and the chunk size the peer may set.

`ChunkWriter.write(...)` returns the bytes of one message, with the smallest header the
previous message on that chunk stream allows.
"""

from __future__ import annotations

import struct

from .errors import BudgetExceeded, ChunkError, RemoteProtocolError
from .messages import MAX_CHUNK_SIZE, Message, parse_abort, parse_set_chunk_size

_U32 = struct.Struct(">I")
_STREAM_ID = struct.Struct("<I")
_TS_LEN_TYPE = struct.Struct(">HBHBB")  # 24-bit timestamp, 24-bit length, type id
_FIELDS_BY_FMT = (7, 7, 3)

DEFAULT_CHUNK_SIZE = 128
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# Publishers use a handful of chunk stream ids: ffmpeg 5.1 and 9, GStreamer rtmp2sink and librtmp
# (rtmpsink) at most five, between 2 and 8. nginx-rtmp (`max_streams` 32) closes a peer using an
# id above 31; counting distinct ids instead bounds the state as well and lets high ids through.
DEFAULT_MAX_CHUNK_STREAMS = 64
# ffmpeg 5.1 and 9 set 4096, GStreamer rtmp2sink 128, librtmp (rtmpsink) keeps the default 128;
# SRS and node-media-server send 60000. SRS warns outside 128..65536, nginx-rtmp refuses above
# 10 MiB. 1 MiB is sixteen times the largest of those and bounds the incomplete chunk.
DEFAULT_MAX_CHUNK_SIZE = 1024 * 1024
# On top of `max_message_size`: one largest message still fits beside interleaved audio, data
# and command messages in progress on the other chunk streams.
PARTIAL_HEADROOM = 1024 * 1024
_EXTENDED = 0xFFFFFF
_MAX_HEADER = 18  # 3-byte basic header, 11-byte type-0 header, extended timestamp
_COMPACT_EVERY = 1024 * 1024  # bytes read between two looks at what messages in progress pin
# A view object costs about 180 bytes on CPython: runs of views that average fewer bytes than
# this are joined, and below `_SMALL_CHUNK` messages in progress are looked over on every read.
_PART_COST = 64
_SMALL_CHUNK = _PART_COST


class _InStream:
    """Reader state of one chunk stream id."""

    __slots__ = (
        "delta",
        "ext_value",
        "extended",
        "kept",
        "kept_of",
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
        # `kept_of[:kept]` are copies, or views that fill their read: `_compact` is done with
        # them (a new message has a new `parts` list, so `kept_of` tells when to start over).
        self.kept_of: list[memoryview] | None = None
        self.kept = 0


# Compiled (see `_compiled.py`), the reader is a native class: its fields sit in its own struct,
# read without a dictionary lookup. With many publishers each read finds its connection's state
# out of the CPU caches, and the fewer places that state is spread over, the less a read waits
# for memory (bench/README.md, "Where a publisher's read goes"). A native object takes no weak
# references and no attributes beyond its own, so its work is counted in fields of its own.
class ChunkReader:
    """Reassembles RTMP messages from a chunk stream (the bytes after the handshake)."""

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_partial_bytes: int | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        """`max_partial_bytes` defaults to `max_message_size` + 1 MiB."""
        if max_partial_bytes is None:
            max_partial_bytes = max_message_size + PARTIAL_HEADROOM
        for name, value in (
            ("max_message_size", max_message_size),
            ("max_chunk_streams", max_chunk_streams),
            ("max_partial_bytes", max_partial_bytes),
            ("max_chunk_size", max_chunk_size),
        ):
            if value < 1:
                raise ValueError(f"{name} {value}, expected at least 1")
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_partial_bytes = max_partial_bytes
        self.max_chunk_size = min(max_chunk_size, MAX_CHUNK_SIZE)
        # The start of a chunk whose bytes have not all arrived, in pieces; `_need` is how
        # many bytes from its start must be there before it is worth parsing again.
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0
        # The announced lengths of the messages of several chunks in progress, summed.
        self._reserved = 0
        self._unchecked = 0  # bytes fed since unfinished messages were last compacted
        self._streams: dict[int, _InStream] = {}
        self.error: RemoteProtocolError | None = None
        # Work done, for the tests that bound it: calls of `_parse` and the bytes handed to it
        # (every join of an incomplete chunk's pieces is handed over, so this bounds copying).
        self.parse_calls = 0
        self.parse_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held back because the chunk they start is not complete yet."""
        return self._pending_len

    @property
    def partial_bytes(self) -> int:
        """Bytes held for messages not complete yet: their payload received so far and the
        incomplete chunk (`buffered`). At most `max_partial_bytes` plus one chunk header."""
        held = self._pending_len
        for cs in self._streams.values():
            if cs.remaining:
                held += cs.length - cs.remaining
        return held

    @property
    def chunk_streams(self) -> int:
        """Chunk stream ids the peer has used (bounded by `max_chunk_streams`)."""
        return len(self._streams)

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
            if self._pending_len:
                pending = self._pending
                k = self._need - self._pending_len
                if k <= len(data) and len(pending) == 1:
                    # The usual case: the read ended inside a chunk whose header was all
                    # there, and this read completes it. Only its missing bytes are copied.
                    head = pending[0] + data[:k]
                    if self._parse(head, 0, out):
                        self._pending = []
                        self._pending_len = 0
                        start = k
                    else:
                        self._pending = [head]
                        self._pending_len = len(head)
                        start = self._finish_pending(data, k, out)
                else:
                    start = self._finish_pending(data, 0, out)
                if start < 0:  # all of `data` belongs to the incomplete chunk
                    return out
            pos = self._parse(data, start, out)
        except RemoteProtocolError as err:
            # Hand out what completed before the bad chunk; the error stays in `error`.
            self.error = err
            if not out:
                raise
            return out
        n = len(data)
        if pos < n:
            # A copy of the tail only (for pos 0 the read itself), so no read is pinned.
            self._pending = [data[pos:]]
            self._pending_len = n - pos
        # Unfinished messages are looked over once a MiB, not on every read, unless the
        # chunks are so small that their views cost more than their bytes.
        self._unchecked += n
        if self._reserved and (self._unchecked > _COMPACT_EVERY or self.chunk_size < _SMALL_CHUNK):
            self._unchecked = 0
            self._compact(data)
        return out

    def _finish_pending(self, data: bytes, taken: int, out: list[Message]) -> int:
        """Complete the chunk the last read ended in with `data` from `taken` on; return where
        the rest of `data` starts, or -1 if it all went to the chunk, which is still short.

        The pieces are joined only once `_need` bytes are there. A chunk is joined at most
        once for each part of its header that tells more of its size (basic header, message
        header, extended timestamp) and once whole, so each byte is copied a bounded number
        of times however it is dribbled."""
        pending = self._pending
        have = self._pending_len
        n = len(data)
        while True:
            need = self._need
            if have + n - taken < need:
                pending.append(data[taken:] if taken else data)
                self._pending_len = have + n - taken
                return -1
            k = need - have
            pending.append(data[taken : taken + k])
            taken += k
            head = b"".join(pending)
            if self._parse(head, 0, out):  # the chunk is complete: exactly `head`
                self._pending = []
                self._pending_len = 0
                return taken
            # The header now says more of the chunk's size: `_parse` set a larger `_need`.
            pending = self._pending = [head]
            have = self._pending_len = len(head)

    def _compact(self, data: bytes) -> None:
        """Copy out what unfinished messages hold in a costly way: views of an earlier read
        that hold less than half of it, and runs of views smaller than `_PART_COST` bytes.

        A message in progress keeps a view of each of its chunks in the read it came in. A
        peer that trickles one message's chunks between other messages would make it pin whole
        reads for a few bytes each, and one that sets a tiny chunk size would make it hold a
        view object (about 180 bytes) for every byte or two. Joined, what the messages pin
        stays within twice what they hold, plus what was read since the last look. Each part
        is looked at at most twice and each byte copied at most once; the messages of
        well-behaved encoders, whose chunks are large and fill the reads they span, are not
        copied at all."""
        for cs in self._streams.values():
            if cs.remaining:
                parts = cs.parts
                i = cs.kept if cs.kept_of is parts else 0
                n = len(parts)
                again = -1  # where the views of `data` start, if left as they are
                while i < n:
                    obj = parts[i].obj
                    j = i + 1
                    while j < n and parts[j].obj is obj:
                        j += 1
                    held = sum(map(len, parts[i:j]))
                    if (j - i) * _PART_COST > held or (
                        obj is not data and 2 * held < len(obj)  # type: ignore[arg-type]
                    ):
                        parts[i:j] = [memoryview(b"".join(parts[i:j]))]
                        n -= j - i - 1
                        j = i + 1
                    elif obj is data:
                        again = i  # to be looked at once `data` is an earlier read
                    i = j
                cs.kept_of = parts
                cs.kept = i if again < 0 else again

    def _parse(self, data: bytes, pos: int, out: list[Message]) -> int:
        """Consume the whole chunks of `data` from `pos`; return where the first incomplete
        one starts. Payload pieces are views of `data`, joined when their message completes."""
        n = len(data)
        self.parse_calls += 1
        self.parse_bytes += n
        view = memoryview(data)
        streams = self._streams
        chunk_size = self.chunk_size
        u32 = _U32.unpack_from
        need = 0  # where the chunk that stops the loop would end, as far as it is known
        reserved = self._reserved  # kept in a local in the loop, written back at the end
        limit = self.max_partial_bytes
        while pos < n:
            b0 = data[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid < 2:
                if csid == 0:
                    if p + 1 > n:
                        need = p + 1
                        break
                    csid = 64 + data[p]
                    p += 1
                else:
                    if p + 2 > n:
                        need = p + 2
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
                            need = p + 4
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
                        need = end
                        break
                    cs.parts.append(view[p:end])
                    pos = end
                    remaining -= take
                    cs.remaining = remaining
                    if remaining:
                        continue
                    # Joined once complete (see the module docstring).
                    msg = Message(csid, cs.timestamp, cs.type_id, cs.stream_id, b"".join(cs.parts))
                    cs.parts = []
                    reserved -= cs.length
                    if msg.type_id < 3:
                        self._reserved = reserved  # Abort releases a message's bytes
                        chunk_size = self._control(msg)
                        reserved = self._reserved
                    out.append(msg)
                    continue
                # Type-3 chunk starting a new message: same header, add the previous delta.
                delta = cs.delta
                if cs.extended:
                    if p + 4 > n:
                        need = p + 4
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
                    need = p + hlen
                    break
                field = (data[p] << 16) | (data[p + 1] << 8) | data[p + 2]
                if cs is None:
                    if fmt != 0:
                        raise ChunkError(
                            f"chunk stream {csid}: type-{fmt} header with no previous header, "
                            "expected a type-0 header first"
                        )
                    if len(streams) >= self.max_chunk_streams:
                        raise BudgetExceeded(
                            f"chunk stream {csid}: a new chunk stream id beyond the "
                            f"{len(streams)} in use, expected at most "
                            f"{self.max_chunk_streams} chunk streams"
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
                        need = p + 4
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
            # First chunk of a new message: it counts against the budget from its header on
            # (the same point for every split of the bytes); commit the header only once the
            # chunk's payload is here.
            if reserved + length > limit:
                self._reserved = reserved
                raise BudgetExceeded(
                    f"chunk stream {csid}: message of {length} bytes (type {type_id}) beside "
                    f"{self._reserved} bytes of unfinished messages, expected at most "
                    f"{self.max_partial_bytes} bytes in unfinished messages"
                )
            take = chunk_size if length > chunk_size else length
            end = p + take
            if end > n:
                need = end
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
                reserved += length
                continue
            msg = Message(csid, timestamp, type_id, stream_id, data[p:end])
            if type_id < 3:
                self._reserved = reserved
                chunk_size = self._control(msg)
                reserved = self._reserved
            out.append(msg)
        self._reserved = reserved
        if pos < n:
            self._need = need - pos
        return pos

    def _control(self, msg: Message) -> int:
        """Apply Set Chunk Size (1) and Abort (2) at once; return the chunk size in force."""
        if msg.type_id == 1:
            size = parse_set_chunk_size(msg.payload)
            if size > self.max_chunk_size:
                raise BudgetExceeded(
                    f"Set Chunk Size {size}, expected at most {self.max_chunk_size}"
                )
            self.chunk_size = size
        elif msg.type_id == 2:
            cs = self._streams.get(parse_abort(msg.payload))
            if cs is not None and cs.remaining:
                self._reserved -= cs.length
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
