"""Chunk stream reader/writer: byte-level vectors (RTMP 1.0 section 5.3), round trips, fuzz."""

from __future__ import annotations

import contextlib
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol.chunk import ChunkReader, ChunkWriter, basic_header
from rtmp2server.protocol.errors import ChunkError, RemoteProtocolError
from rtmp2server.protocol.messages import Message


def fmt0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    ext = b""
    field = ts
    if ts >= 0xFFFFFF:
        field = 0xFFFFFF
        ext = struct.pack(">I", ts)
    return (
        basic_header(0, csid)
        + field.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", sid)
        + ext
    )


def feed_all(data: bytes, step: int | None = None) -> list[Message]:
    reader = ChunkReader()
    if step is None:
        return reader.feed(data)
    out: list[Message] = []
    for i in range(0, len(data), step):
        out += reader.feed(data[i : i + step])
    return out


# --- basic header forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csid", "encoded"),
    [
        (2, b"\x02"),
        (3, b"\x03"),
        (63, b"\x3f"),
        (64, b"\x00\x00"),  # 2-byte form starts at 64
        (319, b"\x00\xff"),  # last 2-byte id
        (320, b"\x01\x00\x01"),  # 3-byte form: (320 - 64) = 256, little-endian
        (65599, b"\x01\xff\xff"),  # largest id
        (1000, b"\x01\xa8\x03"),  # 936 = 0x03a8
    ],
)
def test_basic_header_forms(csid: int, encoded: bytes) -> None:
    assert basic_header(0, csid) == encoded
    data = basic_header(0, csid)[:] + b"\x00\x00\x10\x00\x00\x03\x09\x01\x00\x00\x00abc"
    (msg,) = feed_all(data)
    assert (msg.csid, msg.timestamp, msg.type_id, msg.stream_id, msg.payload) == (
        csid,
        16,
        9,
        1,
        b"abc",
    )
    # and one byte at a time
    (msg1,) = feed_all(data, 1)
    assert msg1 == msg


def test_fmt0_vector_from_spec_shape() -> None:
    # csid 3, timestamp 1000, length 5, type 20 (AMF0 command), stream 0
    data = bytes.fromhex("03 0003e8 000005 14 00000000") + b"hello"
    (msg,) = feed_all(data)
    assert msg == Message(3, 1000, 20, 0, b"hello")


def test_fmt1_fmt2_fmt3_deltas() -> None:
    # RTMP 1.0 5.3.2.1 example shape: audio on csid 4, delta 33 each message.
    data = (
        fmt0(4, 1000, 4, 8, 1)
        + b"AAAA"
        + bytes.fromhex("84")[:0]  # placeholder to keep the layout readable
        + b"\x44"  # fmt 1, csid 4
        + (33).to_bytes(3, "big")
        + (3).to_bytes(3, "big")
        + b"\x08"
        + b"BBB"
        + b"\x84"  # fmt 2, csid 4: delta only
        + (33).to_bytes(3, "big")
        + b"CCC"
        + b"\xc4"  # fmt 3: new message, same length, previous delta 33 again
        + b"DDD"
    )
    msgs = feed_all(data)
    assert [(m.timestamp, m.payload) for m in msgs] == [
        (1000, b"AAAA"),
        (1033, b"BBB"),
        (1066, b"CCC"),
        (1099, b"DDD"),
    ]
    assert all(m.stream_id == 1 and m.type_id == 8 for m in msgs)
    assert feed_all(data, 1) == msgs


def test_fmt3_after_fmt0_reuses_fmt0_timestamp_as_delta() -> None:
    # RTMP 1.0 5.3.1.2.4: a type-3 chunk following a type-0 chunk uses the type-0
    # timestamp as its delta.
    data = fmt0(5, 40, 2, 9, 1) + b"v1" + b"\xc5" + b"v2"
    msgs = feed_all(data)
    assert [(m.timestamp, m.payload) for m in msgs] == [(40, b"v1"), (80, b"v2")]


def test_message_split_over_chunks_and_interleaved() -> None:
    # chunk size 128: a 300-byte video message on csid 6 interleaved with audio on csid 4
    video = bytes(range(256)) + bytes(44)
    audio = b"a" * 10
    data = (
        fmt0(6, 0, 300, 9, 1)
        + video[:128]
        + fmt0(4, 0, 10, 8, 1)
        + audio
        + b"\xc6"
        + video[128:256]
        + b"\xc6"
        + video[256:]
    )
    msgs = feed_all(data)
    assert [(m.csid, m.payload) for m in msgs] == [(4, audio), (6, video)]
    assert feed_all(data, 1) == msgs
    assert feed_all(data, 7) == msgs


def test_extended_timestamp_on_type3_chunks() -> None:
    ts = 0x01020304
    payload = b"x" * 200
    ext = struct.pack(">I", ts)
    # Adobe style: extended timestamp repeated on every type-3 chunk of the message.
    data = fmt0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + ext + payload[128:]
    (msg,) = feed_all(data)
    assert msg.timestamp == ts and msg.payload == payload
    assert feed_all(data, 1) == [msg]
    # Encoders that leave it out on continuation chunks are read as well.
    data2 = fmt0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + payload[128:]
    assert feed_all(data2) == [msg]


def test_extended_timestamp_type3_new_message() -> None:
    ts = 0xFFFFFF + 5
    data = (
        fmt0(6, ts, 1, 9, 1)
        + b"a"
        + b"\xc6"
        + struct.pack(">I", ts)  # new message: the extended field is its delta
        + b"b"
    )
    msgs = feed_all(data)
    assert [m.timestamp for m in msgs] == [ts, (2 * ts) & 0xFFFFFFFF]


def test_extended_delta_fmt1() -> None:
    data = (
        fmt0(4, 10, 1, 8, 1)
        + b"a"
        + b"\x44"
        + b"\xff\xff\xff"
        + (1).to_bytes(3, "big")
        + b"\x08"
        + struct.pack(">I", 0x1000000)
        + b"b"
    )
    msgs = feed_all(data)
    assert [m.timestamp for m in msgs] == [10, 10 + 0x1000000]


def test_zero_length_messages() -> None:
    data = fmt0(3, 0, 0, 18, 1) + fmt0(3, 5, 0, 18, 1) + b"\xc3"
    msgs = feed_all(data)
    assert [(m.timestamp, m.payload) for m in msgs] == [(0, b""), (5, b""), (10, b"")]


def test_set_chunk_size_applies_to_next_chunk_in_same_read() -> None:
    payload = b"z" * 1000
    data = fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 1000) + fmt0(6, 0, 1000, 9, 1) + payload
    reader = ChunkReader()
    msgs = reader.feed(data)
    assert [m.type_id for m in msgs] == [1, 9]
    assert msgs[1].payload == payload
    assert reader.chunk_size == 1000


def test_abort_discards_partial_message() -> None:
    data = (
        fmt0(6, 0, 300, 9, 1)
        + b"p" * 128
        + fmt0(2, 0, 4, 2, 0)
        + struct.pack(">I", 6)  # Abort Message for csid 6
        + fmt0(6, 7, 3, 9, 1)  # a fresh type-0 header is legal after the abort
        + b"new"
    )
    msgs = feed_all(data)
    assert [(m.type_id, m.payload) for m in msgs] == [(2, struct.pack(">I", 6)), (9, b"new")]


@pytest.mark.parametrize("size", [0, 0x80000000, 0xFFFFFFFF])
def test_absurd_chunk_size_is_remote_error(size: int) -> None:
    with pytest.raises(RemoteProtocolError, match="Set Chunk Size"):
        feed_all(fmt0(2, 0, 4, 1, 0) + struct.pack(">I", size))


def test_first_header_must_be_type0() -> None:
    with pytest.raises(ChunkError, match="type-1 header with no previous header"):
        feed_all(b"\x43" + bytes(7))
    with pytest.raises(ChunkError, match="type-3 chunk with no previous header"):
        feed_all(b"\xc3")


def test_new_header_mid_message_is_error() -> None:
    data = fmt0(6, 0, 300, 9, 1) + b"p" * 128 + fmt0(6, 0, 3, 9, 1)
    with pytest.raises(ChunkError, match="middle of a message"):
        feed_all(data)


def test_max_message_size() -> None:
    reader = ChunkReader(max_message_size=1000)
    with pytest.raises(ChunkError, match="at most 1000"):
        reader.feed(fmt0(6, 0, 1001, 9, 1))


def test_partial_chunk_waits() -> None:
    reader = ChunkReader()
    data = fmt0(3, 1, 5, 20, 0) + b"hello"
    assert reader.feed(data[:-1]) == []
    assert reader.buffered == len(data) - 1
    assert reader.feed(data[-1:]) == [Message(3, 1, 20, 0, b"hello")]
    assert reader.buffered == 0


# --- writer -------------------------------------------------------------------------------


def test_writer_header_compression() -> None:
    w = ChunkWriter(128)
    a = w.write(4, 0, 8, 1, b"aaaa")
    b = w.write(4, 33, 8, 1, b"bbbb")  # same length/type: fmt 2
    c = w.write(4, 66, 8, 1, b"cccc")  # same delta too: fmt 3
    d = w.write(4, 70, 8, 1, b"dd")  # other length: fmt 1
    e = w.write(4, 70, 8, 2, b"dd")  # other stream: fmt 0
    assert a[0] >> 6 == 0 and b[0] >> 6 == 2 and c[0] >> 6 == 3
    assert d[0] >> 6 == 1 and e[0] >> 6 == 0
    assert c == b"\xc4cccc"
    msgs = ChunkReader().feed(a + b + c + d + e)
    assert [(m.timestamp, m.stream_id, m.payload) for m in msgs] == [
        (0, 1, b"aaaa"),
        (33, 1, b"bbbb"),
        (66, 1, b"cccc"),
        (70, 1, b"dd"),
        (70, 2, b"dd"),
    ]


def test_writer_extended_timestamp_every_chunk() -> None:
    w = ChunkWriter(128)
    ts = 0x12345678
    data = w.write(6, ts, 9, 1, b"q" * 300)
    ext = struct.pack(">I", ts)
    assert data[1:4] == b"\xff\xff\xff"
    assert data.count(b"\xc6" + ext) == 2  # two continuation chunks, each with the timestamp
    (msg,) = ChunkReader().feed(data)
    assert msg.timestamp == ts and msg.payload == b"q" * 300


# --- properties -----------------------------------------------------------------------------

message_st = st.tuples(
    st.sampled_from([3, 4, 5, 6, 63, 64, 200, 319, 320, 1000, 65599]),
    st.integers(0, 0x2000000),  # timestamps up to and beyond the 24-bit field
    st.sampled_from([8, 9, 18, 20]),
    st.integers(0, 3),
    st.binary(max_size=700),
)


@settings(max_examples=150, deadline=None)
@given(
    msgs=st.lists(message_st, max_size=25),
    chunk_sizes=st.lists(st.integers(1, 600), min_size=1, max_size=3),
    splits=st.lists(st.integers(1, 400), min_size=1, max_size=50),
)
def test_round_trip_random_chunk_sizes_and_splits(
    msgs: list[tuple[int, int, int, int, bytes]],
    chunk_sizes: list[int],
    splits: list[int],
) -> None:
    writer = ChunkWriter(128)
    stream = bytearray()
    expected: list[tuple[int, int, int, int, bytes]] = []
    sizes = iter(chunk_sizes)
    for i, (csid, ts, type_id, sid, payload) in enumerate(msgs):
        if i % 8 == 0:
            size = next(sizes, None)
            if size is not None:
                stream += writer.write(2, 0, 1, 0, struct.pack(">I", size))
                writer.set_chunk_size(size)
                expected.append((2, 0, 1, 0, struct.pack(">I", size)))
        stream += writer.write(csid, ts, type_id, sid, payload)
        expected.append((csid, ts, type_id, sid, payload))
    data = bytes(stream)
    # split at the hypothesis-chosen points, cycling
    reader = ChunkReader()
    got: list[Message] = []
    pos = 0
    k = 0
    while pos < len(data):
        step = splits[k % len(splits)]
        got += reader.feed(data[pos : pos + step])
        pos += step
        k += 1
    assert [(m.csid, m.timestamp, m.type_id, m.stream_id, m.payload) for m in got] == expected
    assert reader.buffered == 0


Lane = list[tuple[int, int, bytes]]  # (timestamp, type id, payload) of one chunk stream


def interleave(
    lanes: dict[int, Lane], chunk_size: int, order: list[int]
) -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """Chunks of several chunk streams mixed at chunk granularity, as RTMP 1.0 5.3 allows
    (the messages of one chunk stream stay in order). Each message starts with a type-0
    header; continuations are type-3, repeating an extended timestamp. `order` picks the
    next chunk stream. Returns the bytes and (csid, timestamp, type, payload) of each
    message in the order their last chunk went out."""
    queues: dict[int, list[tuple[bytes, tuple[int, int, int, bytes] | None]]] = {}
    for csid, msgs in lanes.items():
        chunks = queues[csid] = []
        for ts, type_id, payload in msgs:
            ext = struct.pack(">I", ts) if ts >= 0xFFFFFF else b""
            pieces = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)]
            pieces = pieces or [b""]
            heads = [fmt0(csid, ts, len(payload), type_id, 1)]
            heads += [basic_header(3, csid) + ext] * (len(pieces) - 1)
            for i, (head, piece) in enumerate(zip(heads, pieces, strict=True)):
                last = i == len(pieces) - 1
                chunks.append((head + piece, (csid, ts, type_id, payload) if last else None))
    out = bytearray()
    expected: list[tuple[int, int, int, bytes]] = []
    live = [c for c in queues if queues[c]]
    k = 0
    while live:
        csid = live[order[k % len(order)] % len(live)]
        k += 1
        chunk, done = queues[csid].pop(0)
        out += chunk
        if done is not None:
            expected.append(done)
        if not queues[csid]:
            live.remove(csid)
    return bytes(out), expected


lane_st = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000010)),
        st.sampled_from([8, 9, 18]),
        st.integers(0, 900),
    ),
    max_size=6,
)


def distinct_lanes(lanes: dict[int, list[tuple[int, int, int]]]) -> dict[int, Lane]:
    """Payloads whose bytes differ between streams and positions, so that a byte taken from
    the wrong place shows."""
    return {
        csid: [
            (ts, type_id, bytes((csid * 31 + i * 7 + j) & 0xFF for j in range(size)))
            for i, (ts, type_id, size) in enumerate(msgs)
        ]
        for csid, msgs in lanes.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    lanes=st.dictionaries(st.sampled_from([3, 4, 5, 6, 7, 63, 64, 320]), lane_st, max_size=4),
    chunk_size=st.integers(1, 200),
    order=st.lists(st.integers(0, 7), min_size=1, max_size=40),
    splits=st.lists(st.integers(1, 3000), min_size=1, max_size=20),
)
def test_interleaved_chunk_streams_any_split(
    lanes: dict[int, list[tuple[int, int, int]]],
    chunk_size: int,
    order: list[int],
    splits: list[int],
) -> None:
    # Runs of one stream's chunks with others' chunks between them, cut anywhere: the
    # reader's fast path for back-to-back chunks must stop exactly where another one starts.
    body, expected = interleave(distinct_lanes(lanes), chunk_size, order)
    data = fmt0(2, 0, 4, 1, 0) + struct.pack(">I", chunk_size) + body
    reader = ChunkReader()
    got: list[Message] = []
    pos = k = 0
    while pos < len(data):
        step = splits[k % len(splits)]
        got += reader.feed(data[pos : pos + step])
        pos += step
        k += 1
    assert [(m.csid, m.timestamp, m.type_id, m.payload) for m in got[1:]] == expected
    assert all(type(m.payload) is bytes for m in got)
    assert reader.buffered == 0


def test_back_to_back_run_stops_at_another_stream() -> None:
    # chunk size 4: a 20-byte video message in 5 chunks with an audio chunk after the third.
    video = bytes(range(20))
    data = fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 4)
    data += fmt0(6, 40, 20, 9, 1) + video[:4]
    data += b"\xc6" + video[4:8] + b"\xc6" + video[8:12]
    data += fmt0(4, 40, 3, 8, 1) + b"aud"
    data += b"\xc6" + video[12:16] + b"\xc6" + video[16:20]
    for step in (len(data), 1, 7, 22):
        got = feed_all(data, step)
        assert [(m.csid, m.payload) for m in got[1:]] == [(4, b"aud"), (6, video)], step


@settings(max_examples=20, deadline=None)
@given(msgs=st.lists(message_st, max_size=6), chunk_size=st.integers(1, 300))
def test_round_trip_one_byte_at_a_time(
    msgs: list[tuple[int, int, int, int, bytes]], chunk_size: int
) -> None:
    writer = ChunkWriter(128)
    data = writer.write(2, 0, 1, 0, struct.pack(">I", chunk_size))
    writer.set_chunk_size(chunk_size)
    for m in msgs:
        data += writer.write(*m)
    got = feed_all(data, 1)
    assert [(m.csid, m.timestamp, m.type_id, m.stream_id, m.payload) for m in got[1:]] == msgs


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600), step=st.integers(1, 64))
def test_fuzz_reader_only_raises_remote_errors(data: bytes, step: int) -> None:
    reader = ChunkReader(max_message_size=1 << 20)
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(message_st, min_size=1, max_size=4),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_fuzz_mutated_valid_streams(
    prefix: list[tuple[int, int, int, int, bytes]], flips: list[tuple[int, int]]
) -> None:
    writer = ChunkWriter(64)
    data = bytearray()
    for m in prefix:
        data += writer.write(*m)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    with contextlib.suppress(RemoteProtocolError):
        feed_all(bytes(data), 3)


def test_messages_before_bad_chunk_are_handed_out() -> None:
    reader = ChunkReader()
    good = fmt0(6, 0, 3, 9, 1) + b"abc"
    bad = fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 0)  # Set Chunk Size 0
    msgs = reader.feed(good + bad + good)
    assert [m.payload for m in msgs] == [b"abc"]
    assert isinstance(reader.error, RemoteProtocolError)
    with pytest.raises(RemoteProtocolError):
        reader.feed(good)


def test_multi_chunk_message_is_joined_once_complete() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: 3 chunks of 4096
    writer = ChunkWriter(128)
    data = writer.write(2, 0, 1, 0, struct.pack(">I", 4096))
    writer.set_chunk_size(4096)
    data += writer.write(6, 1000, 9, 1, payload)
    reader = ChunkReader()
    first, second = data[:5000], data[5000:]
    _, msg = reader.feed(first) + reader.feed(second)
    assert msg.size == len(payload)
    # One bytes object, which holds no view of the reads it came in.
    assert msg.pieces() == [payload] and type(msg.pieces()[0]) is bytes
    assert msg.payload == payload and msg.payload is msg.payload
    assert bytes(msg.head[:2]) == payload[:2]
    assert sys.getrefcount(second) == 2  # only this frame and the call's argument
