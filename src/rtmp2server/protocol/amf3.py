"""AMF3: the ActionScript 3 encoding, met in RTMP after an AMF0 AVM+ marker (0x11).

This module owns the AMF3 decoder and a reference-free encoder (for tests and for peers that
want AMF3), following the Adobe "AMF 3 Specification" (January 2013): the U29 variable-length
integer, the three reference tables (strings, objects, traits) held in a `Context`, and every
type marker from undefined (0x00) to Dictionary (0x11). Decoded values use the AMF0 value
model from `amf0.py`:

    undefined -> amf0.UNDEFINED     null -> None          false/true -> bool
    integer -> int (29-bit signed)  double -> float       string -> str
    XMLDocument (0x07) and XML (0x0B) -> amf0.XMLDocument
    Date -> amf0.Date (timezone 0)  ByteArray -> bytes
    Array -> list when it has no associative part; amf0.ECMAArray when it has only an
        associative part (the AMF3 form of onMetaData-style maps); `AMF3Array(dense,
        associative)` when it has both
    Object -> dict when anonymous, amf0.TypedObject (sealed and dynamic members merged in
        `fields`) when its traits name a class; externalizable objects raise AMFError
    Vector.<int>/<uint>/<Number>/<Object> -> list      Dictionary -> dict

The promise is the one of `amf0.py`: any input decodes or raises `AMFError` naming what
arrived, where, and what was expected. Lengths and counts are checked against the bytes left
before use, nesting is capped at `amf0.MAX_DEPTH`, strings must be valid UTF-8, and a
Dictionary key that Python cannot hash (an object or array) is refused.

Reference tables follow the specification: the empty string is never entered in the string
table; objects, arrays, dates, XML, ByteArrays, vectors and dictionaries enter the object
table when their marker is read (before their members, so a value may refer to itself).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from .amf0 import MAX_DEPTH, UNDEFINED, Date, ECMAArray, TypedObject, Undefined, XMLDocument
from .errors import AMFError

__all__ = ["AMF3Array", "Context", "decode", "decode_all", "encode"]

UNDEFINED_MARKER: Final = 0x00
NULL: Final = 0x01
FALSE: Final = 0x02
TRUE: Final = 0x03
INTEGER: Final = 0x04
DOUBLE: Final = 0x05
STRING: Final = 0x06
XML_DOCUMENT: Final = 0x07
DATE: Final = 0x08
ARRAY: Final = 0x09
OBJECT: Final = 0x0A
XML: Final = 0x0B
BYTE_ARRAY: Final = 0x0C
VECTOR_INT: Final = 0x0D
VECTOR_UINT: Final = 0x0E
VECTOR_DOUBLE: Final = 0x0F
VECTOR_OBJECT: Final = 0x10
DICTIONARY: Final = 0x11

INT_MIN: Final = -(1 << 28)
INT_MAX: Final = (1 << 28) - 1
U29_MAX: Final = (1 << 29) - 1

_DOUBLE = struct.Struct(">d")
_MARKER_DOUBLE = struct.Struct(">Bd")
_DATE_OUT = struct.Struct(">BBd")  # marker, U29D "inline" (0x01), milliseconds


@dataclass(slots=True)
class AMF3Array:
    """An AMF3 Array with both an associative part and a dense part."""

    dense: list[Any] = field(default_factory=list)
    associative: dict[str, Any] = field(default_factory=dict)


class _Traits(NamedTuple):
    class_name: str
    sealed: tuple[str, ...]
    dynamic: bool


class Context:
    """The three AMF3 reference tables, shared by the values of one decode session."""

    __slots__ = ("objects", "strings", "traits")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.objects: list[Any] = []
        self.traits: list[_Traits] = []


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "end", "objects", "strings", "traits")

    def __init__(self, data: bytes | bytearray | memoryview, context: Context) -> None:
        if isinstance(data, bytes):
            self.data: bytes | memoryview = data
        else:
            view = memoryview(data)
            self.data = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        self.end = len(self.data)
        self.strings = context.strings
        self.objects = context.objects
        self.traits = context.traits


def _truncated(r: _Reader, pos: int, need: int, what: str) -> AMFError:
    left = max(r.end - pos, 0)
    return AMFError(
        f"AMF3: truncated {what} at offset {pos}: expected {need} more bytes, {left} remain"
    )


def _u29(r: _Reader, pos: int, what: str) -> tuple[int, int]:
    """Read a U29: 1 to 4 bytes, 7 bits each with a continuation bit, the 4th byte 8 bits."""
    data = r.data
    end = r.end
    if pos >= end:
        raise _truncated(r, pos, 1, what)
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    for i in (1, 2):
        if pos + i >= end:
            raise _truncated(r, pos + i, 1, what)
        b = data[pos + i]
        if b < 0x80:
            return value << 7 | b, pos + i + 1
        value = value << 7 | (b & 0x7F)
    if pos + 3 >= end:
        raise _truncated(r, pos + 3, 1, what)
    return value << 8 | data[pos + 3], pos + 4


def _need(r: _Reader, pos: int, n: int, what: str) -> None:
    if n > r.end - pos:
        raise _truncated(r, pos, n, what)


def _utf8(r: _Reader, start: int, stop: int, what: str) -> str:
    try:
        return str(r.data[start:stop], "utf-8")
    except UnicodeDecodeError as err:
        raise AMFError(
            f"AMF3: {what} at offset {start} is not valid UTF-8 "
            f"(byte 0x{r.data[start + err.start]:02x} at offset {start + err.start}), "
            "expected UTF-8 text"
        ) from err


def _object_ref(r: _Reader, header: int, pos: int, what: str) -> Any:
    index = header >> 1
    if index >= len(r.objects):
        raise AMFError(
            f"AMF3: {what} at offset {pos} refers to object {index}, "
            f"expected an index below {len(r.objects)} (objects decoded so far)"
        )
    return r.objects[index]


def _read_str(r: _Reader, pos: int, what: str) -> tuple[str, int]:
    """Read a UTF-8-vr: a string or a reference into the string table."""
    start = pos
    header, pos = _u29(r, pos, f"{what} header")
    if not header & 1:
        index = header >> 1
        if index >= len(r.strings):
            raise AMFError(
                f"AMF3: {what} at offset {start} refers to string {index}, "
                f"expected an index below {len(r.strings)} (strings decoded so far)"
            )
        return r.strings[index], pos
    n = header >> 1
    if n == 0:
        return "", pos
    _need(r, pos, n, what)
    text = _utf8(r, pos, pos + n, what)
    r.strings.append(text)
    return text, pos + n


def _check_depth(depth: int, what: str, pos: int) -> None:
    if depth >= MAX_DEPTH:
        raise AMFError(
            f"AMF3: {what} at offset {pos} nested {depth + 1} deep, "
            f"expected at most {MAX_DEPTH} nested containers"
        )


def _read_value(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= r.end:
        raise AMFError(f"AMF3: data ends at offset {pos}, expected a type marker")
    marker = r.data[pos]
    reader = _READERS.get(marker)
    if reader is None:
        raise AMFError(
            f"AMF3: unknown type marker 0x{marker:02x} at offset {pos}, expected 0x00-0x11"
        )
    return reader(r, pos + 1, depth)


def _read_undefined(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return UNDEFINED, pos


def _read_null(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return None, pos


def _read_false(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return False, pos


def _read_true(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return True, pos


def _read_integer(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    value, pos = _u29(r, pos, "integer")
    if value & 0x10000000:
        value -= 0x20000000
    return value, pos


def _read_double(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    _need(r, pos, 8, "double")
    return _DOUBLE.unpack_from(r.data, pos)[0], pos + 8


def _read_string(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    return _read_str(r, pos, "string")


def _read_xml(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "XML header")
    if not header & 1:
        return _object_ref(r, header, start, "XML"), pos
    n = header >> 1
    _need(r, pos, n, "XML")
    doc = XMLDocument(_utf8(r, pos, pos + n, "XML"))
    r.objects.append(doc)
    return doc, pos + n


def _read_date(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "date header")
    if not header & 1:
        return _object_ref(r, header, start, "date"), pos
    _need(r, pos, 8, "date")
    date = Date(_DOUBLE.unpack_from(r.data, pos)[0])
    r.objects.append(date)
    return date, pos + 8


def _read_byte_array(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "ByteArray header")
    if not header & 1:
        return _object_ref(r, header, start, "ByteArray"), pos
    n = header >> 1
    _need(r, pos, n, "ByteArray")
    raw = bytes(r.data[pos : pos + n])
    r.objects.append(raw)
    return raw, pos + n


def _read_array(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "array header")
    if not header & 1:
        return _object_ref(r, header, start, "array"), pos
    _check_depth(depth, "array", start)
    depth += 1
    count = header >> 1
    if count > r.end - pos:
        raise AMFError(
            f"AMF3: array at offset {start} claims {count} dense elements, "
            f"but only {r.end - pos} bytes remain (each element takes at least 1)"
        )
    dense: list[Any]
    result: Any
    if pos < r.end and r.data[pos] == 0x01:  # empty first key: no associative part
        pos += 1
        dense = result = []
        r.objects.append(result)
    else:
        assoc: dict[str, Any]
        if count == 0:
            assoc = result = ECMAArray()
            dense = []
        else:
            result = AMF3Array()
            dense = result.dense
            assoc = result.associative
        r.objects.append(result)
        while True:
            key, pos = _read_str(r, pos, "array key")
            if not key:
                break
            assoc[key], pos = _read_value(r, pos, depth)
        if count > r.end - pos:
            raise AMFError(
                f"AMF3: array at offset {start} claims {count} dense elements, "
                f"but only {r.end - pos} bytes remain after its associative part"
            )
    for _ in range(count):
        value, pos = _read_value(r, pos, depth)
        dense.append(value)
    return result, pos


def _read_object(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "object header")
    if not header & 1:
        return _object_ref(r, header, start, "object"), pos
    _check_depth(depth, "object", start)
    depth += 1
    if not header & 2:
        index = header >> 2
        if index >= len(r.traits):
            raise AMFError(
                f"AMF3: object at offset {start} refers to traits {index}, "
                f"expected an index below {len(r.traits)} (traits decoded so far)"
            )
        traits = r.traits[index]
    else:
        class_name, pos = _read_str(r, pos, "class name")
        if header & 4:
            raise AMFError(
                f"AMF3: externalizable class {class_name[:80]!r} at offset {start} not supported, "
                "expected an object with sealed or dynamic members"
            )
        count = header >> 4
        if count > r.end - pos:
            raise AMFError(
                f"AMF3: traits at offset {start} claim {count} sealed members, "
                f"but only {r.end - pos} bytes remain"
            )
        names = []
        for _ in range(count):
            name, pos = _read_str(r, pos, "sealed member name")
            names.append(name)
        traits = _Traits(class_name, tuple(names), bool(header & 8))
        r.traits.append(traits)
    result: Any
    fields: dict[str, Any]
    if traits.class_name:
        result = TypedObject(traits.class_name, {})
        fields = result.fields
    else:
        fields = result = {}
    r.objects.append(result)
    for name in traits.sealed:
        fields[name], pos = _read_value(r, pos, depth)
    if traits.dynamic:
        while True:
            key, pos = _read_str(r, pos, "dynamic member name")
            if not key:
                break
            fields[key], pos = _read_value(r, pos, depth)
    return result, pos


def _vector_reader(code: str, size: int, what: str) -> Callable[[_Reader, int, int], Any]:
    def reader(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        start = pos - 1
        header, pos = _u29(r, pos, f"{what} header")
        if not header & 1:
            return _object_ref(r, header, start, what), pos
        count = header >> 1
        _need(r, pos, 1 + count * size, what)  # the fixed-length flag, then the items
        items = list(struct.unpack_from(f">{count}{code}", r.data, pos + 1))
        r.objects.append(items)
        return items, pos + 1 + count * size

    return reader


def _read_vector_object(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "Vector.<Object> header")
    if not header & 1:
        return _object_ref(r, header, start, "Vector.<Object>"), pos
    _check_depth(depth, "Vector.<Object>", start)
    count = header >> 1
    _need(r, pos, 1, "Vector.<Object> fixed flag")
    _, pos = _read_str(r, pos + 1, "Vector.<Object> type name")
    if count > r.end - pos:
        raise AMFError(
            f"AMF3: Vector.<Object> at offset {start} claims {count} elements, "
            f"but only {r.end - pos} bytes remain (each element takes at least 1)"
        )
    items: list[Any] = []
    r.objects.append(items)
    for _ in range(count):
        value, pos = _read_value(r, pos, depth + 1)
        items.append(value)
    return items, pos


def _read_dictionary(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
    start = pos - 1
    header, pos = _u29(r, pos, "Dictionary header")
    if not header & 1:
        return _object_ref(r, header, start, "Dictionary"), pos
    _check_depth(depth, "Dictionary", start)
    depth += 1
    count = header >> 1
    _need(r, pos, 1, "Dictionary weak-keys flag")
    pos += 1
    if count > (r.end - pos) // 2:
        raise AMFError(
            f"AMF3: Dictionary at offset {start} claims {count} entries, "
            f"but only {r.end - pos} bytes remain (each entry takes at least 2)"
        )
    result: dict[Any, Any] = {}
    r.objects.append(result)
    for _ in range(count):
        key_at = pos
        key, pos = _read_value(r, pos, depth)
        try:
            hash(key)
        except TypeError:
            raise AMFError(
                f"AMF3: Dictionary key at offset {key_at} is a {type(key).__name__}, "
                "expected a key that can be hashed (not an object or array)"
            ) from None
        result[key], pos = _read_value(r, pos, depth)
    return result, pos


_READERS: dict[int, Callable[[_Reader, int, int], tuple[Any, int]]] = {
    UNDEFINED_MARKER: _read_undefined,
    NULL: _read_null,
    FALSE: _read_false,
    TRUE: _read_true,
    INTEGER: _read_integer,
    DOUBLE: _read_double,
    STRING: _read_string,
    XML_DOCUMENT: _read_xml,
    DATE: _read_date,
    ARRAY: _read_array,
    OBJECT: _read_object,
    XML: _read_xml,
    BYTE_ARRAY: _read_byte_array,
    VECTOR_INT: _vector_reader("i", 4, "Vector.<int>"),
    VECTOR_UINT: _vector_reader("I", 4, "Vector.<uint>"),
    VECTOR_DOUBLE: _vector_reader("d", 8, "Vector.<Number>"),
    VECTOR_OBJECT: _read_vector_object,
    DICTIONARY: _read_dictionary,
}


def decode(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    context: Context | None = None,
    *,
    depth: int = 0,
) -> tuple[Any, int]:
    """Decode one AMF3 value at `offset`; return it and the offset just past it.

    Pass the same `context` to successive calls that share reference tables. `depth` is the
    nesting already used by an enclosing AMF0 value (the AVM+ switch passes it on).
    Raises `AMFError` for anything that is not a complete, valid AMF3 value.
    """
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    return _read_value(_Reader(data, context or Context()), offset, depth)


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode AMF3 values up to the end of `data`, sharing one `Context`."""
    r = _Reader(data, Context())
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
    """Encode `values` one after the other as AMF3, without references.

    None, `UNDEFINED`, bool, int (as integer within 29 bits, else as double), float, str,
    `amf0.XMLDocument` (as XMLDocument 0x07), `amf0.Date`, bytes/bytearray/memoryview (as
    ByteArray), list/tuple (dense Array), `amf0.ECMAArray` (associative Array), `AMF3Array`,
    dict (anonymous dynamic object, str keys) and `amf0.TypedObject` (sealed members).
    Other types raise TypeError; unrepresentable values raise ValueError.
    """
    out = bytearray()
    for value in values:
        _write(out, value, 0)
    return bytes(out)


def _u29_bytes(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value >> 7 | 0x80, value & 0x7F))
    if value < 0x200000:
        return bytes((value >> 14 | 0x80, (value >> 7) & 0x7F | 0x80, value & 0x7F))
    if value <= U29_MAX:
        return bytes(
            (
                value >> 22 | 0x80,
                (value >> 15) & 0x7F | 0x80,
                (value >> 8) & 0x7F | 0x80,
                value & 0xFF,
            )
        )
    raise ValueError(f"{value} does not fit in an AMF3 U29")


def _inline_length(n: int, what: str) -> bytes:
    if n > U29_MAX >> 1:
        raise ValueError(f"AMF3 {what} of length {n} exceeds {U29_MAX >> 1}")
    return _u29_bytes(n << 1 | 1)


def _write(out: bytearray, value: Any, depth: int) -> None:
    writer = _WRITERS.get(type(value))
    if writer is None:
        for base, candidate in _SUBCLASS_WRITERS:
            if isinstance(value, base):
                writer = candidate
                break
        else:
            raise TypeError(f"AMF3 cannot encode a value of type {type(value).__name__}")
    writer(out, value, depth)


def _enter(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise ValueError(f"AMF3 encoding nests deeper than {MAX_DEPTH} containers (a cycle?)")
    return depth + 1


def _write_utf8_vr(out: bytearray, text: str, what: str) -> None:
    raw = text.encode("utf-8")
    out += _inline_length(len(raw), what)
    out += raw


def _write_undefined(out: bytearray, value: Any, depth: int) -> None:
    out.append(UNDEFINED_MARKER)


def _write_null(out: bytearray, value: Any, depth: int) -> None:
    out.append(NULL)


def _write_bool(out: bytearray, value: Any, depth: int) -> None:
    out.append(TRUE if value else FALSE)


def _write_int(out: bytearray, value: Any, depth: int) -> None:
    if INT_MIN <= value <= INT_MAX:
        out.append(INTEGER)
        out += _u29_bytes(value & U29_MAX)
    else:
        out += _MARKER_DOUBLE.pack(DOUBLE, float(value))


def _write_float(out: bytearray, value: Any, depth: int) -> None:
    out += _MARKER_DOUBLE.pack(DOUBLE, float(value))


def _write_str(out: bytearray, value: Any, depth: int) -> None:
    out.append(STRING)
    _write_utf8_vr(out, str(value), "string")


def _write_xml(out: bytearray, value: Any, depth: int) -> None:
    out.append(XML_DOCUMENT)
    _write_utf8_vr(out, str(value), "XML document")


def _write_date(out: bytearray, value: Any, depth: int) -> None:
    out += _DATE_OUT.pack(DATE, 0x01, float(value.milliseconds))


def _write_bytes(out: bytearray, value: Any, depth: int) -> None:
    raw = bytes(value)
    out.append(BYTE_ARRAY)
    out += _inline_length(len(raw), "ByteArray")
    out += raw


def _write_members(out: bytearray, members: dict[str, Any], depth: int) -> None:
    """Write name/value pairs and the closing empty name."""
    for key, item in members.items():
        if not isinstance(key, str):
            raise TypeError(f"AMF3 member names must be str, not {type(key).__name__}")
        if not key:
            raise ValueError("AMF3 cannot encode an empty member name (it ends the list)")
        _write_utf8_vr(out, key, "member name")
        _write(out, item, depth)
    out.append(0x01)


def _write_list(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out.append(ARRAY)
    out += _inline_length(len(value), "array")
    out.append(0x01)
    for item in value:
        _write(out, item, depth)


def _write_ecma_array(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out += bytes((ARRAY, 0x01))
    _write_members(out, value, depth)


def _write_amf3_array(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    out.append(ARRAY)
    out += _inline_length(len(value.dense), "array")
    _write_members(out, value.associative, depth)
    for item in value.dense:
        _write(out, item, depth)


def _write_dict(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    # Inline object, inline traits, dynamic, no sealed members, anonymous class.
    out += bytes((OBJECT, 0x0B, 0x01))
    _write_members(out, value, depth)


def _write_typed_object(out: bytearray, value: Any, depth: int) -> None:
    depth = _enter(depth)
    fields: dict[str, Any] = value.fields
    if len(fields) > U29_MAX >> 4:
        raise ValueError(f"AMF3 typed object with {len(fields)} members is too large")
    out.append(OBJECT)
    out += _u29_bytes(len(fields) << 4 | 0x03)  # inline object, inline traits, sealed only
    _write_utf8_vr(out, value.class_name, "class name")
    for key in fields:
        if not isinstance(key, str):
            raise TypeError(f"AMF3 member names must be str, not {type(key).__name__}")
        _write_utf8_vr(out, key, "member name")
    for item in fields.values():
        _write(out, item, depth)


_WRITERS: dict[type, Callable[[bytearray, Any, int], None]] = {
    Undefined: _write_undefined,
    type(None): _write_null,
    bool: _write_bool,
    int: _write_int,
    float: _write_float,
    str: _write_str,
    XMLDocument: _write_xml,
    Date: _write_date,
    bytes: _write_bytes,
    bytearray: _write_bytes,
    memoryview: _write_bytes,
    list: _write_list,
    tuple: _write_list,
    ECMAArray: _write_ecma_array,
    AMF3Array: _write_amf3_array,
    dict: _write_dict,
    TypedObject: _write_typed_object,
}

_SUBCLASS_WRITERS: tuple[tuple[type, Callable[[bytearray, Any, int], None]], ...] = (
    (bool, _write_bool),
    (int, _write_int),
    (float, _write_float),
    (XMLDocument, _write_xml),
    (str, _write_str),
    (bytes, _write_bytes),
    (bytearray, _write_bytes),
    (ECMAArray, _write_ecma_array),
    (dict, _write_dict),
    (list, _write_list),
    (tuple, _write_list),
    (Date, _write_date),
    (TypedObject, _write_typed_object),
    (AMF3Array, _write_amf3_array),
)
