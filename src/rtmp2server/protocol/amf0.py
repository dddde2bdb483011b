"""AMF0: the Action Message Format of RTMP commands and FLV/RTMP metadata.

This module owns the AMF0 value model (`UNDEFINED`, `ECMAArray`, `Date`, `XMLDocument`,
`TypedObject`), the encoder and the decoder, as the Adobe "AMF 0 Specification" (2006)
describes them, plus the AVM+ marker (0x11) that switches one value to AMF3 (`amf3.py`
decodes that value).

Decoding promise: any input either decodes or raises `AMFError`, whose message says what
arrived, where, and what was expected. No other exception escapes `decode`/`decode_all`
(the fuzz tests in `tests/test_amf.py` check this). To keep that promise on hostile input:

- every length and count field is checked against the bytes that remain before anything is
  read or built from it; nothing is preallocated from a length field;
- nesting is capped at `MAX_DEPTH` containers (AMF3 values inside an AVM+ switch count too);
- strings must be valid UTF-8. Invalid UTF-8 raises `AMFError` rather than being replaced
  or escaped: "replace" would silently lose bytes and "surrogateescape" would hand callers
  strings that cannot be encoded again. A peer that sends Latin-1 is broken and is told so.

Decoding is lenient where real encoders are known to deviate from the specification: the
ECMA array count is only a hint (the array ends at its object-end marker), an ECMA array that
runs to the end of the data without an end marker is accepted, and an empty property name
that is not followed by the object-end marker is read as a property named "".

References (0x07) index the complex values decoded so far in one `decode`/`decode_all` call:
objects, typed objects, ECMA arrays and strict arrays, each entered when its marker is read,
so a value may refer to itself. One AMF3 reference context is shared by all the AVM+
switched values of one call, as PyAMF and Red5 do. The encoder never emits references.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .errors import AMFError

if TYPE_CHECKING:
    from . import amf3

__all__ = [
    "MAX_DEPTH",
    "UNDEFINED",
    "Date",
    "ECMAArray",
    "TypedObject",
    "Undefined",
    "XMLDocument",
    "decode",
    "decode_all",
    "encode",
]

#: Containers nested deeper than this are refused, by the decoder and by the encoder.
MAX_DEPTH: Final = 64

NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS: Final = 0x11

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_NUMBER_OUT = struct.Struct(">Bd")
_MARKER_U16 = struct.Struct(">BH")
_MARKER_U32 = struct.Struct(">BI")
_MARKER_DATE = struct.Struct(">Bdh")
_OBJECT_END_BYTES = b"\x00\x00\x09"


# ---------------------------------------------------------------------------------------------
# Value model
# ---------------------------------------------------------------------------------------------


class Undefined:
    """The ActionScript `undefined` value. Use the singleton `UNDEFINED`."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class ECMAArray(dict[str, Any]):
    """An associative ("ECMA") array: a dict that encodes as AMF0 marker 0x08, not 0x03."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


class XMLDocument(str):
    """The text of an XML document (AMF0 0x0F, AMF3 0x07 and 0x0B)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"XMLDocument({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Date:
    """A point in time: milliseconds since the Unix epoch (UTC).

    `timezone` is the AMF0 time-zone field, in minutes; the specification reserves it and
    says it should be 0. AMF3 has no such field.
    """

    milliseconds: float
    timezone: int = 0


@dataclass(slots=True)
class TypedObject:
    """An object with a registered class name (AMF0 0x10, AMF3 0x0A with a class name)."""

    class_name: str
    fields: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

_Data = bytes | memoryview


class _Reader:
    """The state of one decode call: the input, and the reference table it builds."""

    __slots__ = ("amf3_context", "data", "end", "refs")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, bytes):
            self.data: _Data = data
        else:
            view = memoryview(data)
            self.data = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        self.end = len(self.data)
        self.refs: list[Any] = []
        self.amf3_context: amf3.Context | None = None


def _truncated(r: _Reader, pos: int, need: int, what: str) -> AMFError:
    left = max(r.end - pos, 0)
    return AMFError(
        f"AMF0: truncated {what} at offset {pos}: expected {need} more bytes, {left} remain"
    )


def _utf8(r: _Reader, start: int, stop: int, what: str) -> str:
    try:
        return str(r.data[start:stop], "utf-8")
    except UnicodeDecodeError as err:
        raise AMFError(
            f"AMF0: {what} at offset {start} is not valid UTF-8 "
            f"(byte 0x{r.data[start + err.start]:02x} at offset {start + err.start}), "
            "expected UTF-8 text"
        ) from err


def _read_short_utf8(r: _Reader, pos: int, what: str) -> tuple[str, int]:
    """Read a UTF-8 string with a 16-bit length prefix (no marker)."""
    if pos + 2 > r.end:
        raise _truncated(r, pos, 2, f"{what} length")
    data = r.data
    stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if stop > r.end:
        raise _truncated(r, pos + 2, stop - pos - 2, what)
    if stop == pos + 2:
        return "", stop
    return _utf8(r, pos + 2, stop, what), stop


def _read_long_utf8(r: _Reader, pos: int, what: str) -> tuple[str, int]:
    """Read a UTF-8 string with a 32-bit length prefix (no marker)."""
    if pos + 4 > r.end:
        raise _truncated(r, pos, 4, f"{what} length")
    stop = pos + 4 + _U32.unpack_from(r.data, pos)[0]
    if stop > r.end:
        raise _truncated(r, pos + 4, stop - pos - 4, what)
    return _utf8(r, pos + 4, stop, what), stop


def _read_value(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= r.end:
        raise AMFError(f"AMF0: data ends at offset {pos}, expected a type marker")
    marker = r.data[pos]
    reader = _READERS.get(marker)
    if reader is None:
        raise AMFError(
            f"AMF0: unknown type marker 0x{marker:02x} at offset {pos}, expected 0x00-0x11"
        )
    return reader(r, pos + 1, depth)


def _read_number(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos + 8 > r.end:
        raise _truncated(r, pos, 8, "number")
    return _DOUBLE.unpack_from(r.data, pos)[0], pos + 8


def _read_boolean(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= r.end:
        raise _truncated(r, pos, 1, "boolean")
    return r.data[pos] != 0, pos + 1


def _read_string(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return _read_short_utf8(r, pos, "string")


def _read_long_string(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return _read_long_utf8(r, pos, "long string")


def _read_xml(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    text, pos = _read_long_utf8(r, pos, "XML document")
    return XMLDocument(text), pos


def _read_null(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return None, pos


def _read_undefined(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return UNDEFINED, pos


def _read_date(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos + 10 > r.end:
        raise _truncated(r, pos, 10, "date")
    ms, tz = _DATE.unpack_from(r.data, pos)
    return Date(ms, tz), pos + 10


def _check_depth(depth: int, what: str, pos: int) -> None:
    if depth >= MAX_DEPTH:
        raise AMFError(
            f"AMF0: {what} at offset {pos - 1} nested {depth + 1} deep, "
            f"expected at most {MAX_DEPTH} nested containers"
        )


def _read_properties(
    r: _Reader, pos: int, depth: int, target: dict[str, Any], what: str, lenient: bool
) -> int:
    """Read name/value pairs into `target` up to and including the object-end marker.

    With `lenient`, the end of the data in place of a property name also ends the list
    (the ECMA arrays some encoders write without the end marker).
    """
    data = r.data
    end = r.end
    while True:
        if pos + 2 > end:
            if lenient and pos == end:
                return pos
            raise _truncated(r, pos, 2, f"{what} property name length")
        n = data[pos] << 8 | data[pos + 1]
        if n == 0:
            pos += 2
            if pos < end and data[pos] == OBJECT_END:
                return pos + 1
            if pos >= end:
                if lenient:
                    return pos
                raise AMFError(
                    f"AMF0: {what} ends at offset {pos} after an empty property name, "
                    "expected the object-end marker 0x09"
                )
            key = ""
        else:
            key, pos = _read_short_utf8(r, pos, f"{what} property name")
        target[key], pos = _read_value(r, pos, depth)


def _read_object(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    _check_depth(depth, "object", pos)
    obj: dict[str, Any] = {}
    r.refs.append(obj)
    return obj, _read_properties(r, pos, depth + 1, obj, "object", False)


def _read_typed_object(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    _check_depth(depth, "typed object", pos)
    name, pos = _read_short_utf8(r, pos, "typed object class name")
    obj = TypedObject(name, {})
    r.refs.append(obj)
    return obj, _read_properties(r, pos, depth + 1, obj.fields, "typed object", False)


def _read_ecma_array(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    _check_depth(depth, "ECMA array", pos)
    if pos + 4 > r.end:
        raise _truncated(r, pos, 4, "ECMA array count")
    # The count is a hint that encoders get wrong; the end marker is what ends the array.
    arr = ECMAArray()
    r.refs.append(arr)
    return arr, _read_properties(r, pos + 4, depth + 1, arr, "ECMA array", True)


def _read_strict_array(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    _check_depth(depth, "strict array", pos)
    if pos + 4 > r.end:
        raise _truncated(r, pos, 4, "strict array count")
    count = _U32.unpack_from(r.data, pos)[0]
    pos += 4
    if count > r.end - pos:
        raise AMFError(
            f"AMF0: strict array at offset {pos - 5} claims {count} elements, "
            f"but only {r.end - pos} bytes remain (each element takes at least 1)"
        )
    items: list[Any] = []
    r.refs.append(items)
    depth += 1
    for _ in range(count):
        value, pos = _read_value(r, pos, depth)
        items.append(value)
    return items, pos


def _read_reference(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos + 2 > r.end:
        raise _truncated(r, pos, 2, "reference index")
    index = _U16.unpack_from(r.data, pos)[0]
    if index >= len(r.refs):
        raise AMFError(
            f"AMF0: reference to object {index} at offset {pos - 1}, "
            f"expected an index below {len(r.refs)} (objects decoded so far)"
        )
    return r.refs[index], pos + 2


def _read_unsupported(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return UNDEFINED, pos


def _refuse(name: str) -> Callable[[_Reader, int, int], tuple[Any, int]]:
    def reader(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        raise AMFError(
            f"AMF0: {name} marker 0x{r.data[pos - 1]:02x} at offset {pos - 1} "
            "is reserved and not supported, expected a value marker"
        )

    return reader


def _read_object_end(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    raise AMFError(
        f"AMF0: object-end marker 0x09 at offset {pos - 1} outside an object, "
        "expected a value marker"
    )


def _read_avmplus(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    from . import amf3

    if r.amf3_context is None:
        r.amf3_context = amf3.Context()
    return amf3.decode(r.data, pos, r.amf3_context, depth=depth)


_READERS: dict[int, Callable[[_Reader, int, int], tuple[Any, int]]] = {
    NUMBER: _read_number,
    BOOLEAN: _read_boolean,
    STRING: _read_string,
    OBJECT: _read_object,
    MOVIECLIP: _refuse("movieclip"),
    NULL: _read_null,
    UNDEFINED_MARKER: _read_undefined,
    REFERENCE: _read_reference,
    ECMA_ARRAY: _read_ecma_array,
    OBJECT_END: _read_object_end,
    STRICT_ARRAY: _read_strict_array,
    DATE: _read_date,
    LONG_STRING: _read_long_string,
    UNSUPPORTED: _read_unsupported,
    RECORDSET: _refuse("recordset"),
    XML_DOCUMENT: _read_xml,
    TYPED_OBJECT: _read_typed_object,
    AVMPLUS: _read_avmplus,
}


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode one AMF0 value at `offset`; return it and the offset just past it.

    Raises `AMFError` for anything that is not a complete, valid AMF0 value.
    """
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    return _read_value(_Reader(data), offset, 0)


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode AMF0 values up to the end of `data` (one reference table for all of them).

    Raises `AMFError` for anything that is not a sequence of complete, valid AMF0 values.
    """
    r = _Reader(data)
    values: list[Any] = []
    pos = 0
    while pos < r.end:
        value, pos = _read_value(r, pos, 0)
        values.append(value)
    return values


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode `values` one after the other as AMF0.

    float and int (not bool) become numbers, bool booleans, str strings (long strings past
    65535 UTF-8 bytes), `XMLDocument` XML documents, dict anonymous objects (str keys),
    `ECMAArray` ECMA arrays, list and tuple strict arrays, None null, `UNDEFINED` undefined,
    `Date` dates and `TypedObject` typed objects. Other types raise TypeError; values that
    AMF0 cannot carry (an empty or over-long property name, a number out of double range,
    nesting past `MAX_DEPTH`, a cycle) raise ValueError or OverflowError.
    """
    out = bytearray()
    for value in values:
        _write(out, value, 0)
    return bytes(out)


def _write(out: bytearray, value: Any, depth: int) -> None:
    writer = _WRITERS.get(type(value))
    if writer is None:
        writer = _writer_for_subclass(value)
    writer(out, value, depth)


def _writer_for_subclass(value: Any) -> Callable[[bytearray, Any, int], None]:
    for base, writer in _SUBCLASS_WRITERS:
        if isinstance(value, base):
            return writer
    raise TypeError(f"AMF0 cannot encode a value of type {type(value).__name__}")


def _write_number(out: bytearray, value: Any, depth: int) -> None:
    out += _NUMBER_OUT.pack(NUMBER, float(value))


def _write_bool(out: bytearray, value: Any, depth: int) -> None:
    out += b"\x01\x01" if value else b"\x01\x00"


def _write_str(out: bytearray, value: Any, depth: int) -> None:
    raw = str(value).encode("utf-8")
    if len(raw) <= 0xFFFF:
        out += _MARKER_U16.pack(STRING, len(raw))
    else:
        out += _MARKER_U32.pack(LONG_STRING, len(raw))
    out += raw


def _write_xml(out: bytearray, value: Any, depth: int) -> None:
    raw = str(value).encode("utf-8")
    out += _MARKER_U32.pack(XML_DOCUMENT, len(raw))
    out += raw


def _write_null(out: bytearray, value: Any, depth: int) -> None:
    out.append(NULL)


def _write_undefined(out: bytearray, value: Any, depth: int) -> None:
    out.append(UNDEFINED_MARKER)


def _write_date(out: bytearray, value: Any, depth: int) -> None:
    if not -0x8000 <= value.timezone <= 0x7FFF:
        raise ValueError(f"AMF0 date time zone {value.timezone} does not fit in 16 bits")
    out += _MARKER_DATE.pack(DATE, float(value.milliseconds), value.timezone)


def _enter(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise ValueError(f"AMF0 encoding nests deeper than {MAX_DEPTH} containers (a cycle?)")
    return depth + 1


def _write_properties(out: bytearray, fields: dict[str, Any], depth: int) -> None:
    for key, item in fields.items():
        if not isinstance(key, str):
            raise TypeError(f"AMF0 property names must be str, not {type(key).__name__}")
        raw = key.encode("utf-8")
        if not raw or len(raw) > 0xFFFF:
            raise ValueError(f"AMF0 property name of {len(raw)} UTF-8 bytes, expected 1 to 65535")
        out += _U16.pack(len(raw))
        out += raw
        _write(out, item, depth)
    out += _OBJECT_END_BYTES


def _write_object(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out.append(OBJECT)
    _write_properties(out, value, depth)


def _write_ecma_array(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out += _MARKER_U32.pack(ECMA_ARRAY, len(value))
    _write_properties(out, value, depth)


def _write_typed_object(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    name = value.class_name.encode("utf-8")
    if len(name) > 0xFFFF:
        raise ValueError(f"AMF0 class name of {len(name)} UTF-8 bytes, expected at most 65535")
    out += _MARKER_U16.pack(TYPED_OBJECT, len(name))
    out += name
    _write_properties(out, value.fields, depth)


def _write_strict_array(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out += _MARKER_U32.pack(STRICT_ARRAY, len(value))
    for item in value:
        _write(out, item, depth)


_WRITERS: dict[type, Callable[[bytearray, Any, int], None]] = {
    float: _write_number,
    int: _write_number,
    bool: _write_bool,
    str: _write_str,
    XMLDocument: _write_xml,
    type(None): _write_null,
    Undefined: _write_undefined,
    Date: _write_date,
    dict: _write_object,
    ECMAArray: _write_ecma_array,
    TypedObject: _write_typed_object,
    list: _write_strict_array,
    tuple: _write_strict_array,
}

# For subclasses (IntEnum, OrderedDict, ...): the first matching base wins, most specific first.
_SUBCLASS_WRITERS: tuple[tuple[type, Callable[[bytearray, Any, int], None]], ...] = (
    (bool, _write_bool),
    (int, _write_number),
    (float, _write_number),
    (XMLDocument, _write_xml),
    (str, _write_str),
    (ECMAArray, _write_ecma_array),
    (dict, _write_object),
    (list, _write_strict_array),
    (tuple, _write_strict_array),
    (Date, _write_date),
    (TypedObject, _write_typed_object),
)
