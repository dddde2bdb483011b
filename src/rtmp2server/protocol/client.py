"""A small sans-IO RTMP client connection: publish or play one stream.

It exists so the server can be tested and benchmarked against a peer whose every byte we
control (paired in memory, or over a socket), and so applications can push or pull a stream
from Python. It speaks the same forms ffmpeg does: connect, releaseStream, FCPublish,
createStream, publish / play, deleteStream.

`receive_data()` returns the messages that arrived (commands decoded to `ClientCommand`,
media as `Message`); `data_to_send()` drains what to send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import amf0
from .chunk import ChunkReader, ChunkWriter
from .handshake import ClientHandshake
from .messages import (
    COMMAND_AMF0,
    DATA_AMF0,
    Message,
    MessageType,
    UserControlEvent,
    parse_user_control,
    u32,
    user_control_body,
)

_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A command from the server: `_result`, `_error`, `onStatus`, ..."""

    name: str
    transaction_id: float
    stream_id: int
    args: tuple[Any, ...]

    @property
    def info(self) -> dict[str, Any]:
        """The info object of an `onStatus` / `_result` (the last dict argument)."""
        for value in reversed(self.args):
            if isinstance(value, dict):
                return value
        return {}


class ClientConnection:
    def __init__(self, *, chunk_size: int = 4096, digest: bool = False) -> None:
        self._handshake = ClientHandshake(digest=digest)
        self._reader = ChunkReader(max_message_size=64 * 1024 * 1024)
        self._writer = ChunkWriter()
        self._out: list[bytes] = [self._handshake.initial_data()]
        self._pending: list[bytes] = []  # chunks written before the handshake finished
        self._chunk_size = chunk_size
        self._tid = 1
        self.handshake_done = False
        self.bytes_received = 0
        self._last_ack = 0
        self._window = 2_500_000

    # --- bytes ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ClientCommand | Message]:
        self.bytes_received += len(data)
        if not self.handshake_done:
            hs = self._handshake
            hs.receive_data(data)
            out = hs.data_to_send()
            if out:
                self._out.append(out)
            if not hs.done:
                return []
            self.handshake_done = True
            self._out.extend(self._pending)
            self._pending.clear()
            data = hs.unused_data
        items: list[ClientCommand | Message] = []
        for msg in self._reader.feed(data):
            t = msg.type_id
            if t == COMMAND_AMF0:
                values = amf0.decode_all(msg.payload)
                items.append(
                    ClientCommand(
                        str(values[0]), float(values[1]), msg.stream_id, tuple(values[2:])
                    )
                )
            elif t == MessageType.USER_CONTROL:
                event, arg, _ = parse_user_control(msg.payload)
                if event == UserControlEvent.PING_REQUEST:
                    self._send(2, 0, MessageType.USER_CONTROL, 0, user_control_body(7, arg))
                items.append(msg)
            elif t == MessageType.WINDOW_ACK_SIZE:
                self._window = max(1, _U32.unpack_from(msg.payload)[0])
            else:
                items.append(msg)
        if self.bytes_received - self._last_ack >= self._window:
            self._last_ack = self.bytes_received
            self._send(2, 0, MessageType.ACKNOWLEDGEMENT, 0, u32(self.bytes_received))
        return items

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _send(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> None:
        chunk = self._writer.write(csid, ts, type_id, sid, payload)
        (self._out if self.handshake_done else self._pending).append(chunk)

    # --- commands ------------------------------------------------------------------------

    def call(self, name: str, *args: Any, stream_id: int = 0) -> float:
        """Send a command; returns its transaction id."""
        tid = float(self._tid)
        self._tid += 1
        self._send(
            3 if stream_id == 0 else 8, 0, COMMAND_AMF0, stream_id, amf0.encode(name, tid, *args)
        )
        return tid

    def connect(self, app: str, tc_url: str, **extra: Any) -> float:
        self._send(2, 0, MessageType.SET_CHUNK_SIZE, 0, u32(self._chunk_size))
        self._writer.set_chunk_size(self._chunk_size)
        obj: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; rtmp2server-client)",
            "tcUrl": tc_url,
            **extra,
        }
        return self.call("connect", obj)

    def create_stream(self) -> float:
        return self.call("createStream", None)

    def publish(self, stream_id: int, name: str, kind: str = "live") -> float:
        return self.call("publish", None, name, kind, stream_id=stream_id)

    def play(self, stream_id: int, name: str, start: float = -2.0) -> float:
        self._send(2, 0, MessageType.USER_CONTROL, 0, user_control_body(3, stream_id, 3000))
        return self.call("play", None, name, start, stream_id=stream_id)

    def delete_stream(self, stream_id: int) -> float:
        return self.call("deleteStream", None, float(stream_id))

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        csid = {8: 4, 9: 6}.get(type_id, 5)
        self._send(csid, timestamp, type_id, stream_id, payload)

    def send_metadata(self, stream_id: int, metadata: dict[str, Any]) -> None:
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(metadata))
        self._send(5, 0, DATA_AMF0, stream_id, body)
