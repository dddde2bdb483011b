"""A loopback TCP proxy that re-splits what the client sends into tiny random writes.

Client to server, every byte is forwarded in writes of 1 to 7 bytes (seeded, so a failure can be
replayed), each a separate `send` on a TCP_NODELAY socket followed by a short pause (50 us): without
the pause the server's reads would coalesce the pieces again (a few hundred bytes each); with it,
most of the server's reads really are 1-7 bytes, so RTMP chunk headers, AMF bodies and handshake
blocks get cut at every possible place. Server to client is copied as is. Plain threads and
blocking sockets, three threads a connection: about 15,000 writes for the 60 KB source take
under 2 s, so the proxy keeps pace with a real-time publish.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0
    writes_up: int = 0
    bytes_down: int = 0


class ResplitProxy:
    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        seed: int = 0,
        min_write: int = 1,
        max_write: int = 7,
        pause: float = 50e-6,
    ) -> None:
        self.target = (target_host, target_port)
        self.seed = seed
        self.min_write = min_write
        self.max_write = max_write
        self.pause = pause
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._writers: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )

    def __enter__(self) -> ResplitProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, stream: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{stream}"

    def start(self) -> None:
        self._accepter.start()

    def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let each connection forward what its client already sent (up to
        `grace` seconds in all), then cut whatever is left."""
        self._closed = True
        stop_accepting(self._listener, self._accepter)
        self.wait_forwarded(grace)
        cut(self._lock, self._sockets, self._threads)

    def wait_forwarded(self, timeout: float = 10.0) -> bool:
        """Wait until every client that closed has had all its bytes passed on to the server."""
        deadline = time.monotonic() + timeout
        for t in list(self._writers):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._writers)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                index = self.stats.connections
                self.stats.connections += 1
                self._sockets += [client, upstream]
            rng = random.Random(f"{self.seed}/{index}")
            pending: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
            pumps = [
                threading.Thread(target=self._read_up, args=(client, pending)),
                threading.Thread(target=self._write_up, args=(pending, client, upstream, rng)),
                threading.Thread(target=self._pump_down, args=(upstream, client)),
            ]
            self._writers.append(pumps[1])
            for t, role in zip(pumps, ("read-up", "write-up", "down"), strict=True):
                t.name = f"proxy-{index}-{role}"
                t.daemon = True
                self._threads.append(t)
                t.start()

    def _read_up(self, src: socket.socket, pending: queue.SimpleQueue[bytes | None]) -> None:
        """Take the client's bytes as soon as they arrive. The slow re-split writing happens in
        another thread: a client that closes with unread data in its own buffer sends a reset,
        and a reset throws away whatever still sat unread in our socket."""
        try:
            while data := src.recv(65536):
                pending.put(data)
        except OSError:
            pass  # reset by the client: forward what arrived, then close
        pending.put(None)

    def _write_up(
        self,
        pending: queue.SimpleQueue[bytes | None],
        src: socket.socket,
        dst: socket.socket,
        rng: random.Random,
    ) -> None:
        lo, hi, pause = self.min_write, self.max_write, self.pause
        try:
            while (data := pending.get()) is not None:
                view = memoryview(data)
                pos, end, writes = 0, len(data), 0
                while pos < end:
                    n = rng.randint(lo, hi)
                    dst.sendall(view[pos : pos + n])
                    pos += n
                    writes += 1
                    if pause:
                        time.sleep(pause)
                with self._lock:
                    self.stats.bytes_up += end
                    self.stats.writes_up += writes
        except OSError:
            # The server reset us: pass that on to the client.
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _pump_down(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    self.stats.bytes_down += len(data)
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def stop_accepting(listener: socket.socket, accepter: threading.Thread) -> None:
    """Close a proxy's listening socket and wait for its accept thread."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    accepter.join(5)


def cut(
    lock: threading.Lock, sockets: Iterable[socket.socket], threads: Iterable[threading.Thread]
) -> None:
    """Shut every socket of a proxy, wait for its threads, then close the sockets."""
    with lock:
        open_sockets = list(sockets)
    for s in open_sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
    for t in list(threads):
        t.join(5)
    for s in open_sockets:
        s.close()
