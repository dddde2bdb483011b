"""What the two ends of an RTMP connection share, sans-IO.

`Endpoint` owns the parts of a connection that do not depend on its role: driving the
handshake until it is done, the chunk reader and writer and the queue of bytes to send,
protocol control (Window Acknowledgement Size, Acknowledgement, Set Peer Bandwidth, the ping
of User Control), the acknowledgements this side owes, the split of aggregate messages, and
the decoding of a command message into name, transaction id and values. `ServerConnection`
(`connection.py`) and `ClientConnection` (`client.py`) build on it.

Each role keeps its own `receive_data()` loop: the server's is the ingest hot path, tuned
with benchmarks, and dispatching through a shared generic loop would cost a call per message
there. What is shared is everything that loop calls less than once per media message.
"""

from __future__ import annotations

import struct
from typing import Any

from . import amf0
from .chunk import ChunkReader, ChunkWriter
from .errors import AMFError, RemoteProtocolError
from .events import Acknowledged
from .handshake import ClientHandshake, ServerHandshake
from .messages import (
    COMMAND_AMF3,
    Message,
    MessageType,
    UserControlEvent,
    parse_acknowledgement,
    parse_set_peer_bandwidth,
    parse_user_control,
    parse_window_ack_size,
    u32,
    user_control_body,
)

# Chunk stream id of protocol control messages (RTMP 1.0 section 5.4: csid 2, stream 0).
CSID_CONTROL = 2

_AGG_HEADER = struct.Struct(">BHBHBB3s")


class Endpoint:
    """The role-independent half of one RTMP connection (see the module docstring)."""

    def __init__(
        self,
        handshake: ServerHandshake | ClientHandshake,
        reader: ChunkReader,
        *,
        window_ack_size: int,
        peer_window: int,
    ) -> None:
        self._handshake = handshake
        self._reader = reader
        self._writer = ChunkWriter()
        self._out: list[bytes] = []
        # The window we announce (answered to Set Peer Bandwidth when it differs).
        self._window_ack_size = window_ack_size
        self.bytes_received = 0
        self._last_ack = 0
        # The window the peer announced: we acknowledge every time that many bytes arrived.
        # 0 means "not announced, send none".
        self._peer_window = peer_window

    # --- handshake -----------------------------------------------------------------------

    def _drive_handshake(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Feed handshake bytes; queue the answer. Returns the bytes after the handshake
        once it is done (possibly empty), None while it goes on."""
        hs = self._handshake
        hs.receive_data(data)
        out = hs.data_to_send()
        if out:
            self._out.append(out)
        if not hs.done:
            return None
        return hs.unused_data

    # --- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def pieces_to_send(self) -> list[bytes]:
        """Drain the bytes queued for the peer as the pieces they were queued in, not joined:
        a relay queues the same framed bytes to many players, and a transport's `writelines`
        (uvloop's, and asyncio's from Python 3.12) keeps them shared instead of one private
        copy per player (bench/rtmpbench/stallcheck.py: 53 -> 12 KiB per reading player)."""
        out = self._out
        if not out:
            return out
        self._out = []
        return out

    def send_message(
        self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes
    ) -> None:
        self._out.append(self._writer.write(csid, timestamp, type_id, stream_id, payload))

    @property
    def out_chunk_size(self) -> int:
        """The chunk size this side sends with."""
        return self._writer.chunk_size

    def send_user_control(self, event: int, *args: int) -> None:
        self._send_control(MessageType.USER_CONTROL, user_control_body(event, *args))

    def _send_control(self, type_id: int, body: bytes) -> None:
        self.send_message(CSID_CONTROL, 0, type_id, 0, body)

    def _set_out_chunk_size(self, size: int) -> None:
        """Announce and apply the chunk size we send with (Set Chunk Size goes out in the old
        size, everything after it in the new one)."""
        self._send_control(MessageType.SET_CHUNK_SIZE, u32(size))
        self._writer.set_chunk_size(size)

    def _ack_if_due(self) -> None:
        if self._peer_window and self.bytes_received - self._last_ack >= self._peer_window:
            self._last_ack = self.bytes_received
            self._send_control(MessageType.ACKNOWLEDGEMENT, u32(self.bytes_received))

    # --- input ---------------------------------------------------------------------------

    def _on_control(self, msg: Message, items: list[Any]) -> None:
        """Protocol control and User Control from the peer. Set Chunk Size and Abort were
        applied by the chunk reader already; unknown types are ignored, as Flash Media
        Server does."""
        type_id = msg.type_id
        if type_id == MessageType.WINDOW_ACK_SIZE:
            size = parse_window_ack_size(msg.payload)
            if size == 0:
                raise RemoteProtocolError(
                    "Window Acknowledgement Size 0, expected a positive window"
                )
            self._peer_window = size
        elif type_id == MessageType.ACKNOWLEDGEMENT:
            items.append(Acknowledged(parse_acknowledgement(msg.payload)))
        elif type_id == MessageType.USER_CONTROL:
            event, arg, _ = parse_user_control(msg.payload)
            if event == UserControlEvent.PING_REQUEST:
                self.send_user_control(UserControlEvent.PING_RESPONSE, arg)
        elif type_id == MessageType.SET_PEER_BANDWIDTH:
            # RTMP 1.0 5.4.5: answer with a Window Acknowledgement Size when it differs.
            size, _limit = parse_set_peer_bandwidth(msg.payload)
            if size and size != self._window_ack_size:
                self._window_ack_size = size
                self._send_control(MessageType.WINDOW_ACK_SIZE, u32(size))

    @staticmethod
    def _aggregate_parts(msg: Message) -> list[Message]:
        """Split an aggregate message (type 22) into its FLV-tag-shaped sub-messages, with
        timestamps rebased on the aggregate's own (the first sub-message's is the base)."""
        body = msg.payload
        parts: list[Message] = []
        pos = 0
        base: int | None = None
        while pos + 11 <= len(body):
            tag_type, hi, lo, ts_hi, ts_lo, ts_ext, _ = _AGG_HEADER.unpack_from(body, pos)
            size = (hi << 8) | lo
            ts = (ts_ext << 24) | (ts_hi << 8) | ts_lo
            end = pos + 11 + size
            if end > len(body):
                raise RemoteProtocolError(
                    f"aggregate message: sub-message of {size} bytes at offset {pos} "
                    f"runs past the {len(body)}-byte body"
                )
            if base is None:
                base = ts
            parts.append(
                Message(
                    msg.csid,
                    (msg.timestamp + ts - base) & 0xFFFFFFFF,
                    tag_type & 0x1F,
                    msg.stream_id,
                    body[pos + 11 : end],
                )
            )
            pos = end + 4  # skip the back pointer
        return parts


def decode_command(msg: Message) -> tuple[str, float, list[Any]]:
    """A command message (AMF0, or AMF3 with its format byte) as (name, transaction id, the
    values after them). Raises `AMFError` for anything that is not a name and a number."""
    payload = msg.payload
    if msg.type_id == COMMAND_AMF3:
        if not payload:
            raise AMFError("AMF3 command message with an empty body, expected a command")
        payload = payload[1:]
    values = amf0.decode_all(payload)
    if len(values) < 2 or not isinstance(values[0], str):
        raise AMFError(
            f"command message of {len(msg.payload)} bytes decodes to {short(values)}, "
            "expected a command name string and a transaction id"
        )
    name = values[0]
    tid = values[1]
    if isinstance(tid, bool) or not isinstance(tid, (int, float)):
        raise AMFError(f"command {name!r}: transaction id {tid!r}, expected a number")
    return name, float(tid), values[2:]


def short(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 120 else text[:117] + "..."
