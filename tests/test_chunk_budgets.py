"""The chunk reader's per-connection budgets and the cost of reassembly (issue 9, findings 4, 6).

Byte-level vectors at each bound (at the bound accepted, one over refused with a message that
says what arrived and what the bound is), properties over arbitrary splits of the bytes, and
work counted in bytes handed to the parser (never in time).
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol.chunk import (
    _COMPACT_EVERY,
    _MAX_HEADER,
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_STREAMS,
    DEFAULT_MAX_MESSAGE_SIZE,
    ChunkReader,
)
from rtmp2server.protocol.errors import BudgetExceeded, ChunkError, RemoteProtocolError
from rtmp2server.protocol.messages import Message
from test_chunk import distinct_lanes, fmt0, interleave, lane_st

MiB = 1024 * 1024


def set_chunk_size(size: int) -> bytes:
    return fmt0(2, 0, 4, 1, 0) + struct.pack(">I", size)


def feed_pieces(
    reader: ChunkReader, data: bytes, splits: list[int], check: Callable[[], None] | None = None
) -> tuple[list[Message], str | None]:
    """Feed `data` cut at the cycling `splits`; return the messages and the error's text.
    `check` runs after every feed, the failing one included."""
    got: list[Message] = []
    pos = k = 0
    while pos < len(data):
        step = splits[k % len(splits)]
        k += 1
        try:
            got += reader.feed(data[pos : pos + step])
        except RemoteProtocolError as err:
            if check is not None:
                check()
            return got, str(err)
        pos += step
        if check is not None:
            check()
        if reader.error is not None:
            return got, str(reader.error)
    return got, None


def test_defaults() -> None:
    reader = ChunkReader()
    assert DEFAULT_MAX_CHUNK_STREAMS == 64
    assert DEFAULT_MAX_CHUNK_SIZE == 1024 * 1024
    assert reader.max_chunk_streams == 64
    assert reader.max_chunk_size == MiB
    assert reader.max_partial_bytes == DEFAULT_MAX_MESSAGE_SIZE + MiB
    assert ChunkReader(max_message_size=1000).max_partial_bytes == 1000 + MiB
    assert ChunkReader(max_partial_bytes=5).max_partial_bytes == 5
    for name in ("max_message_size", "max_chunk_streams", "max_partial_bytes", "max_chunk_size"):
        with pytest.raises(ValueError, match=name):
            ChunkReader(**{name: 0})


def test_budget_error_is_a_chunk_error() -> None:
    assert issubclass(BudgetExceeded, ChunkError)
    assert issubclass(BudgetExceeded, RemoteProtocolError)


# --- chunk streams ----------------------------------------------------------------------------


def test_chunk_streams_at_the_bound_accepted_one_over_refused() -> None:
    at_bound = b"".join(
        fmt0(csid, 0, 1, 9, 1) + bytes([csid & 0xFF]) for csid in (3, 64, 320, 65599)
    )
    over = fmt0(5, 0, 1, 9, 1) + b"x"
    for splits in ([len(at_bound) + len(over)], [1], [5, 2]):
        reader = ChunkReader(max_chunk_streams=4)
        got, error = feed_pieces(reader, at_bound, splits)
        assert error is None and [m.csid for m in got] == [3, 64, 320, 65599]
        assert reader.chunk_streams == 4
        # The ids in use go on being used; only a fifth id is refused.
        got, error = feed_pieces(reader, fmt0(3, 5, 1, 9, 1) + b"y" + over, splits)
        assert [m.payload for m in got] == [b"y"]
        assert error == (
            "chunk stream 5: a new chunk stream id beyond the 4 in use, "
            "expected at most 4 chunk streams"
        )
        assert isinstance(reader.error, BudgetExceeded)
        assert reader.chunk_streams == 4
        with pytest.raises(BudgetExceeded):
            reader.feed(b"")


def test_messages_before_the_refused_chunk_stream_are_handed_out() -> None:
    reader = ChunkReader(max_chunk_streams=1)
    msgs = reader.feed(fmt0(3, 0, 2, 9, 1) + b"ok" + fmt0(4, 0, 1, 8, 1) + b"a")
    assert [m.payload for m in msgs] == [b"ok"]
    assert isinstance(reader.error, BudgetExceeded)


def test_thousands_of_chunk_streams_are_refused_at_the_bound_and_memory_stays_small() -> None:
    # The attack of finding 4: each new chunk stream starts a message and leaves it unfinished.
    attack = b"".join(fmt0(csid, 0, 1000, 9, 1) + bytes(128) for csid in range(3, 5003))
    reads = [attack[i : i + 65536] for i in range(0, len(attack), 65536)]

    def grown(reader: ChunkReader) -> tuple[int, str | None]:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            error = None
            for piece in reads:
                try:
                    reader.feed(piece)
                except BudgetExceeded as err:
                    error = str(err)
                    break
            return tracemalloc.get_traced_memory()[0] - base, error
        finally:
            tracemalloc.stop()

    reader = ChunkReader()
    bounded, error = grown(reader)
    assert error == (
        "chunk stream 67: a new chunk stream id beyond the 64 in use, "
        "expected at most 64 chunk streams"
    )
    assert reader.chunk_streams == 64
    assert reader.partial_bytes <= 64 * 128 + 65536
    assert bounded < 256 * 1024
    # Without the bound the same bytes are all held: the measure can tell the difference.
    unbounded, error = grown(ChunkReader(max_chunk_streams=10**6))
    assert error is None
    assert unbounded > 4 * bounded


# --- bytes in unfinished messages --------------------------------------------------------------


def two_unfinished(first: int, second: int) -> bytes:
    """Two messages of several 128-byte chunks in progress at once, then finished."""
    a, b = bytes(range(200)) * 5, bytes(range(100, 250)) * 7
    a, b = a[:first], b[:second]
    out = fmt0(4, 0, first, 9, 1) + a[:128] + fmt0(5, 0, second, 8, 1) + b[:128]
    for i in range(128, max(first, second), 128):
        if i < first:
            out += b"\xc4" + a[i : i + 128]
        if i < second:
            out += b"\xc5" + b[i : i + 128]
    return out


@pytest.mark.parametrize("splits", [[100_000], [1], [3, 130]])
def test_partial_bytes_at_the_bound_accepted(splits: list[int]) -> None:
    reader = ChunkReader(max_partial_bytes=1000)
    peak = [0]

    def check() -> None:
        peak[0] = max(peak[0], reader.partial_bytes)

    got, error = feed_pieces(reader, two_unfinished(500, 500), splits, check)
    assert error is None
    assert [(m.csid, m.size) for m in got] == [(4, 500), (5, 500)]
    assert peak[0] <= 1000 + _MAX_HEADER
    assert reader.partial_bytes == 0
    # Finished messages give their bytes back: the same again fits.
    got, error = feed_pieces(reader, two_unfinished(600, 400), splits)
    assert error is None and sorted(m.size for m in got) == [400, 600]


@pytest.mark.parametrize("splits", [[100_000], [1], [3, 130]])
def test_partial_bytes_one_over_refused(splits: list[int]) -> None:
    reader = ChunkReader(max_partial_bytes=1000)
    data = fmt0(3, 0, 2, 20, 0) + b"ok" + two_unfinished(500, 501)
    got, error = feed_pieces(reader, data, splits)
    assert [m.payload for m in got] == [b"ok"]
    assert error == (
        "chunk stream 5: message of 501 bytes (type 8) beside 500 bytes of unfinished "
        "messages, expected at most 1000 bytes in unfinished messages"
    )
    assert isinstance(reader.error, BudgetExceeded)


def test_one_message_of_the_bound_in_one_chunk() -> None:
    payload = bytes(range(256)) * 4
    ok = set_chunk_size(4096) + fmt0(6, 0, 1024, 9, 1) + payload
    reader = ChunkReader(max_partial_bytes=1024)
    assert feed_pieces(reader, ok, [1])[0][1].payload == payload
    # Counted from its header on, before any of its payload is there.
    reader = ChunkReader(max_partial_bytes=1023)
    got, error = feed_pieces(reader, ok[: -len(payload)], [1])
    assert [m.type_id for m in got] == [1]
    assert error is not None and "message of 1024 bytes" in error and "at most 1023" in error


def test_abort_gives_the_bytes_back() -> None:
    abort = fmt0(2, 0, 4, 2, 0) + struct.pack(">I", 4)
    data = fmt0(4, 0, 1000, 9, 1) + bytes(128) + abort + fmt0(5, 0, 1000, 9, 1) + bytes(128)
    # The Abort message counts too while it arrives (every message does, from its header on).
    reader = ChunkReader(max_partial_bytes=1004)
    assert [m.type_id for m in reader.feed(data)] == [2]
    assert reader.error is None
    assert reader.partial_bytes == 128
    # Without the abort the second message is one too many.
    reader = ChunkReader(max_partial_bytes=1999)
    reader.feed(fmt0(4, 0, 1000, 9, 1) + bytes(128))
    with pytest.raises(BudgetExceeded, match="beside 1000 bytes"):
        reader.feed(fmt0(5, 0, 1000, 9, 1))


# --- chunk size --------------------------------------------------------------------------------


@pytest.mark.parametrize(("bound", "kwargs"), [(1024, {"max_chunk_size": 1024}), (MiB, {})])
def test_chunk_size_at_the_bound_accepted_one_over_refused(
    bound: int, kwargs: dict[str, int]
) -> None:
    reader = ChunkReader(**kwargs)
    assert [m.type_id for m in reader.feed(set_chunk_size(bound))] == [1]
    assert reader.chunk_size == bound
    reader = ChunkReader(**kwargs)
    msgs = reader.feed(fmt0(3, 0, 2, 20, 0) + b"ok" + set_chunk_size(bound + 1))
    assert [m.payload for m in msgs] == [b"ok"]
    assert isinstance(reader.error, BudgetExceeded)
    assert str(reader.error) == f"Set Chunk Size {bound + 1}, expected at most {bound}"
    assert reader.chunk_size == 128


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    lanes=st.dictionaries(st.sampled_from([3, 4, 5, 6, 7, 63, 64, 320]), lane_st, max_size=5),
    chunk_size=st.integers(1, 200),
    order=st.lists(st.integers(0, 7), min_size=1, max_size=40),
    splits=st.lists(st.integers(1, 3000), min_size=1, max_size=20),
    max_partial=st.integers(1, 2500),
    max_streams=st.integers(1, 6),
)
def test_budgets_hold_for_any_split(
    lanes: dict[int, list[tuple[int, int, int]]],
    chunk_size: int,
    order: list[int],
    splits: list[int],
    max_partial: int,
    max_streams: int,
) -> None:
    body, _ = interleave(distinct_lanes(lanes), chunk_size, order)
    data = set_chunk_size(chunk_size) + body

    def make() -> ChunkReader:
        return ChunkReader(max_partial_bytes=max_partial, max_chunk_streams=max_streams)

    whole, whole_error = feed_pieces(make(), data, [len(data)])
    reader = make()

    def check() -> None:
        assert reader.partial_bytes <= max_partial + _MAX_HEADER
        assert reader.chunk_streams <= max_streams

    got, error = feed_pieces(reader, data, splits, check)
    # The same messages and the same refusal, wherever the bytes were cut.
    assert got == whole
    assert error == whole_error
    if error is not None:
        assert isinstance(reader.error, BudgetExceeded)


# --- linear reassembly -------------------------------------------------------------------------


def parsed_bytes(reader: ChunkReader) -> Callable[[], list[int]]:
    """The calls of the reader's parser and the bytes handed to it from now on (the reader's
    own counters): every join of an incomplete chunk's pieces is handed to it, so this bounds
    the copying as well."""
    calls, handed = reader.parse_calls, reader.parse_bytes
    return lambda: [reader.parse_calls - calls, reader.parse_bytes - handed]


def test_a_largest_chunk_fed_in_a_thousand_pieces_costs_linear_work() -> None:
    size = 0xFFFFFF  # the largest message length the 24-bit field can announce
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = set_chunk_size(size) + fmt0(6, 40, size, 9, 1) + payload
    reader = ChunkReader(max_message_size=size, max_chunk_size=size)
    counts = parsed_bytes(reader)
    step = len(data) // 1000 + 1
    got, error = feed_pieces(reader, data, [step])
    assert error is None
    assert [m.type_id for m in got] == [1, 9]
    assert got[1].payload == payload
    assert counts()[0] <= 1000 + 5
    # Each read handed over once, the chunk joined once: about twice the input. The
    # quadratic re-joining of finding 6 handed over about 500 times the input here.
    assert len(data) <= counts()[1] <= 3 * len(data)
    assert reader.buffered == 0


def test_a_chunk_dribbled_one_byte_at_a_time_costs_linear_work() -> None:
    size = 70_000  # chunk size 70000, extended timestamp: every header stage is dribbled
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = set_chunk_size(size) + fmt0(320, 0x1234567, size, 9, 1) + payload
    reader = ChunkReader()
    counts = parsed_bytes(reader)
    got, error = feed_pieces(reader, data, [1])
    assert error is None
    assert got[1].payload == payload and got[1].timestamp == 0x1234567
    assert len(data) <= counts()[1] <= 3 * len(data)


def test_unfinished_messages_do_not_pin_the_reads_they_trickle_through() -> None:
    # One message trickles 16 bytes a read, each read otherwise filled by a 60000-byte
    # message of another chunk stream (the chunk size switched between them). Its views
    # would pin every read it spans; what it pins stays within twice what it holds plus
    # what came since the last look.
    reads = []
    a = bytes(range(256)) * 20  # 5120 bytes in 320 chunks of 16
    for i in range(0, len(a), 16):
        head = fmt0(6, 0, len(a), 9, 1) if i == 0 else b"\xc6"
        reads.append(
            set_chunk_size(16)
            + head
            + a[i : i + 16]
            + set_chunk_size(65536)
            + fmt0(4, i, 60000, 8, 1)
            + bytes(60000)
        )
    reader = ChunkReader()
    got: list[Message] = []
    worst = 0
    for piece in reads:
        got += reader.feed(piece)
        cs = reader._streams[6]
        if cs.remaining:
            pinned = sum(len(obj) for obj in {id(p.obj): p.obj for p in cs.parts}.values())  # type: ignore[arg-type]
            held = cs.length - cs.remaining
            assert pinned <= 2 * held + _COMPACT_EVERY + 2 * len(piece)
            worst = max(worst, pinned)
    assert [m.payload for m in got if m.csid == 6] == [a]
    assert sum(map(len, reads)) > 10 * worst  # the reads it spanned were let go


@pytest.mark.parametrize("chunk_size", [1, 7, 63])
def test_tiny_chunks_do_not_cost_a_view_each(chunk_size: int) -> None:
    # At chunk size 1 a message would hold a view object (about 180 bytes) for every byte:
    # a 17 MiB budget would be gigabytes. Runs of tiny views are joined as they arrive.
    payload = bytes(range(256)) * 400  # 102400 bytes
    body = fmt0(6, 0, len(payload), 9, 1) + payload[:chunk_size]
    for i in range(chunk_size, len(payload), chunk_size):
        body += b"\xc6" + payload[i : i + chunk_size]
    data = set_chunk_size(chunk_size) + body
    reader = ChunkReader()
    got: list[Message] = []
    for feeds, i in enumerate(range(0, len(data), 8192), 1):
        got += reader.feed(data[i : i + 8192])
        cs = reader._streams[6]
        if cs.remaining:
            assert len(cs.parts) <= 2 * feeds + 1  # a joined run a read (and its first chunk)
    assert [m.payload for m in got[1:]] == [payload]


def test_chunks_of_128_are_left_as_views() -> None:
    # The default chunk size (librtmp, GStreamer rtmp2sink): views are cheap enough, and
    # copying them would cost the common path.
    payload = bytes(range(256)) * 40
    body = fmt0(6, 0, len(payload), 9, 1) + payload[:128]
    for i in range(128, len(payload), 128):
        body += b"\xc6" + payload[i : i + 128]
    reads = [body[:5000], body[5000:6000]]
    reader = ChunkReader()
    for piece in reads:
        reader.feed(piece)
    parts = reader._streams[6].parts
    assert len(parts) == (6000 - 12) // 129
    assert all(len(p) == 128 for p in parts)
