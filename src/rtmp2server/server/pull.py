"""Pull: streams of this server fed by another RTMP server (an edge of an origin).

This module owns pulled streams. A `Pull` plays one stream from another server (nginx-rtmp,
SRS, another rtmp2-server) with the asyncio client (`rtmp2server.client`) and publishes it
here as a registry `Stream`, exactly as a session's publish does: the publish handler decides
and attaches its sinks (the recorder), then `claim`, `started`, `deliver` for every message,
`release` at the end. The relay (GOP cache, republish grace, waiting players), the HTTP API and
the metrics see it as any other stream; `Stream.source` marks it as pulled (the origin's URL,
without user info and with query values hidden, as in every log line here). `Pulls` is the
set of pulls of one `RTMPServer`:

- on demand (`--pull APP=URL`, or `pull = URL` in `[apps.APP]`): when a player asks for
  APP/NAME and nothing is published there, the relay asks `Pulls.demand`, which starts pulling
  URL/NAME; the player waits for it as for a publisher (up to `play_wait`, then
  NetStream.Play.StreamNotFound) and is played from the first keyframe. The pull goes on while
  the stream has players and stops `pull_idle` seconds after the last one left; however many
  players, the origin sees one play.
- static (`pull_static = ["rtmp://origin/APP/NAME"]` in `[apps.APP]`): pulled from the start,
  published here as APP/NAME, for as long as the server runs.

Both retry with exponential backoff (0.5 s, doubling to `pull_retry_max`), and a failure that
repeats is logged once, not at each attempt.

The local stream is claimed at the first frame from the origin, not at NetStream.Play.Start:
nginx-rtmp answers a play of a stream it does not have with Play.Start and then sends nothing
(it waits for a publisher), so a claim at Play.Start would hold players on a stream that never
comes; they get StreamNotFound after `play_wait` instead. Each local publish is rebased to
start at timestamp zero at its first frame. When the origin's publish ends
(NetStream.Play.UnpublishNotify; User Control Stream EOF, which is all nginx-rtmp sends;
Play.Stop; the connection closing), the local stream is released, after the last frame the
origin sent: its players go through the relay's republish grace as for a publisher that left,
and the pull plays on (the origin's publisher may come back), a new publish for the relay.

A local publish of a name being pulled is a republish (`StreamRegistry.republish`): with
"takeover" (the default) the local publisher takes the name over and the pull ends (a static
pull waits until the name is free, then pulls again); with "refuse" the local publish is
refused while the pull holds the name. A pull never takes a name from a local publisher.

Recording: a pulled stream goes through the server's publish handler like any publish, so it is
recorded where a publish to its application would be (`record_dir`, `[apps.APP] record`).
nginx-rtmp does the same: its relay publishes a pulled stream locally, where `record` applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..client import Client, ClientError, StatusError
from ..logs import get_logger, redact_query
from ..protocol.client import ClientCommand
from ..protocol.enhanced import CapsEx
from ..protocol.messages import AUDIO, DATA_AMF0, VIDEO, Message, MessageType, UserControlEvent
from .recorder import RecordingError
from .registry import Stream, StreamKey, StreamRegistry

if TYPE_CHECKING:
    from ..config import ServerConfig
    from .relay import Relay
    from .server import RTMPServer

log = get_logger(__name__)

BACKOFF_MIN = 0.5  # seconds before the first retry
CHECK_INTERVAL = 0.25  # seconds between two looks at whether a pull still has players
# The origin's answer to play (as ours and nginx-rtmp send it): not part of the stream.
_SAMPLE_ACCESS = b"\x02\x00\x11|RtmpSampleAccess"
MAX_HELD_DATA = 16  # data messages held until the first frame of a publish
USER_CONTROL = int(MessageType.USER_CONTROL)
_ORIGIN_ENDED = ("NetStream.Play.UnpublishNotify", "NetStream.Play.Stop")

PublishHandler = Callable[[Stream], "bool | Awaitable[bool]"]


def redact_url(url: str) -> str:
    """`url` fit for a log line or the API: no user:password, query values hidden."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


def split_stream_url(url: str) -> tuple[str, str]:
    """`rtmp://host/app/name?q` -> (`rtmp://host/app`, `name?q`): the application to connect
    to and the stream to play, as ffmpeg splits a play URL."""
    base, sep, query = url.partition("?")
    app, _, name = base.rstrip("/").rpartition("/")
    return app, name + (sep + query if query else "")


# Queued by `_OriginClient` where the origin's publish ended, among the play's messages.
_END = Message(2, 0, USER_CONTROL, 0, b"")


def _ends_publish(item: ClientCommand | Message, stream_id: int) -> bool:
    """Whether the origin says that the publish being played ended: UnpublishNotify (ours,
    SRS; nginx-rtmp with `publish_notify on`) or User Control Stream EOF (all nginx-rtmp
    sends by default)."""
    if isinstance(item, ClientCommand):
        return item.name == "onStatus" and item.info.get("code") in _ORIGIN_ENDED
    payload = item.payload if item.type_id == USER_CONTROL else b""
    return (
        len(payload) >= 6
        and int.from_bytes(payload[:2], "big") == UserControlEvent.STREAM_EOF
        and int.from_bytes(payload[2:6], "big") == stream_id
    )


class _OriginClient(Client):
    """The client of a pull: the end of the origin's publish comes out of `play()` as `_END`,
    in order with its messages. (`event_received` sees it as it arrives, ahead of the frames
    still queued for the play: releasing the local stream there would lose the publish's
    last frames.)"""

    async def _dispatch(self, item: ClientCommand | Message) -> None:
        await super()._dispatch(item)
        if self.started.is_set() and _ends_publish(item, self.stream_id):
            await self._media.put(_END)


class _Refused(Exception):
    """The publish handler did not take the pulled stream."""


class Pull:
    """One pulled stream: plays `remote_name` from the origin application `url`
    (rtmp[s]://HOST[:PORT]/APP) and publishes it in `registry` as `app`/`name`.

    With a `relay`, an on-demand pull (`static=False`) ends `idle` seconds after the local
    stream's last player left; without one it runs until `stop()`. A static pull runs until
    `stop()`. `publish_handler` (the server's) decides about the stream and attaches its
    sinks, as for a publish; `on_done` is told when the pull ends.
    """

    def __init__(
        self,
        registry: StreamRegistry,
        app: str,
        name: str,
        url: str,
        remote_name: str | None = None,
        *,
        static: bool = False,
        relay: Relay | None = None,
        publish_handler: PublishHandler | None = None,
        idle: float = 5.0,
        retry_max: float = 30.0,
        timeout: float = 10.0,
        ssl: _ssl.SSLContext | None = None,
        on_done: Callable[[Pull], None] | None = None,
    ) -> None:
        self.registry = registry
        self.app = app
        self.name = name
        self.url = url
        self.remote_name = name if remote_name is None else remote_name
        self.static = static
        self.relay = relay
        self.publish_handler = publish_handler
        self.idle = idle
        self.retry_max = retry_max
        self.timeout = timeout
        self.ssl = ssl
        self.on_done = on_done
        # The application's URL and the stream name, each with its query values hidden.
        stream, _, query = self.remote_name.partition("?")
        self.source = f"{redact_url(url).rstrip('/')}/{stream}" + (
            f"?{redact_query(query)}" if query else ""
        )
        self.stream: Stream | None = None  # the local stream, while the origin sends
        self.started = time.monotonic()
        self.attempts = 0  # connections to the origin so far
        self.publishes = 0  # local publishes made from it so far
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._session: asyncio.Task[None] | None = None
        self._idle_since: float | None = None
        self._stopping = False
        self._closed_why = ""  # the local stream was taken over or ended from outside

    @property
    def key(self) -> StreamKey:
        return (self.app, self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def __repr__(self) -> str:
        return f"<Pull {self.app}/{self.name} from {self.source}>"

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start pulling (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """End the pull: the origin connection closes, the local stream is released."""
        self._stopping = True
        if self._session is not None:
            self._session.cancel()

    async def wait(self) -> None:
        """Until the pull has ended."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def close(self) -> None:
        self.stop()
        if self._task is not None:
            self._task.cancel()
        await self.wait()

    def wanted(self) -> bool:
        """Whether the pull goes on: static, or on demand with players (or within `idle`
        seconds of the last one leaving)."""
        if self._stopping:
            return False
        if self.static or self.relay is None:
            return True
        channel = self.relay.channel(self.app, self.name)
        if channel is not None and channel.players:
            self._idle_since = None
            return True
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since < self.idle

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        why = "stopped"
        try:
            while True:
                if not self.wanted():
                    why = "stopped" if self._stopping else f"no players for {self.idle:g} s"
                    break
                holder = self.registry.get(self.app, self.name)
                if holder is not None and holder is not self.stream:
                    # Published here by someone else: a pull never takes a name over.
                    if not self.static:
                        why = f"published here by {holder.peer}"
                        break
                    await asyncio.sleep(CHECK_INTERVAL)
                    continue
                got, error = await self._attempt()
                if self._closed_why and not self.static:
                    why = self._closed_why
                    break
                if got:
                    delay = BACKOFF_MIN
                if error:
                    if error != self.last_error:
                        log.warning(
                            "pull %s/%s from %s: %s; retrying (backoff up to %g s)",
                            self.app,
                            self.name,
                            self.source,
                            error,
                            self.retry_max,
                        )
                    else:
                        log.debug("pull %s/%s: again: %s", self.app, self.name, error)
                    self.last_error = error
                elif got:
                    self.last_error = ""
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max)
        except asyncio.CancelledError:
            why = "stopped"
            raise
        finally:
            self._release("pull ended")
            log.info(
                "pull stop: app=%s stream=%s from %s after %.2fs, %d connection(s), "
                "%d publish(es) (%s)",
                self.app,
                self.name,
                self.source,
                time.monotonic() - self.started,
                self.attempts,
                self.publishes,
                why,
            )
            if self.on_done is not None:
                self.on_done(self)

    async def _sleep(self, delay: float) -> None:
        """Wait `delay` seconds, or less if the pull is no longer wanted."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and self.wanted():
            await asyncio.sleep(min(CHECK_INTERVAL, max(deadline - time.monotonic(), 0)))

    async def _attempt(self) -> tuple[bool, str]:
        """One connection to the origin: (whether the origin sent a stream, the failure)."""
        self.attempts += 1
        self._closed_why = ""
        published = self.publishes
        session = self._session = asyncio.ensure_future(self._play())
        try:
            while not session.done():
                await asyncio.wait({session}, timeout=CHECK_INTERVAL)
                if not session.done() and (not self.wanted() or self._closed_why):
                    session.cancel()
            error = ""
            try:
                session.result()
            except asyncio.CancelledError:
                pass
            except StatusError as err:
                error = f"the origin answered {err.code}" + (
                    f" ({err.description})" if err.description else ""
                )
            except ClientError as err:
                error = str(err)
            except _Refused as err:
                error = str(err)
            return self.publishes > published, error
        finally:
            if not session.done():
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await session
            self._session = None
            self._release("origin connection closed")

    async def _play(self) -> None:
        # Every codec and every track: an origin (ours, SRS) sends a player that did not say
        # so only the default track of a multitrack publish, and the edge is a relay.
        every_track = {"fourCcList": ["*"], "capsEx": float(CapsEx.MULTITRACK)}
        async with _OriginClient(
            self.url, ssl=self.ssl, timeout=self.timeout, connect_extra=every_track
        ) as client:
            held: list[Message] = []
            base = 0
            async for msg in client.play(self.remote_name):
                if msg is _END:
                    self._release("the origin's publish ended")
                    held = []
                    continue
                t = msg.type_id
                stream = self.stream
                if t == DATA_AMF0:
                    if msg.payload.startswith(_SAMPLE_ACCESS):
                        continue
                    if stream is None:
                        # Held until the first frame, then delivered at its time (see below).
                        if len(held) < MAX_HELD_DATA:
                            held.append(msg)
                        continue
                elif t != AUDIO and t != VIDEO:
                    continue  # AMF3 data: nothing a relay or a recording takes
                if stream is None:
                    stream = await self._publish()
                    if stream is None:
                        return
                    # nginx-rtmp sends a mid-stream joiner onMetaData at timestamp 0 and the
                    # media at the stream's own time (seconds on): each local publish is
                    # rebased to start at its first frame, as a publish here would, so that
                    # its recording and players' timelines start at zero.
                    base = msg.timestamp
                    for data in held:
                        stream.deliver(
                            Message(data.csid, 0, DATA_AMF0, data.stream_id, data.payload)
                        )
                    held = []
                if base:
                    msg = Message(
                        msg.csid, (msg.timestamp - base) & 0xFFFFFFFF, t, msg.stream_id, msg.payload
                    )
                stream.deliver(msg)

    # --- the local stream ------------------------------------------------------------------

    async def _publish(self) -> Stream | None:
        """Publish what the origin sends as the local stream: decided by the publish handler,
        then claimed. None when the name is published here meanwhile (the pull yields)."""
        if self.registry.get(self.app, self.name) is not None:
            self._closed_why = "published here meanwhile"
            return None
        stream = Stream(
            app=self.app,
            name=self.name,
            peer=self.source,
            tc_url=redact_url(self.url),
        )
        stream.source = self.source
        stream.close = self._close_from_outside
        handler = self.publish_handler
        if handler is not None:
            try:
                answer = handler(stream)
                if isinstance(answer, Awaitable):
                    answer = await answer
            except RecordingError as err:
                raise _Refused(f"cannot record: {err}") from err
            except Exception as err:
                log.exception("pull %s/%s: publish handler failed", self.app, self.name)
                raise _Refused("the publish handler failed") from err
            if not answer:
                stream.end()
                raise _Refused("the publish handler refused the stream")
            if self.registry.get(self.app, self.name) is not None:
                stream.end()
                self._closed_why = "published here meanwhile"
                return None
        self.registry.claim(stream)
        self.stream = stream
        self.publishes += 1
        log.info(
            "pull start: app=%s stream=%s from %s (connection %d)",
            self.app,
            self.name,
            self.source,
            self.attempts,
        )
        self.registry.started(stream)
        return stream

    def _close_from_outside(self, reason: str) -> None:
        """The registry (a local publish takes the name over) or the API ends the stream."""
        self._closed_why = reason
        self._release(reason)
        if self._session is not None:
            self._session.cancel()

    def _release(self, why: str) -> None:
        stream = self.stream
        if stream is None:
            return
        self.stream = None
        self.registry.release(stream)
        log.info(
            "pull publish stop: app=%s stream=%s from %s %s (%s)",
            self.app,
            self.name,
            self.source,
            stream.totals(),
            why,
        )


def on_demand_sources(config: ServerConfig) -> dict[str, str]:
    """App -> origin URL of the pulls on demand: `[apps.APP] pull`, then `--pull APP=URL`
    (the flag wins for an app that has both)."""
    out = {name: app.pull for name, app in config.apps.items() if app.pull}
    for item in config.pull:
        app, _, url = item.partition("=")
        out[app] = url
    return out


def static_sources(config: ServerConfig) -> list[tuple[str, str]]:
    """(app, rtmp://origin/APP/NAME) of every static pull."""
    return [(name, url) for name, app in config.apps.items() for url in app.pull_static]


class Pulls:
    """The pulls of one `RTMPServer`: on demand (the relay's `demand` hook) and static."""

    def __init__(self, server: RTMPServer) -> None:
        self.server = server
        self.pulls: dict[StreamKey, Pull] = {}
        self._closing = False
        self._refused_logged = -1.0  # when a pull over the limit was last logged

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.pulls.values()))

    def __len__(self) -> int:
        return len(self.pulls)

    def get(self, app: str, name: str) -> Pull | None:
        return self.pulls.get((app, name))

    def demand(self, app: str, name: str) -> bool:
        """A player wants app/name, which is not published here: whether a pull brings it
        (started now, or already on its way)."""
        if self._closing:
            return False
        pull = self.pulls.get((app, name))
        if pull is not None and pull.running:
            return True
        cfg = self.server.config
        url = on_demand_sources(cfg).get(app)
        if url is None:
            return False
        if len(self.pulls) >= cfg.pull_max:
            # Players choose the names: without a bound, one could make this server open a
            # connection to the origin per name it asks for.
            now = time.monotonic()
            if now - self._refused_logged >= 1.0:
                self._refused_logged = now
                log.warning(
                    "pull %s/%s: not started: %d pulls running, the limit (pull_max) is %d",
                    app,
                    name,
                    len(self.pulls),
                    cfg.pull_max,
                )
            return False
        self.add(app, name, url)
        return True

    def add(
        self, app: str, name: str, url: str, remote_name: str | None = None, *, static: bool = False
    ) -> Pull:
        """Start pulling `url`/`remote_name` (default `name`) as app/name."""
        cfg = self.server.config
        pull = Pull(
            self.server.registry,
            app,
            name,
            url,
            remote_name,
            static=static,
            relay=self.server.relay,
            publish_handler=self.server.publish_handler,
            idle=cfg.pull_idle,
            retry_max=cfg.pull_retry_max,
            on_done=self._done,
        )
        old = self.pulls.get(pull.key)
        if old is not None:
            old.stop()
        self.pulls[pull.key] = pull
        log.info(
            "pull: app=%s stream=%s from %s%s",
            app,
            name,
            pull.source,
            " (static)" if static else " (on demand)",
        )
        pull.start()
        return pull

    def start(self) -> None:
        """Start the static pulls of the configuration."""
        for app, url in static_sources(self.server.config):
            base, remote = split_stream_url(url)
            name = remote.partition("?")[0]
            self.add(app, name, base, remote, static=True)

    def _done(self, pull: Pull) -> None:
        if self.pulls.get(pull.key) is pull:
            del self.pulls[pull.key]

    async def close(self) -> None:
        self._closing = True
        pulls = list(self.pulls.values())
        await asyncio.gather(*(p.close() for p in pulls), return_exceptions=True)
        self.pulls.clear()
