"""FLV writer and reader: byte vectors from FLV 10.1 annex E, flags fix-up, round trips."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import flv


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


def test_writer_fixes_flags_to_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "a.flv"
    w = flv.FLVWriter(open(path, "wb"))  # noqa: SIM115
    w.write_tag(flv.TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData\x05")
    w.write_tag(flv.TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00")
    w.write_tag(flv.TAG_VIDEO, 33, b"\x27\x01\x00\x00\x00")
    w.close()
    header, tags = flv.read_flv(path.read_bytes())
    assert (header.audio, header.video) == (False, True)
    assert [(t.tag_type, t.timestamp) for t in tags] == [(18, 0), (9, 0), (9, 33)]


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
        st.tuples(st.sampled_from([8, 9, 18]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)),
        max_size=20,
    )
)
def test_round_trip(tags: list[tuple[int, int, bytes]]) -> None:
    buf = io.BytesIO()
    w = flv.FLVWriter(buf, audio=True, video=True)
    for t in tags:
        w.write_tag(*t)
    data = buf.getvalue()
    _, got = flv.read_flv(data)
    assert [(t.tag_type, t.timestamp, t.body) for t in got] == tags
    assert w.bytes_written == len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_reader_raises_only_flv_error(data: bytes) -> None:
    with contextlib.suppress(flv.FLVError):
        flv.parse_flv(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + data)


def test_batches_on_an_unbuffered_file_are_written_with_writev(tmp_path: Path) -> None:
    # More tags than one writev takes (1024 pieces): the batch is split and nothing is lost.
    path = tmp_path / "b.flv"
    w = flv.FLVWriter(open(path, "wb", buffering=0), audio=True, video=True)  # noqa: SIM115
    tags = [
        flv.Tag(8 if i % 3 else 9, (i * 0x1234567) & 0xFFFFFFFF, bytes([i & 0xFF]) * (i % 50))
        for i in range(1500)
    ]
    msgs = [flv.TagItem(t.tag_type, t.timestamp, t.body) for t in tags]
    w.write_messages(msgs[:1])
    w.write_messages(msgs[1:])
    w.write_messages([])
    w.close()
    data = path.read_bytes()
    assert len(data) == w.bytes_written
    _header, got = flv.read_flv(data)
    assert got == tags


def test_short_writes_are_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.flv"
    w = flv.FLVWriter(open(path, "wb", buffering=0), audio=True, video=True)  # noqa: SIM115
    real = flv.os.writev

    def short(fd: int, parts: list[bytes]) -> int:  # at most 7 bytes per call
        return real(fd, [bytes(b"".join(parts)[:7])])

    monkeypatch.setattr(flv.os, "writev", short)
    w.write_messages(
        [flv.TagItem(9, 40, b"\x17\x01" + bytes(30)), flv.TagItem(8, 41, b"\xaf\x01xyz")]
    )
    monkeypatch.undo()
    w.close()
    _header, got = flv.read_flv(path.read_bytes())
    assert [(t.tag_type, t.timestamp, t.body) for t in got] == [
        (9, 40, b"\x17\x01" + bytes(30)),
        (8, 41, b"\xaf\x01xyz"),
    ]


def test_buffered_writer_holds_small_batches_until_the_threshold(tmp_path: Path) -> None:
    path = tmp_path / "d.flv"
    w = flv.FLVWriter(open(path, "wb", buffering=0), buffer_size=100)  # noqa: SIM115
    w.write_messages([flv.TagItem(8, 0, b"\xaf\x01" + bytes(30))])  # 47 bytes: held
    assert path.stat().st_size == 13
    w.write_messages([flv.TagItem(8, 23, b"\xaf\x01" + bytes(60))])  # 47 + 77 >= 100: out
    assert path.stat().st_size == 13 + 47 + 77
    w.write_messages([flv.TagItem(9, 40, b"\x17\x01" + bytes(200))])  # big: straight out
    assert path.stat().st_size == w.bytes_written
    w.write_messages([flv.TagItem(8, 46, b"\xaf\x01x")])
    w.flush()
    assert path.stat().st_size == w.bytes_written
    w.write_messages([flv.TagItem(8, 69, b"\xaf\x01y")])
    w.close()
    _header, tags = flv.read_flv(path.read_bytes())
    assert [t.timestamp for t in tags] == [0, 23, 40, 46, 69]
