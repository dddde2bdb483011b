"""AMF0 and AMF3: byte vectors, round trips, and the decoder's error promise.

Vectors come from the Adobe AMF0 (2006) and AMF3 (2013) specifications, from what ffmpeg
sends (connect, @setDataFrame/onMetaData), and from bytes Flash/AIR's ByteArray.writeObject
produces. The fuzz properties check the promise of both decoders: any input decodes or
raises AMFError, never anything else.
"""

from __future__ import annotations

import contextlib
import enum
import math
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import amf0, amf3
from rtmp2server.protocol.amf0 import (
    UNDEFINED,
    Date,
    ECMAArray,
    TypedObject,
    XMLDocument,
)
from rtmp2server.protocol.amf3 import AMF3Array
from rtmp2server.protocol.errors import AMFError, RemoteProtocolError


def h(text: str) -> bytes:
    """Bytes from spaced hex, the way protocol dumps print them."""
    return bytes.fromhex(text)


# Independent mini-writers for building vectors (they do not use the encoder under test).
def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


def key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack(">H", len(raw)) + raw


def s0(text: str) -> bytes:
    return b"\x02" + key(text)


END = h("00 00 09")


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types exactly, NaN with NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, TypedObject):
        return a.class_name == b.class_name and same(a.fields, b.fields)
    if isinstance(a, AMF3Array):
        return same(a.dense, b.dense) and same(a.associative, b.associative)
    if isinstance(a, Date):
        return same(a.milliseconds, b.milliseconds) and a.timezone == b.timezone
    return bool(a == b)


# =============================================================================================
# AMF0 byte vectors
# =============================================================================================

# What ffmpeg sends to publish: "connect", transaction 1, the command object.
FFMPEG_CONNECT = (
    h("02 0007") + b"connect"
    + h("00 3ff0000000000000")  # 1.0
    + h("03")
    + h("0003") + b"app" + h("02 0004") + b"live"
    + h("0004") + b"type" + h("02 000a") + b"nonprivate"
    + h("0008") + b"flashVer" + h("02 001f") + b"FMLE/3.0 (compatible; FMSc/1.0)"
    + h("0005") + b"tcUrl" + h("02 001a") + b"rtmp://127.0.0.1:1935/live"
    + h("00 00 09")
)  # fmt: skip

CONNECT_VALUES = [
    "connect",
    1.0,
    {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
    },
]

# ffmpeg's flvenc metadata, as sent over RTMP with @setDataFrame.
METADATA_FIELDS: list[tuple[str, bytes]] = [
    ("duration", h("00 0000000000000000")),
    ("width", h("00 4094000000000000")),  # 1280.0
    ("height", h("00 4086800000000000")),  # 720.0
    ("videodatarate", h("00 40a3880000000000")),  # 2500.0
    ("framerate", h("00 403e000000000000")),  # 30.0
    ("videocodecid", h("00 401c000000000000")),  # 7.0 (AVC)
    ("audiodatarate", h("00 4060000000000000")),  # 128.0
    ("audiosamplerate", h("00 40e5888000000000")),  # 44100.0
    ("audiosamplesize", h("00 4030000000000000")),  # 16.0
    ("stereo", h("01 01")),
    ("audiocodecid", h("00 4024000000000000")),  # 10.0 (AAC)
    ("encoder", s0("Lavf58.76.100")),
    ("filesize", h("00 0000000000000000")),
]
METADATA_DICT = {
    "duration": 0.0,
    "width": 1280.0,
    "height": 720.0,
    "videodatarate": 2500.0,
    "framerate": 30.0,
    "videocodecid": 7.0,
    "audiodatarate": 128.0,
    "audiosamplerate": 44100.0,
    "audiosamplesize": 16.0,
    "stereo": True,
    "audiocodecid": 10.0,
    "encoder": "Lavf58.76.100",
    "filesize": 0.0,
}


def metadata_body(count: int = 13, end: bytes = END) -> bytes:
    props = b"".join(key(k) + v for k, v in METADATA_FIELDS)
    return s0("@setDataFrame") + s0("onMetaData") + b"\x08" + struct.pack(">I", count) + props + end


def test_ffmpeg_connect_decodes() -> None:
    assert len(FFMPEG_CONNECT) == 134
    values = amf0.decode_all(FFMPEG_CONNECT)
    assert same(values, CONNECT_VALUES)
    assert list(values[2]) == ["app", "type", "flashVer", "tcUrl"]  # order kept


def test_ffmpeg_connect_encodes_byte_exact() -> None:
    assert amf0.encode(*CONNECT_VALUES) == FFMPEG_CONNECT
    # ints are numbers too
    assert amf0.encode("connect", 1, CONNECT_VALUES[2]) == FFMPEG_CONNECT


def test_ffmpeg_metadata_ecma_array() -> None:
    values = amf0.decode_all(metadata_body())
    assert values[:2] == ["@setDataFrame", "onMetaData"]
    meta = values[2]
    assert type(meta) is ECMAArray and isinstance(meta, dict)
    assert same(dict(meta), METADATA_DICT)
    assert amf0.encode("@setDataFrame", "onMetaData", ECMAArray(METADATA_DICT)) == metadata_body()


@pytest.mark.parametrize("count", [0, 1, 13, 500, 0xFFFFFFFF])
def test_ecma_array_count_is_only_a_hint(count: int) -> None:
    values = amf0.decode_all(metadata_body(count=count))
    assert same(dict(values[2]), METADATA_DICT)


@pytest.mark.parametrize("end", [b"", h("00 00")], ids=["no-end", "empty-key-only"])
def test_ecma_array_without_end_marker_at_end_of_data(end: bytes) -> None:
    values = amf0.decode_all(metadata_body(end=end))
    assert same(dict(values[2]), METADATA_DICT)


def test_ecma_array_without_end_marker_inside_object_is_an_error() -> None:
    data = h("03") + key("m") + h("08 00000001") + key("a") + num(1.0)
    with pytest.raises(AMFError, match="truncated object property name length"):
        amf0.decode_all(data)


AMF0_VECTORS: list[tuple[str, bytes, Any]] = [
    ("number 0", h("00 0000000000000000"), 0.0),
    ("number 1.5", h("00 3ff8000000000000"), 1.5),
    ("number -0", h("00 8000000000000000"), -0.0),
    ("number inf", h("00 7ff0000000000000"), math.inf),
    ("boolean false", h("01 00"), False),
    ("boolean true", h("01 01"), True),
    ("boolean nonzero", h("01 7f"), True),
    ("string", h("02 0003 616263"), "abc"),
    ("string empty", h("02 0000"), ""),
    ("string utf-8", h("02 0006 e4b8ade69687"), "中文"),
    ("object", h("03 0001 61 00 3ff0000000000000 0001 62 05 000009"), {"a": 1.0, "b": None}),
    ("object empty", h("03 000009"), {}),
    ("object empty key", h("03 0000 05 000009"), {"": None}),
    ("null", h("05"), None),
    ("undefined", h("06"), UNDEFINED),
    ("ecma array", h("08 00000001 0001 61 02 0001 78 000009"), ECMAArray(a="x")),
    ("ecma array empty", h("08 00000000 000009"), ECMAArray()),
    ("strict array", h("0a 00000002 00 3ff0000000000000 05"), [1.0, None]),
    ("strict array empty", h("0a 00000000"), []),
    ("date", h("0b 408f400000000000 0000"), Date(1000.0)),
    ("date tz", h("0b 0000000000000000 ff88"), Date(0.0, -120)),
    ("long string", h("0c 00000003 616263"), "abc"),
    ("unsupported", h("0d"), UNDEFINED),
    ("xml", h("0f 00000004 3c612f3e"), XMLDocument("<a/>")),
    (
        "typed object",
        h("10 0005 506f696e74 0001 78 00 3ff0000000000000 0001 79 00 0000000000000000 000009"),
        TypedObject("Point", {"x": 1.0, "y": 0.0}),
    ),
    ("typed object empty", h("10 0001 43 000009"), TypedObject("C", {})),
    ("avm+ integer", h("11 04 05"), 5),
    ("avm+ string", h("11 06 05 6869"), "hi"),
    ("avm+ object", h("11 0a 0b 01 03 6b 06 03 76 01"), {"k": "v"}),
]


@pytest.mark.parametrize(
    ("data", "expected"), [v[1:] for v in AMF0_VECTORS], ids=[v[0] for v in AMF0_VECTORS]
)
def test_amf0_vector_decodes(data: bytes, expected: Any) -> None:
    value, end = amf0.decode(data)
    assert end == len(data)
    assert same(value, expected)
    assert same(amf0.decode_all(data), [expected])


ENCODABLE0 = {
    "number 0", "number 1.5", "number -0", "number inf", "boolean false", "boolean true",
    "string", "string empty", "string utf-8", "object", "object empty", "null", "undefined",
    "ecma array", "ecma array empty", "strict array", "strict array empty", "date", "date tz",
    "xml", "typed object", "typed object empty",
}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "value"),
    [v[1:] for v in AMF0_VECTORS if v[0] in ENCODABLE0],
    ids=[v[0] for v in AMF0_VECTORS if v[0] in ENCODABLE0],
)
def test_amf0_vector_encodes(data: bytes, value: Any) -> None:
    assert amf0.encode(value) == data


def test_amf0_decode_offset_and_buffer_types() -> None:
    data = FFMPEG_CONNECT
    value, pos = amf0.decode(data)
    assert (value, pos) == ("connect", 10)
    value, pos = amf0.decode(data, pos)
    assert (value, pos) == (1.0, 19)
    for buf in (bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert same(amf0.decode_all(buf), CONNECT_VALUES)
    with pytest.raises(AMFError, match="data ends at offset 134"):
        amf0.decode(data, len(data))


def test_amf0_references() -> None:
    # [ {a: 1}, <ref 1> ]: the strict array is object 0, the inner object is object 1.
    data = h("0a 00000002 03 0001 61 00 3ff0000000000000 000009 07 0001")
    (arr,) = amf0.decode_all(data)
    assert arr == [{"a": 1.0}, {"a": 1.0}]
    assert arr[0] is arr[1]
    # A self reference (object 0 is the outer object) and an ECMA array/typed object in the table.
    (obj,) = amf0.decode_all(h("03 0004 73656c66 07 0000 000009"))
    assert obj["self"] is obj
    data = h("08 00000000 000009 10 0001 43 000009 07 0001 07 0000")
    ecma, typed, ref1, ref0 = amf0.decode_all(data)
    assert ref1 is typed and ref0 is ecma


def test_amf0_references_span_decode_all() -> None:
    data = h("03 000009") + h("07 0000")
    first, second = amf0.decode_all(data)
    assert first is second


def test_amf0_bad_reference() -> None:
    with pytest.raises(
        AMFError, match=r"reference to object 0 at offset 0, expected an index below 0"
    ):
        amf0.decode_all(h("07 0000"))
    with pytest.raises(AMFError, match="reference to object 2 at offset 4"):
        amf0.decode_all(h("03 0001 61 07 0002 000009"))  # fmt: skip


def test_amf0_long_strings_boundary() -> None:
    s65535 = "a" * 65535
    s65536 = "a" * 65536
    assert amf0.encode(s65535)[:3] == h("02 ffff")
    assert amf0.encode(s65536)[:5] == h("0c 00010000")
    assert amf0.decode_all(amf0.encode(s65535, s65536)) == [s65535, s65536]
    # UTF-8 length counts, not characters: 21846 three-byte characters are 65538 bytes.
    wide = "中" * 21846
    assert amf0.encode(wide)[:5] == h("0c 00010002")
    assert amf0.decode_all(amf0.encode(wide)) == [wide]
    assert amf0.decode_all(h("0f 00000000")) == [XMLDocument("")]


def test_amf0_avmplus_switch_shares_one_amf3_context() -> None:
    # The second AMF3 string is a reference to the first, across two switches.
    data = h("11 06 05 6869") + s0("x") + h("11 06 00")
    assert amf0.decode_all(data) == ["hi", "x", "hi"]
    # Nested: an AMF0 object holding an AMF3 array.
    data = h("03 0001 61 11 09 05 01 04 01 04 02 000009")
    assert amf0.decode_all(data) == [{"a": [1, 2]}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("1f"), "AMF0: unknown type marker 0x1f at offset 0"),
        (h("05 12"), "unknown type marker 0x12 at offset 1"),
        (h("04"), "movieclip marker 0x04 at offset 0 is reserved"),
        (h("0e"), "recordset marker 0x0e at offset 0 is reserved"),
        (h("09"), "object-end marker 0x09 at offset 0 outside an object"),
        (h("00 3ff0"), "truncated number at offset 1: expected 8 more bytes, 2 remain"),
        (h("01"), "truncated boolean at offset 1"),
        (h("02 00"), "truncated string length at offset 1"),
        (h("02 0005 6162"), "truncated string at offset 3: expected 5 more bytes, 2 remain"),
        (h("02 0002 c328"), "string at offset 3 is not valid UTF-8"),
        (h("02 0001 ff"), r"byte 0xff at offset 3\), expected UTF-8 text"),
        (h("0c 0000"), "truncated long string length"),
        (h("0c ffffffff 00"), "truncated long string at offset 5: expected 4294967295 more"),
        (h("03 0001 61"), "data ends at offset 4, expected a type marker"),
        (h("03"), "truncated object property name length at offset 1"),
        (h("03 0000"), "object ends at offset 3 after an empty property name"),
        (h("0a ffffffff 05"), "strict array at offset 0 claims 4294967295 elements"),
        (h("0a 00000002 02 0000"), "data ends at offset 8"),
        (h("0b 00"), "truncated date at offset 1"),
        (h("10 00"), "truncated typed object class name length"),
        (h("08 0000"), "truncated ECMA array count"),
        (h("07 00"), "truncated reference index"),
        (h("11"), "AMF3: data ends at offset 1, expected a type marker"),
        (h("11 0a 07 03 58"), "externalizable class 'X' at offset 1 not supported"),
    ],
)
def test_amf0_errors_say_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(AMFError, match=message):
        amf0.decode_all(data)


def test_amf_error_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        amf0.decode_all(h("ff"))


def nested0(depth: int) -> bytes:
    return h("0a 00000001") * depth + h("05")


def test_amf0_nesting_depth_is_capped() -> None:
    (value,) = amf0.decode_all(nested0(amf0.MAX_DEPTH))
    for _ in range(amf0.MAX_DEPTH):
        value = value[0]
    assert value is None
    with pytest.raises(AMFError, match="nested 65 deep, expected at most 64"):
        amf0.decode_all(nested0(amf0.MAX_DEPTH + 1))
    # Far deeper than Python's recursion limit: still an AMFError.
    with pytest.raises(AMFError):
        amf0.decode_all(nested0(100_000))
    objects = h("03 0001 61") * 200 + h("05")
    with pytest.raises(AMFError, match="object at offset 256 nested 65 deep"):
        amf0.decode_all(objects)
    # AMF3 containers inside an AVM+ switch count towards the same limit.
    mixed = h("0a 00000001") * 60 + h("11") + h("09 03 01") * 10 + h("01")
    with pytest.raises(AMFError, match=r"AMF3: array .* nested 65 deep"):
        amf0.decode_all(mixed)


class Color(enum.IntEnum):
    RED = 2


def test_amf0_encode_types() -> None:
    assert amf0.encode(True, 1, Color.RED) == h("01 01") + num(1.0) + num(2.0)
    assert amf0.encode((1.0,)) == h("0a 00000001") + num(1.0)
    assert amf0.encode(OrderedDict(a=None)) == h("03 0001 61 05 000009")
    assert amf0.encode() == b""
    assert repr(UNDEFINED) == "UNDEFINED" and not UNDEFINED
    assert amf0.Undefined() is UNDEFINED


@pytest.mark.parametrize("bad", [b"x", {1, 2}, object(), 1j, AMF3Array()])
def test_amf0_encode_rejects_unsupported_types(bad: Any) -> None:
    with pytest.raises(TypeError):
        amf0.encode(bad)


def test_amf0_encode_rejects_unrepresentable_values() -> None:
    with pytest.raises(TypeError):
        amf0.encode({1: 2})
    with pytest.raises(ValueError, match="property name of 0"):
        amf0.encode({"": 1})
    with pytest.raises(ValueError, match="property name of 65536"):
        amf0.encode({"k" * 65536: 1})
    with pytest.raises(ValueError, match="time zone"):
        amf0.encode(Date(0.0, 40000))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="deeper than 64"):
        amf0.encode(loop)


# =============================================================================================
# AMF3 byte vectors
# =============================================================================================

U29_VECTORS = [
    (0, "04 00"),
    (1, "04 01"),
    (0x7F, "04 7f"),
    (0x80, "04 81 00"),
    (0x3FFF, "04 ff 7f"),
    (0x4000, "04 81 80 00"),
    (70000, "04 84 a2 70"),  # written by Flash's ByteArray.writeObject
    (0x1FFFFF, "04 ff ff 7f"),
    (0x200000, "04 80 c0 80 00"),
    (0xFFFFFFF, "04 bf ff ff ff"),  # the largest AMF3 integer, 2**28 - 1
    (-1, "04 ff ff ff ff"),
    (-2, "04 ff ff ff fe"),
    (-(1 << 28), "04 c0 80 80 00"),  # the smallest
]


@pytest.mark.parametrize(("value", "data"), U29_VECTORS)
def test_amf3_integer_u29(value: int, data: str) -> None:
    assert amf3.decode_all(h(data)) == [value]
    assert amf3.encode(value) == h(data)


def test_amf3_integers_outside_29_bits_encode_as_double() -> None:
    assert amf3.encode(1 << 28) == h("05 41b0000000000000")
    assert amf3.encode(-(1 << 28) - 1) == h("05") + struct.pack(">d", -(1 << 28) - 1)
    assert same(amf3.decode_all(amf3.encode(1 << 28)), [float(1 << 28)])


AMF3_VECTORS: list[tuple[str, str, Any]] = [
    ("undefined", "00", UNDEFINED),
    ("null", "01", None),
    ("false", "02", False),
    ("true", "03", True),
    ("double", "05 3ff8000000000000", 1.5),
    ("string", "06 05 6869", "hi"),
    ("string empty", "06 01", ""),
    ("string utf-8", "06 0d e4b8ade69687", "中文"),
    ("xml document", "07 09 3c612f3e", XMLDocument("<a/>")),
    ("xml", "0b 09 3c612f3e", XMLDocument("<a/>")),
    ("date", "08 01 0000000000000000", Date(0.0)),
    ("array dense", "09 07 01 0401 0402 0403", [1, 2, 3]),
    ("array empty", "09 01 01", []),
    ("array associative", "09 01 03 61 0401 01", ECMAArray(a=1)),
    ("array mixed", "09 03 03 61 0401 01 0402", AMF3Array([2], {"a": 1})),
    ("object dynamic", "0a 0b 01 03 6b 06 03 76 01", {"k": "v"}),
    ("object empty", "0a 0b 01 01", {}),
    (
        # Flash, class without an alias: anonymous traits with three sealed members.
        "object sealed anonymous",
        "0a 33 01 09 6e616d65 07 616765 0d 68696464656e 06 07 416e6e 04 1e 06 03 68",
        {"name": "Ann", "age": 30, "hidden": "h"},
    ),
    (
        "object sealed typed",
        "0a 33 0f 6d79416c696173 09 6e616d65 07 616765 0d 68696464656e 06 07 416e6e 04 1e 06 03 68",
        TypedObject("myAlias", {"name": "Ann", "age": 30, "hidden": "h"}),
    ),
    (
        "object sealed and dynamic",
        "0a 1b 03 43 03 61 0401 03 62 0402 01",
        TypedObject("C", {"a": 1, "b": 2}),
    ),
    ("bytearray", "0c 05 0102", b"\x01\x02"),
    ("bytearray empty", "0c 01", b""),
    ("vector int", "0d 05 00 00000001 00000002", [1, 2]),
    ("vector int negative", "0d 03 01 ffffffff", [-1]),
    ("vector uint", "0e 03 00 ffffffff", [0xFFFFFFFF]),
    ("vector double", "0f 05 00 3ff8000000000000 c000000000000000", [1.5, -2.0]),
    ("vector object", "10 05 00 01 0401 06 03 78", [1, "x"]),
    ("vector object typed", "10 03 01 03 43 0a 0b 01 01", [{}]),
    ("dictionary", "11 03 00 06 03 6b 04 01", {"k": 1}),  # from Flash
    ("dictionary mixed keys", "11 05 01 0401 03 05 3ff8000000000000 01", {1: True, 1.5: None}),
]


@pytest.mark.parametrize(
    ("data", "expected"), [(h(v[1]), v[2]) for v in AMF3_VECTORS], ids=[v[0] for v in AMF3_VECTORS]
)
def test_amf3_vector_decodes(data: bytes, expected: Any) -> None:
    value, end = amf3.decode(data)
    assert end == len(data)
    assert same(value, expected)


ENCODABLE3 = {
    "undefined", "null", "false", "true", "double", "string", "string empty", "string utf-8",
    "xml document", "date", "array dense", "array empty", "array associative", "array mixed",
    "object dynamic", "object empty", "bytearray", "bytearray empty",
}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "value"),
    [(h(v[1]), v[2]) for v in AMF3_VECTORS if v[0] in ENCODABLE3],
    ids=[v[0] for v in AMF3_VECTORS if v[0] in ENCODABLE3],
)
def test_amf3_vector_encodes(data: bytes, value: Any) -> None:
    assert amf3.encode(value) == data


def test_amf3_typed_object_encodes_sealed() -> None:
    data = amf3.encode(TypedObject("C", {"a": 1, "b": "x"}))
    assert data == h("0a 23 03 43 03 61 03 62 04 01 06 03 78")
    assert amf3.decode_all(data) == [TypedObject("C", {"a": 1, "b": "x"})]


def test_amf3_string_references() -> None:
    assert amf3.decode_all(h("06 05 6869 06 00")) == ["hi", "hi"]
    # The empty string never enters the table: reference 0 is "hi".
    assert amf3.decode_all(h("06 01 06 05 6869 06 01 06 00")) == ["", "hi", "", "hi"]
    # Member names and class names share the table with string values.
    data = h("0a 0b 01 03 6b 06 00 01 06 02")  # {k: <ref 0>}, then a reference to string 1
    with pytest.raises(AMFError, match="refers to string 1, expected an index below 1"):
        amf3.decode_all(data)
    assert amf3.decode_all(h("0a 0b 01 03 6b 06 00 01 06 00")) == [{"k": "k"}, "k"]
    with pytest.raises(AMFError, match=r"AMF3: string at offset 1 refers to string 0"):
        amf3.decode_all(h("06 00"))


def test_amf3_traits_and_object_references() -> None:
    # [P{a:1}, P{a:2} (traits reference 0), <object reference 1>]
    data = h("09 07 01  0a 13 03 50 03 61 04 01  0a 01 04 02  0a 02")
    (arr,) = amf3.decode_all(data)
    assert arr == [
        TypedObject("P", {"a": 1}),
        TypedObject("P", {"a": 2}),
        TypedObject("P", {"a": 1}),
    ]
    assert arr[2] is arr[0]
    # Dynamic traits by reference: the second object reuses the anonymous dynamic traits.
    data = h("0a 0b 01 03 61 04 01 01  0a 01 03 62 04 02 01")
    assert amf3.decode_all(data) == [{"a": 1}, {"b": 2}]
    with pytest.raises(AMFError, match="refers to traits 0, expected an index below 0"):
        amf3.decode_all(h("0a 01"))
    with pytest.raises(AMFError, match="object at offset 0 refers to object 0"):
        amf3.decode_all(h("0a 00"))


def test_amf3_self_references() -> None:
    # Flash writes `a = []; a.push(a)` as 09 03 01 09 00.
    (arr,) = amf3.decode_all(h("09 03 01 09 00"))
    assert arr[0] is arr
    (obj,) = amf3.decode_all(h("0a 0b 01 03 6d 0a 00 01"))
    assert obj["m"] is obj


def test_amf3_other_objects_enter_the_object_table() -> None:
    data = h("09 0d 01  08 01 0000000000000000  0c 03 ff  07 03 78  08 02  0c 04  07 06")
    (arr,) = amf3.decode_all(data)
    assert arr == [Date(0.0), b"\xff", XMLDocument("x"), Date(0.0), b"\xff", XMLDocument("x")]
    assert arr[3] is arr[0] and arr[4] is arr[1] and arr[5] is arr[2]
    data = h("09 05 01  0d 03 00 00000007  0d 02")
    (arr,) = amf3.decode_all(data)
    assert arr == [[7], [7]] and arr[0] is arr[1]
    data = h("09 05 01  11 01 00  11 02")
    (arr,) = amf3.decode_all(data)
    assert arr == [{}, {}] and arr[0] is arr[1]


def test_amf3_decode_with_context() -> None:
    ctx = amf3.Context()
    value, pos = amf3.decode(h("06 05 6869"), 0, ctx)
    assert (value, pos) == ("hi", 4)
    assert amf3.decode(h("06 00"), 0, ctx) == ("hi", 2)
    assert ctx.strings == ["hi"]
    with pytest.raises(AMFError):
        amf3.decode(h("06 00"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("12"), "AMF3: unknown type marker 0x12 at offset 0, expected 0x00-0x11"),
        (h("04"), "truncated integer at offset 1"),
        (h("04 ff ff"), "truncated integer at offset 3"),
        (h("05 00"), "truncated double at offset 1: expected 8 more bytes, 1 remain"),
        (h("06 07 6869"), "truncated string at offset 2: expected 3 more bytes, 2 remain"),
        (h("06 03 ff"), "string at offset 2 is not valid UTF-8"),
        (h("06 ff ff ff ff"), "truncated string at offset 5: expected 268435455 more"),
        (h("0a 07 03 58"), "externalizable class 'X' at offset 0 not supported"),
        (h("0a 0b 01 03 61"), "data ends at offset 5, expected a type marker"),
        (h("0a ff ff ff fb 01"), "traits at offset 0 claim 33554431 sealed members"),
        (h("09 ff ff ff ff 01"), "array at offset 0 claims 268435455 dense elements"),
        (h("09 05 03 61 04 01 01 05"), "claims 2 dense elements, but only 1 bytes remain after"),
        (h("0d ff ff ff ff 00"), "truncated Vector.<int> at offset 5"),
        (h("0f 03 00 3ff0"), "truncated Vector.<Number> at offset 2"),
        (h("10 ff ff ff ff 00 01"), "Vector.<Object> at offset 0 claims 268435455 elements"),
        (h("11 ff ff ff ff 00 01"), "Dictionary at offset 0 claims 268435455 entries"),
        (h("11 03 00 09 01 01 01"), "Dictionary key at offset 3 is a list, expected a key"),
        (h("11 03 00 0a 0b 01 01 01"), "Dictionary key at offset 3 is a dict"),
        (h("08 02"), "date at offset 0 refers to object 1"),
        (h("0c 00"), "ByteArray at offset 0 refers to object 0"),
        (h("07 04"), "XML at offset 0 refers to object 2"),
        (h("0d 00"), r"Vector.<int> at offset 0 refers to object 0"),
    ],
)
def test_amf3_errors_say_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(AMFError, match=message):
        amf3.decode_all(data)


def test_amf3_nesting_depth_is_capped() -> None:
    ok = h("09 03 01") * amf0.MAX_DEPTH + h("01")
    (value,) = amf3.decode_all(ok)
    for _ in range(amf0.MAX_DEPTH):
        value = value[0]
    assert value is None
    for unit in (h("09 03 01"), h("0a 0b 01 03 61"), h("10 03 00 01"), h("11 03 00 04 01")):
        with pytest.raises(AMFError, match="nested 65 deep"):
            amf3.decode_all(unit * 100_000 + h("01"))


def test_amf3_encode_rejects() -> None:
    with pytest.raises(TypeError):
        amf3.encode({1, 2})
    with pytest.raises(TypeError):
        amf3.encode({1: 2})
    with pytest.raises(ValueError, match="empty member name"):
        amf3.encode({"": 1})
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(ValueError, match="deeper than 64"):
        amf3.encode(loop)


# =============================================================================================
# Round trips
# =============================================================================================

names = st.text(min_size=1, max_size=8)
floats = st.floats()  # NaN and infinities included; `same` compares NaN with NaN


def containers0(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(kids, max_size=4),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(names, kids, max_size=4),
        st.dictionaries(names, kids, max_size=4).map(ECMAArray),
        st.builds(TypedObject, st.text(max_size=8), st.dictionaries(names, kids, max_size=4)),
    )


values0 = st.recursive(
    st.one_of(
        floats,
        st.integers(-(2**53), 2**53),
        st.booleans(),
        st.text(max_size=20),
        st.none(),
        st.just(UNDEFINED),
        st.builds(XMLDocument, st.text(max_size=10)),
        st.builds(Date, floats, st.integers(-0x8000, 0x7FFF)),
    ),
    containers0,
    max_leaves=20,
)


def expect0(v: Any) -> Any:
    """What AMF0 gives back for `v`."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, list | tuple):
        return [expect0(x) for x in v]
    if isinstance(v, ECMAArray):
        return ECMAArray({k: expect0(x) for k, x in v.items()})
    if isinstance(v, dict):
        return {k: expect0(x) for k, x in v.items()}
    if isinstance(v, TypedObject):
        return TypedObject(v.class_name, expect0(v.fields))
    return v


@settings(max_examples=300, deadline=None)
@given(st.lists(values0, max_size=4))
def test_amf0_round_trip(values: list[Any]) -> None:
    data = amf0.encode(*values)
    assert same(amf0.decode_all(data), [expect0(v) for v in values])


def containers3(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(names, kids, max_size=4),
        st.dictionaries(names, kids, max_size=4).map(ECMAArray),
        st.builds(AMF3Array, st.lists(kids, max_size=3), st.dictionaries(names, kids, max_size=3)),
        st.builds(TypedObject, names, st.dictionaries(st.text(max_size=4), kids, max_size=4)),
    )


values3 = st.recursive(
    st.one_of(
        floats,
        st.integers(-(2**40), 2**40),
        st.booleans(),
        st.text(max_size=20),
        st.none(),
        st.just(UNDEFINED),
        st.binary(max_size=10),
        st.builds(XMLDocument, st.text(max_size=10)),
        st.builds(Date, floats),
    ),
    containers3,
    max_leaves=20,
)


def expect3(v: Any) -> Any:
    """What AMF3 gives back for `v`."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if amf3.INT_MIN <= v <= amf3.INT_MAX else float(v)
    if isinstance(v, list | tuple):
        return [expect3(x) for x in v]
    if isinstance(v, ECMAArray):
        return ECMAArray({k: expect3(x) for k, x in v.items()}) if v else []
    if isinstance(v, dict):
        return {k: expect3(x) for k, x in v.items()}
    if isinstance(v, AMF3Array):
        dense = [expect3(x) for x in v.dense]
        assoc = {k: expect3(x) for k, x in v.associative.items()}
        if not assoc:
            return dense
        return AMF3Array(dense, assoc) if dense else ECMAArray(assoc)
    if isinstance(v, TypedObject):
        return TypedObject(v.class_name, expect3(v.fields))
    return v


@settings(max_examples=300, deadline=None)
@given(st.lists(values3, max_size=4))
def test_amf3_round_trip(values: list[Any]) -> None:
    data = amf3.encode(*values)
    assert same(amf3.decode_all(data), [expect3(v) for v in values])


@settings(max_examples=100, deadline=None)
@given(values3)
def test_amf3_inside_amf0_round_trip(value: Any) -> None:
    data = s0("x") + b"\x11" + amf3.encode(value) + num(2.0)
    assert same(amf0.decode_all(data), ["x", expect3(value), 2.0])


# =============================================================================================
# The decoders' promise: AMFError or a value, nothing else
# =============================================================================================

Decoder = Callable[[bytes], list[Any]]
DECODERS: list[Decoder] = [amf0.decode_all, amf3.decode_all]


def decodes_or_amf_error(decoder: Decoder, data: bytes) -> None:
    with contextlib.suppress(AMFError):
        decoder(data)


@pytest.mark.parametrize("decoder", DECODERS, ids=["amf0", "amf3"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes(decoder: Decoder, data: bytes) -> None:
    decodes_or_amf_error(decoder, data)


# Byte sequences that start the way real values do, so mutations reach the deep paths.
@pytest.mark.parametrize("decoder", DECODERS, ids=["amf0", "amf3"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(st.sampled_from([*range(0x13), 0x00, 0x01, 0x03, 0x09, 0xFF]), max_size=64))
def test_marker_heavy_bytes(decoder: Decoder, data: list[int]) -> None:
    decodes_or_amf_error(decoder, bytes(data))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(values0, min_size=1, max_size=3), data=st.data())
def test_amf0_mutated_encodings(values: list[Any], data: st.DataObject) -> None:
    encoded = bytearray(amf0.encode(*values))
    cut = data.draw(st.integers(0, len(encoded)))
    decodes_or_amf_error(amf0.decode_all, bytes(encoded[:cut]))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    decodes_or_amf_error(amf0.decode_all, bytes(encoded))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(values3, min_size=1, max_size=3), data=st.data())
def test_amf3_mutated_encodings(values: list[Any], data: st.DataObject) -> None:
    encoded = bytearray(amf3.encode(*values))
    cut = data.draw(st.integers(0, len(encoded)))
    decodes_or_amf_error(amf3.decode_all, bytes(encoded[:cut]))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    decodes_or_amf_error(amf3.decode_all, bytes(encoded))
    # AMF3 inside AMF0 goes through the AVM+ switch.
    decodes_or_amf_error(amf0.decode_all, b"\x11" + bytes(encoded))


CORPUS0 = [FFMPEG_CONNECT, metadata_body(), metadata_body(end=b"")] + [v[1] for v in AMF0_VECTORS]
CORPUS3 = [h(v[1]) for v in AMF3_VECTORS] + [
    h("09 07 01  0a 13 03 50 03 61 04 01  0a 01 04 02  0a 02"),
    h("09 0d 01  08 01 0000000000000000  0c 03 ff  07 03 78  08 02  0c 04  07 06"),
]


@pytest.mark.parametrize(
    ("decoder", "data"),
    [(amf0.decode_all, d) for d in CORPUS0] + [(amf3.decode_all, d) for d in CORPUS3],
)
def test_every_truncation_and_byte_flip_of_known_vectors(decoder: Decoder, data: bytes) -> None:
    for cut in range(len(data)):
        decodes_or_amf_error(decoder, data[:cut])
    buf = bytearray(data)
    for i, original in enumerate(data):
        for replacement in {0x00, 0x01, 0x07, 0x09, 0x7F, 0x80, 0xFF, original ^ 0x01}:
            buf[i] = replacement
            decodes_or_amf_error(decoder, bytes(buf))
        buf[i] = original
