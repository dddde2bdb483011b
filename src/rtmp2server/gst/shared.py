"""One RTMP server per host:port, shared by every `rtmp2serversrc` element of the process.

This module owns the server side of the element, and imports no GStreamer:

- `SharedServer`: an `RTMPServer` with its own asyncio event loop in one background thread.
  `acquire(host, port)` starts it (or takes another reference to the running one) and
  returns once the port is bound, or raises `OSError`; `release()` drops the reference, and
  the last one closes every connection, frees the port and joins the thread. Port 0 asks
  for a free port (a new server, which later elements share by naming its port).
- `Route`: what one element asks for (application and stream key, either unset meaning
  "any") and where its publishes go (a `Feed`). A route is the registry `Sink` of the
  publish it receives.
- The publish policy: each publish goes to the most specific idle route that matches it
  (stream key and application set beat unset; equally specific routes in the order they
  were added). A publish no route wants is refused (the server answers
  `NetStream.Publish.BadName`); a second publisher for a key that is being published is
  refused by the registry before it gets here. A route without `loop` takes one publish
  and then no more.

Routes are added and removed from GStreamer threads; everything that touches a `Stream` or a
transport runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..logs import get_logger
from ..protocol.messages import Message
from ..server import RTMPServer, ServerConfig
from ..server.registry import Stream
from .feed import Feed, PublishEnded, PublishInfo, PublishStarted

log = get_logger("rtmp2server.gst")

T = TypeVar("T")

CALL_TIMEOUT = 10.0  # seconds a GStreamer thread waits for the event loop


class Route:
    """One element's claim on a shared server: which publishes it takes, and its feed."""

    def __init__(
        self, application: str | None, stream_key: str | None, feed: Feed, *, loop: bool
    ) -> None:
        self.application = application.strip("/") if application else None
        self.stream_key = stream_key or None
        self.feed = feed
        self.loop = loop
        self.stream: Stream | None = None  # the publish being received
        self.accepting = True  # False once a non-looping route has had its publish
        # The application's say on each publish (the element's `publish-accept` signal),
        # called on the server's event loop; None accepts every publish.
        self.accept: Callable[[PublishInfo], bool] | None = None
        self._server: SharedServer | None = None

    def matches(self, stream: Stream) -> bool:
        return (self.application is None or self.application == stream.app) and (
            self.stream_key is None or self.stream_key == stream.name
        )

    @property
    def specificity(self) -> int:
        return (2 if self.stream_key is not None else 0) + (1 if self.application else 0)

    def describe(self) -> str:
        return f"{self.application or '*'}/{self.stream_key or '*'}"

    # --- registry Sink, called on the event loop -----------------------------------------

    def on_message(self, stream: Stream, msg: Message) -> None:
        self.feed.put(msg, stream)

    def on_end(self, stream: Stream) -> None:
        server = self._server
        if server is not None:
            with server.lock:
                if self.stream is stream:
                    self.stream = None
        self.feed.put(PublishEnded.of(stream))


class SharedServer:
    """An RTMP server on its own event loop thread, routing publishes to elements."""

    def __init__(self, host: str, port: int, config: ServerConfig | None = None) -> None:
        self.host = host
        self.requested_port = port
        cfg = config or ServerConfig()
        cfg.host, cfg.port, cfg.record_dir = host, port, None
        # A pipeline's element keeps its publisher: a second publisher of a key being published
        # is refused, as before takeover existed (an idle wildcard element would otherwise
        # take the newcomer and end the first element's stream).
        cfg.republish = "refuse"
        self.server = RTMPServer(cfg, publish_handler=self._on_publish)
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.routes: list[Route] = []
        self.refs = 0
        self.port = 0
        self._thread = threading.Thread(
            target=self._run, name=f"rtmp2serversrc {host}:{port}", daemon=True
        )

    # --- life cycle (GStreamer threads) ----------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and bind; raises OSError (and cleans up) if binding fails."""
        self._thread.start()
        try:
            self.call(self.server.start())
        except BaseException:
            self._stop_thread()
            raise
        self.port = self.server.port

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> None:
        """Close every connection, free the port, end the thread."""
        try:
            self.call(self.server.close())
        finally:
            self._stop_thread()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def _stop_thread(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    # --- routes ------------------------------------------------------------------------------

    def add_route(self, route: Route) -> None:
        route.feed.bind_loop(self.loop)
        route._server = self
        with self.lock:
            self.routes.append(route)

    def remove_route(self, route: Route) -> None:
        """Stop routing to `route`; a publish it is receiving is cut off (its peer closed)."""
        with self.lock:
            if route in self.routes:
                self.routes.remove(route)
            route.accepting = False
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._detach(route))
        route.feed.bind_loop(None)

    async def _detach(self, route: Route) -> None:
        with self.lock:
            stream, route.stream = route.stream, None
        if stream is None:
            return
        stream.remove_sink(route)
        for session in self.server.sessions:
            if any(s is stream for s in session.published.values()):
                log.info(
                    "publish %s/%s from %s: the element stopped; closing the connection",
                    stream.app,
                    stream.name,
                    session.peer,
                )
                session.abort()

    # --- the publish policy (event loop) ---------------------------------------------------

    def _on_publish(self, stream: Stream) -> bool:
        info = PublishInfo.of(stream)
        with self.lock:
            candidates = [
                r for r in self.routes if r.accepting and r.stream is None and r.matches(stream)
            ]
            if not candidates:
                log.warning(
                    "publish %s/%s from %s: no rtmp2serversrc is waiting for it (listening: %s)",
                    stream.app,
                    stream.name,
                    stream.peer,
                    ", ".join(r.describe() for r in self.routes) or "none",
                )
                return False
            route = max(candidates, key=lambda r: r.specificity)  # first of the most specific
        accept = route.accept
        # Outside the lock: the application's handler may take its time or call the element.
        if accept is not None and not accept(info):
            log.info(
                "publish %s/%s from %s: refused by the application (publish-accept)",
                _escape(stream.app),
                _escape(stream.name),
                stream.peer,
            )
            return False
        with self.lock:
            if route.stream is not None or not route.accepting or route not in self.routes:
                log.warning(
                    "publish %s/%s from %s: the element that accepted it has gone or taken "
                    "another publish meanwhile",
                    _escape(stream.app),
                    _escape(stream.name),
                    stream.peer,
                )
                return False
            route.stream = stream
            if not route.loop:
                route.accepting = False
        route.feed.put(PublishStarted(info))
        stream.add_sink(route)
        return True


# ---------------------------------------------------------------------------------------------
# The process-wide table
# ---------------------------------------------------------------------------------------------

_lock = threading.Lock()
_servers: dict[tuple[str, int], SharedServer] = {}


def acquire(host: str, port: int, config: ServerConfig | None = None) -> SharedServer:
    """The running server on host:port (started now if needed), with one more reference.

    Port 0 starts a new server on a free port; elements that name that port later share it.
    Raises `OSError` when the port cannot be bound.
    """
    with _lock:
        server = _servers.get((host, port)) if port else None
        if server is None:
            server = SharedServer(host, port, config)
            server.start()
            _servers[server.key] = server
            log.info("rtmp2serversrc: listening on %s:%d", host, server.port)
        server.refs += 1
        return server


def release(server: SharedServer) -> None:
    """Drop a reference; the last one stops the server and frees its port."""
    with _lock:
        server.refs -= 1
        if server.refs > 0:
            return
        _servers.pop(server.key, None)
        server.stop()  # under the lock: a new server for this port binds only after
    log.info("rtmp2serversrc: stopped listening on %s:%d", server.host, server.port)


def running() -> list[SharedServer]:
    """The servers running now (for tests and diagnostics)."""
    with _lock:
        return list(_servers.values())


def _escape(text: str) -> str:
    """A peer-supplied string as it may appear in a log line (escaped, bounded)."""
    return repr(text[:200])[1:-1]
