"""N worker processes on one port: the supervisor, the claims of stream names, and the
links that play a stream published to one worker from another.

`rtmp2-server --workers N` (or `auto`: one per CPU) runs a supervisor: the first process,
which opens no RTMP listener itself. It starts N copies of the same command line, told by
their environment that they are worker i, and each of them opens the public listeners with
SO_REUSEPORT, so that the kernel spreads the accepted connections over them. This module
owns both sides:

- the supervisor (`Supervisor`): starts the workers, restarts one that dies (with a backoff,
  and a log line each time), passes SIGTERM, SIGINT and SIGHUP on to every worker (a worker
  drains or reloads as a single server does), and is the arbiter of stream names: one
  publisher per (app, name) across all workers. It talks to each worker over a socket pair
  inherited by the worker, in lines of JSON;
- the worker (`Worker`): its publish handler asks the supervisor for the name before it
  records (`claim`), and gives it back when the publish ends; it is told who publishes what
  (`owner`) and, for a takeover, to let a publish go (`release`);
- the links between workers, built from the parts a single server already has, as nginx-rtmp
  builds `rtmp_auto_push` from its push over local sockets: each worker also serves RTMP
  plays on a link listener of its own on 127.0.0.1 (its port in the workers' private
  directory; a play there must carry this run's key), and a worker with a player of a stream
  that another worker owns pulls it from there (`server/pull.py`'s `Pull`, the RTMP client)
  into its own registry, as an internal publish. Players then join it there with the relay's
  usual GOP cache and back-pressure. Internal publishes are not recorded, not checked against
  access rules, send no webhooks and do not count as publishes: the owner recorded it
  already. A link stops when its last player has left for `PULL_LINGER` seconds, or when the
  owner's publish ends.

Pull rather than push: a stream costs a second worker only while someone there plays it,
and the owner is the only worker that records it, so "recorded once" needs nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from .config import Listener, ServerConfig
from .logs import get_logger
from .protocol.enhanced import CapsEx, ClientCapabilities
from .protocol.events import Connected, PlayRequest
from .server.pull import Pull
from .server.registry import Republish, Stream, StreamKey, StreamRegistry
from .server.server import Refused, RTMPServer, Session

log = get_logger("rtmp2server")

ENV_INDEX = "RTMP2SERVER_WORKER"
"""Set by the supervisor: the index of the worker (0 .. N-1); unset in the supervisor."""
ENV_FD = "RTMP2SERVER_WORKER_FD"
"""The worker's end of its control socket pair (an inherited file descriptor)."""
ENV_DIR = "RTMP2SERVER_WORKER_DIR"
"""The workers' private directory (mode 0700, made by the supervisor): each worker writes the
port of its link listener there."""
ENV_SECRET = "RTMP2SERVER_WORKER_KEY"
"""The key of this run that a play on a link listener must carry (`?worker_key=`): the link
listeners are on 127.0.0.1, and no other local process may play through them past the
access rules."""
LINK_KEY = "worker_key"
ENV_TEST_PORTS = "RTMP2SERVER_WORKER_PORTS"
"""For tests only: "P0,P1,...": worker i also listens on rtmp://127.0.0.1:Pi, so that a
test chooses which worker a client reaches (SO_REUSEPORT picks one at random)."""

PULL_LINGER = 5.0  # seconds a link stays with no player (one who comes back soon is served)
PULL_TAIL = 0.5  # seconds of silence on a link after the owner's publish ended: all read
TAKEOVER_TIMEOUT = 5.0  # seconds the owner of a name has to let it go for a takeover
RESTART_BACKOFF = (0.5, 30.0)  # first and longest wait before a dead worker is restarted
STABLE = 10.0  # seconds a worker must live for its next death to restart it at once again
LINE_LIMIT = 64 * 1024  # longest control line (names are bounded by max_name_length)


def worker_count(config: ServerConfig) -> int:
    """How many workers `config.workers` means (0, auto: one per CPU)."""
    return config.workers or os.cpu_count() or 1


def worker_index() -> int | None:
    """This process's worker index, or None outside a worker."""
    text = os.environ.get(ENV_INDEX)
    return int(text) if text is not None and text.isdigit() else None


def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    if not writer.is_closing():
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


async def _lines(reader: asyncio.StreamReader, who: str) -> Any:
    """The control messages from `reader` until it closes (an async generator)."""
    while True:
        try:
            line = await reader.readline()
        except (OSError, ValueError) as err:  # ValueError: a line over LINE_LIMIT
            log.error("%s: control socket: %s", who, err)
            return
        if not line:
            return
        try:
            message = json.loads(line)
        except ValueError:
            log.error("%s: control socket: not JSON: %r", who, line[:80])
            continue
        if isinstance(message, dict):
            yield message


# --- the supervisor ----------------------------------------------------------------------------


@dataclass
class _Slot:
    """One worker place: its current process and control stream."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    ever_ready: bool = False
    started: float = 0.0
    failures: int = 0


@dataclass
class _Takeover:
    """A claim of a name that another worker holds, waiting for it to let go."""

    worker: int
    request: int
    timer: asyncio.TimerHandle | None = None


@dataclass
class Supervisor:
    """Starts and keeps N workers running `argv` (the command line, without the program),
    and arbitrates their stream names."""

    argv: list[str]
    count: int
    runtime: Path
    slots: list[_Slot] = field(default_factory=list)
    owners: dict[StreamKey, int] = field(default_factory=dict)
    takeovers: dict[StreamKey, _Takeover] = field(default_factory=dict)
    stopping: bool = False
    failed: int = 0
    secret: str = field(default_factory=lambda: secrets.token_hex(16))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop, sig, done)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        self.slots = [_Slot(i) for i in range(self.count)]
        log.info("supervisor: starting %d workers", self.count)
        tasks = [asyncio.create_task(self._keep(slot, done)) for slot in self.slots]
        await done.wait()
        await asyncio.gather(*tasks)
        return self.failed

    def _stop(self, sig: signal.Signals, done: asyncio.Event) -> None:
        if not self.stopping:
            log.info("supervisor: %s: stopping the workers", sig.name)
        self.stopping = True
        self._forward(sig)
        done.set()

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def _keep(self, slot: _Slot, done: asyncio.Event) -> None:
        """Run the worker of `slot`, again after each death, until the supervisor stops."""
        while not self.stopping:
            code = await self._run_once(slot)
            if self.stopping:
                return
            if not slot.ever_ready:
                # It never got as far as listening (a port taken, a bad file): restarting
                # would fail the same way.
                log.error("worker %d exited with %s before it was ready", slot.index, code)
                self.failed = 1
                self._stop(signal.SIGTERM, done)
                return
            lived = time.monotonic() - slot.started
            slot.failures = 0 if lived >= STABLE else slot.failures + 1
            first, longest = RESTART_BACKOFF
            delay = 0.0 if slot.failures == 0 else min(longest, first * 2 ** (slot.failures - 1))
            log.warning(
                "worker %d %s after %.1f s; restarting it%s",
                slot.index,
                _how_it_ended(code),
                lived,
                f" in {delay:g} s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)

    async def _run_once(self, slot: _Slot) -> int | None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        env.update(
            {
                ENV_INDEX: str(slot.index),
                ENV_FD: str(theirs.fileno()),
                ENV_DIR: str(self.runtime),
                ENV_SECRET: self.secret,
            }
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rtmp2server",
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as err:  # out of processes or memory: a death like any other
            log.error("worker %d: cannot start: %s", slot.index, err)
            mine.close()
            slot.started = time.monotonic()
            return None
        finally:
            theirs.close()
        slot.proc, slot.started, slot.ready = proc, time.monotonic(), False
        log.info("worker %d started (pid %d)", slot.index, proc.pid)
        reader, writer = await asyncio.open_unix_connection(sock=mine, limit=LINE_LIMIT)
        slot.writer = writer
        _send(writer, {"op": "owners", "owners": [[*k, w] for k, w in self.owners.items()]})
        async for message in _lines(reader, f"worker {slot.index}"):
            self._on_message(slot, message)
        slot.writer = None
        writer.close()
        code = await proc.wait()
        slot.ready = False
        self._forget(slot.index)
        return code

    def _broadcast(self, message: dict[str, Any]) -> None:
        for slot in self.slots:
            if slot.writer is not None:
                _send(slot.writer, message)

    def _set_owner(self, key: StreamKey, worker: int | None) -> None:
        if worker is None:
            self.owners.pop(key, None)
        else:
            self.owners[key] = worker
        self._broadcast({"op": "owner", "app": key[0], "name": key[1], "worker": worker})

    def _answer(self, worker: int, request: int, granted: bool, owner: int | None) -> None:
        writer = self.slots[worker].writer
        if writer is not None:
            _send(writer, {"op": "answer", "id": request, "granted": granted, "owner": owner})

    def _on_message(self, slot: _Slot, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            slot.ready = slot.ever_ready = True
            log.info("worker %d ready", slot.index)
            return
        app, name = message.get("app"), message.get("name")
        if not isinstance(app, str) or not isinstance(name, str):
            log.error("worker %d: control message without app/name: %r", slot.index, message)
            return
        key = (app, name)
        if op == "claim":
            self._claim(slot.index, key, int(message.get("id", 0)), message)
        elif op == "release" and self.owners.get(key) == slot.index:
            self._set_owner(key, None)
            self._after_release(key)

    def _claim(self, worker: int, key: StreamKey, request: int, message: dict[str, Any]) -> None:
        owner = self.owners.get(key)
        if owner is None or owner == worker:
            if owner is None:
                self._set_owner(key, worker)
            self._answer(worker, request, True, worker)
            return
        if not message.get("takeover") or key in self.takeovers:
            self._answer(worker, request, False, owner)
            return
        # Takeover: the owner ends its publish (its recording is finished there), says so
        # with a release, and only then may the new one record: never two recordings.
        loop = asyncio.get_running_loop()
        pending = self.takeovers[key] = _Takeover(worker, request)
        pending.timer = loop.call_later(TAKEOVER_TIMEOUT, self._takeover_late, key, pending)
        writer = self.slots[owner].writer
        if writer is not None:
            by = {"by": message.get("peer", "?"), "worker": worker}
            _send(writer, {"op": "release", "app": key[0], "name": key[1], **by})

    def _after_release(self, key: StreamKey) -> None:
        pending = self.takeovers.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        if self.slots[pending.worker].writer is None:
            return  # the claimant died meanwhile
        self._set_owner(key, pending.worker)
        self._answer(pending.worker, pending.request, True, pending.worker)

    def _takeover_late(self, key: StreamKey, pending: _Takeover) -> None:
        if self.takeovers.get(key) is not pending:
            return
        del self.takeovers[key]
        owner = self.owners.get(key)
        log.warning(
            "stream %s/%s: worker %s did not let it go within %g s; the takeover from worker "
            "%d is refused",
            *key,
            owner,
            TAKEOVER_TIMEOUT,
            pending.worker,
        )
        self._answer(pending.worker, pending.request, False, owner)

    def _forget(self, worker: int) -> None:
        """A worker died: its names are free (a takeover waiting for one is granted), and
        its own takeovers are dropped."""
        for key, pending in list(self.takeovers.items()):
            if pending.worker == worker:
                if pending.timer is not None:
                    pending.timer.cancel()
                del self.takeovers[key]
        for key, owner in list(self.owners.items()):
            if owner == worker:
                self._set_owner(key, None)
                self._after_release(key)


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


async def supervise(argv: list[str], count: int) -> int:
    """Run the supervisor of `count` workers of the command line `argv` until a signal."""
    runtime = Path(tempfile.mkdtemp(prefix="rtmp2server-workers-"))  # mode 0700
    try:
        return await Supervisor(argv, count, runtime).run()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# --- a worker ----------------------------------------------------------------------------------


class WorkerRegistry(StreamRegistry):
    """A worker's registry: publishes of its own clients, and internal publishes (links from
    the worker that owns the stream). A publisher here always wins over an internal publish,
    whatever the republish policy: the link only stood in for a publisher elsewhere."""

    def __init__(self, republish: Republish = "takeover") -> None:
        super().__init__(republish)
        # Its internal publishes (weak: a pull that lost a race never registers its stream).
        self.internal: weakref.WeakSet[Stream] = weakref.WeakSet()
        self.on_release: Callable[[Stream], None] | None = None
        # Observers of `on_start` that are told only of this worker's own publishes: the
        # pushes (the owner pushes a stream; a link of it elsewhere must not push it again).
        self.own_only: list[Callable[[Stream], None]] = []

    def refuses(self, stream: Stream) -> bool:
        if self.get(*stream.key) in self.internal:
            return False
        return super().refuses(stream)

    def claim(self, stream: Stream) -> bool:
        old = self.get(*stream.key)
        if old is not None and old in self.internal:
            old.close("replaced by a publish on this worker")
            if self.get(*stream.key) is old:
                self.release(old)
        return super().claim(stream)

    def started(self, stream: Stream) -> None:
        observers = self.on_start
        if stream in self.internal:
            self.on_start = [o for o in observers if o not in self.own_only]
        try:
            super().started(stream)
        finally:
            self.on_start = observers

    def release(self, stream: Stream) -> None:
        super().release(stream)
        self.internal.discard(stream)
        if self.on_release is not None:
            self.on_release(stream)


class _Link:
    """This worker playing one stream from the worker that owns it, into its registry: a
    `Pull` (`server/pull.py`) from the owner's link listener, watched here for when to end.

    It ends when this worker's own players have all been gone for `PULL_LINGER` seconds
    (links of other workers playing from this one do not count), or, once the owner's publish
    has ended, when `PULL_TAIL` seconds passed with nothing new: what the owner sent before
    its end is all read first."""

    def __init__(self, worker: Worker, key: StreamKey, owner: int, url: str) -> None:
        self.worker = worker
        self.key = key
        self.owner = owner
        self.gone = False  # the owner's publish ended
        app, name = key
        self.pull = Pull(
            worker.registry,
            app,
            name,
            url,
            f"{name}?{LINK_KEY}={worker.secret}",
            publish_handler=self._internal,
            idle=PULL_LINGER,
            timeout=worker.server.config.handshake_timeout or 10.0,
            on_done=self._done,
        )
        self.pull.start()
        self.watch = asyncio.ensure_future(self._watch())
        log.info("link %s/%s from worker %d: start", app, name, owner)

    @property
    def stream(self) -> Stream | None:
        return self.pull.stream

    def stop(self) -> None:
        self.pull.stop()

    def _internal(self, stream: Stream) -> bool:
        """The pull's publish handler: an internal publish, not recorded, no claim."""
        self.worker.registry.internal.add(stream)
        return True

    def _done(self, pull: Pull) -> None:
        self.watch.cancel()
        if self.worker.links.get(self.key) is self:
            del self.worker.links[self.key]
        log.info("link %s/%s from worker %d: stop", *self.key, self.owner)

    async def wait_then(self, play: Callable[[], None], session: Session, req: PlayRequest) -> None:
        """`play()` once this link's stream is here (or the link ended, or a connect
        timeout passed)."""
        deadline = time.monotonic() + (self.worker.server.config.handshake_timeout or 10.0)
        while self.stream is None and self.pull.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not session.closed and session.conn.is_pending(req):
            play()
            session.flush()

    async def _watch(self) -> None:
        idle = 0.0
        step = 0.25
        seen = -1
        quiet = 0.0
        while True:
            await asyncio.sleep(step)
            if self.gone:
                stream = self.stream
                now = -1 if stream is None else stream.bytes
                quiet = quiet + step if now == seen else 0.0
                seen = now
                if stream is None or quiet >= PULL_TAIL:
                    self.stop()
                    return
            idle = 0.0 if self.worker.has_players(self.key) else idle + step
            if idle >= PULL_LINGER:
                self.stop()
                return


class Worker:
    """The workers' side of one worker process: claims, owners and links."""

    def __init__(
        self,
        index: int,
        runtime: Path,
        server: RTMPServer,
        registry: WorkerRegistry,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.index = index
        self.runtime = runtime
        self.server = server
        self.registry = registry
        self.reader = reader
        self.writer = writer
        self.owners: dict[StreamKey, int] = {}
        self.claimed: dict[StreamKey, Stream] = {}  # names the supervisor gave this worker
        self.links: dict[StreamKey, _Link] = {}
        self.link_server: RTMPServer | None = None  # the link listener's (run_worker)
        self.secret = os.environ.get(ENV_SECRET, "")
        self._asked: dict[int, tuple[StreamKey, asyncio.Future[dict[str, Any]]]] = {}
        self._ids = 0
        self._tasks: set[asyncio.Future[None]] = set()
        registry.on_release = self._released
        server.publish_handler = self.publish
        server.publish_gate = self.claim
        if server.relay is not None:
            relay_play = server.relay.play

            def play(session: Session, req: PlayRequest) -> None:
                key = (session.conn.app, req.name)
                link = self.want(key)
                if link is not None and link.stream is None and self._no_wait():
                    # --play-wait 0 refuses a stream not published here at once: the play
                    # waits for the link instead (what it would get on the owner).
                    self._later(link.wait_then(lambda: relay_play(session, req), session, req))
                    return
                relay_play(session, req)

            server.play_handler = play
            server.relay.demand = self.demand
            notify = server.relay.notify

            def notify_clients(event: str, app: str, name: str, player: Any, **extra: Any) -> None:
                # A link is not a player of the service: no play_start/play_stop webhooks
                # (the worker where the player is sends them).
                if notify is not None and not self.is_link(player.session):
                    notify(event, app, name, player, **extra)

            server.relay.notify = notify_clients

    def port_path(self, index: int) -> Path:
        """Where worker `index` writes the port of its link listener."""
        return self.runtime / f"worker-{index}.port"

    def link_url(self, index: int, app: str) -> str | None:
        try:
            port = int(self.port_path(index).read_text())
        except (OSError, ValueError):
            return None  # not listening (yet, or any more)
        return f"rtmp://127.0.0.1:{port}/{app}"

    # --- names ---------------------------------------------------------------------------

    async def publish(self, stream: Stream) -> bool:
        """The publish handler: the name from the supervisor first, then the server's own
        policy (it records)."""
        try:
            await self.claim(stream)
        except Refused:
            if stream.source:
                # A pull (pull.py) whose name another worker has: a plain no, and it tries
                # again later (it takes over when that worker dies).
                return False
            raise
        return self.server.record_publish(stream)

    async def claim(self, stream: Stream) -> bool:
        """The name of `stream` from the supervisor (the publish gate of an unrecorded
        publish); `Refused` if another worker has it and keeps it."""
        self._ids += 1
        request = self._ids
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asked[request] = (stream.key, fut)
        # A pull (pull.py) never takes a name over, here as in one process: two workers
        # running the same static pull would otherwise take it from each other for ever.
        takeover = self.server.config.republish == "takeover" and not stream.source
        _send(
            self.writer,
            {
                "op": "claim",
                "id": request,
                "app": stream.app,
                "name": stream.name,
                "peer": stream.peer,
                "takeover": takeover,
            },
        )
        answer = await fut
        if not answer.get("granted"):
            raise Refused(
                f"{stream.name} is already being published.",
                f"already being published on worker {answer.get('owner')}",
            )
        self.claimed[stream.key] = stream
        return True

    def _released(self, stream: Stream) -> None:
        """A stream left the registry: give its name back unless this worker still has it."""
        key = stream.key
        if self.claimed.get(key) is not stream:
            return
        other = self.registry.get(*key)
        if other is not None and other not in self.registry.internal:
            self.claimed[key] = other
            return
        del self.claimed[key]
        _send(self.writer, {"op": "release", "app": key[0], "name": key[1]})

    def _answered(self, message: dict[str, Any]) -> None:
        entry = self._asked.pop(int(message.get("id", 0)), None)
        if entry is None:
            return
        key, fut = entry
        if not fut.done():
            fut.set_result(message)
        elif message.get("granted") and key not in self.claimed:
            # The publisher left while we asked: the name goes straight back.
            _send(self.writer, {"op": "release", "app": key[0], "name": key[1]})

    def _let_go(self, key: StreamKey, by: str, worker: int) -> None:
        """The supervisor wants this worker's publish of `key` ended: a takeover elsewhere."""
        stream = self.claimed.get(key)
        if stream is not None:
            log.info(
                "stream %s/%s: peer=%s on worker %d takes over from peer=%s",
                *key,
                by,
                worker,
                stream.peer,
            )
            stream.close(f"replaced by peer {by} on worker {worker}")
            if self.registry.get(*key) is stream:
                self.registry.release(stream)
        if key in self.claimed:  # a second local publish of it, now the one that has it
            other = self.claimed.pop(key)
            other.close(f"replaced by peer {by} on worker {worker}")
        _send(self.writer, {"op": "release", "app": key[0], "name": key[1]})

    # --- links ---------------------------------------------------------------------------

    def want(self, key: StreamKey) -> _Link | None:
        """A player here asks for `key`: link to its owner if another worker has it; the
        link, if there is one."""
        link = self.links.get(key)
        owner = self.owners.get(key)
        if link is not None or owner is None or owner == self.index:
            return link
        local = self.registry.get(*key)
        if local is not None and local not in self.registry.internal:
            return None
        url = self.link_url(owner, key[0])
        if url is None:
            return None
        link = self.links[key] = _Link(self, key, owner, url)
        return link

    def demand(self, app: str, name: str) -> bool:
        """The relay's demand hook: a link if another worker has the stream, else the
        server's own pulls (`--pull APP=URL`, claimed like a publish)."""
        if self.want((app, name)) is not None:
            return True
        return self.server.pulls.demand(app, name)

    def _link_play(self, session: Session, req: PlayRequest) -> None:
        """The link listener's play handler: plays for sibling workers only (the key of this
        run in the query), of every track (whatever the client announced)."""
        relay = self.server.relay
        given = urllib.parse.parse_qs(req.query).get(LINK_KEY, [""])[0]
        if relay is None or not self.secret or not hmac.compare_digest(given, self.secret):
            log.warning("peer %s: play on the link listener without the workers' key", session.peer)
            session.conn.reject_play(req, "Not a worker.", code="NetStream.Play.Failed")
            session.close("refused")
            return
        relay.play(session, req)

    def _no_wait(self) -> bool:
        relay = self.server.relay
        return relay is not None and relay.config.play_wait <= 0

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _owner(self, key: StreamKey, owner: int | None) -> None:
        if owner is None:
            self.owners.pop(key, None)
        else:
            self.owners[key] = owner
        link = self.links.get(key)
        if link is not None and link.owner != owner:
            del self.links[key]
            if owner is None:
                link.gone = True  # it ends once the last bytes the owner sent are read
            else:
                link.stop()  # taken over elsewhere: the new owner's link replaces it
        if owner is not None and owner != self.index and self.has_players(key):
            self.want(key)

    def has_players(self, key: StreamKey) -> bool:
        """Whether a client of this worker plays `key`. Links of other workers do not
        count: one kept in its grace here would otherwise pull the stream back from the
        worker that took it over, and the two would feed each other."""
        relay = self.server.relay
        channel = relay.channel(*key) if relay is not None else None
        if channel is None:
            return False
        return any(not self.is_link(p.session) for p in channel.players)

    def is_link(self, session: Any) -> bool:
        """Whether `session` is another worker's link (on the private listener)."""
        return self.link_server is not None and getattr(session, "server", None) is self.link_server

    async def serve_control(self, stop: asyncio.Event) -> None:
        """Act on the supervisor's messages; when it is gone, this worker stops too."""
        async for message in _lines(self.reader, f"worker {self.index}"):
            op = message.get("op")
            try:
                if op == "answer":
                    self._answered(message)
                elif op == "owners":
                    for app, name, owner in message.get("owners", []):
                        self._owner((str(app), str(name)), int(owner))
                elif op == "owner":
                    owner = message.get("worker")
                    key = (str(message.get("app")), str(message.get("name")))
                    self._owner(key, None if owner is None else int(owner))
                elif op == "release":
                    key = (str(message.get("app")), str(message.get("name")))
                    self._let_go(key, str(message.get("by", "?")), int(message.get("worker", -1)))
            except Exception:
                log.exception("worker %d: control message %r failed", self.index, message)
        if not stop.is_set():
            log.error("worker %d: the supervisor is gone; stopping", self.index)
            stop.set()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for link in list(self.links.values()):
            link.stop()
        for _key, fut in self._asked.values():
            if not fut.done():
                fut.set_result({"granted": False, "owner": None})


class _LinkSession(Session):
    """A connection to the link listener: named as a link in the log lines of its plays."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = f"worker-link {self.peer}"


def worker_config(config: ServerConfig, index: int) -> ServerConfig:
    """The configuration of worker `index`: the HTTP side (API, metrics) only on worker 0,
    whose view it shows; the test port of `ENV_TEST_PORTS`, if set, added."""
    listeners = config.listeners()
    ports = [p for p in os.environ.get(ENV_TEST_PORTS, "").split(",") if p.strip()]
    if index < len(ports):
        listeners.append(Listener("rtmp", "127.0.0.1", int(ports[index])))
    return replace(config, listen=listeners, http=config.http if index == 0 else "")


def _link_config(config: ServerConfig) -> ServerConfig:
    """The private listener's: plays only, from sibling workers, with no access rules (the
    socket's directory is the access rule), no recording, no webhooks, no address limit."""
    return replace(
        config,
        record_dir=None,
        http="",
        apps={},
        access=None,
        on_connect="",
        on_publish="",
        on_play="",
        webhook="",
        max_connections_per_ip=0,
    )


async def run_worker(config: ServerConfig, args: argparse.Namespace | None, index: int) -> int:
    """Worker `index`: the public listeners (SO_REUSEPORT), the private link socket, and its
    part of the names, until SIGTERM/SIGINT (or the supervisor's death)."""
    from .cli import reload  # the front-end's SIGHUP: the same as a single server's

    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s")
        )
    runtime = Path(os.environ[ENV_DIR])
    sock = socket.socket(fileno=int(os.environ[ENV_FD]))
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
    cfg = worker_config(config, index)
    registry = WorkerRegistry(cast(Republish, cfg.republish))
    server = RTMPServer(cfg, registry=registry)
    server.reuse_port = True
    pushes = getattr(server, "pushes", None)  # push.py's PushManager, an on_start observer
    if pushes is not None:
        registry.own_only.append(pushes._on_start)
    worker = Worker(index, runtime, server, registry, reader, writer)
    # Plays from sibling workers: the same registry and relay, none of the public rules.
    observers = (list(registry.on_start), list(registry.on_stop))
    link_server = RTMPServer(
        _link_config(cfg),
        registry=registry,
        publish_handler=lambda stream: False,
        play_handler=worker._link_play,
    )
    # It only plays: what its construction attached to the shared registry (a second set of
    # pushes, say) would act on every stream a second time.
    registry.on_start[:], registry.on_stop[:] = observers
    worker.link_server = link_server
    every_track = ClientCapabilities(("*",), (), (), int(CapsEx.MULTITRACK), True)

    def link_session() -> Session:
        session = _LinkSession(link_server)

        def on_event(session: Session, event: Any) -> None:
            # The link feeds players of every kind on its worker: it gets every track, as
            # an Enhanced RTMP multitrack player does (the pull's client announces none).
            if type(event) is Connected:
                session.conn.capabilities = every_track

        session.on_event.append(on_event)
        return session

    stop = asyncio.Event()
    signals: list[signal.Signals] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    if args is not None and args.config is not None:
        loop.add_signal_handler(signal.SIGHUP, reload, server, args)
    else:
        loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP: no --config file to reload")
    try:
        await server.start()
        links = await loop.create_server(link_session, "127.0.0.1", 0)
        port_file = worker.port_path(index)
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(links.sockets[0].getsockname()[1]))
        tmp.replace(port_file)
    except OSError as err:
        print(f"rtmp2-server: worker {index}: cannot listen: {err}", file=sys.stderr)
        await server.close()
        return 1
    control = asyncio.create_task(worker.serve_control(stop))
    _send(writer, {"op": "ready"})
    log.info("accepting up to %d connections", server.max_connections())
    await stop.wait()
    if signals and signals[0] == signal.SIGTERM:
        await server.drain()
    log.info("shutting down: closing %d connection(s)", len(server.sessions))
    worker.close()
    links.close()
    await link_server.close()
    await server.close()
    control.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await control
    writer.close()
    return 0
