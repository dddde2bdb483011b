"""A small sans-IO RTMP client connection: publish or play one stream.

It exists so the server can be tested and benchmarked against a peer whose every byte we
control (paired in memory, or over a socket), and so applications can push or pull a stream
from Python. It speaks the same forms ffmpeg does: connect, releaseStream, FCPublish,
createStream, publish / play, deleteStream.

`receive_data()` returns the messages that arrived (commands decoded to `ClientCommand`,
media as `Message`, aggregates split); `data_to_send()` drains what to send. The handshake,
chunking and protocol control are shared with the server side (`endpoint.py`). The asyncio
client on top of it is `rtmp2server.client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import amf0
from .chunk import ChunkReader
from .endpoint import Endpoint, decode_command
from .errors import LocalProtocolError, RemoteProtocolError
from .handshake import ClientHandshake
from .messages import (
    AGGREGATE,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    Message,
    MessageType,
    UserControlEvent,
)


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
        for value in self.args[::-1]:  # (mypyc 2.4 cannot compile reversed() of this tuple)
            if isinstance(value, dict):
                return value
        return {}


class ClientConnection(Endpoint):
    """The client side of one RTMP connection. Feed bytes in, take commands and messages out.

    Anything a server sends either parses or raises `RemoteProtocolError` (after which the
    connection is closed; its `partial` holds what the same bytes completed before), the
    promise of `errors.py`. Protocol control is answered here (pings, acknowledgements,
    Set Peer Bandwidth); User Control and the other control messages are also returned as
    `Message`s, for owners that wait on Stream Begin or Stream EOF.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        digest: bool = False,
        max_message_size: int = 64 * 1024 * 1024,
    ) -> None:
        handshake = ClientHandshake(digest=digest)
        # librtmp and ffmpeg acknowledge with a 2.5 MB window until the server names one
        # (every server we know names one in its answer to connect).
        super().__init__(
            handshake,
            ChunkReader(max_message_size=max_message_size),
            window_ack_size=2_500_000,
            peer_window=2_500_000,
        )
        self._out.append(handshake.initial_data())
        self._pending: list[bytes] = []  # chunks written before the handshake finished
        self._chunk_size = chunk_size
        self._tid = 1
        self.handshake_done = False
        self.closed = False

    # --- bytes ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientCommand | Message]:
        """Feed bytes from the server; `b""` means it closed. Returns what they complete."""
        if not data:
            self.closed = True
            return []
        if self.closed:
            raise LocalProtocolError("receive_data() on a closed connection")
        self.bytes_received += len(data)
        items: list[ClientCommand | Message] = []
        try:
            if not self.handshake_done:
                rest = self._drive_handshake(data)
                if rest is None:
                    return []
                self.handshake_done = True
                self._out.extend(self._pending)
                self._pending.clear()
                data = rest
            for msg in self._reader.feed(data):
                self._on_message(msg, items)
            if self._reader.error is not None:
                raise self._reader.error
            self._ack_if_due()
            return items
        except RemoteProtocolError as err:
            self.closed = True
            err.partial = items
            raise

    def _on_message(self, msg: Message, items: list[ClientCommand | Message]) -> None:
        t = msg.type_id
        if t in (COMMAND_AMF0, COMMAND_AMF3):
            name, tid, rest = decode_command(msg)
            items.append(ClientCommand(name, tid, msg.stream_id, tuple(rest)))
        elif t == AGGREGATE:
            for sub in self._aggregate_parts(msg):
                if sub.type_id != AGGREGATE:  # no nesting: a server sends none
                    self._on_message(sub, items)
        elif t < MessageType.AUDIO:
            # Protocol control (1-6); the Acknowledged events of the base are not needed
            # by a client, the raw messages (Stream Begin, ...) are.
            self._on_control(msg, [])
            if t != MessageType.WINDOW_ACK_SIZE:
                items.append(msg)
        else:
            items.append(msg)

    def send_message(
        self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes
    ) -> None:
        chunk = self._writer.write(csid, timestamp, type_id, stream_id, payload)
        (self._out if self.handshake_done else self._pending).append(chunk)

    def _send(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> None:
        self.send_message(csid, ts, type_id, sid, payload)

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
        self._set_out_chunk_size(self._chunk_size)
        obj: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; rtmp2server-client)",
            "tcUrl": tc_url,
            **extra,
        }
        return self.call("connect", obj)

    def set_chunk_size(self, size: int) -> None:
        """Send Set Chunk Size; what is sent after it is chunked at `size` bytes."""
        self._set_out_chunk_size(size)

    def create_stream(self) -> float:
        return self.call("createStream", None)

    def publish(self, stream_id: int, name: str, kind: str = "live") -> float:
        return self.call("publish", None, name, kind, stream_id=stream_id)

    def play(self, stream_id: int, name: str, start: float = -2.0) -> float:
        # Set Buffer Length 3 s, as ffmpeg sends before play.
        self.send_user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, 3000)
        return self.call("play", None, name, start, stream_id=stream_id)

    def delete_stream(self, stream_id: int) -> float:
        return self.call("deleteStream", None, float(stream_id))

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        csid = {8: 4, 9: 6}.get(type_id, 5)
        self._send(csid, timestamp, type_id, stream_id, payload)

    def send_metadata(self, stream_id: int, metadata: dict[str, Any]) -> None:
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(metadata))
        self._send(5, 0, DATA_AMF0, stream_id, body)
