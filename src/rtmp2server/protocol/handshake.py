"""The RTMP handshake, sans-IO, for both ends of a connection.

This module owns everything that happens before the first chunk: C0/S0 (the version byte),
C1/S1 and C2/S2 (1536 bytes each), as RTMP 1.0 section 5.2 describes them, and the Flash
Player 9 "digest" (a.k.a. complex) handshake that Flash, FMLE, librtmp, FFmpeg and OBS use on
top of the same byte layout. It never touches a socket: `receive_data()` feeds bytes in any
split, `data_to_send()` drains the bytes to write, `done` says when the chunk stream starts and
`unused_data` holds the bytes that came after the handshake in the same read.

Simple handshake (RTMP 1.0 section 5.2.3 and 5.2.4): C1/S1 = time(4) + zero(4) + random(1528);
C2/S2 echo the peer's packet: its time, then our read time ("time2"), then its random bytes.

Digest handshake (what nginx-rtmp `ngx_rtmp_handshake.c`, SRS `srs_protocol_handshake.cpp` and
librtmp `handshake.h` implement; Adobe never published it). C1/S1 = time(4) + version(4) + two
764-byte blocks, a key block and a digest block. A digest block starts with four offset bytes;
the 32-byte digest sits at (sum of those four bytes) % 728 after them. The order of the blocks
is the "schema", numbered as SRS numbers it:

- schema 0, key block first (SRS "key-digest"): digest at 776 + sum(C1[772:776]) % 728;
- schema 1, digest block first (SRS "digest-key"): digest at 12 + sum(C1[8:12]) % 728.

(librtmp and crtmpserver number the same two layouts the other way round: their offset
function 1 / scheme 0 is our schema 1.) The digest is HMAC-SHA256 over the 1504 other bytes of
the packet, keyed with the first 30 bytes of the Genuine Adobe Flash Player key for C1 and the
first 36 bytes of the Genuine Adobe Flash Media Server key for S1. The server finds the client's
digest by trying schema 0 then schema 1 (the order nginx-rtmp and SRS use) and answers in the
same schema. S2 = random(1504) + HMAC-SHA256(random, key=HMAC-SHA256(C1 digest, key=full
68-byte FMS key)); C2 is built the same way from the S1 digest and the full 62-byte FP key.

A C1 whose version field is zero, or in which no digest verifies, gets the simple handshake;
that is also what nginx-rtmp and SRS fall back to. The server does not check C2 (clients
differ in what they put there); it only consumes its 1536 bytes. RTMPE (C0 = 6, 8 or 9) is
encrypted RTMP and not supported: it ends the handshake with `HandshakeError`.

`receive_data(b"")` means the peer closed the connection (the h11 convention); before the
handshake is done that is a `HandshakeError`. Any byte input either advances the handshake or
raises `HandshakeError`; nothing else escapes `receive_data()`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import struct
from collections.abc import Callable

from ..logs import get_logger
from .errors import HandshakeError, LocalProtocolError

__all__ = [
    "DIGEST_SIZE",
    "FMS_KEY",
    "FP_KEY",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "ServerHandshake",
    "digest_position",
    "find_digest",
    "packet_digest",
    "response_digest",
]

log = get_logger(__name__)

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536  # C1, S1, C2 and S2 each
DIGEST_SIZE = 32  # SHA-256
_RANDOM_SIZE = HANDSHAKE_SIZE - 8  # the random field of a simple C1/S1
_RESPONSE_RANDOM_SIZE = HANDSHAKE_SIZE - DIGEST_SIZE  # the random part of a digest C2/S2
_TOTAL_FROM_PEER = 1 + 2 * HANDSHAKE_SIZE  # C0+C1+C2, or S0+S1+S2

# The 32 bytes that follow the text in both Genuine Adobe keys (nginx-rtmp `ngx_rtmp_server_key`
# and `ngx_rtmp_client_key`, SRS `SrsGenuineFMSKey` and `SrsGenuineFPKey`, librtmp
# `GenuineFMSKey` and `GenuineFPKey` all carry the same bytes).
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes; S1 uses the first 36
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes; C1 uses the first 30
FMS_PARTIAL_KEY = FMS_KEY[:36]
FP_PARTIAL_KEY = FP_KEY[:30]

# Where the four offset bytes of the digest block start, per schema. The digest itself starts
# 4 bytes after that plus (their sum % 728); 728 = 764 - 4 offset bytes - 32 digest bytes.
_DIGEST_BLOCK_BASE = {0: 772, 1: 8}
_DIGEST_OFFSET_MODULUS = 728

_U32 = struct.Struct(">I")

# C0 values that are something else than a mistake, so that the error can say what arrived.
_KNOWN_OTHER_VERSIONS = {
    0x06: "RTMPE (encrypted RTMP), which is not supported",
    0x08: "RTMPE with XTEA (encrypted RTMP), which is not supported",
    0x09: "RTMPE with Blowfish (encrypted RTMP), which is not supported",
    0x16: "a TLS ClientHello: this listener speaks plain RTMP; use rtmp:// here, or rtmps:// "
    "to an rtmps listener",
    0x47: "'G', as in an HTTP GET: this is an RTMP port, not an HTTP one",
    0x50: "'P', as in an HTTP POST: RTMPT (RTMP over HTTP) is not supported",
}


def digest_position(packet: bytes | bytearray | memoryview, schema: int) -> int:
    """Offset of the 32-byte digest inside a 1536-byte C1/S1 laid out in `schema` (0 or 1)."""
    base = _DIGEST_BLOCK_BASE[schema]
    total = packet[base] + packet[base + 1] + packet[base + 2] + packet[base + 3]
    return base + 4 + total % _DIGEST_OFFSET_MODULUS


def packet_digest(packet: bytes | bytearray | memoryview, position: int, key: bytes) -> bytes:
    """HMAC-SHA256 of a 1536-byte packet without the 32 bytes at `position`."""
    with memoryview(packet) as view:
        mac = hmac.new(key, view[:position], hashlib.sha256)
        mac.update(view[position + DIGEST_SIZE : HANDSHAKE_SIZE])
    return mac.digest()


def find_digest(
    packet: bytes | bytearray | memoryview, key: bytes, schemas: tuple[int, ...] = (0, 1)
) -> tuple[int, bytes] | None:
    """The first schema, in `schemas` order, whose digest verifies with `key`, and the digest."""
    for schema in schemas:
        position = digest_position(packet, schema)
        found = bytes(packet[position : position + DIGEST_SIZE])
        if hmac.compare_digest(packet_digest(packet, position, key), found):
            return schema, found
    return None


def response_digest(peer_digest: bytes, full_key: bytes, data: bytes | bytearray) -> bytes:
    """The last 32 bytes of a digest C2/S2: HMAC(data, key=HMAC(peer_digest, key=full_key))."""
    session_key = hmac.digest(full_key, peer_digest, "sha256")
    return hmac.digest(session_key, bytes(data), "sha256")


def _random(random_bytes: Callable[[int], bytes], size: int) -> bytes:
    data = random_bytes(size)
    if len(data) != size:
        raise LocalProtocolError(f"random_bytes({size}) returned {len(data)} bytes")
    return bytes(data)


def _check_version_field(version: bytes, what: str) -> bytes:
    version = bytes(version)
    if len(version) != 4:
        raise LocalProtocolError(f"{what} must be 4 bytes, got {len(version)}")
    return version


class _Stage(enum.Enum):
    """What an endpoint waits for next. The peer's packets arrive in this order."""

    VERSION = "C0/S0"
    FIRST = "C1/S1"
    SECOND = "C2/S2"
    DONE = "done"


class _Endpoint:
    """Buffering and stage bookkeeping shared by both ends.

    Bytes accumulate in one bytearray with a read position, so a one-byte-at-a-time peer costs
    no copies and a peer that sends everything in one write is parsed in place; the remainder
    after the handshake is copied out once.
    """

    _side = "server"  # which end this object is, for log lines
    _peer = "client"  # which end sends the packets it reads, for error messages
    _packet_names = ("C0", "C1", "C2")

    def __init__(self) -> None:
        self._stage = _Stage.VERSION
        self._buf = bytearray()
        self._pos = 0
        self._received = 0
        self._out = bytearray()
        self._unused = bytearray()
        self._error: str | None = None

    # -- public, shared --------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer, in any split. `b""` means the peer closed the connection.

        Raises `HandshakeError` when the peer breaks the handshake, and again on every later
        call: a failed handshake stays failed.
        """
        if self._stage is _Stage.DONE:
            self._unused += data
            return
        if self._error is not None:
            raise HandshakeError(self._error)
        try:
            if not data:
                raise HandshakeError(
                    f"handshake: {self._peer} closed the connection after {self._received} of "
                    f"{_TOTAL_FROM_PEER} bytes ({'+'.join(self._packet_names)}), "
                    f"while waiting for {self._waiting_for()}"
                )
            before = len(self._buf)
            self._buf += data
            self._received += len(self._buf) - before
            self._advance()
        except HandshakeError as err:
            self._error = str(err)
            self._buf = bytearray()
            self._pos = 0
            log.debug("handshake (%s side) failed: %s", self._side, err)
            raise

    def data_to_send(self) -> bytes:
        """Drain and return the bytes to write to the peer (empty when there are none)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def done(self) -> bool:
        """True once the peer's third packet (C2 or S2) has been received in full."""
        return self._stage is _Stage.DONE

    @property
    def unused_data(self) -> bytes:
        """Bytes that arrived after the handshake: the start of the chunk stream."""
        return bytes(self._unused)

    # -- machinery ---------------------------------------------------------------------------

    def _waiting_for(self) -> str:
        index = {_Stage.VERSION: 0, _Stage.FIRST: 1, _Stage.SECOND: 2}.get(self._stage, 2)
        return self._packet_names[index]

    def _set_stage(self, stage: _Stage) -> None:
        log.debug("handshake (%s side): %s -> %s", self._side, self._stage.value, stage.value)
        self._stage = stage

    def _take(self, size: int) -> bytes | None:
        end = self._pos + size
        if end > len(self._buf):
            return None
        data = bytes(self._buf[self._pos : end])
        self._pos = end
        return data

    def _advance(self) -> None:
        while True:
            stage = self._stage
            if stage is _Stage.VERSION:
                if self._pos >= len(self._buf):
                    return
                version = self._buf[self._pos]
                self._pos += 1
                self._on_version(version)
                self._set_stage(_Stage.FIRST)
            elif stage is _Stage.FIRST:
                packet = self._take(HANDSHAKE_SIZE)
                if packet is None:
                    return
                self._on_first(packet)
                self._set_stage(_Stage.SECOND)
            else:  # _Stage.SECOND
                packet = self._take(HANDSHAKE_SIZE)
                if packet is None:
                    return
                self._on_second(packet)
                self._unused = self._buf[self._pos :]
                self._buf = bytearray()
                self._pos = 0
                self._set_stage(_Stage.DONE)
                return

    def _check_version(self, version: int) -> None:
        if version == RTMP_VERSION:
            return
        name = self._packet_names[0]
        note = _KNOWN_OTHER_VERSIONS.get(version)
        detail = f" ({version:#04x} is {note})" if note else ""
        raise HandshakeError(
            f"handshake: {name} version {version}, expected {RTMP_VERSION}{detail}"
        )

    def _on_version(self, version: int) -> None:
        raise NotImplementedError

    def _on_first(self, packet: bytes) -> None:
        raise NotImplementedError

    def _on_second(self, packet: bytes) -> None:
        raise NotImplementedError


class ServerHandshake(_Endpoint):
    """The server end: reads C0+C1, answers S0+S1+S2 in one write, then reads C2.

    `epoch` is the server's timestamp base: S1 carries it as its time, and a simple S2 carries
    it as "time2" (the time C1 was read; the handshake happens at the epoch). `server_version`
    goes into a digest S1; FFmpeg only checks the S1 digest when its first byte is 3 or more.
    """

    _side = "server"
    _peer = "client"
    _packet_names = ("C0", "C1", "C2")

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch: int = 0,
        server_version: bytes = b"\x0d\x0e\x0a\x0d",
    ) -> None:
        super().__init__()
        self._random_bytes = random_bytes
        self._epoch = epoch & 0xFFFFFFFF
        self._server_version = _check_version_field(server_version, "server_version")
        self._client_epoch: int | None = None
        self._client_version: bytes | None = None
        self._client_digest_schema: int | None = None
        self._s1 = b""

    @property
    def client_digest_schema(self) -> int | None:
        """0 or 1 when C1 carried a valid Flash Player 9 digest, else None (simple handshake)."""
        return self._client_digest_schema

    @property
    def client_epoch(self) -> int | None:
        """The time field of C1 (the client's timestamp base), once C1 has arrived."""
        return self._client_epoch

    @property
    def client_version(self) -> bytes | None:
        """The 4 version bytes of C1 (zero for a simple handshake), once C1 has arrived."""
        return self._client_version

    def _on_version(self, version: int) -> None:
        self._check_version(version)

    def _on_first(self, c1: bytes) -> None:
        self._client_epoch = _U32.unpack_from(c1, 0)[0]
        self._client_version = c1[4:8]
        found = None
        if self._client_version != b"\x00\x00\x00\x00":
            found = find_digest(c1, FP_PARTIAL_KEY)
            if found is None:
                log.debug("handshake: C1 has version %s but no valid digest", c1[4:8].hex("."))
        if found is None:
            s1 = _U32.pack(self._epoch) + bytes(4) + _random(self._random_bytes, _RANDOM_SIZE)
            s2 = c1[:4] + _U32.pack(self._epoch) + c1[8:]
        else:
            schema, client_digest = found
            self._client_digest_schema = schema
            packet = bytearray(_U32.pack(self._epoch))
            packet += self._server_version
            packet += _random(self._random_bytes, _RANDOM_SIZE)
            position = digest_position(packet, schema)
            packet[position : position + DIGEST_SIZE] = packet_digest(
                packet, position, FMS_PARTIAL_KEY
            )
            s1 = bytes(packet)
            random_part = _random(self._random_bytes, _RESPONSE_RANDOM_SIZE)
            s2 = random_part + response_digest(client_digest, FMS_KEY, random_part)
        self._s1 = s1
        self._out += bytes((RTMP_VERSION,))
        self._out += s1
        self._out += s2

    def _on_second(self, c2: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            echoes = c2[8:] == self._s1[8:]
            log.debug("handshake: C2 received (%s S1)", "echoes" if echoes else "does not echo")


class ClientHandshake(_Endpoint):
    """The client end, for tests and test tools: C0+C1 first, C2 once S0+S1 are in.

    With `digest=True`, C1 carries a Flash Player 9 digest laid out in `schema` (0 or 1), and
    `server_digest_valid` reports, once S2 is in, whether both the S1 digest and the S2
    signature verified. A server that answers with the simple handshake gets an echo of S1 as
    C2, as RTMP 1.0 says, and `server_digest_valid` is then False; it is not an error.

    `version` defaults to 10.0.45.2 (FP9-style, nonzero) with a digest and to zero without.
    """

    _side = "client"
    _peer = "server"
    _packet_names = ("S0", "S1", "S2")

    def __init__(
        self,
        *,
        digest: bool = False,
        schema: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        version: bytes | None = None,
        epoch: int = 0,
    ) -> None:
        super().__init__()
        if schema not in _DIGEST_BLOCK_BASE:
            raise LocalProtocolError(f"schema must be 0 or 1, got {schema!r}")
        if version is None:
            version = b"\x0a\x00\x2d\x02" if digest else b"\x00\x00\x00\x00"
        version = _check_version_field(version, "version")
        if digest and version == b"\x00\x00\x00\x00":
            raise LocalProtocolError("a digest handshake needs a nonzero C1 version")
        self._digest = digest
        self._schema = schema
        self._random_bytes = random_bytes
        self._epoch = epoch & 0xFFFFFFFF
        self._server_digest: bytes | None = None
        self._server_digest_valid: bool | None = None

        packet = bytearray(_U32.pack(self._epoch))
        packet += version
        packet += _random(random_bytes, _RANDOM_SIZE)
        self._client_digest: bytes | None = None
        if digest:
            position = digest_position(packet, schema)
            self._client_digest = packet_digest(packet, position, FP_PARTIAL_KEY)
            packet[position : position + DIGEST_SIZE] = self._client_digest
        self._c1 = bytes(packet)

    def initial_data(self) -> bytes:
        """C0+C1, to be written first. Calling it again returns the same bytes."""
        return bytes((RTMP_VERSION,)) + self._c1

    @property
    def server_digest_valid(self) -> bool | None:
        """With `digest=True`: whether S1's digest and S2's signature verified (set once S2 is
        in). None without a digest, or before S2."""
        return self._server_digest_valid

    def _on_version(self, version: int) -> None:
        self._check_version(version)

    def _on_first(self, s1: bytes) -> None:
        if self._digest:
            other = 1 - self._schema
            found = find_digest(s1, FMS_PARTIAL_KEY, (self._schema, other))
            if found is not None:
                self._server_digest = found[1]
        if self._server_digest is None:
            c2 = s1[:4] + _U32.pack(self._epoch) + s1[8:]
        else:
            random_part = _random(self._random_bytes, _RESPONSE_RANDOM_SIZE)
            c2 = random_part + response_digest(self._server_digest, FP_KEY, random_part)
        self._out += c2

    def _on_second(self, s2: bytes) -> None:
        if not self._digest or self._client_digest is None:
            return
        expected = response_digest(self._client_digest, FMS_KEY, s2[:_RESPONSE_RANDOM_SIZE])
        s2_valid = hmac.compare_digest(expected, s2[_RESPONSE_RANDOM_SIZE:])
        self._server_digest_valid = self._server_digest is not None and s2_valid
