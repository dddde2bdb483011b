"""Push (restream): every publish of an application forwarded to other RTMP servers.

This module owns the pushes: one `Push` per (live stream, target URL), and the `PushManager`
that starts them when a publish starts (the targets of `[push]`, of `[apps.NAME] push`, and
those the on_publish callback's answer added) and stops them when it ends.

A push is a player of the local stream, through the relay (`relay.Output`): it joins as any
player does (metadata, decoder configuration, the GOP cache from its last keyframe, so the
target's first frame is a keyframe), its timestamps are rebased to start at zero on each
connection, and it falls under the relay's slow-player rule with its own bound
(`PushOptions.max_buffer`): a target that falls behind drops to the next keyframe (the skipped
messages are counted), and the publisher, the recording and the other targets never wait for
it. The bytes go out through the one RTMP client (`rtmp2server.client`): connect, publish, then
chunks framed by the relay written straight to its socket.

A push is attached as soon as its publish starts, before the target has answered: what comes
meanwhile is queued (within the bound), so a target that is quick to accept gets the stream
from its very first message. A push whose connection fails or ends goes on reconnecting,
with a delay that doubles from `backoff_min` to `backoff_max`, for as long as the publish
lasts; each new connection joins from the latest keyframe again. Each change of state is one
log line; the target's URL is logged with its stream key hidden (the last part of its path and
the values of its query string).

Nothing here is specific to a network: `Push(relay, app, name, url)` works as well between
processes of one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from ..client import Client, ClientError
from ..config import PushTarget, RelayConfig, ServerConfig
from ..logs import get_logger, redact_query
from ..protocol.connection import CSID_DATA
from ..protocol.messages import DATA_AMF0
from .registry import Stream, StreamRegistry
from .relay import Channel, Player, Relay, flush_then_buffered, frame_message

log = get_logger(__name__)

# Ids of pushes, apart from RTMP sessions' and HTTP players' (the API shows all of them).
_IDS = itertools.count(2_000_000_001)
# A `framing` of its own for every push output: its frames carry its own message stream id
# and chunk size, and are never shared with a player's.
_FRAMINGS = itertools.count(-2, -1)


class PushState(enum.Enum):
    CONNECTING = "connecting"
    PUSHING = "pushing"
    BACKOFF = "backing off"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PushOptions:
    """The bounds of a push (the `[push]` keys)."""

    backoff_min: float = 1.0
    """Seconds before the first reconnect; doubled after each failure."""
    backoff_max: float = 30.0
    """Most seconds between reconnects; a connection that lasted this long resets the delay."""
    max_buffer: int = 4 * 1024 * 1024
    """Bytes queued for the target above which it drops to the next keyframe."""
    timeout: float = 10.0
    """Seconds for the connection and for each answer of the target."""
    chunk_size: int = 4096
    """The chunk size we send with."""
    ssl: ssl.SSLContext | None = None
    """The TLS context of rtmps:// targets; None: the system's trust store, host name checked."""

    @classmethod
    def of(cls, config: ServerConfig) -> PushOptions:
        return cls(
            backoff_min=config.push_backoff_min,
            backoff_max=max(config.push_backoff_max, config.push_backoff_min),
            max_buffer=config.push_max_buffer,
            timeout=config.push_timeout,
            chunk_size=config.chunk_size,
        )


class Backoff:
    """The delays between reconnects: `backoff_min`, doubling up to `backoff_max`; back to
    the minimum after a connection that pushed for at least `backoff_max`."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = max(high, low)
        self.delay = low

    def next(self) -> float:
        """The delay to wait now; the one after it is doubled."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.high)
        return delay

    def pushed(self, seconds: float) -> None:
        """A connection pushed for `seconds`: a long one means the target is healthy again."""
        if seconds >= self.high:
            self.delay = self.low


def redact_url(url: str) -> str:
    """A target URL for logs and the API: the last part of its path (the stream name, which
    is the key at YouTube or Twitch) and the values of its query string hidden."""
    base, _, query = url.partition("?")
    scheme, sep, rest = base.partition("://")
    host, slash, path = rest.partition("/")
    parts = path.split("/")
    if len(parts) > 1:
        parts[-1] = "***"
    shown = f"{scheme}{sep}{host}{slash}{'/'.join(parts)}"
    return f"{shown}?{redact_query(query)}" if query else shown


class PushOutput:
    """A push's connection as a relay `Output`: chunks framed for the target's message stream,
    queued until the target accepted the publish, then written straight to its socket."""

    owner: Any

    def __init__(self, push: Push, sid: int) -> None:
        self.owner = push
        self.push = push
        self.sid = sid
        self.chunk_size = push.options.chunk_size
        self.framing = next(_FRAMINGS)
        self.multitrack = push.target.tracks == "all"
        self.client: Client | None = None
        self._parts: list[bytes] = []
        self._queue: list[bytes] = []
        self._queued = 0
        self.ended = False

    @property
    def closed(self) -> bool:
        return self.ended

    def frame(self, csid: int, ts: int, type_id: int, sid: int, payload: bytes) -> bytes:
        return frame_message(csid, ts, type_id, self.sid, payload, self.chunk_size)

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def send_data(self, sid: int, ts: int, payload: bytes) -> None:
        self._parts.append(
            frame_message(CSID_DATA, ts, DATA_AMF0, self.sid, payload, self.chunk_size)
        )

    def flush(self) -> None:
        if not self._parts or self.ended:
            return
        data = b"".join(self._parts)
        self._parts = []
        if self.client is None:
            self._queue.append(data)
            self._queued += len(data)
            return
        self._send(data)

    def buffered(self) -> int:
        client = self.client
        return self._queued + (0 if client is None else client.buffered())

    drain = flush_then_buffered

    def connected(self, client: Client) -> None:
        """The target accepted the publish: what was queued goes out, then everything at once."""
        self.client = client
        self._park()
        queue, self._queue, self._queued = self._queue, [], 0
        if queue:
            self._send(b"".join(queue))

    def _park(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts = []
            self._queue.append(data)
            self._queued += len(data)

    def _send(self, data: bytes) -> None:
        assert self.client is not None
        try:
            self.client.send_raw(data)
        except ClientError:
            return  # the connection is gone: its read loop ends the attempt
        self.push.bytes += len(data)

    # A push's life follows its publish (`PushManager`), not the relay's notices.
    def publish_notify(self, sid: int, name: str) -> None:
        pass

    def unpublish_notify(self, sid: int, name: str) -> None:
        pass

    def stream_eof(self, sid: int) -> None:
        pass

    def not_found(self, sid: int, name: str, description: str) -> None:
        pass


class Push:
    """One live stream (app/name) pushed to one target, reconnecting until `stop()`.

    `target` is a `PushTarget` or its text (`rtmp://host/app [name=KEY] [tracks=all]`): the
    stream is published at `URL/NAME` (the local name unless `name=` gives one), with the URL's
    query string after the name. `on_change(push)` is called at each change of state.
    """

    protocol = "push"

    def __init__(
        self,
        relay: Relay,
        app: str,
        name: str,
        target: PushTarget | str,
        options: PushOptions | None = None,
        *,
        on_change: Callable[[Push], None] | None = None,
    ) -> None:
        self.relay = relay
        self.app = app
        self.name = name
        self.target = PushTarget.parse(target)
        self.options = options or PushOptions()
        self.on_change = on_change
        self.url, self.publish_name = self.target.split(name)
        self.display = redact_url(f"{self.url}/{self.publish_name}")
        parts = urlsplit(self.url)
        self.id = next(_IDS)
        self.ip = parts.hostname or ""
        self.peer = self.display  # what the relay's log lines name a player by
        self.state = PushState.CONNECTING
        self.error = ""
        self.since = time.time()
        self.bytes = 0
        self.reconnects = 0
        self.connections = 0  # publishes the target accepted
        self._skipped = 0  # messages dropped in connections that ended
        self._skips = 0
        self._player: Player | None = None
        self._backoff = Backoff(self.options.backoff_min, self.options.backoff_max)
        self._stopping = asyncio.Event()
        self._why = ""
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Push {self.app}/{self.name} -> {self.display} {self.state.value}>"

    # --- status --------------------------------------------------------------------------

    @property
    def skipped(self) -> int:
        """Messages dropped because the target fell behind (to the next keyframe)."""
        p = self._player
        return self._skipped + (
            p.dropped if p is not None and self.state is PushState.PUSHING else 0
        )

    @property
    def skips(self) -> int:
        p = self._player
        return self._skips + (p.skips if p is not None and self.state is PushState.PUSHING else 0)

    def status(self) -> dict[str, Any]:
        """The API's view of this push."""
        return {
            "id": self.id,
            "url": self.display,
            "tracks": self.target.tracks,
            "state": self.state.value,
            "since": self.since,
            "error": self.error or None,
            "bytes": self.bytes,
            "skipped_frames": self.skipped,
            "skips": self.skips,
            "reconnects": self.reconnects,
        }

    def _set(self, state: PushState, detail: str = "") -> None:
        self.state = state
        self.since = time.time()
        log_at = log.warning if state is PushState.BACKOFF else log.info
        log_at(
            "push %s/%s -> %s: %s%s",
            self.app,
            self.name,
            self.display,
            state.value,
            f" ({detail})" if detail else "",
        )
        if self.on_change is not None:
            self.on_change(self)

    # --- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start pushing (the stream must be published, or be in the relay's channels)."""
        if self._task is None:
            # Framed for message stream 1 before the target answers: nginx-rtmp, SRS,
            # node-media-server, MediaMTX, YouTube and we answer the first createStream with
            # 1; a target that answers another id gets a fresh join (`_connection`).
            self._player = self._attach(PushOutput(self, 1))
            self._set(PushState.CONNECTING, "first attempt")
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, why: str = "publish ended") -> None:
        """End the push: what was queued is sent, the publish at the target is ended cleanly
        (FCUnpublish, deleteStream), the connection closed. A connection being made is given
        its timeout to finish first, so that a short stream still reaches its target."""
        self._why = self._why or why
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    def cancel(self) -> None:
        self._why = self._why or "cancelled"
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    error = await self._connection()
                except Exception as err:  # a bug of ours: this push backs off, nothing else
                    log.exception(
                        "push %s/%s -> %s: internal error", self.app, self.name, self.display
                    )
                    error = f"internal error: {err!r}"
                if self.stopping:
                    break
                self.reconnects += 1
                delay = self._backoff.next()
                self.error = error
                self._set(
                    PushState.BACKOFF,
                    f"{error}; reconnect #{self.reconnects} in {delay:g} s",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self.stopping:
                    break
                self._player = self._attach(PushOutput(self, 1))
                self._set(PushState.CONNECTING, f"attempt {self.reconnects + 1}")
        finally:
            self._detach(send=False)
            self._set(
                PushState.STOPPED,
                f"{self._why or 'ended'}; bytes={self.bytes} skipped={self.skipped} "
                f"reconnects={self.reconnects}",
            )

    async def _connection(self) -> str:
        """One connection: connect, publish, push until it ends. Why it ended (for the log)."""
        opts = self.options
        client = Client(self.url, ssl=opts.ssl, timeout=opts.timeout, chunk_size=opts.chunk_size)
        started: float | None = None
        try:
            try:
                await client.open()
                await client.publish(self.publish_name)
            except ClientError as err:
                return self._hide(str(err))
            except OSError as err:  # TLS failures and the like, below the client's own errors
                return self._hide(repr(err))
            p = self._player
            if p is None or cast(PushOutput, p.out).sid != client.stream_id or p.skipping:
                # Framed for another message stream id, or fell behind while connecting: join
                # afresh from the latest keyframe.
                self._detach(send=False)
                p = self._player = self._attach(PushOutput(self, client.stream_id))
            if p is None:
                self._why = self._why or "not published"
                self._stopping.set()
                return "not published"
            cast(PushOutput, p.out).connected(client)
            started = time.monotonic()
            self.connections += 1
            self.error = ""
            self._set(PushState.PUSHING, f"connection {self.connections}")
            stop = asyncio.ensure_future(self._stopping.wait())
            ended = asyncio.ensure_future(client.closed.wait())
            try:
                await asyncio.wait((stop, ended), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                ended.cancel()
            if self.stopping and not client.closed.is_set():
                self._detach(send=True)
                return ""
            failure = client.failure
            return self._hide(str(failure)) if failure is not None else "closed by the target"
        finally:
            if started is not None:
                self._backoff.pushed(time.monotonic() - started)
            self._detach(send=False)
            with contextlib.suppress(ClientError, OSError):
                await client.close()

    def _hide(self, text: str) -> str:
        """An error text without the stream key (a server may quote the name it refused)."""
        for secret in {self.publish_name, self.publish_name.partition("?")[0]}:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _attach(self, out: PushOutput) -> Player | None:
        channel = self.relay.channel(self.app, self.name)
        if channel is None or (channel.stream is None and not channel.gap):
            return None
        p = Player(out, out.sid, self.name, self.options.max_buffer)
        p.max_buffer = self.options.max_buffer
        channel.add(p)
        return p

    def _detach(self, *, send: bool) -> None:
        """Leave the channel; `send`: hand what the relay queued to the socket first."""
        p = self._player
        if p is None:
            return
        self._player = None
        out = cast(PushOutput, p.out)
        if send:
            out.flush()
        out.ended = True
        if out.client is not None:
            self._skipped += p.dropped
            self._skips += p.skips
        channel: Channel | None = p.channel
        if channel is not None:
            channel.remove(p)


class PushManager:
    """The pushes of one server: started for each publish from the configuration and the
    access decision (`Stream.push`), stopped when it ends."""

    def __init__(self, registry: StreamRegistry, relay: Relay | None, config: ServerConfig) -> None:
        self.registry = registry
        # The server's relay; without one (play is off), one of its own, made for the first
        # push (it plays to pushes only).
        self.relay = relay
        self.config = config
        self.pushes: dict[Stream, list[Push]] = {}
        self._ending: dict[Push, asyncio.Task[None]] = {}
        registry.on_start.append(self._on_start)
        registry.on_stop.append(self._on_stop)

    def targets(self, stream: Stream) -> list[PushTarget]:
        """The targets of a publish: [push], then [apps.NAME] push, then the callback's."""
        cfg = self.config
        found: list[PushTarget] = list(cfg.push.get(stream.app, ()))
        app = cfg.apps.get(stream.app)
        if app is not None:
            found += app.push
        found += _parse_extra(stream, getattr(stream, "push", ()))
        unique: list[PushTarget] = []
        for t in found:
            if t not in unique:
                unique.append(t)
        return unique

    def of(self, app: str, name: str) -> list[Push]:
        """The pushes of the live stream app/name."""
        stream = self.registry.get(app, name)
        return [] if stream is None else list(self.pushes.get(stream, ()))

    def all(self) -> list[Push]:
        return [p for pushes in self.pushes.values() for p in pushes]

    def _on_start(self, stream: Stream) -> None:
        targets = self.targets(stream)
        if not targets:
            return
        options = PushOptions.of(self.config)
        if self.relay is None:
            self.relay = Relay(self.registry, RelayConfig(play_wait=0, republish_grace=0))
        relay = self.relay
        pushes = [Push(relay, stream.app, stream.name, t, options) for t in targets]
        self.pushes[stream] = pushes
        for push in pushes:
            push.start()

    def _on_stop(self, stream: Stream) -> None:
        pushes = self.pushes.pop(stream, None)
        for push in pushes or ():
            task = asyncio.get_running_loop().create_task(push.stop("publish ended"))
            self._ending[push] = task
            task.add_done_callback(functools.partial(self._ended, push))

    def _ended(self, push: Push, _task: asyncio.Task[None]) -> None:
        self._ending.pop(push, None)

    async def close(self, timeout: float = 5.0) -> None:
        """At shutdown: stop every push, waiting at most `timeout` for them to finish (a
        target that does not answer is then left as it is)."""
        for stream in list(self.pushes):
            self._on_stop(stream)
        ending = dict(self._ending)
        if not ending:
            return
        _done, pending = await asyncio.wait(ending.values(), timeout=timeout)
        for push, task in ending.items():
            if task in pending:
                push.cancel()
                task.cancel()


def _parse_extra(stream: Stream, items: Iterable[Any]) -> Sequence[PushTarget]:
    out = []
    for item in items:
        try:
            out.append(PushTarget.parse(item))
        except ValueError as err:
            log.warning(
                "push %s/%s: a target from the access decision is not accepted (%s)",
                stream.app,
                stream.name,
                err,
            )
    return out
