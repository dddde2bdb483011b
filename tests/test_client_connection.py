"""The sans-IO client connection against bytes a server may send: vectors and fuzzing.

The promise checked (errors.py): whatever a server sends either parses or raises
`RemoteProtocolError`, and the connection is closed after it.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import amf0
from rtmp2server.protocol.chunk import ChunkReader, ChunkWriter
from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.protocol.connection import ServerConnection
from rtmp2server.protocol.errors import LocalProtocolError, RemoteProtocolError
from rtmp2server.protocol.events import PublishRequest
from rtmp2server.protocol.messages import Message


def shaken() -> ClientConnection:
    """A client past the handshake (answered by our server side), nothing else sent."""
    client = ClientConnection()
    server = ServerConnection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.data_to_send()
    assert client.handshake_done
    return client


def chunk(type_id: int, payload: bytes, csid: int = 3, sid: int = 0) -> bytes:
    """One message as a server frames it, in the 128-byte default chunk size."""
    return ChunkWriter().write(csid, 0, type_id, sid, payload)


# (what, the server's bytes after the handshake): each must raise RemoteProtocolError.
BAD = [
    ("empty AMF0 command", chunk(20, b"")),
    ("empty AMF3 command", chunk(17, b"")),
    ("AMF3 command of only its format byte", chunk(17, b"\x00")),
    ("_result with a null transaction id", chunk(20, amf0.encode("_result", None, None, 1.0))),
    ("_result with a string transaction id", chunk(20, amf0.encode("_result", "1", None))),
    ("_result with a boolean transaction id", chunk(20, amf0.encode("_result", True, None))),
    ("command name that is a number", chunk(20, amf0.encode(1.0, 1.0))),
    ("command of a name alone", chunk(20, amf0.encode("onStatus"))),
    ("3-byte Window Acknowledgement Size", chunk(5, b"\x00\x00\x10", csid=2)),
    ("Window Acknowledgement Size 0", chunk(5, b"\x00\x00\x00\x00", csid=2)),
    ("4-byte Set Peer Bandwidth", chunk(6, b"\x00\x00\x10\x00", csid=2)),
    ("1-byte User Control", chunk(4, b"\x00", csid=2)),
    ("2-byte Acknowledgement", chunk(3, b"\x00\x01", csid=2)),
    ("Set Chunk Size 0", chunk(1, b"\x00\x00\x00\x00", csid=2)),
    ("truncated AMF0 in a command", chunk(20, b"\x02\x00\x07_res")),
    ("aggregate whose sub-message runs past it", chunk(22, b"\x09\x00\x00\x20" + bytes(7))),
]


@pytest.mark.parametrize(("what", "data"), BAD, ids=[w for w, _ in BAD])
def test_bad_server_bytes_are_remote_errors(what: str, data: bytes) -> None:
    client = shaken()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(data)
    assert client.closed
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"\x00")


def test_the_three_crashes_of_issue_14_are_remote_errors_one_byte_at_a_time() -> None:
    """An empty command, a `_result` with a null transaction id and a 3-byte Window
    Acknowledgement Size (once IndexError, TypeError and struct.error), fed byte by byte."""
    for data in (
        chunk(20, b""),
        chunk(20, amf0.encode("_result", None, None, 1.0)),
        chunk(5, b"\x00\x00\x10", csid=2),
    ):
        client = shaken()
        with pytest.raises(RemoteProtocolError):
            for i in range(len(data)):
                client.receive_data(data[i : i + 1])


def test_an_error_keeps_what_arrived_before_it() -> None:
    client = shaken()
    good = chunk(20, amf0.encode("onStatus", 0.0, None, {"code": "NetStream.Play.Start"}), 5, 1)
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(good + chunk(20, b""))
    (cmd,) = info.value.partial
    assert isinstance(cmd, ClientCommand)
    assert cmd.info["code"] == "NetStream.Play.Start"


def test_good_vectors() -> None:
    client = shaken()
    data = (
        chunk(20, amf0.encode("_result", 1.0, None, 1.0))
        + chunk(17, b"\x00" + amf0.encode("onStatus", 0.0, None, {"level": "status"}), 5, 1)
        + chunk(5, b"\x00\x4c\x4b\x40", csid=2)  # Window Acknowledgement Size 5 000 000
        + chunk(6, b"\x00\x4c\x4b\x40\x02", csid=2)  # Set Peer Bandwidth 5 000 000, dynamic
        + chunk(4, b"\x00\x06\x00\x00\x00\x2a", csid=2)  # Ping Request 42
        + chunk(4, b"\x00\x00\x00\x00\x00\x01", csid=2)  # Stream Begin 1
        # An aggregate of a video and an audio tag, timestamps 1000 and 1010, rebased on 0.
        + chunk(
            22,
            b"\x09\x00\x00\x02\x00\x03\xe8\x00\x00\x00\x00\x17\x01\x00\x00\x00\x0d"
            + b"\x08\x00\x00\x01\x00\x03\xf2\x00\x00\x00\x00\xaf\x00\x00\x00\x0c",
            6,
            1,
        )
    )
    items = client.receive_data(data)
    cmds = [i for i in items if isinstance(i, ClientCommand)]
    assert [(c.name, c.transaction_id, c.stream_id) for c in cmds] == [
        ("_result", 1.0, 0),
        ("onStatus", 0.0, 1),
    ]
    msgs = [(m.type_id, m.timestamp, m.payload) for m in items if isinstance(m, Message)]
    assert msgs == [
        (6, 0, b"\x00\x4c\x4b\x40\x02"),
        (4, 0, b"\x00\x06\x00\x00\x00\x2a"),
        (4, 0, b"\x00\x00\x00\x00\x00\x01"),
        (9, 0, b"\x17\x01"),
        (8, 10, b"\xaf"),
    ]
    # Answers: the window (5 000 000 differs from ours), and the Ping Response 42.
    out = client.data_to_send()
    assert chunk(5, b"\x00\x4c\x4b\x40", csid=2) in out
    assert out.endswith(b"\x04\x00\x07\x00\x00\x00\x2a")  # type 4, Ping Response 42


def test_acknowledges_per_announced_window() -> None:
    client = shaken()
    reader = ChunkReader()
    client.receive_data(chunk(5, (1000).to_bytes(4, "big"), csid=2))
    (ack,) = reader.feed(client.data_to_send())  # the handshake bytes were over 1000 already
    assert (ack.type_id, ack.payload) == (3, client.bytes_received.to_bytes(4, "big"))
    client.receive_data(ChunkWriter().write(6, 0, 9, 1, bytes(900)))
    assert client.data_to_send() == b""
    client.receive_data(ChunkWriter().write(6, 0, 9, 1, bytes(200)))
    (ack,) = reader.feed(client.data_to_send())
    assert (ack.type_id, ack.payload) == (3, client.bytes_received.to_bytes(4, "big"))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), step=st.sampled_from([1, 3, 400]))
def test_fuzz_after_handshake_only_remote_errors(data: bytes, step: int) -> None:
    client = shaken()
    try:
        for i in range(0, len(data), step):
            client.receive_data(data[i : i + step])
    except RemoteProtocolError:
        assert client.closed


def _server_session() -> bytes:
    """Everything our server sends a publishing client, after the handshake."""
    server = ServerConnection()
    c = ClientConnection()
    server.receive_data(c.data_to_send())
    c.receive_data(server.data_to_send())
    c.connect("live", "rtmp://h/live")
    c.create_stream()
    c.publish(1, "x")
    for item in server.receive_data(c.data_to_send()):
        if isinstance(item, PublishRequest):
            server.accept_publish(item)
    server.send_user_control(6, 7)  # a ping
    server.send_message(6, 0, 22, 1, b"\x09\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x17" + bytes(4))
    return server.data_to_send()


SESSION = _server_session()


def test_the_recorded_session_parses() -> None:
    client = shaken()
    items = client.receive_data(SESSION)
    codes = [i.info.get("code") for i in items if isinstance(i, ClientCommand)]
    assert "NetConnection.Connect.Success" in codes
    assert "NetStream.Publish.Start" in codes


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=3),
    one_byte=st.booleans(),
)
def test_fuzz_mutated_server_session_only_remote_errors(
    flips: list[tuple[int, int]], one_byte: bool
) -> None:
    stream = bytearray(SESSION)
    for pos, value in flips:
        stream[pos % len(stream)] = value
    client = shaken()
    with contextlib.suppress(RemoteProtocolError):
        if one_byte:
            for i in range(len(stream)):
                client.receive_data(stream[i : i + 1])
        else:
            client.receive_data(bytes(stream))


AMF_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.just(amf0.UNDEFINED),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(AMF_VALUES, max_size=5),
    type_id=st.sampled_from([17, 18, 20, 15]),
    sid=st.integers(0, 3),
)
def test_fuzz_commands_of_any_values_only_remote_errors(
    values: list[object], type_id: int, sid: int
) -> None:
    """Commands and data of any AMF0 values, on any stream: parsed or a remote error."""
    body = amf0.encode(*values)
    if type_id in (15, 17):
        body = b"\x00" + body
    client = shaken()
    with contextlib.suppress(RemoteProtocolError):
        for item in client.receive_data(chunk(type_id, body, 3, sid)):
            if isinstance(item, ClientCommand):
                assert isinstance(item.name, str)
                assert isinstance(item.transaction_id, float)
                assert isinstance(item.info, dict)
