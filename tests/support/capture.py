"""Recorded real client connections: a recording TCP proxy and the session's cached captures.

A `CaptureProxy` sits between a real client and a server and keeps, per connection, every read
of the client's bytes (the "segments", each with its time since the accept) and a count of the
server's. `record_captures()` runs the real clients once per test session through such a proxy
in front of an `rtmp2-server` process: Debian's ffmpeg, GStreamer `rtmp2sink` and librtmp
(GStreamer `rtmpsink`) each publishing the source media, and `rtmpdump` playing a live stream
that ffmpeg publishes beside it. Each capture is checked to be a whole, successful session
(publishes: the server's recording holds every frame of the source) before it is cached, so a
fuzzer replaying it starts from what a real client really sends. Under pytest-xdist the workers
share one copy, made by whoever takes the lock first (as `media.py` does for the source).

On disk a capture is `<name>.bin` (the client's bytes) and `<name>.json` (the client, its role,
the stream it names and the segment lengths and times).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clients import Publisher, publish_command
from .media import SourceMedia
from .probe import av_counts
from .proxy import cut, stop_accepting
from .server import running_server

RTMPDUMP = shutil.which("rtmpdump") or "rtmpdump"

# Every publish capture names this stream, so that a replay can give each copy a name of its own
# by overwriting these bytes with another name of the same length (see `with_stream_name`).
CAPTURE_STREAM = "fz0000000"
# The stream the play capture plays: the fuzzer's good publisher publishes it.
PLAY_STREAM = "good"

PUBLISHERS = ("ffmpeg-debian", "gst-rtmp2sink", "gst-rtmpsink")
CAPTURES = (*PUBLISHERS, "rtmpdump-play")
_VERSION = 1  # bump when the way captures are made changes, so old caches are not reused


@dataclass(slots=True)
class Capture:
    """What one client sent on one connection."""

    name: str
    role: str  # "publish" or "play"
    stream: str
    data: bytes
    segments: list[int]  # lengths of the reads the proxy made, in order; they sum to len(data)
    times: list[float] = field(default_factory=list)  # each read's time since the accept, s
    bytes_down: int = 0  # what the server sent back

    def save(self, folder: Path) -> None:
        (folder / f"{self.name}.bin").write_bytes(self.data)
        meta = {
            "name": self.name,
            "role": self.role,
            "stream": self.stream,
            "segments": self.segments,
            "times": self.times,
            "bytes_down": self.bytes_down,
        }
        (folder / f"{self.name}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, name: str) -> Capture:
        meta = json.loads((folder / f"{name}.json").read_text())
        data = (folder / f"{name}.bin").read_bytes()
        capture = cls(
            name=meta["name"],
            role=meta["role"],
            stream=meta["stream"],
            data=data,
            segments=[int(n) for n in meta["segments"]],
            times=[float(t) for t in meta["times"]],
            bytes_down=int(meta["bytes_down"]),
        )
        if sum(capture.segments) != len(data):
            raise ValueError(f"capture {name}: segments do not add up to the data")
        return capture

    def with_stream_name(self, name: str) -> bytes:
        """The data with every occurrence of the stream name replaced by `name` (same length)."""
        if len(name) != len(self.stream):
            raise ValueError(f"{name!r} must be {len(self.stream)} characters like {self.stream!r}")
        return self.data.replace(self.stream.encode(), name.encode())


@dataclass(slots=True)
class _Connection:
    started: float
    segments: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    bytes_down: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class CaptureProxy:
    """A loopback TCP proxy that forwards both ways unchanged and records what clients send.

    Plain threads and blocking sockets, two threads a connection; each client read is
    forwarded as one write before the next read, so the server sees the client's timing.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(
            target=self._accept_loop, name="capture-accept", daemon=True
        )

    def __enter__(self) -> CaptureProxy:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, stream: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{stream}"

    def close(self) -> None:
        self._closed = True
        stop_accepting(self._listener, self._accepter)
        cut(self._lock, self._sockets, self._threads)

    def wait_done(self, timeout: float = 10.0) -> bool:
        """Wait until every client connection so far has closed its side."""
        deadline = time.monotonic() + timeout
        return all(c.done.wait(max(0.0, deadline - time.monotonic())) for c in self.connections)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            conn = _Connection(started=time.monotonic())
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections.append(conn)
                self._sockets += [client, upstream]
            for target, role in ((self._pump_up, "up"), (self._pump_down, "down")):
                t = threading.Thread(
                    target=target, args=(client, upstream, conn), name=f"capture-{role}"
                )
                t.daemon = True
                self._threads.append(t)
                t.start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket, conn: _Connection) -> None:
        try:
            while data := client.recv(65536):
                conn.segments.append(data)
                conn.times.append(time.monotonic() - conn.started)
                upstream.sendall(data)
        except OSError:
            pass  # reset by either end: what arrived so far is the capture
        conn.done.set()
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _pump_down(self, client: socket.socket, upstream: socket.socket, conn: _Connection) -> None:
        try:
            while data := upstream.recv(65536):
                conn.bytes_down += len(data)
                client.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


def _one_connection(proxy: CaptureProxy, name: str, role: str, stream: str) -> Capture:
    if not proxy.wait_done(15):
        raise TimeoutError(f"capture {name}: the client connection did not end")
    if len(proxy.connections) != 1:
        raise AssertionError(f"capture {name}: {len(proxy.connections)} connections, expected 1")
    conn = proxy.connections[0]
    return Capture(
        name=name,
        role=role,
        stream=stream,
        data=b"".join(conn.segments),
        segments=[len(s) for s in conn.segments],
        times=conn.times,
        bytes_down=conn.bytes_down,
    )


def _capture_publish(client: str, source: SourceMedia, work: Path) -> Capture:
    with running_server(work / client / "rec", work / client / "server.log") as server:
        with CaptureProxy(server.port) as proxy:
            done = Publisher(publish_command(client, source.path, proxy.url(CAPTURE_STREAM)))
            result = done.wait(60)
            if result.returncode != 0:
                raise RuntimeError(f"{client} exited {result.returncode}:\n{result.stdout}")
            capture = _one_connection(proxy, client, "publish", CAPTURE_STREAM)
        server.wait_publish("stop", CAPTURE_STREAM)
        counts = av_counts(server.recording(CAPTURE_STREAM))
    if counts != source.counts:
        raise AssertionError(
            f"capture {client}: the server recorded {counts}, the source has {source.counts}"
        )
    return capture


def _capture_play(source: SourceMedia, work: Path) -> Capture:
    with running_server(work / "play" / "rec", work / "play" / "server.log") as server:
        publisher = Publisher(
            publish_command("ffmpeg-debian", source.path, server.url(PLAY_STREAM))
        )
        try:
            server.wait_publish("start", PLAY_STREAM)
            with CaptureProxy(server.port) as proxy:
                out = work / "play" / "played.flv"
                proc = subprocess.run(
                    [RTMPDUMP, "-q", "--live", "-r", proxy.url(PLAY_STREAM), "-o", str(out)],
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=60,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"rtmpdump exited {proc.returncode}:\n{proc.stderr}")
                capture = _one_connection(proxy, "rtmpdump-play", "play", PLAY_STREAM)
        finally:
            publisher.wait(60)
    played = av_counts(out)
    if played["video"] == 0 or played["audio"] == 0:
        raise AssertionError(f"capture rtmpdump-play: rtmpdump received only {played}")
    return capture


def record_captures(cache_dir: Path, source: SourceMedia) -> dict[str, Capture]:
    """Every capture in `cache_dir`, made on first use (each checked as described above)."""
    folder = cache_dir / f"v{_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = folder / "work"
        for name in CAPTURES:
            if (folder / f"{name}.json").exists():
                continue
            if name in PUBLISHERS:
                capture = _capture_publish(name, source, work)
            else:
                capture = _capture_play(source, work)
            capture.save(folder)
        return {name: Capture.load(folder, name) for name in CAPTURES}
