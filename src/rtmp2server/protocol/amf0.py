"""Provisional AMF0 stand-in (number, boolean, string, object, null, undefined, ECMA array,
strict array) so the rest of the tree runs; the complete codec replaces this file."""
import struct
from typing import Any
from .errors import AMFError
class Undefined:
    def __bool__(self): return False
UNDEFINED = Undefined()
class ECMAArray(dict): pass
def encode(*values):
    out = bytearray()
    for v in values: _enc(v, out)
    return bytes(out)
def _str(s, out):
    b = s.encode(); out += struct.pack(">H", len(b)) + b
def _enc(v, out):
    if v is None: out.append(5)
    elif v is UNDEFINED: out.append(6)
    elif isinstance(v, bool): out += bytes([1, int(v)])
    elif isinstance(v, (int, float)): out += b"\x00" + struct.pack(">d", v)
    elif isinstance(v, str): out.append(2); _str(v, out)
    elif isinstance(v, ECMAArray):
        out += b"\x08" + struct.pack(">I", len(v))
        for k, x in v.items(): _str(k, out); _enc(x, out)
        out += b"\x00\x00\x09"
    elif isinstance(v, dict):
        out.append(3)
        for k, x in v.items(): _str(k, out); _enc(x, out)
        out += b"\x00\x00\x09"
    elif isinstance(v, (list, tuple)):
        out += b"\x0a" + struct.pack(">I", len(v))
        for x in v: _enc(x, out)
    else: raise TypeError(v)
def decode(data, pos=0):
    try:
        m = data[pos]; pos += 1
        if m == 0: return struct.unpack_from(">d", data, pos)[0], pos + 8
        if m == 1: return bool(data[pos]), pos + 1
        if m == 2:
            n = struct.unpack_from(">H", data, pos)[0]; pos += 2
            if pos + n > len(data): raise AMFError("trunc")
            return bytes(data[pos:pos+n]).decode(), pos + n
        if m in (3, 8):
            if m == 8: pos += 4
            d = ECMAArray() if m == 8 else {}
            while True:
                n = struct.unpack_from(">H", data, pos)[0]; pos += 2
                k = bytes(data[pos:pos+n]).decode(); pos += n
                if data[pos] == 9: return d, pos + 1
                d[k], pos = decode(data, pos)
        if m == 5: return None, pos
        if m == 6: return UNDEFINED, pos
        if m == 10:
            n = struct.unpack_from(">I", data, pos)[0]; pos += 4; l = []
            for _ in range(n): v, pos = decode(data, pos); l.append(v)
            return l, pos
        raise AMFError(f"marker {m}")
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise AMFError(str(e))
def decode_all(data):
    out = []; pos = 0
    while pos < len(data):
        v, pos = decode(data, pos); out.append(v)
    return out
