"""The server side of one RTMP connection, sans-IO.

This module owns the state machine of a connection from the first handshake byte to the
end: handshake, chunk stream, protocol control (acknowledgements, peer bandwidth, pings),
and the NetConnection/NetStream commands. Bytes go in through `receive_data()`; what the
owner has to act on comes back as events (see `events.py`) plus audio/video/data `Message`
objects; bytes to send accumulate and are drained with `data_to_send()`. Time, sockets and
policy (who may publish what) belong to the owner: it answers `PublishRequest` with
`accept_publish()` or `reject_publish()`, and `PlayRequest` likewise.

Commands are answered with the client's own transaction ids, the way Flash Media Server,
nginx-rtmp and SRS answer them, because ffmpeg, OBS, GStreamer and librtmp track them.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, cast

from ..logs import get_logger
from . import amf0, enhanced
from .chunk import (
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_STREAMS,
    DEFAULT_MAX_MESSAGE_SIZE,
    ChunkReader,
)
from .endpoint import CSID_CONTROL as CSID_CONTROL  # re-exported with the other csids
from .endpoint import Endpoint, decode_command
from .errors import AMFError, LocalProtocolError, RemoteProtocolError
from .events import (
    CommandReceived,
    Connected,
    Event,
    PauseRequest,
    PlayRequest,
    PublishRequest,
    ReceiveMedia,
    StreamClosed,
)
from .handshake import ServerHandshake
from .messages import (
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_DATA_FRAME,
    VIDEO,
    Message,
    MessageType,
    UserControlEvent,
    media_run,
    set_peer_bandwidth_body,
    u32,
)

log = get_logger(__name__)

# Chunk stream ids we send on (nginx-rtmp's choice).
CSID_COMMAND = 3
CSID_STATUS = 5
CSID_AUDIO = 6
CSID_VIDEO = 7
CSID_DATA = 5

FMS_VERSION = "FMS/3,5,7,7009"

ReceivedItem = Event | Message


class State(Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    CLOSED = "closed"


class StreamState(Enum):
    """Where one message stream (a `createStream` id) stands, as the owner sees it."""

    IDLE = "idle"
    PUBLISH_PENDING = "publish-pending"  # `publish` arrived, the owner has not answered
    PUBLISHING = "publishing"
    PLAY_PENDING = "play-pending"
    PLAYING = "playing"


# (state, owner decision) -> next state. A decision that does not fit the state is a bug of
# the owner (an answer given twice, or for a stream that closed meanwhile): h11's way.
_DECISIONS: dict[tuple[StreamState, str], StreamState] = {
    (StreamState.PUBLISH_PENDING, "accept_publish"): StreamState.PUBLISHING,
    (StreamState.PUBLISH_PENDING, "reject_publish"): StreamState.IDLE,
    (StreamState.PLAY_PENDING, "accept_play"): StreamState.PLAYING,
    (StreamState.PLAY_PENDING, "reject_play"): StreamState.IDLE,
    (StreamState.PLAYING, "end_play"): StreamState.IDLE,
    (StreamState.PUBLISHING, "end_publish"): StreamState.IDLE,
}

_Handler = Callable[["ServerConnection", float, Any, list[Any], int, list["Event | Message"]], None]


class ServerConnection(Endpoint):
    """One RTMP connection, server side. Feed bytes in, take events and bytes out.

    Each message stream has a `StreamState`. Media and data on a stream whose `publish` is
    pending come out like those of a publishing stream, in order after the `PublishRequest`,
    so that an owner that decides later (an HTTP callback) can hold them and nothing a
    client sends straight after `publish` is lost; `accept_*`/`reject_*` are legal only while
    the request is pending and raise `LocalProtocolError` otherwise.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 5_000_000,
        peer_bandwidth: int = 5_000_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_partial_bytes: int | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        handshake: ServerHandshake | None = None,
    ) -> None:
        # Acknowledgements go out only once the peer has announced a window (as SRS does):
        # `peer_window=0`. ffmpeg never announces one; acks it has not read when it closes
        # its socket make its kernel reset the connection and drop what it had not sent yet.
        super().__init__(
            handshake or ServerHandshake(),
            ChunkReader(
                max_message_size=max_message_size,
                max_chunk_streams=max_chunk_streams,
                max_partial_bytes=max_partial_bytes,
                max_chunk_size=max_chunk_size,
            ),
            window_ack_size=window_ack_size,
            peer_window=0,
        )
        self.state = State.HANDSHAKE
        self._chunk_size = chunk_size
        self._peer_bandwidth = peer_bandwidth
        self.app = ""
        self.app_query = ""
        self.tc_url = ""
        self.flash_ver = ""
        self.object_encoding = 0.0
        self.connect_object: dict[str, Any] = {}
        # What the client announced of Enhanced RTMP in connect (fourCcList, capsEx, ...).
        self.capabilities = enhanced.NO_CAPABILITIES
        self.stream_states: dict[int, StreamState] = {}
        self.unpublished: set[str] = set()  # stream names FCUnpublish announced the end of
        # The latest request of each stream that awaits its answer; every request not answered
        # yet (`_open`); those withdrawn or replaced during the current read (`_stale`), which
        # may be answered until the next read.
        self._requests: dict[int, PublishRequest | PlayRequest] = {}
        self._open: dict[int, PublishRequest | PlayRequest] = {}  # by id(): identity, not ==
        self._stale: list[PublishRequest | PlayRequest] = []
        # Derived from `stream_states`, for the per-message checks: streams whose media and
        # data come out (publish pending or publishing), and streams being played.
        self._media_in: set[int] = set()
        self.publishing: set[int] = set()
        self.playing: set[int] = set()
        self._next_stream_id = 1
        self._streams: set[int] = set()
        # Extra properties merged into connect's `_result` command object; a hook for
        # capability negotiation (Enhanced RTMP) filled in by `on_connect` if set.
        self.on_connect: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ReceivedItem]:
        """Feed bytes from the peer; `b""` means the peer closed. Returns what they complete.

        Raises `RemoteProtocolError` (after which the connection is CLOSED) when the bytes
        break the protocol; its `partial` holds what the same bytes completed before that.
        """
        if not data:
            self.state = State.CLOSED
            return []
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive_data() on a closed connection")
        if self._stale:
            # Requests withdrawn during the last read can no longer be answered.
            for request in self._stale:
                self._open.pop(id(request), None)
            self._stale.clear()
        self.bytes_received += len(data)
        items: list[ReceivedItem] = []
        try:
            if self.state is State.HANDSHAKE:
                rest = self._drive_handshake(data)
                if rest is None:
                    return []
                self.state = State.AWAIT_CONNECT
                if not rest:
                    return []
                data = rest
            msgs = self._reader.feed(data)
            sid = media_run(msgs)[0]
            if sid >= 0 and sid in self._media_in:
                # The usual read of a publisher: media of the stream it publishes, nothing
                # else (looked over in one compiled step).
                items = cast("list[ReceivedItem]", msgs)  # the reader's own new list
                msgs = []
            for msg in msgs:
                type_id = msg.type_id
                if type_id in (VIDEO, AUDIO):
                    if msg.stream_id in self._media_in:
                        items.append(msg)
                elif type_id in (DATA_AMF0, DATA_AMF3):
                    self._on_data(msg, items)
                elif type_id in (COMMAND_AMF0, COMMAND_AMF3):
                    self._on_command(msg, items)
                elif type_id == AGGREGATE:
                    self._on_aggregate(msg, items)
                else:
                    self._on_control(msg, items)
            if self._reader.error is not None:
                raise self._reader.error
            if self._peer_window and self.bytes_received - self._last_ack >= self._peer_window:
                self._ack_if_due()
            return items
        except RemoteProtocolError as err:
            self.state = State.CLOSED
            err.partial = items
            raise

    # --- output --------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Queue chunks framed elsewhere (a fan-out encodes a message once for many players).

        The caller owns the chunk streams it frames on and must not share them with
        `send_message`; a type-0 header on every first chunk keeps them self-contained.
        """
        self._out.append(data)

    def send_command(self, stream_id: int, name: str, tid: float, *args: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STATUS
        self.send_message(csid, 0, COMMAND_AMF0, stream_id, amf0.encode(name, tid, *args))

    def send_status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        info = {"level": level, "code": code, "description": description, **extra}
        self.send_command(stream_id, "onStatus", 0.0, None, info)

    # --- owner decisions -----------------------------------------------------------------

    def stream_state(self, stream_id: int) -> StreamState:
        return self.stream_states.get(stream_id, StreamState.IDLE)

    def _set_stream_state(self, stream_id: int, state: StreamState) -> None:
        """The one place a message stream changes state; the derived sets follow it."""
        if state is StreamState.IDLE:
            self.stream_states.pop(stream_id, None)
        else:
            self.stream_states[stream_id] = state
        for members, states in (
            (self._media_in, (StreamState.PUBLISH_PENDING, StreamState.PUBLISHING)),
            (self.publishing, (StreamState.PUBLISHING,)),
            (self.playing, (StreamState.PLAYING,)),
        ):
            if state in states:
                members.add(stream_id)
            else:
                members.discard(stream_id)

    def is_pending(self, request: PublishRequest | PlayRequest) -> bool:
        """Whether `request` awaits an answer and is still the stream's latest request."""
        return id(request) in self._open and self._requests.get(request.stream_id) is request

    def _decide(
        self, stream_id: int, decision: str, request: PublishRequest | PlayRequest | None = None
    ) -> None:
        """Apply an owner decision. An answer to a request is legal once, while the request
        is open. The owner acts on a read's items in order, but the connection has parsed
        the whole read first: a request the client withdrew (closeStream) or replaced (a
        second play) in the same read is still answered, as a server that reads one command
        at a time would; its answer is sent but moves the stream's state no more."""
        state = self.stream_state(stream_id)
        if request is not None:
            if id(request) not in self._open:
                raise LocalProtocolError(
                    f"{decision}() on message stream {stream_id} in state {state.value}, "
                    "for a request already answered or withdrawn"
                )
            del self._open[id(request)]
            if self._requests.get(stream_id) is not request:
                return  # stale: the stream moved on after it, in the same read
            del self._requests[stream_id]
        new = _DECISIONS.get((state, decision))
        if new is None:
            raise LocalProtocolError(
                f"{decision}() on message stream {stream_id} in state {state.value}"
            )
        self._set_stream_state(stream_id, new)

    def accept_publish(self, request: PublishRequest) -> None:
        sid = request.stream_id
        self._decide(sid, "accept_publish", request)
        self.send_user_control(UserControlEvent.STREAM_BEGIN, sid)
        self.send_status(
            sid,
            "status",
            "NetStream.Publish.Start",
            f"{request.name} is now published.",
            details=request.name,
        )

    def reject_publish(
        self,
        request: PublishRequest,
        description: str,
        code: str = "NetStream.Publish.BadName",
    ) -> None:
        self._decide(request.stream_id, "reject_publish", request)
        self.send_status(request.stream_id, "error", code, description)

    def end_publish(self, stream_id: int, description: str = "") -> None:
        """The owner ends a publish (kicked, replaced, shut down): the client is told with
        NetStream.Unpublish.Success, and later media on the stream is ignored."""
        self._decide(stream_id, "end_publish")
        self.send_status(
            stream_id, "status", "NetStream.Unpublish.Success", description or "Unpublished."
        )

    def accept_play(self, request: PlayRequest) -> None:
        sid = request.stream_id
        self._decide(sid, "accept_play", request)
        self.send_user_control(UserControlEvent.STREAM_IS_RECORDED, sid)
        self.send_user_control(UserControlEvent.STREAM_BEGIN, sid)
        if request.reset:
            self.send_status(
                sid,
                "status",
                "NetStream.Play.Reset",
                f"Playing and resetting {request.name}.",
                details=request.name,
            )
        self.send_status(
            sid,
            "status",
            "NetStream.Play.Start",
            f"Started playing {request.name}.",
            details=request.name,
        )
        self.send_message(
            CSID_DATA,
            0,
            DATA_AMF0,
            sid,
            amf0.encode("|RtmpSampleAccess", True, True),
        )

    def reject_play(
        self,
        request: PlayRequest,
        description: str,
        code: str = "NetStream.Play.StreamNotFound",
    ) -> None:
        self._decide(request.stream_id, "reject_play", request)
        self.send_status(request.stream_id, "error", code, description, details=request.name)

    def end_play(self, stream_id: int) -> None:
        """The owner stopped playing to `stream_id` (it already told the client why)."""
        self._decide(stream_id, "end_play")

    def request_reconnect(self, description: str, tc_url: str | None = None) -> bool:
        """Enhanced RTMP v2 Reconnect Request: ask the client to reconnect (to `tc_url`, or to
        the same URL) without dropping its stream. Sent only to a client that announced the
        capability in `capsEx`; returns whether it was sent."""
        if not self.capabilities.caps_ex & enhanced.CapsEx.RECONNECT:
            return False
        info: dict[str, Any] = {
            "level": "status",
            "code": "NetConnection.Connect.ReconnectRequest",
            "description": description,
        }
        if tc_url:
            info["tcUrl"] = tc_url
        self.send_command(0, "onStatus", 0.0, None, info)
        return True

    # --- message handlers ----------------------------------------------------------------

    def _on_data(self, msg: Message, items: list[ReceivedItem]) -> None:
        if msg.stream_id not in self._media_in:
            return
        payload = msg.payload
        if msg.type_id == DATA_AMF3:
            # AMF3 data messages start with a format byte 0, then AMF0 values.
            payload = payload[1:]
        if payload.startswith(SET_DATA_FRAME):
            payload = payload[len(SET_DATA_FRAME) :]
        if payload is not msg.payload:
            msg = Message(msg.csid, msg.timestamp, DATA_AMF0, msg.stream_id, payload)
        items.append(msg)

    def _on_aggregate(self, msg: Message, items: list[ReceivedItem]) -> None:
        """Split an aggregate message (type 22) into its FLV-tag-shaped sub-messages."""
        for sub in self._aggregate_parts(msg):
            if sub.type_id in (AUDIO, VIDEO):
                if sub.stream_id in self._media_in:
                    items.append(sub)
            elif sub.type_id == DATA_AMF0:
                self._on_data(sub, items)

    def _on_command(self, msg: Message, items: list[ReceivedItem]) -> None:
        name, tid, rest = decode_command(msg)
        cmd_obj = rest[0] if rest else None
        args = rest[1:]
        if self.state is State.AWAIT_CONNECT and name != "connect":
            raise RemoteProtocolError(f"command {name!r} before connect, expected 'connect'")
        handler = _COMMANDS.get(name)
        if handler is None:
            if tid:
                self.send_command(
                    0,
                    "_error",
                    tid,
                    None,
                    {
                        "level": "error",
                        "code": "NetConnection.Call.Failed",
                        "description": f"Method not found ({name}).",
                    },
                )
            items.append(CommandReceived(name, tid, msg.stream_id, tuple(rest)))
            return
        handler(self, tid, cmd_obj, args, msg.stream_id, items)

    # --- commands ------------------------------------------------------------------------

    def _cmd_connect(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if self.state is not State.AWAIT_CONNECT:
            raise RemoteProtocolError("second 'connect' on one connection, expected one")
        if not isinstance(cmd_obj, dict):
            raise AMFError(f"connect: command object {cmd_obj!r}, expected an object")
        app = cmd_obj.get("app", "")
        if not isinstance(app, str):
            raise AMFError(f"connect: app {app!r}, expected a string")
        tc_url = cmd_obj.get("tcUrl", "")
        flash_ver = cmd_obj.get("flashVer", "")
        encoding = cmd_obj.get("objectEncoding", 0.0)
        self.connect_object = dict(cmd_obj)
        self.tc_url = tc_url if isinstance(tc_url, str) else ""
        self.flash_ver = flash_ver if isinstance(flash_ver, str) else ""
        self.object_encoding = (
            float(encoding)
            if isinstance(encoding, (int, float)) and not isinstance(encoding, bool)
            else 0.0
        )
        self.app, self.app_query = split_app(app)
        self.state = State.CONNECTED
        self._send_control(MessageType.WINDOW_ACK_SIZE, u32(self._window_ack_size))
        self._send_control(
            MessageType.SET_PEER_BANDWIDTH, set_peer_bandwidth_body(self._peer_bandwidth, 2)
        )
        if self._chunk_size != self._writer.chunk_size:
            self._set_out_chunk_size(self._chunk_size)
        props: dict[str, Any] = {"fmsVer": FMS_VERSION, "capabilities": 31.0, "mode": 1.0}
        info: dict[str, Any] = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": self.object_encoding,
        }
        self.capabilities = enhanced.client_capabilities(self.connect_object)
        if self.capabilities.enhanced:
            props.update(enhanced.server_capabilities())
        if self.on_connect is not None:
            props.update(self.on_connect(self.connect_object))
        self.send_command(0, "_result", tid, props, info)
        items.append(
            Connected(self.app, self.tc_url, self.flash_ver, self.object_encoding, cmd_obj)
        )

    def _cmd_create_stream(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if len(self._streams) >= 64:
            raise RemoteProtocolError(
                "createStream: 64 message streams already open, expected fewer"
            )
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams.add(stream_id)
        self.send_command(0, "_result", tid, None, float(stream_id))

    def _cmd_release_stream(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if tid:
            self.send_command(0, "_result", tid, None, amf0.UNDEFINED)

    def _cmd_fc_publish(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        name = _first_str(args)
        self.send_command(
            0,
            "onFCPublish",
            0.0,
            None,
            {"code": "NetStream.Publish.Start", "description": name},
        )
        if tid:
            self.send_command(0, "_result", tid, None, amf0.UNDEFINED)

    def _cmd_fc_unpublish(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        name = _first_str(args)
        self.send_command(
            0,
            "onFCUnpublish",
            0.0,
            None,
            {"code": "NetStream.Unpublish.Success", "description": name},
        )
        if tid:
            self.send_command(0, "_result", tid, None, amf0.UNDEFINED)
        # FCUnpublish arrives on stream 0 and names the stream; ffmpeg and OBS follow it
        # with deleteStream, which is what ends the publish. It is remembered: ffmpeg closes
        # its socket at once, and our answers arriving after that make its kernel reset the
        # connection, which can discard the deleteStream still unread here. The owner then
        # knows the end was announced.
        self.unpublished.add(split_query(name)[0])

    def _cmd_publish(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if not args or not isinstance(args[0], str) or not args[0]:
            raise AMFError(f"publish: stream name {args[0] if args else None!r}, expected a string")
        if sid == 0:
            raise RemoteProtocolError(
                "publish on message stream 0, expected a stream from createStream"
            )
        name, query = split_query(args[0])
        ptype = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        state = self.stream_state(sid)
        if state is not StreamState.IDLE:
            raise RemoteProtocolError(
                f"publish on message stream {sid} in state {state.value}, expected an idle stream"
            )
        self._set_stream_state(sid, StreamState.PUBLISH_PENDING)
        request = PublishRequest(sid, name, query, ptype, tid)
        self._requests[sid] = request
        self._open[id(request)] = request
        items.append(request)

    def _cmd_play(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if not args or not isinstance(args[0], str) or not args[0]:
            raise AMFError(f"play: stream name {args[0] if args else None!r}, expected a string")
        if sid == 0:
            raise RemoteProtocolError(
                "play on message stream 0, expected a stream from createStream"
            )
        name, query = split_query(args[0])
        start = _num(args, 1, -2.0)
        duration = _num(args, 2, -1.0)
        reset = bool(args[3]) if len(args) > 3 else True
        state = self.stream_state(sid)
        if state in (StreamState.PUBLISH_PENDING, StreamState.PUBLISHING):
            raise RemoteProtocolError(
                f"play on message stream {sid} in state {state.value}, expected an idle stream"
            )
        # A play on a stream already playing (or pending) replaces that play: the owner gets
        # the new request and drops its player first (ffplay does this on seek).
        self._set_stream_state(sid, StreamState.PLAY_PENDING)
        play = PlayRequest(sid, name, query, start, duration, reset, tid)
        if self._requests.get(sid) is not None:
            self._stale.append(self._requests[sid])
        self._requests[sid] = play
        self._open[id(play)] = play
        items.append(play)

    def _end_stream(self, sid: int, command: str, items: list[ReceivedItem]) -> None:
        withdrawn = self._requests.pop(sid, None)
        if withdrawn is not None:
            self._stale.append(withdrawn)
        if self.stream_state(sid) is not StreamState.IDLE:
            self._set_stream_state(sid, StreamState.IDLE)
            items.append(StreamClosed(sid, command))

    def _cmd_close_stream(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        self._end_stream(sid, "closeStream", items)

    def _cmd_delete_stream(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        target = _num(args, 0, float(sid))
        target_id = int(target) if 0 <= target < 2**32 else sid
        self._end_stream(target_id, "deleteStream", items)
        self._streams.discard(target_id)

    def _cmd_pause(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        pause = bool(args[0]) if args else True
        if sid in self.playing:
            # Answered as nginx-rtmp and FMS do for live streams.
            if pause:
                self.send_user_control(UserControlEvent.STREAM_EOF, sid)
                self.send_status(sid, "status", "NetStream.Pause.Notify", "Paused live")
            else:
                self.send_user_control(UserControlEvent.STREAM_BEGIN, sid)
                self.send_status(sid, "status", "NetStream.Unpause.Notify", "Unpaused live")
        items.append(PauseRequest(sid, pause, _num(args, 1, 0.0)))

    def _cmd_receive_audio(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        items.append(ReceiveMedia(sid, "audio", bool(args[0]) if args else True))

    def _cmd_receive_video(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        items.append(ReceiveMedia(sid, "video", bool(args[0]) if args else True))

    def _cmd_get_stream_length(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if tid:
            self.send_command(0, "_result", tid, None, 0.0)

    def _cmd_fc_subscribe(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        name = _first_str(args)
        self.send_command(
            0,
            "onFCSubscribe",
            0.0,
            None,
            {"level": "status", "code": "NetStream.Play.Start", "description": name},
        )

    def _cmd_checkbw(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        if tid:
            self.send_command(0, "_result", tid, None, amf0.UNDEFINED)

    def _cmd_ignore(
        self, tid: float, cmd_obj: Any, args: list[Any], sid: int, items: list[ReceivedItem]
    ) -> None:
        pass


_C = ServerConnection
# The command table holds plain functions, not bound methods: a closed connection is then
# freed by reference counting alone (bound methods in an instance dict make a cycle).
_COMMANDS: dict[str, _Handler] = {
    "connect": _C._cmd_connect,
    "createStream": _C._cmd_create_stream,
    "releaseStream": _C._cmd_release_stream,
    "FCPublish": _C._cmd_fc_publish,
    "FCUnpublish": _C._cmd_fc_unpublish,
    "publish": _C._cmd_publish,
    "play": _C._cmd_play,
    "closeStream": _C._cmd_close_stream,
    "deleteStream": _C._cmd_delete_stream,
    "pause": _C._cmd_pause,
    "pauseRaw": _C._cmd_pause,
    "receiveAudio": _C._cmd_receive_audio,
    "receiveVideo": _C._cmd_receive_video,
    "getStreamLength": _C._cmd_get_stream_length,
    "FCSubscribe": _C._cmd_fc_subscribe,
    "FCUnsubscribe": _C._cmd_ignore,
    "_checkbw": _C._cmd_checkbw,
    "_result": _C._cmd_ignore,
    "_error": _C._cmd_ignore,
    "onBWDone": _C._cmd_ignore,
    "onStatus": _C._cmd_ignore,
}


def split_query(name: str) -> tuple[str, str]:
    """`"stream?key=1"` -> `("stream", "key=1")`."""
    base, _, query = name.partition("?")
    return base, query


def split_app(app: str) -> tuple[str, str]:
    """The application name from connect's `app`, without query string or slashes around it.

    ffmpeg sends `live`, OBS `live` (or `live?key` when the key went into the server URL),
    librtmp may send `live/` or `app/instance`.
    """
    base, query = split_query(app)
    return base.strip("/"), query


def _first_str(args: list[Any]) -> str:
    return args[0] if args and isinstance(args[0], str) else ""


def _num(args: list[Any], index: int, default: float) -> float:
    if len(args) > index:
        v = args[index]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return default
