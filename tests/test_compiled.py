"""The compiled hot path (`protocol/_compiled.py`): which implementation runs, and that the
compiled modules behave exactly as their pure-Python sources do.

The suite runs twice in CI (`scripts/test.sh`): as installed (compiled) with `RTMP2_COMPILED=1`,
which makes a missing build an error rather than a silent second pure run, and with
`RTMP2_PURE=1`. The differential tests load both implementations side by side whatever the
process runs (`_compiled.load`) and compare, over hypothesis-generated streams and seeded
mutants of real clients' captures, every message handed out, every error (type and message)
and the reader's state after each read: the compiled parser must raise exactly what the pure
one raises.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import _compiled
from rtmp2server.protocol.errors import LocalProtocolError, RemoteProtocolError
from rtmp2server.protocol.events import PlayRequest, PublishRequest
from rtmp2server.protocol.messages import Message
from support.capture import Capture, record_captures
from support.fuzz import HANDSHAKE_END, chunk_map, mutate_in_place, mutate_length
from support.media import SourceMedia

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


def _both(name: str) -> tuple[ModuleType, ModuleType]:
    """(pure, compiled) copies of module `name`; a missing build fails the test."""
    pure = _compiled.load(name, compiled=False)
    try:
        compiled = _compiled.load(name, compiled=True)
    except ImportError as err:
        pytest.fail(f"{err}: the install builds it (`pip install -e .`, scripts/setup.sh)")
    assert _compiled.implementation(pure) == "pure"
    assert _compiled.implementation(compiled) == "compiled"
    return pure, compiled


CHUNK_PY, CHUNK_C = _both("chunk") if _compiled.extension_path("chunk") else (None, None)


MESSAGE_TYPES = (Message,) if CHUNK_C is None else (Message, CHUNK_C.Message)


def _chunk_modules() -> tuple[ModuleType, ModuleType]:
    if CHUNK_PY is None or CHUNK_C is None:
        return _both("chunk")  # fails, saying why
    return CHUNK_PY, CHUNK_C


# --- which implementation runs ---------------------------------------------------------------


def test_the_implementation_in_force(record_property: Any) -> None:
    """Compiled where built, pure with RTMP2_PURE=1; RTMP2_COMPILED=1 requires compiled."""
    got = _compiled.implementations()
    record_property("hot_path", got)
    print(f"hot path: {got}")
    if _compiled.forced_pure():
        assert got == dict.fromkeys(_compiled.COMPILED, "pure")
    elif os.environ.get("RTMP2_COMPILED", "") not in ("", "0"):
        assert got == dict.fromkeys(_compiled.COMPILED, "compiled"), (
            f"RTMP2_COMPILED=1 but {got}: the compiled modules are not built "
            "(pip install -e . builds them)"
        )
    else:
        expected = {
            name: "compiled" if _compiled.extension_path(name) else "pure"
            for name in _compiled.COMPILED
        }
        assert got == expected


def _implementations_in_child(pure: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != _compiled.PURE_ENV}
    if pure:
        env[_compiled.PURE_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    code = (
        "import importlib\n"
        "from rtmp2server.protocol import _compiled\n"
        "print(sorted(_compiled.implementations().items()), *(importlib.import_module("
        "f'rtmp2server.protocol.{n}').__file__ for n in _compiled.COMPILED))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_rtmp2_pure_forces_the_sources_and_the_build_is_chosen_without_it() -> None:
    forced = _implementations_in_child(pure=True)
    assert forced.startswith(_listing("pure")), forced
    assert forced.count(".py") >= len(_compiled.COMPILED) and ".so" not in forced
    _chunk_modules()  # the build is there
    chosen = _implementations_in_child(pure=False)
    assert chosen.startswith(_listing("compiled")), chosen


def _listing(implementation: str) -> str:
    """How `_implementations_in_child` prints every module running as `implementation`."""
    return str(sorted(dict.fromkeys(_compiled.COMPILED, implementation).items()))


def test_one_stale_extension_makes_all_of_them_run_their_sources(tmp_path: Path) -> None:
    """The compiled chunk reader makes the compiled `Message` type: with the source of
    `messages` newer than its build, none of them runs compiled (and a warning says so)."""
    _chunk_modules()  # the build is there
    shutil.copytree(SRC / "rtmp2server", tmp_path / "src/rtmp2server")
    (tmp_path / "pyproject.toml").touch()  # a source checkout: file times count
    source = tmp_path / "src/rtmp2server/protocol/messages.py"
    later = max(p.stat().st_mtime for p in source.parent.glob("*.so")) + 60
    os.utime(source, (later, later))
    env = {k: v for k, v in os.environ.items() if k != _compiled.PURE_ENV}
    env["PYTHONPATH"] = str(tmp_path / "src")
    code = (
        "from rtmp2server.protocol import _compiled, chunk\n"
        "print(sorted(_compiled.implementations().items()))\n"
        "print(chunk.ChunkReader().feed(chunk.ChunkWriter().write(3, 0, 9, 1, b'x')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [
        _listing("pure"),
        "[Message(csid=3, timestamp=0, type_id=9, stream_id=1, payload=<1 bytes>)]",
    ]
    assert "the compiled messages is missing or older than its source" in done.stderr


# --- the differential harness ----------------------------------------------------------------


def _msg(m: Message) -> tuple[int, int, int, int, bytes]:
    return (m.csid, m.timestamp, m.type_id, m.stream_id, m.payload)


def reader_trace(mod: ModuleType, pieces: list[bytes], **limits: int) -> list[Any]:
    """Everything observable of a reader fed `pieces`: per read the messages or the error, and
    the state after it; once it failed, what the next read raises."""
    reader = mod.ChunkReader(**limits)
    trace: list[Any] = []
    for piece in pieces:
        try:
            got = reader.feed(piece)
        except RemoteProtocolError as err:
            trace.append(("raise", type(err).__name__, str(err)))
            try:
                reader.feed(b"\x03")
            except RemoteProtocolError as again:
                trace.append(("again", again is err))
            break
        trace.append(
            (
                [_msg(m) for m in got],
                reader.buffered,
                reader.partial_bytes,
                reader.chunk_streams,
                reader.chunk_size,
            )
        )
        if reader.error is not None:
            trace.append(("error", type(reader.error).__name__, str(reader.error)))
            break
    return trace


def assert_same_reading(pieces: list[bytes], **limits: int) -> list[Any]:
    pure, compiled = _chunk_modules()
    want = reader_trace(pure, pieces, **limits)
    got = reader_trace(compiled, pieces, **limits)
    assert got == want
    return want


def _item(item: Any) -> Any:
    # Where the process runs the sources, the compiled reader's messages are the compiled
    # module's `Message` (the one type compiled code makes), the connection's own the source's.
    return ("message", *_msg(item)) if isinstance(item, MESSAGE_TYPES) else item


def connection_trace(mod: ModuleType, pieces: list[bytes]) -> list[Any]:
    """A server connection of `mod` (the connection module, compiled or pure) fed a client's
    whole connection (handshake included): the items and errors of each read, and what it sent
    back (past the handshake)."""
    conn = mod.ServerConnection()
    trace: list[Any] = []
    answered = False
    for piece in pieces:
        try:
            items = conn.receive_data(piece)
        except RemoteProtocolError as err:
            trace.append(("raise", type(err).__name__, str(err), [_item(i) for i in err.partial]))
            break
        trace.append([_item(i) for i in items])
        # Accept whatever is asked, so that media flows as in a server.
        for item in items:
            try:
                if isinstance(item, PublishRequest):
                    conn.accept_publish(item)
                elif isinstance(item, PlayRequest):
                    conn.accept_play(item)
            except LocalProtocolError as err:  # a request withdrawn in the same read
                trace.append(("local", str(err)))
        out = conn.data_to_send()
        if out and not answered:
            # S0, S1 and S2 come first, and S1 and S2 hold random bytes.
            answered = True
            out = out[1 + 2 * 1536 :]
        trace.append(out)
    return trace


def _split(rng: random.Random, data: bytes, sizes: list[int] | None = None) -> list[bytes]:
    if sizes is None:
        sizes = []
        left = len(data)
        while left > 0:
            n = min(left, rng.choice((1, 7, 64, 512, 4096, 65536)))
            sizes.append(n)
            left -= n
    out, pos = [], 0
    for n in sizes:
        out.append(data[pos : pos + n])
        pos += n
    if pos < len(data):
        out.append(data[pos:])
    return [p for p in out if p]


# --- hypothesis-generated streams ------------------------------------------------------------

message_st = st.tuples(
    st.sampled_from([2, 3, 4, 5, 6, 63, 64, 319, 320, 65599]),
    st.integers(0, 0x1FFFFFF),
    st.sampled_from([8, 9, 18, 20]),
    st.integers(0, 3),
    st.binary(max_size=700),
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=800), step=st.integers(1, 64))
def test_compiled_reader_reads_random_bytes_as_the_pure_one(data: bytes, step: int) -> None:
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    assert_same_reading(pieces, max_message_size=1 << 12, max_chunk_streams=4)


@settings(max_examples=300, deadline=None)
@given(
    msgs=st.lists(message_st, min_size=1, max_size=6),
    size=st.sampled_from([1, 2, 16, 128, 4096]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10_000),
    step=st.integers(1, 300),
)
def test_compiled_reader_reads_mutated_streams_as_the_pure_one(
    msgs: list[tuple[int, int, int, int, bytes]],
    size: int,
    flips: list[tuple[int, int]],
    cut: int,
    step: int,
) -> None:
    pure, compiled = _chunk_modules()
    data = bytearray()
    framed = []
    for mod in (pure, compiled):
        writer = mod.ChunkWriter(size)
        framed.append(b"".join(writer.write(*m) for m in msgs))
    assert framed[0] == framed[1]  # the writers agree too
    set_size = pure.ChunkWriter().write(2, 0, 1, 0, size.to_bytes(4, "big"))
    data = bytearray(set_size + framed[0])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[: len(data) - cut % (len(data) + 1)] if cut % 3 == 0 else data
    pieces = [bytes(data[i : i + step]) for i in range(0, len(data), step)]
    assert_same_reading(pieces, max_message_size=1 << 16, max_chunk_size=1 << 16)


@settings(max_examples=200, deadline=None)
@given(
    msgs=st.lists(message_st, min_size=1, max_size=6),
    size=st.integers(1, 5000),
)
def test_compiled_writer_frames_as_the_pure_one(
    msgs: list[tuple[int, int, int, int, bytes]], size: int
) -> None:
    pure, compiled = _chunk_modules()
    a, b = pure.ChunkWriter(size), compiled.ChunkWriter(size)
    for m in msgs:
        assert compiled.ChunkWriter(size).write(*m) == pure.ChunkWriter(size).write(*m)
        assert b.write(*m) == a.write(*m)


def test_compiled_reader_refuses_what_the_pure_one_refuses() -> None:
    pure, _ = _chunk_modules()
    # Each bound and each framing error once, by name: the same type and the same words.
    w = pure.ChunkWriter(128)
    cases = [
        b"\xc5",  # type-3 first
        b"\x45" + bytes(7),  # type-1 first
        w.write(5, 0, 9, 1, bytes(300))[:140] + b"\x05" + bytes(11),  # fmt 0 mid-message
        pure.ChunkWriter(128).write(5, 0, 9, 1, bytes(70_000)),  # over max_message_size
        b"".join(pure.ChunkWriter(128).write(c, 0, 9, 1, b"x") for c in range(3, 10)),
        pure.ChunkWriter().write(2, 0, 1, 0, (1 << 20).to_bytes(4, "big")),  # chunk size
        pure.ChunkWriter().write(2, 0, 1, 0, bytes(4)),  # Set Chunk Size 0
        pure.ChunkWriter().write(2, 0, 1, 0, b"\x01"),  # short body
    ]
    for data in cases:
        for step in (1, 5, len(data)):
            pieces = [data[i : i + step] for i in range(0, len(data), step)]
            trace = assert_same_reading(
                pieces, max_message_size=65536, max_chunk_streams=4, max_chunk_size=65536
            )
            assert trace[-1][0] in ("raise", "again", "error"), (data.hex(), trace)


# --- mutants of real clients' captures -------------------------------------------------------


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory, source: SourceMedia) -> dict[str, Capture]:
    """The session's captures of real clients (made once; see support/capture.py), in the
    same place test_fuzz_connections.py keeps them, so the two share one recording."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return record_captures(base / "fuzz-captures", source)


def test_compiled_reader_reads_real_captures_and_their_mutants_as_the_pure_one(
    captures: dict[str, Capture],
) -> None:
    names = sorted(captures)
    raised = 0
    wholes: list[list[bytes]] = []
    for index in range(240):
        rng = random.Random(f"compiled/{index}")
        base = captures[rng.choice(names)]
        other = captures[rng.choice(names)]
        data = bytearray(base.data)
        cmap = chunk_map(bytes(data))
        if index % 8:  # one in eight unchanged
            for _ in range(rng.choice((1, 1, 2, 3))):
                mutate_in_place(rng, data, cmap)
            if rng.random() < 0.5:
                data, _ = mutate_length(rng, data, cmap, (other.data, chunk_map(other.data)))
        stream = bytes(data[HANDSHAKE_END:])
        pieces = _split(rng, stream, None if index % 2 else list(base.segments))
        trace = assert_same_reading(pieces)
        raised += trace[-1][0] in ("raise", "again", "error")
        if index % 4 == 0:
            wholes.append(_split(rng, bytes(data), list(base.segments)))
    # The mutants reach the errors, not only the happy path (most mutations break the stream).
    assert 20 < raised < 240
    connection = _both("connection")[1]
    want = pure_connection_traces(wholes)
    assert len(want) == len(wholes) == 60
    for whole, expected in zip(wholes, want, strict=True):
        assert connection_trace(connection, whole) == expected


def pure_connection_traces(wholes: list[list[bytes]]) -> list[list[Any]]:
    """`connection_trace` of the pure connection for each of `wholes`, from a process that
    runs the sources (`RTMP2_PURE=1`). The connection's modules subclass each other's classes,
    and a source class cannot subclass a compiled one, so the pure set is loaded whole, in a
    process of its own."""
    env = {**os.environ, _compiled.PURE_ENV: "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    code = (
        "import pickle, sys\n"
        "from rtmp2server.protocol import _compiled, connection\n"
        "assert _compiled.implementation(connection) == 'pure'\n"
        "from test_compiled import connection_trace\n"
        "wholes = pickle.load(sys.stdin.buffer)\n"
        "pickle.dump([connection_trace(connection, w) for w in wholes], sys.stdout.buffer)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, input=pickle.dumps(wholes), capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    traces: list[list[Any]] = pickle.loads(done.stdout)
    return traces


# --- messages --------------------------------------------------------------------------------

_PARSERS = (
    "parse_set_chunk_size",
    "parse_abort",
    "parse_acknowledgement",
    "parse_window_ack_size",
    "parse_set_peer_bandwidth",
    "parse_user_control",
)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # the type and the words are what must agree
        return ("raise", type(err).__name__, str(err))


def _message_outcome(mod: ModuleType, fields: tuple[int, int, int, int], parts: list[bytes]) -> Any:
    whole = mod.Message(*fields, b"".join(parts))
    msg = mod.Message.from_pieces(*fields, [memoryview(p) for p in parts], sum(map(len, parts)))
    before = (bytes(msg.head), [bytes(p) for p in msg.pieces()], msg.size, repr(msg))
    joined = (msg.payload, [bytes(p) for p in msg.pieces()], bytes(msg.head), repr(msg))
    return (
        before,
        joined,
        (whole.payload, bytes(whole.head), whole.pieces(), whole.size, repr(whole)),
        (msg == whole, msg != whole, msg == mod.Message(*fields, b"?"), msg == fields),
        _outcome(hash, msg),
        _outcome(setattr, msg, "extra", 1)[:2],
    )


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=12),
    fields=st.tuples(*[st.integers(0, 0xFFFFFFFF)] * 4),
    parts=st.lists(st.binary(min_size=1, max_size=9), min_size=1, max_size=4),
    args=st.lists(st.integers(0, 0x1FFFFFFFF), max_size=3),
)
def test_compiled_messages_behave_as_the_pure_ones(
    body: bytes, fields: tuple[int, int, int, int], parts: list[bytes], args: list[int]
) -> None:
    pure, compiled = _both("messages")
    for name in _PARSERS:
        assert _outcome(getattr(compiled, name), body) == _outcome(getattr(pure, name), body)
    assert _message_outcome(compiled, fields, parts) == _message_outcome(pure, fields, parts)
    for name, values in (
        ("u32", args[:1] or [0]),
        ("set_peer_bandwidth_body", [fields[0], fields[1] & 0x1FF]),
        ("user_control_body", [fields[2] & 0x1FFFF, *args]),
    ):
        got = _outcome(getattr(compiled, name), *values)
        assert got == _outcome(getattr(pure, name), *values), (name, values)
    assert [(e.name, e.value) for e in compiled.MessageType] == [
        (e.name, e.value) for e in pure.MessageType
    ]
    assert compiled.MessageType(9) == compiled.VIDEO == 9


@pytest.mark.parametrize("compiled", [False, True])
def test_media_run_vectors(compiled: bool) -> None:
    mod = _both("messages")[compiled]
    M = mod.Message
    a, v = M(4, 0, 8, 1, b"\xaf\x01ab"), M(6, 0, 9, 1, b"\x17\x01" + bytes(98))
    assert mod.media_run([]) == (-1, 0, 0, 0)
    assert mod.media_run([a, v, a]) == (1, 1, 2, 4 + 100 + 4)
    assert mod.media_run([M(6, 0, 9, 0, b"")]) == (0, 1, 0, 0)
    assert mod.media_run([a, M(4, 0, 8, 3, b"x")]) == (-1, 0, 2, 5)  # two message streams
    assert mod.media_run([a, M(5, 0, 18, 1, b"xy")]) == (-1, 0, 1, 6)  # data among them
    assert mod.media_run([a, object()]) == (-1, 0, 0, 0)  # an event among them


@pytest.mark.parametrize("compiled", [False, True])
def test_media_counts_add_up(compiled: bool) -> None:
    counts = _both("messages")[compiled].MediaCounts()
    assert (counts.video, counts.audio, counts.data, counts.bytes) == (0, 0, 0, 0)
    counts.add(2, 3, 1, 1000)
    counts.add(0, 1, 0, 2**40)  # a long publish's bytes outgrow 32 bits
    assert (counts.video, counts.audio, counts.data, counts.bytes) == (2, 4, 1, 1000 + 2**40)


@pytest.mark.parametrize("compiled", [False, True])
def test_plain_frames_vectors(compiled: bool) -> None:
    mod = _both("messages")[compiled]
    M = mod.Message
    aac, key, inter = b"\xaf\x01abc", b"\x17\x01\x00\x00\x00x", b"\x27\x01\x00\x00\x00"
    plain = mod.plain_frames
    V, K = mod.PLAIN_VIDEO, mod.PLAIN_KEY
    one = mod.plain_frame
    assert one(M(6, 0, 9, 1, key)) == V | K and one(M(6, 0, 9, 1, inter)) == V
    assert one(M(4, 0, 8, 1, aac)) == 0 and one(M(5, 0, 18, 1, b"\x02\x00\x01x\x05")) == -1
    assert plain([], 7) == (0, 0, 7)
    assert plain([M(4, 10, 8, 1, aac)], 20) == (0, 5, 10)
    assert plain([M(6, 30, 9, 1, inter), M(4, 20, 8, 1, aac)], 25) == (V, 10, 20)
    assert plain([M(6, 30, 9, 1, key), M(6, 40, 9, 1, inter)], 35) == (V | K, 11, 30)
    # 32-bit serial order: 0xFFFFFFF0 is before 5, and 5 is after it.
    assert plain([M(4, 0xFFFFFFF0, 8, 1, aac), M(4, 5, 8, 1, aac)], 10)[2] == 0xFFFFFFF0
    for other in (
        M(6, 0, 9, 1, b"\x17\x00\x00\x00\x00\x01"),  # AVC sequence header
        M(4, 0, 8, 1, b"\xaf\x00\x12\x10\x00"),  # AAC sequence header
        M(6, 0, 9, 1, b"\x1c\x01\x00\x00\x00"),  # another codec (HEVC id 12)
        M(6, 0, 9, 1, b"\x90" + b"hvc1" + b"x"),  # Enhanced RTMP
        M(4, 0, 8, 1, b"\x2f\x01ab"),  # MP3
        M(4, 0, 8, 1, b"\xaf\x01a"),  # four bytes: too short to be one
        M(5, 0, 18, 1, b"\x02\x00\x01x\x05"),  # data
    ):
        assert plain([M(4, 0, 8, 1, aac), other], 0) == (-1, 0, 0), other


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from([8, 9, 18]),
            st.sampled_from([b"\x17\x01", b"\x27\x01", b"\xaf\x01", b"\x17\x00", b"\x2f\x01"]),
            st.integers(0, 6),
            st.integers(0, 0xFFFFFFFF),
        ),
        max_size=6,
    ),
    min_ts=st.integers(0, 0xFFFFFFFF),
)
def test_plain_frames_agrees_with_the_relay_loop_in_both_implementations(
    items: list[tuple[int, bytes, int, int]], min_ts: int
) -> None:
    """The relay's own test of a plain frame, message by message (`Channel.on_messages`)."""
    for mod in _both("messages"):
        msgs = [mod.Message(4, ts, t, 1, head + bytes(n)) for t, head, n, ts in items]
        kind, size, low, plain = 0, 0, min_ts, True
        for m in msgs:
            b0 = m.payload[0]
            if m.type_id == 18 or m.size <= 4 or m.payload[1] != 1:
                plain = False
            elif m.type_id == 9 and b0 in (0x17, 0x27):
                kind |= mod.PLAIN_VIDEO | (mod.PLAIN_KEY if b0 == 0x17 else 0)
            elif m.type_id != 9 and b0 >> 4 == 10:
                pass
            else:
                plain = False
            size += m.size
            if (m.timestamp - low) % 2**32 >= 2**31:
                low = m.timestamp
        want = (kind, size, low) if plain else (-1, 0, min_ts)
        assert mod.plain_frames(msgs, min_ts) == want


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from([1, 8, 9, 18, 20]), st.integers(0, 2), st.integers(0, 40), st.booleans()
        ),
        max_size=6,
    )
)
def test_media_run_agrees_with_a_loop_in_both_implementations(
    items: list[tuple[int, int, int, bool]],
) -> None:
    for mod in _both("messages"):
        msgs = [mod.Message(4, 0, t, sid, bytes(n)) if m else (t, sid) for t, sid, n, m in items]
        if all(type(x) is mod.Message for x in msgs):
            media = all(x.type_id in (8, 9) for x in msgs)
            sids = {x.stream_id for x in msgs}
            want = (
                sids.pop() if media and len(sids) == 1 else -1,
                sum(x.type_id == 9 for x in msgs),
                sum(x.type_id == 8 for x in msgs),
                sum(x.size for x in msgs),
            )
        else:
            want = (-1, 0, 0, 0)
        assert mod.media_run(msgs) == want


# --- FLV -------------------------------------------------------------------------------------


def _flv_modules() -> tuple[ModuleType, ModuleType]:
    return _both("flv")


def _flv_outcome(mod: ModuleType, data: bytes) -> Any:
    try:
        header, tags, end = mod.parse_flv(data)
    except RemoteProtocolError as err:
        return ("raise", type(err).__name__, str(err))
    return (
        (header.version, header.audio, header.video),
        [(t.tag_type, t.timestamp, t.body) for t in tags],
        end,
    )


@settings(max_examples=200, deadline=None)
@given(
    tags=st.lists(
        st.tuples(st.sampled_from([8, 9, 18]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=64)),
        max_size=6,
    ),
    flips=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=3),
    cut=st.integers(0, 400),
)
def test_compiled_flv_encodes_and_parses_as_the_pure_one(
    tags: list[tuple[int, int, bytes]], flips: list[tuple[int, int]], cut: int
) -> None:
    pure, compiled = _flv_modules()
    streams = []
    for mod in (pure, compiled):
        enc = mod.FLVEncoder(audio=True, video=True)
        out: list[bytes | memoryview] = [enc.file_header()]
        n = enc.encode([mod.TagItem(*t) for t in tags], out)
        streams.append((b"".join(out), n, enc.flags, enc.tags, enc.size, enc.flags_fixup()))
    assert streams[1] == streams[0]
    data = bytearray(streams[0][0])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[: max(0, len(data) - cut % 40)]
    assert _flv_outcome(compiled, bytes(data)) == _flv_outcome(pure, bytes(data))
