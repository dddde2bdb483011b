"""FLV encoder and reader: byte vectors from FLV 10.1 annex E, flags fix-up, round trips.

Writing files (writev, hold-back, fsync) is tested in test_recorder.py."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import flv
from rtmp2server.protocol.messages import Message


def test_file_header_vector() -> None:
    assert flv.file_header(audio=True, video=True) == bytes.fromhex("464c5601 05 00000009 00000000")
    assert flv.file_header(audio=False, video=True)[4] == 0x01
    assert flv.file_header(audio=True, video=False)[4] == 0x04


def test_tag_vector_with_extended_timestamp() -> None:
    # timestamp 0x12345678: lower 24 bits in Timestamp, upper 8 in TimestampExtended
    data = flv.tag(flv.TAG_VIDEO, 0x12345678, b"\x17\x01abc")
    assert data == bytes.fromhex("09 000005 345678 12 000000") + b"\x17\x01abc" + bytes.fromhex(
        "00000010"
    )


def _encode(enc: flv.FLVEncoder, tags: list[tuple[int, int, bytes]]) -> bytes:
    out: list[bytes | memoryview] = []
    n = enc.encode([flv.TagItem(*t) for t in tags], out)
    data = b"".join(out)
    assert n == len(data)
    return data


def test_encoder_vector_one_call_is_a_whole_tag_sequence() -> None:
    enc = flv.FLVEncoder(audio=False, video=True)
    assert enc.file_header() == bytes.fromhex("464c5601 01 00000009 00000000")
    data = _encode(enc, [(9, 0, b"\x17\x00"), (8, 0x01000021, b"\xaf\x01x")])
    assert data == bytes.fromhex(
        "09 000002 000000 00 000000 1700 0000000d"  # video tag, its PreviousTagSize 13
        "08 000003 000021 01 000000 af0178 0000000e"  # audio, extended timestamp 0x01
    )
    assert (enc.tags, enc.size) == (2, 13 + 17 + 18)
    out: list[bytes | memoryview] = []
    assert enc.encode([], out) == 0 and out == []


def test_encoder_leaves_the_payload_pieces_uncopied() -> None:
    # A message reassembled from chunks: its pieces are views of the reads.
    body = memoryview(b"\x27\x01abc")
    item = Message.from_pieces(6, 5, 9, 1, [body], len(body))
    out: list[bytes | memoryview] = []
    flv.FLVEncoder().encode([item, item], out)
    assert out[1] is body and out[3] is body


@pytest.mark.parametrize(
    ("audio", "video", "kinds", "fixup"),
    [
        (True, True, [18, 9], b"\x01"),  # announced both, only video came
        (True, True, [8], b"\x04"),
        (True, True, [8, 9], None),
        (False, True, [9], None),
        (False, False, [8, 9], b"\x05"),
        (True, False, [18], b"\x00"),
    ],
)
def test_flags_fixup_says_what_the_stream_carried(
    audio: bool, video: bool, kinds: list[int], fixup: bytes | None
) -> None:
    enc = flv.FLVEncoder(audio=audio, video=video)
    _encode(enc, [(k, 0, b"\x00") for k in kinds])
    assert enc.flags_fixup() == fixup


def test_truncated_last_tag_is_tolerated_by_parse_flv() -> None:
    data = flv.file_header(audio=True, video=True) + flv.tag(8, 0, b"\xaf\x01x")
    _header, tags, rest = flv.parse_flv(data + flv.tag(8, 23, b"\xaf\x01y")[:-3])
    assert len(tags) == 1 and rest > 0
    with pytest.raises(flv.FLVError, match="trailing"):
        flv.read_flv(data + b"\x08\x00")


def test_bad_previous_tag_size() -> None:
    data = bytearray(flv.file_header(audio=True, video=True) + flv.tag(8, 0, b"ab"))
    data[-1] ^= 0xFF
    with pytest.raises(flv.FLVError, match="PreviousTagSize"):
        flv.read_flv(bytes(data))


def test_not_flv() -> None:
    with pytest.raises(flv.FLVError, match="expected b'FLV'"):
        flv.read_flv(b"GIF89a" + bytes(20))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from([8, 9, 18]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)
            ),
            max_size=5,
        ),
        max_size=6,
    )
)
def test_round_trip_in_any_batches(batches: list[list[tuple[int, int, bytes]]]) -> None:
    enc = flv.FLVEncoder(audio=True, video=True)
    data = enc.file_header()
    for batch in batches:
        data += _encode(enc, batch)
        # Cut after any call, what was encoded is a complete FLV file.
        _, got = flv.read_flv(data)
    _, got = flv.read_flv(data)
    assert [(t.tag_type, t.timestamp, t.body) for t in got] == [t for b in batches for t in b]
    assert enc.size == len(data)
    assert enc.tags == len(got)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_reader_raises_only_flv_error(data: bytes) -> None:
    with contextlib.suppress(flv.FLVError):
        flv.parse_flv(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + data)
