"""Tests of the RTMP handshake (RTMP 1.0 section 5.2, plus the Flash Player 9 digest handshake).

The digest vectors are checked two ways: against hex values computed once and pinned here, and
against a second implementation in this file that follows librtmp's `handshake.h` step by step
(`GetDigestOffset1`/`GetDigestOffset2`, `CalculateDigest`: copy the packet without the digest,
then one HMAC). Nothing in that second path imports the module under test.

Interoperability with real clients was also checked by hand while writing the module: FFmpeg
(schema 1, validates S1 and S2 when playing), rtmpdump/librtmp with and without the FP9
handshake ("Genuine Adobe Flash Media Server"), and the captured Flash Player C0C1 and FMS
S0S1S2/C2 in SRS's `srs_utest_protocol.cpp` (schema 0) all verify. The end-to-end tests with real
clients live elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Callable
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp2server.protocol.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from rtmp2server.protocol.handshake import ClientHandshake, ServerHandshake

SIG = 1536

# -- an independent implementation, after librtmp handshake.h ----------------------------------

# Spelled out byte by byte from the published key tables, not imported from the module.
GENUINE_FMS_KEY = bytes(
    [
        0x47, 0x65, 0x6E, 0x75, 0x69, 0x6E, 0x65, 0x20, 0x41, 0x64, 0x6F, 0x62,
        0x65, 0x20, 0x46, 0x6C, 0x61, 0x73, 0x68, 0x20, 0x4D, 0x65, 0x64, 0x69,
        0x61, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x30, 0x30, 0x31,
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
        0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
        0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip
GENUINE_FP_KEY = bytes(
    [
        0x47, 0x65, 0x6E, 0x75, 0x69, 0x6E, 0x65, 0x20, 0x41, 0x64, 0x6F, 0x62,
        0x65, 0x20, 0x46, 0x6C, 0x61, 0x73, 0x68, 0x20, 0x50, 0x6C, 0x61, 0x79,
        0x65, 0x72, 0x20, 0x30, 0x30, 0x31,
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
        0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
        0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip


def librtmp_offset_1(sig: bytes) -> int:
    """librtmp GetDigestOffset1: the digest block first (SRS schema 1)."""
    offset = sig[8] + sig[9] + sig[10] + sig[11]
    res = (offset % 728) + 12
    assert res + 32 <= 771
    return res


def librtmp_offset_2(sig: bytes) -> int:
    """librtmp GetDigestOffset2: the key block first (SRS schema 0)."""
    offset = sig[772] + sig[773] + sig[774] + sig[775]
    res = (offset % 728) + 776
    assert res + 32 <= 1535
    return res


OFFSET_BY_SCHEMA = {0: librtmp_offset_2, 1: librtmp_offset_1}


def librtmp_calculate_digest(pos: int, sig: bytes, key: bytes) -> bytes:
    message = bytearray(SIG - 32)
    message[:pos] = sig[:pos]
    message[pos:] = sig[pos + 32 :]
    return hmac.new(key, bytes(message), hashlib.sha256).digest()


def librtmp_verify(sig: bytes, schema: int, key: bytes) -> bool:
    pos = OFFSET_BY_SCHEMA[schema](sig)
    return librtmp_calculate_digest(pos, sig, key) == sig[pos : pos + 32]


def librtmp_signature(peer_digest: bytes, full_key: bytes, response: bytes) -> bytes:
    digest = hmac.new(full_key, peer_digest, hashlib.sha256).digest()
    return hmac.new(digest, response[: SIG - 32], hashlib.sha256).digest()


class DetRandom:
    """A reproducible byte stream: SHA-256 of "label:0", "label:1", ... concatenated."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.counter = 0
        self.pending = b""

    def __call__(self, n: int) -> bytes:
        while len(self.pending) < n:
            self.pending += hashlib.sha256(f"{self.label}:{self.counter}".encode()).digest()
            self.counter += 1
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def build_c1(
    schema: int | None, *, version: bytes = b"\x0a\x00\x2d\x02", label: str = "c1"
) -> bytes:
    """C1 = time 0 + version + 1528 bytes of DetRandom(label), digest imprinted if schema."""
    sig = bytearray(b"\x00\x00\x00\x00" + version + DetRandom(label)(SIG - 8))
    if schema is not None:
        pos = OFFSET_BY_SCHEMA[schema](bytes(sig))
        sig[pos : pos + 32] = librtmp_calculate_digest(pos, bytes(sig), GENUINE_FP_KEY[:30])
    return bytes(sig)


def server_reply(
    c0c1: bytes, server_version: bytes = b"\x0d\x0e\x0a\x0d"
) -> tuple[ServerHandshake, bytes, bytes]:
    server = ServerHandshake(
        random_bytes=DetRandom("server"), epoch=0x01020304, server_version=server_version
    )
    server.receive_data(c0c1)
    out = server.data_to_send()
    assert len(out) == 1 + 2 * SIG
    assert out[0] == 3
    return server, out[1 : 1 + SIG], out[1 + SIG :]


# -- pinned vectors ----------------------------------------------------------------------------


# For C1 = build_c1(schema), S1/S2 from ServerHandshake(random_bytes=DetRandom("server"),
# epoch=0x01020304). Computed once; each test also recomputes them the librtmp way.
class Vector(NamedTuple):
    c1_pos: int
    c1_digest: str
    s1_pos: int
    s1_digest: str
    s2_signature: str


VECTORS = {
    0: Vector(
        c1_pos=1231,
        c1_digest="2c9653da6610fdd291003e7916de09787b8e8de2714d19d28211f42e23831aba",
        s1_pos=1277,
        s1_digest="e60f1c3a8edf53118dc75d92ee6692a9200fde2916c51934d49436d35945fd48",
        s2_signature="7f875bf8e04b81f108d23953f005220c001f6a3153f147cefb9c7dbb03327e12",
    ),
    1: Vector(
        c1_pos=445,
        c1_digest="0416dd86f76b90b4be3085de0108765257adb3fb76b7cb77a49d52fe8d4af8e0",
        s1_pos=396,
        s1_digest="d2c7b46ce4bf7664f06e95f047a5903aaa63aed503412176afc6773166901207",
        s2_signature="79382d1ae89018984d9900b570d94b0154730b0b27dbbed1b5ec4e81ddcb2793",
    ),
}


def test_keys_are_the_genuine_adobe_keys() -> None:
    from rtmp2server.protocol import handshake

    assert handshake.FMS_KEY == GENUINE_FMS_KEY
    assert handshake.FP_KEY == GENUINE_FP_KEY
    assert len(handshake.FMS_KEY) == 68
    assert len(handshake.FP_KEY) == 62
    assert handshake.FMS_PARTIAL_KEY == b"Genuine Adobe Flash Media Server 001"
    assert handshake.FP_PARTIAL_KEY == b"Genuine Adobe Flash Player 001"


@pytest.mark.parametrize(
    ("schema", "offset_bytes", "expected"),
    [
        (0, (0, 0, 0, 0), 776),
        (0, (1, 2, 3, 4), 786),
        (0, (255, 255, 255, 255), 776 + 1020 % 728),
        (0, (182, 182, 182, 181), 776 + 727),  # the last position: digest ends at byte 1535
        (1, (0, 0, 0, 0), 12),
        (1, (1, 2, 3, 4), 22),
        (1, (255, 255, 255, 255), 12 + 1020 % 728),
        (1, (182, 182, 182, 181), 12 + 727),  # ends at 771, inside the first block
    ],
)
def test_digest_position_table(schema: int, offset_bytes: tuple[int, ...], expected: int) -> None:
    from rtmp2server.protocol.handshake import digest_position

    sig = bytearray(SIG)
    base = 772 if schema == 0 else 8
    sig[base : base + 4] = bytes(offset_bytes)
    assert digest_position(sig, schema) == expected
    assert OFFSET_BY_SCHEMA[schema](bytes(sig)) == expected


@pytest.mark.parametrize("schema", [0, 1])
def test_c1_vector_is_what_the_client_sends(schema: int) -> None:
    c1 = build_c1(schema)
    vec = VECTORS[schema]
    pos = OFFSET_BY_SCHEMA[schema](c1)
    assert pos == vec.c1_pos
    assert c1[pos : pos + 32].hex() == vec.c1_digest
    client = ClientHandshake(digest=True, schema=schema, random_bytes=DetRandom("c1"))
    assert client.initial_data() == b"\x03" + c1


@pytest.mark.parametrize("schema", [0, 1])
def test_server_detects_schema_and_signs_s1_s2(schema: int) -> None:
    c1 = build_c1(schema)
    vec = VECTORS[schema]
    server, s1, s2 = server_reply(b"\x03" + c1)
    assert server.client_digest_schema == schema
    assert server.client_epoch == 0
    assert server.client_version == b"\x0a\x00\x2d\x02"

    # S1: our epoch, our version, a digest in the client's schema.
    assert s1[:4] == b"\x01\x02\x03\x04"
    assert s1[4:8] == b"\x0d\x0e\x0a\x0d"
    pos = OFFSET_BY_SCHEMA[schema](s1)
    assert pos == vec.s1_pos
    assert s1[pos : pos + 32].hex() == vec.s1_digest
    assert librtmp_verify(s1, schema, GENUINE_FMS_KEY[:36])
    assert not librtmp_verify(s1, 1 - schema, GENUINE_FMS_KEY[:36])

    # S2: random, then the signature keyed from the client's digest.
    assert s2[1504:].hex() == vec.s2_signature
    c1_digest = bytes.fromhex(vec.c1_digest)
    assert s2[1504:] == librtmp_signature(c1_digest, GENUINE_FMS_KEY, s2)


def test_s1_random_comes_from_random_bytes() -> None:
    _, s1, s2 = server_reply(b"\x03" + build_c1(1))
    stream = DetRandom("server")
    random_s1 = stream(SIG - 8)
    random_s2 = stream(SIG - 32)
    pos = VECTORS[1].s1_pos
    assert s1[8:pos] == random_s1[: pos - 8]
    assert s1[pos + 32 :] == random_s1[pos + 24 :]
    assert s2[:1504] == random_s2


def test_simple_handshake_s1_and_s2_echo() -> None:
    c1 = build_c1(None, version=b"\x00\x00\x00\x00")
    c1 = b"\x00\x00\x12\x34" + c1[4:]  # a client time of 0x1234
    server, s1, s2 = server_reply(b"\x03" + c1)
    assert server.client_digest_schema is None
    assert server.client_epoch == 0x1234
    assert server.client_version == b"\x00\x00\x00\x00"
    assert s1[:4] == b"\x01\x02\x03\x04"  # our epoch
    assert s1[4:8] == b"\x00\x00\x00\x00"  # zero, RTMP 1.0 section 5.2.3
    assert s1[8:] == DetRandom("server")(SIG - 8)
    # S2: the client's time, our read time (the epoch), the client's random echoed.
    assert s2 == c1[:4] + b"\x01\x02\x03\x04" + c1[8:]


def test_version_with_garbage_digest_falls_back_to_simple() -> None:
    c1 = build_c1(None, version=b"\x09\x00\x7c\x02")
    assert not librtmp_verify(c1, 0, GENUINE_FP_KEY[:30])
    assert not librtmp_verify(c1, 1, GENUINE_FP_KEY[:30])
    server, s1, s2 = server_reply(b"\x03" + c1)
    assert server.client_digest_schema is None
    assert server.client_version == b"\x09\x00\x7c\x02"
    assert s1[4:8] == b"\x00\x00\x00\x00"
    assert s2 == c1[:4] + b"\x01\x02\x03\x04" + c1[8:]


@pytest.mark.parametrize("schema", [0, 1])
def test_digest_signed_with_the_wrong_key_is_not_a_digest(schema: int) -> None:
    sig = bytearray(build_c1(None))
    pos = OFFSET_BY_SCHEMA[schema](bytes(sig))
    sig[pos : pos + 32] = librtmp_calculate_digest(pos, bytes(sig), GENUINE_FMS_KEY[:36])
    server, _, s2 = server_reply(b"\x03" + bytes(sig))
    assert server.client_digest_schema is None
    assert s2[8:] == bytes(sig)[8:]


def test_zero_version_with_valid_digest_is_simple() -> None:
    # nginx-rtmp looks for a digest only when the version field is nonzero; so do we.
    sig = bytearray(build_c1(None, version=b"\x00\x00\x00\x00"))
    pos = OFFSET_BY_SCHEMA[1](bytes(sig))
    sig[pos : pos + 32] = librtmp_calculate_digest(pos, bytes(sig), GENUINE_FP_KEY[:30])
    assert librtmp_verify(bytes(sig), 1, GENUINE_FP_KEY[:30])
    server, _, s2 = server_reply(b"\x03" + bytes(sig))
    assert server.client_digest_schema is None
    assert s2[8:] == bytes(sig)[8:]


def test_custom_server_version_goes_into_digest_s1() -> None:
    _, s1, _ = server_reply(b"\x03" + build_c1(0), server_version=b"\x05\x00\x03\x01")
    assert s1[4:8] == b"\x05\x00\x03\x01"
    assert librtmp_verify(s1, 0, GENUINE_FMS_KEY[:36])


# -- the server's byte flow --------------------------------------------------------------------


def test_server_answers_once_c0_c1_are_complete_and_waits_for_c2() -> None:
    c1 = build_c1(0)
    server = ServerHandshake()
    server.receive_data(b"\x03")
    assert server.data_to_send() == b""
    server.receive_data(c1[:-1])
    assert server.data_to_send() == b""
    assert server.client_epoch is None
    server.receive_data(c1[-1:])
    assert len(server.data_to_send()) == 1 + 2 * SIG
    assert server.data_to_send() == b""  # drained
    assert not server.done
    server.receive_data(bytes(SIG - 1))
    assert not server.done
    assert server.unused_data == b""
    server.receive_data(b"\x00")
    assert server.done
    assert server.unused_data == b""
    assert server.data_to_send() == b""


def test_everything_at_once_leaves_the_chunk_stream_in_unused_data() -> None:
    chunk_data = bytes(range(256)) * 4096  # 1 MiB of "chunk stream"
    server = ServerHandshake()
    server.receive_data(b"\x03" + build_c1(1) + bytes(SIG) + chunk_data)
    assert server.done
    assert server.client_digest_schema == 1
    assert server.unused_data == chunk_data
    assert len(server.data_to_send()) == 1 + 2 * SIG


def test_data_after_done_is_appended_to_unused_data() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(2 * SIG) + b"ab")
    server.receive_data(b"cd")
    server.receive_data(b"")  # the end of the stream is the chunk reader's business now
    assert server.unused_data == b"abcd"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like_input(kind: type) -> None:
    server = ServerHandshake()
    data = b"\x03" + build_c1(0) + bytes(SIG) + b"rest"
    server.receive_data(kind(data))
    assert server.done
    assert server.unused_data == b"rest"


def server_transcript(pieces: list[bytes]) -> tuple[bytes, bytes, int | None]:
    server = ServerHandshake(random_bytes=DetRandom("server"))
    out = b""
    for piece in pieces:
        server.receive_data(piece)
        out += server.data_to_send()
    assert server.done
    return out, server.unused_data, server.client_digest_schema


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@pytest.mark.parametrize("schema", [0, 1, None])
def test_server_one_byte_at_a_time(schema: int | None) -> None:
    data = b"\x03" + build_c1(schema) + bytes(SIG) + b"\x02trailing chunk bytes"
    whole = server_transcript([data])
    assert server_transcript([data[i : i + 1] for i in range(len(data))]) == whole
    assert whole[1] == b"\x02trailing chunk bytes"
    assert whole[2] == schema


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema=st.sampled_from([0, 1, None]),
    trailing=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_server_any_split(schema: int | None, trailing: bytes, cuts: list[int]) -> None:
    data = b"\x03" + build_c1(schema) + bytes(SIG) + trailing
    out, unused, found = server_transcript(split_at(data, cuts))
    assert (out, unused, found) == server_transcript([data])
    assert unused == trailing
    assert found == schema


# -- both ends paired in memory ----------------------------------------------------------------


def run_pair(
    client: ClientHandshake, server: ServerHandshake, after_c2: bytes = b""
) -> tuple[ClientHandshake, ServerHandshake]:
    server.receive_data(client.initial_data())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send() + after_c2)
    assert client.data_to_send() == b""
    assert server.data_to_send() == b""
    assert client.done
    assert server.done
    return client, server


def test_pair_simple() -> None:
    client, server = run_pair(ClientHandshake(), ServerHandshake(), after_c2=b"connect")
    assert client.server_digest_valid is None
    assert server.client_digest_schema is None
    assert server.client_version == b"\x00\x00\x00\x00"
    assert server.unused_data == b"connect"
    assert client.unused_data == b""


@pytest.mark.parametrize("schema", [0, 1])
def test_pair_digest(schema: int) -> None:
    client, server = run_pair(ClientHandshake(digest=True, schema=schema), ServerHandshake())
    assert server.client_digest_schema == schema
    assert client.server_digest_valid is True


def test_pair_version_without_digest() -> None:
    client, server = run_pair(ClientHandshake(version=b"\x0a\x00\x2d\x02"), ServerHandshake())
    assert server.client_digest_schema is None
    assert server.client_version == b"\x0a\x00\x2d\x02"
    assert client.server_digest_valid is None


@pytest.mark.parametrize("schema", [0, 1])
def test_client_c2_is_signed_with_the_s1_digest(schema: int) -> None:
    client = ClientHandshake(digest=True, schema=schema, random_bytes=DetRandom("c1"))
    _, s1, s2 = server_reply(client.initial_data())
    client.receive_data(b"\x03" + s1)
    c2 = client.data_to_send()
    assert len(c2) == SIG
    pos = OFFSET_BY_SCHEMA[schema](s1)
    assert c2[1504:] == librtmp_signature(s1[pos : pos + 32], GENUINE_FP_KEY, c2)
    assert client.server_digest_valid is None  # not until S2
    client.receive_data(s2 + b"\x02\x00")
    assert client.server_digest_valid is True
    assert client.unused_data == b"\x02\x00"


def test_client_simple_c2_echoes_s1() -> None:
    client = ClientHandshake(epoch=0x55)
    c0c1 = client.initial_data()
    assert c0c1[:9] == b"\x03\x00\x00\x00\x55\x00\x00\x00\x00"
    _, s1, s2 = server_reply(c0c1)
    client.receive_data(b"\x03" + s1)
    assert client.data_to_send() == s1[:4] + b"\x00\x00\x00\x55" + s1[8:]
    client.receive_data(s2)
    assert client.done


def test_digest_client_against_a_simple_server() -> None:
    # An old server that echoes C1 and sends a plain S1: no digest to verify, not an error.
    client = ClientHandshake(digest=True)
    c1 = client.initial_data()[1:]
    s1 = b"\x00\x00\x00\x07" + bytes(4) + DetRandom("old")(SIG - 8)
    client.receive_data(b"\x03" + s1)
    assert client.data_to_send() == s1[:4] + bytes(4) + s1[8:]  # C2 echoes S1
    client.receive_data(c1)
    assert client.done
    assert client.server_digest_valid is False


@pytest.mark.parametrize("where", ["s1_digest", "s2_signature", "s2_random"])
def test_client_detects_tampering(where: str) -> None:
    client = ClientHandshake(digest=True, schema=0, random_bytes=DetRandom("c1"))
    _, s1, s2 = server_reply(client.initial_data())
    s1b, s2b = bytearray(s1), bytearray(s2)
    if where == "s1_digest":
        s1b[VECTORS[0].s1_pos] ^= 1
    elif where == "s2_signature":
        s2b[-1] ^= 1
    else:
        s2b[0] ^= 1
    client.receive_data(b"\x03" + bytes(s1b) + bytes(s2b))
    assert client.done
    assert client.server_digest_valid is False


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    digest=st.booleans(),
    schema=st.sampled_from([0, 1]),
    trailing=st.binary(max_size=100),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
)
def test_client_any_split(digest: bool, schema: int, trailing: bytes, cuts: list[int]) -> None:
    client = ClientHandshake(digest=digest, schema=schema)
    server = ServerHandshake()
    server.receive_data(client.initial_data())
    reply = server.data_to_send() + trailing
    for piece in split_at(reply, cuts):
        client.receive_data(piece)
    assert client.done
    assert client.unused_data == trailing
    assert client.server_digest_valid is (True if digest else None)
    server.receive_data(client.data_to_send())
    assert server.done


# -- errors ------------------------------------------------------------------------------------


def test_c0_rtmpe_is_refused_by_name() -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError) as info:
        server.receive_data(b"\x06" + build_c1(0))
    message = str(info.value)
    assert "C0 version 6, expected 3" in message
    assert "RTMPE" in message
    assert server.data_to_send() == b""


@pytest.mark.parametrize("version", [0, 1, 2, 4, 6, 8, 9, 0x16, 0x47, 0x50, 0xFF])
def test_other_c0_versions_are_refused(version: int) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match=rf"^handshake: C0 version {version}, expected 3"):
        server.receive_data(bytes([version]))
    assert isinstance(HandshakeError("x"), RemoteProtocolError)


def test_s0_version_is_checked_by_the_client() -> None:
    client = ClientHandshake()
    with pytest.raises(HandshakeError, match="S0 version 6, expected 3"):
        client.receive_data(b"\x06")


def test_a_failed_handshake_stays_failed() -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError):
        server.receive_data(b"\x06")
    for more in (b"\x03", bytes(5000), b""):
        with pytest.raises(HandshakeError, match="C0 version 6"):
            server.receive_data(more)
    assert not server.done


@pytest.mark.parametrize("received", [0, 1, 100, 1537, 3072])
def test_peer_closing_mid_handshake(received: int) -> None:
    server = ServerHandshake()
    if received:
        server.receive_data((b"\x03" + bytes(2 * SIG))[:received])
    with pytest.raises(HandshakeError, match=rf"client closed the connection after {received} "):
        server.receive_data(b"")


def test_server_closing_mid_handshake() -> None:
    client = ClientHandshake()
    client.receive_data(b"\x03" + bytes(10))
    with pytest.raises(HandshakeError, match=r"server closed the connection after 11 .* S1"):
        client.receive_data(b"")


def test_bad_arguments_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        ServerHandshake(server_version=b"\x01\x02\x03")
    with pytest.raises(LocalProtocolError):
        ClientHandshake(schema=2)
    with pytest.raises(LocalProtocolError):
        ClientHandshake(digest=True, version=bytes(4))
    with pytest.raises(LocalProtocolError):
        ClientHandshake(random_bytes=lambda n: b"short")


def feed_all_ways(make: Callable[[], ServerHandshake | ClientHandshake], data: bytes) -> None:
    """The fuzz promise: any input parses or raises HandshakeError, whole and byte by byte."""
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        endpoint = make()
        try:
            for piece in pieces:
                endpoint.receive_data(piece)
        except HandshakeError:
            pass
        endpoint.data_to_send()
        _ = endpoint.unused_data, endpoint.done


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=64))
def test_fuzz_server_short_inputs(data: bytes) -> None:
    feed_all_ways(ServerHandshake, data)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(min_size=SIG - 64, max_size=2 * SIG + 64),
    version=st.binary(min_size=4, max_size=4),
)
def test_fuzz_server_past_c0(body: bytes, version: bytes) -> None:
    # A valid C0 and a nonzero version so the digest search runs on arbitrary bytes.
    feed_all_ways(ServerHandshake, b"\x03" + body[:4] + version + body[8:])


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2 * SIG + 64))
def test_fuzz_client(body: bytes) -> None:
    for make in (ClientHandshake, lambda: ClientHandshake(digest=True)):
        feed_all_ways(make, b"\x03" + body)
        feed_all_ways(make, body)
