"""The server connection state machine, paired in memory with the sans-IO client."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp2server.protocol import amf0
from rtmp2server.protocol.client import ClientCommand, ClientConnection
from rtmp2server.protocol.connection import (
    ServerConnection,
    State,
    StreamState,
    split_app,
    split_query,
)
from rtmp2server.protocol.errors import LocalProtocolError, RemoteProtocolError
from rtmp2server.protocol.events import (
    CommandReceived,
    Connected,
    PlayRequest,
    PublishRequest,
    StreamClosed,
)
from rtmp2server.protocol.messages import Message


class Pair:
    """A server connection and a client connection wired together in memory."""

    def __init__(self, split: int | None = None) -> None:
        self.server = ServerConnection()
        self.client = ClientConnection()
        self.split = split
        self.server_items: list[Any] = []
        self.client_items: list[Any] = []

    def pump(self) -> None:
        for _ in range(20):
            c2s = self.client.data_to_send()
            if c2s:
                step = self.split or len(c2s)
                for i in range(0, len(c2s), step):
                    self.server_items += self.server.receive_data(c2s[i : i + step])
            s2c = self.server.data_to_send()
            if s2c:
                self.client_items += self.client.receive_data(s2c)
            if not c2s and not s2c:
                return

    def commands(self) -> list[ClientCommand]:
        return [i for i in self.client_items if isinstance(i, ClientCommand)]

    def request(self, kind: str, name: str) -> PublishRequest | PlayRequest:
        """connect, createStream (id 1), then `publish` or `play` of `name`: the request."""
        self.client.connect("live", "rtmp://h/live")
        self.client.create_stream()
        getattr(self.client, kind)(1, name)
        self.pump()
        req = self.server_items[-1]
        assert isinstance(req, PublishRequest if kind == "publish" else PlayRequest)
        return req

    def connect_and_publish(self, name: str = "test") -> int:
        self.client.connect("live", "rtmp://127.0.0.1/live")
        self.pump()
        self.client.create_stream()
        self.pump()
        sid = int(self.commands()[-1].args[1])
        self.client.publish(sid, name)
        self.pump()
        req = self.server_items[-1]
        assert isinstance(req, PublishRequest)
        self.server.accept_publish(req)
        self.pump()
        return sid


def test_connect_result_echoes_transaction_and_encoding() -> None:
    p = Pair()
    tid = p.client.connect("live", "rtmp://127.0.0.1:1935/live", objectEncoding=3.0)
    p.pump()
    assert p.server.state is State.CONNECTED
    (connected,) = [i for i in p.server_items if isinstance(i, Connected)]
    assert connected.app == "live" and connected.tc_url == "rtmp://127.0.0.1:1935/live"
    (result,) = [c for c in p.commands() if c.name == "_result"]
    assert result.transaction_id == tid
    props, info = result.args
    assert props["fmsVer"].startswith("FMS/") and props["capabilities"] == 31.0
    assert info["code"] == "NetConnection.Connect.Success"
    assert info["objectEncoding"] == 3.0
    # window ack size, peer bandwidth and set chunk size came before the _result
    controls = [m.type_id for m in p.client_items if isinstance(m, Message)]
    assert 6 in controls


def test_publish_flow_and_media() -> None:
    p = Pair()
    sid = p.connect_and_publish("cam?key=secret")
    req = next(i for i in p.server_items if isinstance(i, PublishRequest))
    assert (req.name, req.query, req.publish_type) == ("cam", "key=secret", "live")
    status = [c for c in p.commands() if c.name == "onStatus"]
    assert status[-1].info["code"] == "NetStream.Publish.Start"
    assert status[-1].stream_id == sid
    p.server_items.clear()
    p.client.send_metadata(sid, {"width": 320.0, "videocodecid": 7.0})
    p.client.send_media(sid, 9, 0, b"\x17\x00\x00\x00\x00seq")
    p.client.send_media(sid, 8, 0, b"\xaf\x00\x12\x10")
    p.client.send_media(sid, 9, 33, b"\x27\x01" + b"x" * 10000)
    p.pump()
    msgs = [i for i in p.server_items if isinstance(i, Message)]
    assert [m.type_id for m in msgs] == [18, 9, 8, 9]
    # @setDataFrame is unwrapped so a recording holds a plain onMetaData tag
    meta = amf0.decode_all(msgs[0].payload)
    assert meta[0] == "onMetaData" and meta[1]["width"] == 320.0
    assert msgs[3].payload == b"\x27\x01" + b"x" * 10000 and msgs[3].timestamp == 33
    p.client.delete_stream(sid)
    p.pump()
    assert StreamClosed(sid, "deleteStream") in p.server_items


def test_media_before_publish_is_dropped() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.send_media(1, 9, 0, b"\x17\x01")
    p.pump()
    assert not [i for i in p.server_items if isinstance(i, Message)]


def test_reject_publish_bad_name() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.pump()
    p.client.publish(1, "taken")
    p.pump()
    req = p.server_items[-1]
    p.server.reject_publish(req, "taken is already being published.")
    p.pump()
    assert p.commands()[-1].info["code"] == "NetStream.Publish.BadName"
    assert p.commands()[-1].info["level"] == "error"


def test_unknown_command_answered_with_error() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    tid = p.client.call("frobnicate", None, 1.0)
    p.pump()
    errors = [c for c in p.commands() if c.name == "_error"]
    assert errors[0].transaction_id == tid
    assert errors[0].info["code"] == "NetConnection.Call.Failed"
    assert any(isinstance(i, CommandReceived) and i.name == "frobnicate" for i in p.server_items)


def test_fcpublish_release_stream_answers() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    t1 = p.client.call("releaseStream", None, "s")
    t2 = p.client.call("FCPublish", None, "s")
    p.pump()
    names = [(c.name, c.transaction_id) for c in p.commands()]
    assert ("_result", t1) in names and ("_result", t2) in names
    assert ("onFCPublish", 0.0) in names


def test_command_before_connect_is_error() -> None:
    p = Pair()
    p.client.create_stream()
    with pytest.raises(RemoteProtocolError, match="before connect"):
        p.pump()
    assert p.server.state is State.CLOSED


def test_malformed_amf_connect_is_remote_error() -> None:
    p = Pair()
    p.client._send(3, 0, 20, 0, b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00")
    with pytest.raises(RemoteProtocolError):
        p.pump()


def test_ping_request_answered() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client._send(2, 0, 4, 0, struct.pack(">HI", 6, 12345))
    p.pump()
    pongs = [m for m in p.client_items if isinstance(m, Message) and m.type_id == 4]
    assert any(m.payload == struct.pack(">HI", 7, 12345) for m in pongs)


def test_acknowledgement_sent_per_window() -> None:
    p = Pair(split=1000)
    sid = p.connect_and_publish()
    p.client._send(2, 0, 5, 0, struct.pack(">I", 10_000))  # our window: 10 kB
    for i in range(10):
        p.client.send_media(sid, 9, i * 33, b"\x27\x01" + bytes(3000))
    p.pump()
    acks = [m for m in p.client_items if isinstance(m, Message) and m.type_id == 3]
    assert len(acks) >= 2
    seqs = [struct.unpack(">I", m.payload)[0] for m in acks]
    assert seqs == sorted(seqs) and seqs[-1] <= p.server.bytes_received


def test_amf3_command_message() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.pump()
    body = b"\x00" + amf0.encode("createStream", 7.0, None)
    p.client._send(3, 0, 17, 0, body)
    p.pump()
    res = [c for c in p.commands() if c.transaction_id == 7.0]
    assert res and res[0].name == "_result" and res[0].args[1] == 1.0


def test_aggregate_message_split() -> None:
    p = Pair()
    sid = p.connect_and_publish()
    p.server_items.clear()

    def sub(t: int, ts: int, body: bytes) -> bytes:
        hdr = bytes([t]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        hdr += bytes([ts >> 24]) + b"\x00\x00\x00"
        return hdr + body + struct.pack(">I", len(body) + 11)

    agg = sub(9, 1000, b"\x17\x01v1") + sub(8, 1010, b"\xaf\x01a1") + sub(9, 1033, b"\x27\x01v2")
    p.client._send(6, 500, 22, sid, agg)
    p.pump()
    msgs = [(m.type_id, m.timestamp, m.payload) for m in p.server_items if isinstance(m, Message)]
    assert msgs == [(9, 500, b"\x17\x01v1"), (8, 510, b"\xaf\x01a1"), (9, 533, b"\x27\x01v2")]


def test_play_request_event() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.pump()
    p.client.play(1, "cam?token=1")
    p.pump()
    req = p.server_items[-1]
    assert isinstance(req, PlayRequest) and (req.name, req.query) == ("cam", "token=1")


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("live", ("live", "")),
        ("live/", ("live", "")),
        ("live?key=abc", ("live", "key=abc")),
        ("app/instance", ("app/instance", "")),
    ],
)
def test_split_app(app: str, expected: tuple[str, str]) -> None:
    assert split_app(app) == expected


def test_split_query() -> None:
    assert split_query("s?a=1&b=2") == ("s", "a=1&b=2")
    assert split_query("s") == ("s", "")


@pytest.mark.parametrize("split", [1, 3, 7, 1000])
def test_publish_any_split(split: int) -> None:
    p = Pair(split=split)
    sid = p.connect_and_publish()
    p.server_items.clear()
    frames = [bytes([i]) * (i * 97 % 9000 + 1) for i in range(40)]
    for i, f in enumerate(frames):
        p.client.send_media(sid, 9 if i % 3 else 8, i * 20, f)
    p.pump()
    got = [m.payload for m in p.server_items if isinstance(m, Message)]
    assert got == frames


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), step=st.integers(1, 50))
def test_fuzz_after_handshake_only_remote_errors(data: bytes, step: int) -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.pump()
    try:
        for i in range(0, len(data), step):
            p.server.receive_data(data[i : i + step])
    except RemoteProtocolError:
        assert p.server.state is State.CLOSED


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=3))
def test_fuzz_mutated_session_only_remote_errors(flips: list[tuple[int, int]]) -> None:
    client = ClientConnection()
    server = ServerConnection()
    # A complete, valid client byte stream: handshake is answered first.
    c2s = bytearray(client.data_to_send())
    server.receive_data(bytes(c2s))
    client.receive_data(server.data_to_send())
    client.connect("live", "rtmp://h/live")
    client.create_stream()
    client.publish(1, "x")
    client.send_metadata(1, {"a": 1.0})
    client.send_media(1, 9, 0, b"\x17" * 300)
    stream = bytearray(client.data_to_send())
    for pos, value in flips:
        stream[pos % len(stream)] = value
    with contextlib.suppress(RemoteProtocolError):
        server.receive_data(bytes(stream))


def test_error_keeps_media_that_arrived_before_it() -> None:
    p = Pair()
    sid = p.connect_and_publish()
    p.client.send_media(sid, 9, 0, b"\x17\x01frame1")
    p.client._send(3, 0, 20, 0, b"\x02\x00\x03bad\xff")  # malformed AMF command
    p.client.send_media(sid, 9, 33, b"\x27\x01frame2")
    with pytest.raises(RemoteProtocolError) as info:
        p.pump()
    media = [m.payload for m in info.value.partial if isinstance(m, Message)]
    assert media == [b"\x17\x01frame1"]


def test_media_right_after_publish_comes_out_after_the_request() -> None:
    """publish and its first media in one read: nothing is dropped before the owner answers."""
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.pump()
    p.server_items.clear()
    p.client.publish(1, "eager")
    p.client.send_media(1, 9, 0, b"\x17\x00\x00\x00\x00avcC")
    p.client.send_media(1, 8, 0, b"\xaf\x00\x12\x10")
    p.pump()
    kinds = [type(i).__name__ for i in p.server_items]
    assert kinds == ["PublishRequest", "Message", "Message"]
    assert p.server.stream_state(1) is StreamState.PUBLISH_PENDING
    p.server.accept_publish(p.server_items[0])
    assert p.server.stream_state(1) is StreamState.PUBLISHING


def test_a_rejected_publish_lets_no_media_through() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.client.publish(1, "no")
    p.pump()
    p.server.reject_publish(p.server_items[-1], "no")
    p.server_items.clear()
    p.client.send_media(1, 9, 0, b"\x17\x01")
    p.pump()
    assert p.server_items == []
    assert p.server.stream_state(1) is StreamState.IDLE


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("accept_publish", "accept_publish"),
        ("accept_publish", "reject_publish"),
        ("reject_publish", "accept_publish"),
        ("close", "accept_publish"),
    ],
)
def test_decisions_only_while_pending(first: str, second: str) -> None:
    """h11's rule: an answer that does not fit the stream's state is our bug, not the peer's.
    Before this, accept_publish twice after deleteStream sent Publish.Start twice."""
    p = Pair()
    req = p.request("publish", "x")
    if first == "close":
        p.client.delete_stream(1)
        p.pump()
        assert StreamClosed(1, "deleteStream") in p.server_items
        p.client.call("FCUnpublish", "x")
        p.pump()  # the close was a read ago: the request is gone
    elif first == "accept_publish":
        p.server.accept_publish(req)
    else:
        p.server.reject_publish(req, "no")
    with pytest.raises(LocalProtocolError, match=f"{second}.. on message stream 1 in state .*"):
        if second == "accept_publish":
            p.server.accept_publish(req)
        else:
            p.server.reject_publish(req, "again")


def test_play_decisions_follow_the_table() -> None:
    p = Pair()
    req = p.request("play", "cam")
    assert p.server.stream_state(1) is StreamState.PLAY_PENDING
    p.server.accept_play(req)
    assert 1 in p.server.playing
    with pytest.raises(LocalProtocolError):
        p.server.reject_play(req, "late")
    p.server.end_play(1)
    assert 1 not in p.server.playing
    with pytest.raises(LocalProtocolError):
        p.server.end_play(1)


def test_publish_on_a_publishing_stream_is_a_remote_error() -> None:
    p = Pair()
    sid = p.connect_and_publish("one")
    p.client.publish(sid, "two")
    with pytest.raises(RemoteProtocolError, match="in state publishing, expected an idle"):
        p.pump()


def test_reconnect_request_only_for_clients_that_announced_it() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.pump()
    assert not p.server.request_reconnect("maintenance")
    q = Pair()
    q.client.connect("live", "rtmp://h/live", capsEx=1.0)
    q.pump()
    assert q.server.request_reconnect("maintenance", "rtmp://other/live")
    q.pump()
    (status,) = [c for c in q.commands() if c.name == "onStatus"]
    assert status.info == {
        "level": "status",
        "code": "NetConnection.Connect.ReconnectRequest",
        "description": "maintenance",
        "tcUrl": "rtmp://other/live",
    }


def test_a_request_withdrawn_in_the_same_read_is_answered_in_order() -> None:
    """publish, closeStream, publish in one read (found by the fuzzer: answering the first
    raised LocalProtocolError). The owner answers each in turn, as if it read one command
    at a time; only the latest moves the stream's state."""
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.pump()
    p.server_items.clear()
    p.client.publish(1, "a")
    p.client.call("closeStream", stream_id=1)
    p.client.publish(1, "b")
    p.pump()
    first, closed, second = p.server_items
    assert isinstance(first, PublishRequest) and isinstance(second, PublishRequest)
    assert closed == StreamClosed(1, "closeStream")
    assert not p.server.is_pending(first) and p.server.is_pending(second)
    p.server.accept_publish(first)  # sends its Publish.Start; the state stays with "b"
    assert p.server.stream_state(1) is StreamState.PUBLISH_PENDING
    with pytest.raises(LocalProtocolError, match="already answered or withdrawn"):
        p.server.accept_publish(first)
    p.server.accept_publish(second)
    assert p.server.stream_state(1) is StreamState.PUBLISHING
    p.pump()
    starts = [c for c in p.commands() if c.info.get("code") == "NetStream.Publish.Start"]
    assert [c.info["details"] for c in starts] == ["a", "b"]


def test_a_request_withdrawn_in_an_earlier_read_cannot_be_answered() -> None:
    p = Pair()
    p.client.connect("live", "rtmp://h/live")
    p.client.create_stream()
    p.client.publish(1, "x")
    p.pump()
    req = p.server_items[-1]
    p.client.delete_stream(1)
    p.pump()
    p.client.call("FCUnpublish", "x")
    p.pump()  # a later read
    with pytest.raises(LocalProtocolError, match="already answered or withdrawn"):
        p.server.accept_publish(req)


def test_the_protocol_core_loads_no_asyncio() -> None:
    """The sans-IO promise, checked in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, rtmp2server.protocol.connection, rtmp2server.protocol.chunk\n"
        "import rtmp2server.protocol.flvdemux\n"
        "bad = [m for m in ('asyncio', 'rtmp2server.server', 'socket') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_pieces_to_send_hands_over_the_queued_objects_uncopied() -> None:
    """A relay queues one framed message to many players: each player's connection must hand
    the same bytes object to its transport (writelines), not a joined private copy."""
    p = Pair()
    sid = p.connect_and_publish()
    p.server.data_to_send()
    framed = b"\x05" * 5000
    p.server.send_raw(framed)
    p.server.send_raw(framed)
    pieces = p.server.pieces_to_send()
    assert len(pieces) == 2 and all(piece is framed for piece in pieces)
    assert p.server.pieces_to_send() == [] and p.server.data_to_send() == b""
    p.server.send_message(3, 0, 18, sid, b"\x02\x00\x01x")  # the next queue is a fresh list
    assert p.server.pieces_to_send() != [] and pieces == [framed, framed]
