"""The asyncio RTMP server: sockets, sessions, timeouts, and the publish policy.

`RTMPServer` listens; each accepted socket gets a `Session`, an `asyncio.Protocol` that feeds
bytes to a sans-IO `ServerConnection` and acts on what comes out: publishes are checked
against the registry (one publisher per app/stream) and the server's publish handler (which
attaches sinks such as the recorder, or refuses), media messages go to the stream's sinks.

A peer that breaks the protocol gets one log line naming it, what arrived and what was
expected, and its connection closes; the server and every other stream go on. A bug in our
own code while handling one connection is logged with its traceback and closes only that
connection too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ..config import Listener, tls_context
from ..config import RelayConfig as RelayConfig  # its old home: re-exported
from ..config import ServerConfig as ServerConfig  # its old home: re-exported
from ..logs import get_logger, redact_query
from ..protocol.connection import ServerConnection, State
from ..protocol.errors import BudgetExceeded, RemoteProtocolError
from ..protocol.events import Connected, PlayRequest, PublishRequest, StreamClosed
from ..protocol.messages import Message, media_run
from .access import AccessControl, Decision, Request, access_config
from .pull import Pulls
from .push import PushManager
from .recorder import Recorder, RecordingError
from .registry import Republish, Stream, StreamRegistry
from .relay import Relay
from .subscribe import Subscription
from .subscribe import end_all as end_subscriptions
from .webhooks import WebhookConfig, Webhooks

if TYPE_CHECKING:
    from ..http.server import HttpServer

log = get_logger("rtmp2server")

READ_SIZE = 256 * 1024  # bytes asked of the socket per read, as asyncio and uvloop do
TAKEN = "already being published"
REFUSAL_LINGER = 0.5  # seconds a refused publisher's connection stays for it to read why
FD_RESERVE = 64  # file descriptors kept for the listeners, the log, the loop and the like
# Why reading from a session is paused (`Session._pause`): bits, reading resumes when none is.
PAUSED_BY_SINK = 1  # a sink of its publish cannot keep up (back-pressure)
PAUSED_PENDING = 2  # a publish whose answer is awaited holds `max_pending_bytes`
PAUSED_MERGE = 4  # merged reads (`merge_reads`): waiting for the next merge tick
MERGE_BELOW = READ_SIZE // 4  # a read this large or larger is followed by the next at once


PublishHandler = Callable[[Stream], "bool | Awaitable[bool]"]
"""Called when a publish is about to start; attaches sinks and returns True to accept, or
returns False to refuse it with NetStream.Publish.BadName. It may be a plain function or a
coroutine function (an HTTP callback): while its answer is pending, what the publisher sends
is held (bounded: past `ServerConfig.max_pending_bytes` the socket is no longer read) and
delivered from its first frame once the answer is yes; on a no it is dropped."""

PlayHandler = Callable[["Session", PlayRequest], None]
"""Called for `play`; answers the request on the session (the relay implements it)."""


class Session(asyncio.BufferedProtocol):
    """One client connection.

    Reads go into the server's one receive buffer (`get_buffer`), and only the bytes that
    arrived are copied out of it: a read costs no allocation of a full-size buffer (with
    `recv(256 KiB)`, glibc maps and unmaps 256 KiB for every small read of a live stream).

    Time: `connect` must be complete `handshake_timeout` seconds after the accept, and the
    first `publish` or `play` `start_timeout` seconds after it, however the peer paces its
    bytes. Later, a connection that completes no message for `idle_timeout` seconds is
    closed, unless it is playing (a player sends little) or we paused reading from it.
    """

    def __init__(self, server: RTMPServer) -> None:
        self.server = server
        cfg = server.config
        self.conn = ServerConnection(
            chunk_size=cfg.chunk_size,
            window_ack_size=cfg.window_ack_size,
            max_message_size=cfg.max_message_size,
            max_chunk_streams=cfg.max_chunk_streams,
            max_partial_bytes=cfg.max_partial_bytes,
            max_chunk_size=cfg.max_chunk_size,
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ip = ""
        self.published: dict[int, Stream] = {}
        self.pending: dict[int, _PendingPublish] = {}  # publishes whose answer is awaited
        self._requested: dict[int, str] = {}  # the name each publish asked for (maybe a key)
        self.id = next(server._ids)
        self.accepted_at = time.monotonic()
        self.last_message = self.accepted_at
        self.started = False  # a publish or play has been asked for
        self._timer: asyncio.TimerHandle | None = None
        self._paused = 0  # PAUSED_* bits
        self.closed = False
        self.close_reason: str | None = None  # why we closed it, when we did
        self._tasks: set[asyncio.Future[None]] = set()  # access decisions of plays
        self._connect_decision: asyncio.Future[Decision] | None = None
        # Per-connection extension point: players attach their state here (relay).
        self.on_close: list[Callable[[Session], None]] = []
        self.on_event: list[Callable[[Session, Any], None]] = []

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip = str(peer[0])
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in self.ip else f"{peer[0]}:{peer[1]}"
        refusal = self.server._admit(self)
        if refusal is not None:
            self.closed = True
            self.close_reason = refusal
            self.transport.abort()
            return
        self._check_time()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server._read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            try:
                items = self.conn.receive_data(data)
            except RemoteProtocolError as err:
                # Keep every complete message that arrived before the bad bytes.
                self._dispatch(err.partial, events=False)
                log.warning("peer %s: %s; closing the connection", self.peer, err)
                self.server.protocol_errors[type(err).__name__] += 1
                # The error stays in the reader; without its traceback it pins no frames,
                # so the closed connection is freed by reference counting.
                err.__traceback__ = None
                self.close("over budget" if isinstance(err, BudgetExceeded) else "protocol error")
                return
            if items:
                self.last_message = time.monotonic()
                self._dispatch(items)
        except Exception:
            log.exception("peer %s: internal error; closing the connection", self.peer)
            self.close("internal error")
            return
        self.flush()
        # Merged reads wait only after a small read: one that filled much of the buffer
        # means more is waiting (a bulk push, a burst), and that is read at once.
        if (
            self.published
            and len(data) < MERGE_BELOW
            and self.server.config.merge_reads > 0
            and not self.closed
        ):
            self._pause(PAUSED_MERGE)
            self.server._merge_later(self)

    def _dispatch(self, items: list[Any], *, events: bool = True) -> None:
        """Media messages to their stream's sinks, a run of one stream's messages at once;
        events (unless `events` is False) acted on in order with them."""
        published = self.published
        sid, video, audio, size = media_run(items)
        if sid >= 0:
            # The usual read of a publisher: one stream's media, one run.
            stream = published.get(sid)
            if stream is not None:
                stream.deliver_counted(items, video, audio, size)
                return
        run: list[Message] = []
        target: Stream | None = None  # when set, `run` holds its next messages
        for item in items:
            if type(item) is Message:
                stream = published.get(item.stream_id)
                if stream is None:
                    pending = self.pending.get(item.stream_id)
                    if pending is not None:
                        self._hold(pending, item)
                    continue
                if stream is not target:
                    if target is not None:
                        target.deliver_all(run)
                    run = []
                    target = stream
                run.append(item)
                continue
            if target is not None:
                target.deliver_all(run)
                run = []
                target = None
            if events:
                self._on_event(item)
        if target is not None:
            target.deliver_all(run)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.server._forget(self):
            self.closed = True
            return  # refused at accept: it never started
        self.closed = True
        why = self.close_reason or _lost_reason(exc)
        for task in list(self._tasks):
            task.cancel()
        if self._connect_decision is not None:
            self._connect_decision.cancel()
        for sid in list(self.pending):
            self._drop_pending(sid, why)
        for sid in list(self.published):
            announced = self._requested.get(sid) in self.conn.unpublished
            self._end_publish(sid, "FCUnpublish" if announced and not self.close_reason else why)
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                log.exception("peer %s: close callback failed", self.peer)
        self.on_close.clear()
        self.on_event.clear()

    # --- helpers -------------------------------------------------------------------------

    def flush(self) -> None:
        pieces = self.conn.pieces_to_send()
        if pieces and self.transport is not None and not self.closed:
            if len(pieces) == 1:
                self.transport.write(pieces[0])
            else:
                self.transport.writelines(pieces)

    def close(self, reason: str) -> None:
        """Close the connection now, for `reason` (the stop reason of its publishes)."""
        if self.close_reason is None:
            self.close_reason = reason
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_timer(self, delay: float) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._check_time)

    def _check_time(self) -> None:
        """The deadlines and the idle timeout (see the class docstring)."""
        self._timer = None
        if self.closed:
            return
        cfg = self.server.config
        now = time.monotonic()
        age = now - self.accepted_at
        waits: list[float] = []
        if not self.started and cfg.start_timeout > 0:
            if age >= cfg.start_timeout:
                log.warning(
                    "peer %s: no publish or play within %g s of the accept; closing",
                    self.peer,
                    cfg.start_timeout,
                )
                self.close("timeout")
                return
            waits.append(cfg.start_timeout - age)
        if self.conn.state is not State.CONNECTED and cfg.handshake_timeout > 0:
            if age >= cfg.handshake_timeout:
                log.warning(
                    "peer %s: no connect within %g s of the accept (state %s, %d bytes "
                    "received); closing",
                    self.peer,
                    cfg.handshake_timeout,
                    self.conn.state.value,
                    self.conn.bytes_received,
                )
                self.close("timeout")
                return
            waits.append(cfg.handshake_timeout - age)
        if self.transport is not None and not self.transport.is_reading():
            # Paused by back-pressure from a sink: our silence, not the peer's.
            self.last_message = now
        if cfg.idle_timeout > 0 and not self.conn.playing:
            idle = now - self.last_message
            if idle >= cfg.idle_timeout:
                log.warning("peer %s: no complete message for %.0f s; closing", self.peer, idle)
                self.close("timeout")
                return
            waits.append(cfg.idle_timeout - idle)
        if waits:
            self._arm_timer(min(waits) + 0.01)

    def _on_event(self, event: Any) -> None:
        if type(event) is Connected:
            if not self.server.access.open:
                self._connect_decision = asyncio.ensure_future(
                    self.server.access.decide(self._access_request("connect", "", ""))
                )
                self._connect_decision.add_done_callback(self._connect_decided)
        elif type(event) is PublishRequest:
            self.started = True
            self._on_publish(event)
        elif type(event) is PlayRequest:
            self.started = True
            handler = self.server.play_handler
            if not self._name_ok(event.name):
                self.conn.reject_play(event, "The stream name is too long.")
            elif handler is None:
                self.conn.reject_play(event, f"{event.name} is not available.")
            elif self.server.access.open:
                handler(self, event)
            else:
                task = asyncio.ensure_future(self._decide_play(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif type(event) is StreamClosed:
            if event.stream_id in self.published:
                self._end_publish(event.stream_id, event.command)
            elif event.stream_id in self.pending:
                self._drop_pending(event.stream_id, event.command)
        for callback in self.on_event:
            callback(self, event)

    def _name_ok(self, name: str) -> bool:
        limit = self.server.config.max_name_length
        if len(name) <= limit and len(self.conn.app) <= limit:
            return True
        # Not the names themselves: a stream name may be a stream key.
        log.warning(
            "peer %s: name refused: app of %d and stream name of %d characters, expected at "
            "most %d",
            self.peer,
            len(self.conn.app),
            len(name),
            limit,
        )
        return False

    def _on_publish(self, req: PublishRequest) -> None:
        conn = self.conn
        if not self._name_ok(req.name):
            conn.reject_publish(req, "The stream name is too long.")
            return
        stream = Stream(
            app=conn.app,
            name=req.name,
            query=req.query,
            peer=self.peer,
            flash_ver=conn.flash_ver,
            tc_url=conn.tc_url,
        )
        stream.pause_reading = lambda: self._pause(PAUSED_BY_SINK)
        stream.resume_reading = lambda: self._unpause(PAUSED_BY_SINK)
        sid = req.stream_id
        stream.close = lambda reason: self._close_publish(sid, reason)
        access = self.server.access
        if not access.open:
            # The stream's name is the secret key until the decision says the public one:
            # it is not logged before.
            stream.name = ""
            request = self._access_request("publish", req.name, req.query, req.publish_type)
            self._await_answer(req, stream, self._decide_publish(stream, request))
            return
        if self.server.registry.refuses(stream):
            self._refuse(req, stream, f"{req.name} is already being published.", TAKEN)
            return
        try:
            answer = self.server.publish_handler(stream)
        except RecordingError as err:
            self._refuse_unrecordable(req, stream, err)
            return
        except Exception:
            log.exception("peer %s: publish handler failed", self.peer)
            answer = False
        if isinstance(answer, Awaitable):
            self._await_answer(req, stream, answer)
            return
        self._answer_publish(req, stream, bool(answer))

    def _await_answer(self, req: PublishRequest, stream: Stream, answer: Awaitable[bool]) -> None:
        """Hold the publish (and what it sends) until `answer` is known."""
        pending = _PendingPublish(req, stream)
        self.pending[req.stream_id] = pending
        pending.task = asyncio.ensure_future(answer)
        pending.task.add_done_callback(lambda task: self._decided(pending, task))

    def _access_request(self, action: str, name: str, query: str, kind: str = "live") -> Request:
        transport = self.transport
        port = 0
        if transport is not None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                port = int(peer[1])
        obj = self.conn.connect_object
        return Request(
            action=action,
            app=self.conn.app,
            name=name,
            query=query,
            ip=self.ip,
            port=port,
            client_id=str(self.id),
            tc_url=self.conn.tc_url,
            flash_ver=self.conn.flash_ver,
            swf_url=str(obj.get("swfUrl", "")),
            page_url=str(obj.get("pageUrl", "")),
            publish_type=kind,
        )

    def _connect_decided(self, task: asyncio.Future[Decision]) -> None:
        if task.cancelled() or self.closed:
            return
        decision = task.result()
        if not decision.allowed:
            log.warning(
                "peer %s: connect to %s refused: %s", self.peer, self.conn.app, decision.reason
            )
            self.conn.send_command(
                0,
                "_error",
                0.0,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Connect.Rejected",
                    "description": f"Connecting to {self.conn.app} is not allowed.",
                },
            )
            self.flush()
            asyncio.get_running_loop().call_later(REFUSAL_LINGER, self.close, "refused")

    async def _connect_allowed(self) -> Decision:
        if self._connect_decision is None:
            return Decision(True)
        return await asyncio.shield(self._connect_decision)

    async def _decide_play(self, req: PlayRequest) -> None:
        decision = await self._connect_allowed()
        if decision.allowed:
            decision = await self.server.access.decide(
                self._access_request("play", req.name, req.query)
            )
        if self.closed or not self.conn.is_pending(req):
            return  # the player left, or asked again, meanwhile
        handler = self.server.play_handler
        if decision.allowed and handler is not None:
            handler(self, req)
        else:
            log.warning(
                "peer %s: play %s/%s refused: %s",
                self.peer,
                self.conn.app,
                req.name,
                decision.reason,
            )
            self.conn.reject_play(
                req, f"Playing {req.name} is not allowed.", code="NetStream.Play.Failed"
            )
            asyncio.get_running_loop().call_later(REFUSAL_LINGER, self.close, "refused")
        self.flush()

    async def _decide_publish(self, stream: Stream, request: Request) -> bool:
        """Access first (which may rename the stream), then the publish handler."""
        decision = await self._connect_allowed()
        if decision.allowed:
            decision = await self.server.access.decide(request)
        if not decision.allowed:
            raise Refused(f"Publishing {self.conn.app} is not allowed.", decision.reason)
        stream.name = decision.name
        stream.push = list(decision.push)
        if not self._name_ok(stream.name):
            raise Refused("The stream name is too long.", "public name too long")
        if decision.record is False:
            # The callback turned recording off for this stream; the name is still claimed
            # where a gate says so (workers.py: across worker processes).
            gate = self.server.publish_gate
            return True if gate is None else await gate(stream)
        answer = self.server.publish_handler(stream)
        if isinstance(answer, Awaitable):
            answer = await answer
        return bool(answer)

    def _decided(self, pending: _PendingPublish, task: asyncio.Future[bool]) -> None:
        """The publish handler answered (or failed, or was cancelled)."""
        if self.pending.get(pending.request.stream_id) is not pending:
            return  # the stream closed, or the client left, meanwhile: nothing to do
        del self.pending[pending.request.stream_id]
        if self.closed or not self.conn.is_pending(pending.request):
            self.server.registry.release(pending.stream)
            return
        accepted = False
        if not task.cancelled():
            error = task.exception()
            if isinstance(error, RecordingError):
                self._refuse_unrecordable(pending.request, pending.stream, error)
                self.flush()
                return
            if isinstance(error, Refused):
                self._refuse(
                    pending.request, pending.stream, error.description, error.reason, close=True
                )
                self.flush()
                return
            if error is not None:
                log.error("peer %s: publish handler failed: %r", self.peer, error, exc_info=error)
            else:
                accepted = bool(task.result())
        held = pending.held
        pending.held = []
        if pending.paused:
            self._unpause(PAUSED_PENDING)
        try:
            self._answer_publish(pending.request, pending.stream, accepted)
            if accepted and held:
                pending.stream.deliver_all(held)
        except Exception:
            log.exception("peer %s: internal error; closing the connection", self.peer)
            self.close("internal error")
            return
        self.flush()

    def _answer_publish(self, req: PublishRequest, stream: Stream, accepted: bool) -> None:
        conn = self.conn
        registry = self.server.registry
        if not accepted:
            self._refuse(req, stream, f"{req.name} is not accepted here.", "nobody takes it")
            return
        if registry.refuses(stream):  # taken while an asynchronous answer was pending
            self._refuse(req, stream, f"{req.name} is already being published.", TAKEN)
            return
        # Claimed only once accepted: a publish the handler refuses (no route for it, no
        # permission) never takes the name over from the one that has it.
        registry.claim(stream)
        self.published[req.stream_id] = stream
        self._requested[req.stream_id] = req.name
        conn.accept_publish(req)
        log.info(
            "publish start: peer=%s app=%s stream=%s%s flashVer=%s",
            self.peer,
            stream.app,
            stream.name,
            f"?{redact_query(stream.query)}" if stream.query else "",
            stream.flash_ver,
        )
        registry.started(stream)
        self._notify("publish_start", stream)

    def _refuse(
        self,
        req: PublishRequest,
        stream: Stream,
        description: str,
        reason: str,
        *,
        close: bool = False,
    ) -> None:
        """Refuse a publish: the client is told `description`, the log gets `reason`. With
        `close`, the connection closes soon after (OBS and rtmp2sink then show the failure
        instead of waiting)."""
        self.server.registry.release(stream)
        self.server.refusal_counts["publish"] += 1
        log.warning(
            "peer %s: publish %s/%s refused: %s", self.peer, stream.app, stream.name, reason
        )
        self.conn.reject_publish(req, description)
        if close:
            asyncio.get_running_loop().call_later(REFUSAL_LINGER, self.close, "refused")

    def _refuse_unrecordable(
        self, req: PublishRequest, stream: Stream, err: RecordingError
    ) -> None:
        self._refuse(
            req, stream, f"{req.name} cannot be recorded: {err.reason}.", f"cannot record: {err}"
        )

    def _hold(self, pending: _PendingPublish, msg: Message) -> None:
        """Keep `msg` until the publish is decided; stop reading past the bound."""
        pending.held.append(msg)
        pending.held_bytes += msg.size
        if (
            not pending.paused
            and pending.held_bytes > self.server.config.max_pending_bytes
            and self.transport is not None
        ):
            pending.paused = True
            self._pause(PAUSED_PENDING)

    def _pause(self, why: int) -> None:
        """Stop reading from the peer for `why` (a PAUSED_* bit) until `_unpause(why)`."""
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused |= why

    def _unpause(self, why: int) -> None:
        """`why` no longer holds reading back; it resumes once nothing else does."""
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _drop_pending(self, stream_id: int, why: str) -> None:
        """A publish whose answer is pending ends before the answer (the client left)."""
        pending = self.pending.pop(stream_id, None)
        if pending is None:
            return
        if pending.task is not None:
            pending.task.cancel()
        self.server.registry.release(pending.stream)
        log.info(
            "publish %s/%s: peer=%s left before the answer (%s); %d held messages dropped",
            pending.stream.app,
            pending.stream.name,
            self.peer,
            why,
            len(pending.held),
        )
        if pending.paused:
            self._unpause(PAUSED_PENDING)

    def _close_publish(self, stream_id: int, reason: str) -> None:
        """Another publisher takes this publish's name over: end it (its recording is
        finished) and close the connection. Aborted, not closed: a stalled or half-dead peer
        would never drain what we still had to send it."""
        if stream_id in self.published:
            self._end_publish(stream_id, reason)
            self.close(reason)

    def _end_publish(self, stream_id: int, why: str) -> None:
        self._requested.pop(stream_id, None)
        stream = self.published.pop(stream_id, None)
        if stream is None:
            return
        self.server.registry.release(stream)
        log.info(
            "publish stop: peer=%s app=%s stream=%s %s (%s)",
            self.peer,
            stream.app,
            stream.name,
            stream.totals(),
            why,
        )
        self._notify("publish_stop", stream, reason=why)
        for sink in stream.sinks:
            if isinstance(sink, Recorder) and sink.path is not None and sink.error is None:
                try:
                    size = sink.path.stat().st_size
                except OSError:
                    size = 0
                self._notify("record_done", stream, path=str(sink.path), bytes=size)

    def _notify(self, event: str, stream: Stream, **extra: Any) -> None:
        self.server.webhooks.emit(
            event,
            app=stream.app,
            stream=stream.name,
            client={"ip": self.ip, "id": self.id},
            duration=round(stream.duration, 3),
            video_frames=stream.video_frames,
            audio_frames=stream.audio_frames,
            **extra,
        )


class Refused(Exception):
    """Raised by a publish decision: refuse with `description` (what the client is told);
    `reason` goes to the log."""

    def __init__(self, description: str, reason: str) -> None:
        super().__init__(reason)
        self.description = description
        self.reason = reason


class _PendingPublish:
    """A publish whose handler has not answered yet, and what the publisher sent meanwhile."""

    __slots__ = ("held", "held_bytes", "paused", "request", "stream", "task")

    def __init__(self, request: PublishRequest, stream: Stream) -> None:
        self.request = request
        self.stream = stream
        self.task: asyncio.Future[bool] | None = None
        self.held: list[Message] = []
        self.held_bytes = 0
        self.paused = False


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit (a Debian service starts with
    1024, which 1100 idle sockets exhaust); returns (before, after)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, hard


def _lost_reason(exc: Exception | None) -> str:
    """The stop reason of a connection we did not close ourselves."""
    if exc is None:
        return "closed by the peer"
    if isinstance(exc, ConnectionResetError):
        return "reset by the peer"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    return f"connection lost: {exc}"


class RTMPServer:
    """An RTMP server on one host:port.

    `publish_handler` decides about each publish; the default records to
    `config.record_dir` (when set) and accepts everything. Unless a `play_handler` is given
    or `config.relay` is None, a `Relay` plays every publish to whoever asks.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        registry: StreamRegistry | None = None,
        publish_handler: PublishHandler | None = None,
        play_handler: PlayHandler | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        # `is None`, not `or`: an empty registry is falsy (it has a length).
        republish = cast(Republish, self.config.republish)
        self.registry = registry if registry is not None else StreamRegistry(republish)
        self.publish_handler: PublishHandler = publish_handler or self.record_publish
        self.play_handler: PlayHandler | None = play_handler
        self.relay: Relay | None = None
        if play_handler is None and self.config.relay is not None:
            self.relay = Relay(self.registry, self.config.relay)
            self.relay.notify = self._notify_play
            self.play_handler = self.relay.play
        # Streams pulled from other servers, on demand (asked by the relay) and static.
        self.pulls = Pulls(self)
        if self.relay is not None:
            self.relay.demand = self.pulls.demand
        # Push (restream): each publish forwarded to the targets of its app or its decision.
        self.pushes = PushManager(self.registry, self.relay, self.config)
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        self._limit = self.config.max_connections
        self._per_ip: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.access = AccessControl(access_config(self.config))
        self.webhooks = Webhooks(
            WebhookConfig(url=self.config.webhook or None, secret=self.config.webhook_secret)
        )
        # Connections refused at accept since the last log line of that kind, and when that
        # line was written: at most one line a second for each kind.
        self._refused: dict[str, tuple[int, float]] = {}
        # Refusals since the start, by kind (the HTTP side's metrics read them).
        self.refusal_counts: collections.Counter[str] = collections.Counter()
        # Connections closed for bad input since the start, by the error's class name
        # (ChunkError, BudgetExceeded, AMFError, HandshakeError, ...), for the metrics.
        self.protocol_errors: collections.Counter[str] = collections.Counter()
        self.http: HttpServer | None = None  # the HTTP side, when config.http
        # SO_REUSEPORT on the RTMP listeners (set before `start`): worker processes of
        # `workers.py` bind the same port and the kernel spreads the accepts among them.
        self.reuse_port = False
        # Awaited instead of `publish_handler` when an access callback turned recording off
        # for a publish: True accepts it (workers.py claims the name there too).
        self.publish_gate: Callable[[Stream], Awaitable[bool]] | None = None
        # One receive buffer for all sessions: a read is copied out of it before the next.
        self._read_view = memoryview(bytearray(READ_SIZE))
        # Merged reads: the publishers paused since the last merge tick, and its timer.
        self._merging: list[Session] = []
        self._merge_timer: asyncio.TimerHandle | None = None

    def _merge_later(self, session: Session) -> None:
        """Resume reading from `session` at the next merge tick: one timer for all the
        publishers, so that a read from each takes what `merge_reads` seconds brought."""
        self._merging.append(session)
        if self._merge_timer is None:
            loop = asyncio.get_running_loop()
            self._merge_timer = loop.call_later(self.config.merge_reads, self._merge_tick)

    def _merge_tick(self) -> None:
        self._merge_timer = None
        sessions = self._merging
        self._merging = []
        for session in sessions:
            session._unpause(PAUSED_MERGE)

    def reconfigure(self, new: ServerConfig) -> None:
        """A configuration read again (SIGHUP): new connections and requests get it; running
        streams go on. Listeners, TLS files and whether play is on stay as they were."""
        self.config = new
        self._limit = self.max_connections()
        if self.relay is not None and new.relay is not None:
            self.relay.config = new.relay
        self.access.config = access_config(new)
        self.pushes.config = new
        self.webhooks.config = WebhookConfig(url=new.webhook or None, secret=new.webhook_secret)

    def _notify_play(self, event: str, app: str, name: str, player: Any, **extra: Any) -> None:
        session = player.session
        self.webhooks.emit(
            event, app=app, stream=name, client={"ip": session.ip, "id": session.id}, **extra
        )

    def subscribe(self, app: str, name: str, *, multitrack: bool = False) -> Subscription:
        """An in-process player of app/name: `async for message in server.subscribe(...)`
        yields its `Message`s as an RTMP player gets them (see `server/subscribe.py`);
        `multitrack`: all tracks of E-RTMP multitrack streams, not only the default one."""
        if self.relay is None:
            raise RuntimeError("play is off on this server: nothing to subscribe to")
        return Subscription(self.relay, app, name, multitrack=multitrack)

    def record_publish(self, stream: Stream) -> bool:
        """The default publish policy: accept, and record when a record dir is set."""
        cfg = self.config
        app = cfg.apps.get(stream.app)
        if cfg.record_dir is not None and (app is None or app.record):
            recorder = Recorder(
                cfg.record_dir,
                flush_interval=cfg.record_flush_interval,
                fsync_interval=cfg.record_fsync_interval,
            )
            recorder.open(stream)  # RecordingError: the publish is refused, not lied to
            stream.add_sink(recorder)
        return True

    @property
    def port(self) -> int:
        """The bound port of the first listener (useful with `port=0`)."""
        return self.ports[0]

    @property
    def ports(self) -> list[int]:
        """The bound port of each listener, in the order of `config.listeners()`."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return [lst.port for lst in self.listeners]

    @property
    def listeners(self) -> list[Listener]:
        """Each listener with its bound port (`rtmps://127.0.0.1:40123`)."""
        server = self._server
        if not isinstance(server, _Listeners) or not server.sockets:
            raise RuntimeError("server not started")
        return server.bound()

    @property
    def sessions(self) -> frozenset[Session]:
        return frozenset(self._sessions)

    def max_connections(self) -> int:
        """The connection limit in force: the configured one, or less when the process's
        file descriptor limit cannot hold that many (each connection may also record)."""
        limit = self.config.max_connections
        try:
            import resource

            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError):
            return limit
        if soft == resource.RLIM_INFINITY:
            return limit
        return max(1, min(limit, (soft - FD_RESERVE) // 2))

    def _admit(self, session: Session) -> str | None:
        """Count a new connection in, or say why it is refused (and log that, at most once a
        second with the number refused meanwhile)."""
        cfg = self.config
        per_ip = self._per_ip.get(session.ip, 0)
        reason = kind = None
        if len(self._sessions) >= self._limit:
            kind = "total"
            reason = f"{len(self._sessions)} connections open, the limit is {self._limit}"
        elif cfg.max_connections_per_ip and per_ip >= cfg.max_connections_per_ip:
            kind = session.ip
            reason = (
                f"{per_ip} connections open from {session.ip}, the limit per address is "
                f"{cfg.max_connections_per_ip}"
            )
        if kind is None:
            self._sessions.add(session)
            self._per_ip[session.ip] = per_ip + 1
            return None
        self.refusal_counts["max_connections" if kind == "total" else "max_connections_per_ip"] += 1
        count, logged = self._refused.get(kind, (0, 0.0))
        now = time.monotonic()
        if now - logged >= 1.0:
            log.warning(
                "peer %s: connection refused: %s (%d refused since the last such line)",
                session.peer,
                reason,
                count + 1,
            )
            count, logged = 0, now
        else:
            count += 1
        if len(self._refused) > 1024:  # addresses that come and go
            self._refused.clear()
        self._refused[kind] = (count, logged)
        return "over the connection limit"

    def _forget(self, session: Session) -> bool:
        """Count a closed connection out; False if it was never counted in."""
        if session not in self._sessions:
            return False
        self._sessions.discard(session)
        left = self._per_ip.get(session.ip, 1) - 1
        if left > 0:
            self._per_ip[session.ip] = left
        else:
            self._per_ip.pop(session.ip, None)
        return True

    async def start(self) -> None:
        """Listen on every listener of the configuration (`config.listeners()`): one asyncio
        server each, plain or TLS. Raises ConfigError for a value not accepted, OSError if an
        address cannot be bound (then nothing listens)."""
        self.config.validate()
        self._limit = self.max_connections()
        if self._limit < self.config.max_connections:
            log.warning(
                "the file descriptor limit holds %d connections, not the %d configured "
                "(raise `ulimit -n`)",
                self._limit,
                self.config.max_connections,
            )
        loop = asyncio.get_running_loop()
        listeners = _Listeners()
        try:
            for listener in self.config.listeners():
                server: asyncio.Server | _TLSListener
                if listener.tls:
                    context = tls_context(self.config)
                    server = await _TLSListener.open(self, listener, context)
                else:
                    server = await loop.create_server(
                        lambda: Session(self),
                        listener.host,
                        listener.port,
                        reuse_address=True,
                        reuse_port=self.reuse_port or None,
                        backlog=128,
                    )
                listeners.add(listener, server)
        except BaseException:
            listeners.close()
            await listeners.wait_closed()
            raise
        if self.config.http:
            # Imported here: the HTTP side is a front-end on top of this module.
            from ..http.server import HttpServer

            http = HttpServer(self)
            try:
                await http.start()
            except BaseException:
                await http.close()
                listeners.close()
                await listeners.wait_closed()
                raise
            self.http = http
        # The listeners stand in for the one asyncio.Server that the rest of this class uses
        # (close, wait_closed, serve_forever, sockets): they answer for all of them.
        self._server = cast(asyncio.Server, listeners)
        for url in listeners.urls():
            log.info("listening on %s", url)
        self.pulls.start()

    async def serve_forever(self) -> None:
        """Serve until cancelled; however it ends, every recording is finished."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def drain(self, timeout: float | None = None) -> int:
        """Stop accepting, and ask every publisher that announced Enhanced RTMP v2 reconnect
        support to reconnect (`NetConnection.Connect.ReconnectRequest`): OBS then moves to
        another instance behind the load balancer without dropping its stream. Waits up to
        `timeout` (default `config.drain_timeout`) seconds for them to leave; returns how many
        were asked."""
        if self._server is not None:
            self._server.close()
        asked = []
        for session in list(self._sessions):
            if session.published and session.conn.request_reconnect(
                "The server is shutting down; reconnect to continue."
            ):
                session.flush()
                asked.append(session)
        if asked:
            log.info("drain: asked %d publisher(s) to reconnect", len(asked))
            wait = self.config.drain_timeout if timeout is None else timeout
            deadline = time.monotonic() + wait
            while any(not s.closed for s in asked) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        return len(asked)

    async def close(self) -> None:
        """Stop listening, close every connection (ending their publishes cleanly)."""
        await self.pulls.close()
        if self._server is not None:
            self._server.close()
        if self.relay is not None:
            end_subscriptions(self.relay)
        for session in list(self._sessions):
            session.close("server shutdown")
            # At once, not when the transport gets to it: the recordings are finished even if
            # this coroutine is cancelled at its next await (Ctrl-C under asyncio.run).
            session.connection_lost(None)
        if self._merge_timer is not None:
            self._merge_timer.cancel()
            self._merge_timer = None
        self._merging = []
        await self.pushes.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self.http is not None:
            http, self.http = self.http, None
            await http.close()
        await self.access.close()
        await self.webhooks.close()

    async def __aenter__(self) -> RTMPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Listeners:
    """The asyncio servers of an `RTMPServer`, one per listener, used as one: the part of
    `asyncio.Server` that `RTMPServer` calls (close, wait_closed, serve_forever, sockets)."""

    def __init__(self) -> None:
        self.servers: list[tuple[Listener, asyncio.Server | _TLSListener]] = []

    def add(self, listener: Listener, server: asyncio.Server | _TLSListener) -> None:
        self.servers.append((listener, server))

    def bound(self) -> list[Listener]:
        out = []
        for listener, server in self.servers:
            port = int(server.sockets[0].getsockname()[1]) if server.sockets else listener.port
            out.append(Listener(listener.scheme, listener.host, port))
        return out

    def urls(self) -> list[str]:
        return [lst.url for lst in self.bound()]

    @property
    def sockets(self) -> list[Any]:
        return [sock for _, server in self.servers for sock in server.sockets]

    def is_serving(self) -> bool:
        return any(server.is_serving() for _, server in self.servers)

    def close(self) -> None:
        for _, server in self.servers:
            server.close()

    async def wait_closed(self) -> None:
        for _, server in self.servers:
            await server.wait_closed()

    async def serve_forever(self) -> None:
        await asyncio.gather(*(server.serve_forever() for _, server in self.servers))


class _TLSListener:
    """An rtmps listener: its own accept loop, then `loop.connect_accepted_socket(ssl=...)`.

    Not `create_server(ssl=...)`: with it, a failed handshake closes the socket without a
    word unless the loop is in debug mode, and nothing of ours hears of it. Here the
    handshake's failure is ours to log, in one line naming the peer.

    Before the handshake, the first byte is looked at (peeked: TLS still reads it). A plain
    RTMP client sends C0 = 3 and waits for S0; OpenSSL takes those bytes for the header of a
    record and would wait for the rest of it until the timeout. So a first byte other than
    0x16 (a TLS handshake record) is refused at once, saying what it was. The handshake counts
    against `handshake_timeout` (the session's clock starts at the accept) and, while under
    way, against `max_connections`.
    """

    def __init__(
        self, server: RTMPServer, listener: Listener, context: ssl.SSLContext, sock: socket.socket
    ) -> None:
        self.server = server
        self.listener = listener
        self.context = context
        self.sockets = [sock]
        self.handshakes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, server: RTMPServer, listener: Listener, context: ssl.SSLContext
    ) -> _TLSListener:
        """Bind and listen (the first address the host resolves to) and start accepting."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if server.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        bound = Listener(listener.scheme, listener.host, int(sock.getsockname()[1]))
        self = cls(server, bound, context, sock)
        self._task = loop.create_task(self._accept_loop())
        return self

    def is_serving(self) -> bool:
        return self._task is not None and not self._task.done()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self.handshakes):
            task.cancel()
        for sock in self.sockets:
            sock.close()
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def serve_forever(self) -> None:
        await self._closed

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self.sockets[0]
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as err:
                # Out of file descriptors and the like: wait a little, as asyncio's server does.
                log.warning("%s: accept failed: %s", self.listener.url, err)
                await asyncio.sleep(0.1)
                continue
            peer = _peer_name(addr)
            open_now = len(self.handshakes) + len(self.server.sessions)
            if open_now >= self.server._limit:
                log.warning(
                    "peer %s: connection refused: %d connections and TLS handshakes open, the "
                    "limit is %d",
                    peer,
                    open_now,
                    self.server._limit,
                )
                conn.close()
                continue
            task = loop.create_task(self._handshake(conn, peer))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        accepted_at = time.monotonic()
        limit = self.server.config.handshake_timeout
        why = None
        try:
            async with asyncio.timeout(limit if limit > 0 else None):
                first = await _peek(conn)
                if not first:
                    why = "closed by the peer before any byte"
                elif first[0] != 0x16:
                    what = "RTMP version 3: a plain RTMP client" if first[0] == 3 else "not TLS"
                    why = (
                        f"first byte {first[0]:#04x} ({what}), expected a TLS ClientHello "
                        "(0x16): this listener speaks RTMPS; plain RTMP goes to an rtmp:// "
                        "listener"
                    )
                else:
                    session = Session(self.server)
                    session.accepted_at = accepted_at
                    await loop.connect_accepted_socket(
                        lambda: session,
                        conn,
                        ssl=self.context,
                        # Ours (above) comes first; this only keeps asyncio's default away.
                        ssl_handshake_timeout=limit + 1 if limit > 0 else None,
                    )
                    return
        except TimeoutError:
            why = f"no complete TLS handshake within {limit:g} s of the accept"
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as err:
            why = f"TLS handshake failed: {_tls_failure(err)}"
        log.warning("peer %s: %s: %s; closing", peer, self.listener.url, why)
        conn.close()


async def _peek(conn: socket.socket) -> bytes:
    """The first byte of `conn` without reading it (b"" if the peer closed first)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        except ConnectionError:
            return b""
        ready = loop.create_future()
        loop.add_reader(conn.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(conn.fileno())


def _peer_name(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        ip = str(addr[0])
        return f"[{ip}]:{addr[1]}" if ":" in ip else f"{ip}:{addr[1]}"
    return str(addr)


def _tls_failure(err: BaseException) -> str:
    """A failed TLS handshake in a few words (OpenSSL's reason, or what happened)."""
    if isinstance(err, ssl.SSLError):
        return f"{err.reason or err.__class__.__name__} ({err.library or 'ssl'})"
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        return "no complete TLS handshake in time"
    if isinstance(err, ConnectionError):
        return f"connection lost during the handshake ({err.__class__.__name__})"
    return f"{err.__class__.__name__}: {err}"
