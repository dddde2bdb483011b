"""Our server's live path in one process, without sockets: CPU per publisher read and per
player message, for quick A/B of hot-path changes (the capacity ramp is the real figure).

Real `Session` objects of a real `RTMPServer` (the relay on, recording off) get the loadgen's
pre-serialized publisher bytes through `get_buffer`/`buffer_updated`, as uvloop hands them over,
one publisher's 50 ms tick a read, round-robin over `--publishers` sessions; `--players` play
the first stream through transports that count what they are given. The event loop runs the
relay's flushes between rounds. CPU is `time.process_time()` of the rounds alone.

`--stage` stops a publisher's read early, to see where it goes: `copy` (into the shared buffer
and out of it, as `buffer_updated` does), `feed` (that and the chunk reader), `receive` (the
connection's `receive_data`) or `full` (the default: the session, the stream and the relay).

    PYTHONPATH=bench:src python -m rtmpbench.hotpath [--publishers 200] [--players 0]
        [--seconds 20] [--stage full] [--profile out.pstats]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import cProfile
import time
from pathlib import Path
from typing import Any

from rtmp2server.config import RelayConfig
from rtmp2server.protocol.client import ClientConnection
from rtmp2server.protocol.messages import Message
from rtmp2server.server.server import RTMPServer, ServerConfig, Session

from . import media
from .loadgen import Source, load_source

TICK = 0.05


class Transport:
    """What a `Session` needs of a transport; keeps nothing it is given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.written = 0
        self.writes = 0
        self.reading = True
        self.closed = False
        self.kept: list[bytes] | None = []  # what was written, while set up

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1
        if self.kept is not None:
            self.kept.append(bytes(data))

    def writelines(self, pieces: list[bytes]) -> None:
        self.written += sum(map(len, pieces))
        self.writes += 1
        if self.kept is not None:
            self.kept.extend(bytes(p) for p in pieces)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def _feed(session: Session, data: bytes) -> None:
    """`data` as uvloop hands a read to a BufferedProtocol (in reads of its buffer's size)."""
    view = memoryview(data)
    while view:
        buf = session.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        session.buffer_updated(n)
        view = view[n:]


def _feed_stage(session: Session, data: bytes, stage: str) -> None:
    """A publisher's read, as far as `stage` (see the module docstring)."""
    if stage == "full":
        _feed(session, data)
        return
    n = len(data)
    session.get_buffer(n)[:n] = data
    read = session.server._read_view[:n].tobytes()
    if stage == "feed":
        session.conn._reader.feed(read)
    elif stage == "receive":
        session.conn.receive_data(read)
        session.conn.pieces_to_send()  # acknowledgements, not written anywhere


def _client_session(server: RTMPServer, port: int) -> tuple[Session, ClientConnection]:
    session = Session(server)
    session.connection_made(Transport(port))  # type: ignore[arg-type]
    return session, ClientConnection()


def _pump(session: Session, client: ClientConnection, rounds: int = 20) -> list[Any]:
    got: list[Any] = []
    for _ in range(rounds):
        up = client.data_to_send()
        if up:
            _feed(session, up)
        tr = session.transport
        down = b"".join(tr.kept)  # type: ignore[union-attr]
        tr.kept.clear()  # type: ignore[union-attr]
        if down:
            got.extend(client.receive_data(down))
        if not up and not down:
            break
    return got


def _statuses(items: list[Any]) -> list[str]:
    codes = []
    for item in items:
        args = getattr(item, "args", None)
        if args and isinstance(args[-1], dict) and "code" in args[-1]:
            codes.append(args[-1]["code"])
    return codes


async def _publisher(server: RTMPServer, i: int, src: Source) -> Session:
    session, client = _client_session(server, 10000 + i)
    client.connect("live", "rtmp://127.0.0.1/live")
    client.set_chunk_size(4096)
    client.create_stream()
    _pump(session, client)
    client.publish(1, f"s{i}")
    codes = _statuses(_pump(session, client))
    for _ in range(50):
        if "NetStream.Publish.Start" in codes:
            break
        await asyncio.sleep(0.01)
        codes += _statuses(_pump(session, client))
    else:
        raise RuntimeError(f"publisher {i}: no Publish.Start ({codes})")
    _feed(session, src.header_bytes)
    return session


async def _player(server: RTMPServer, i: int, name: str) -> Session:
    session, client = _client_session(server, 30000 + i)
    client.connect("live", "rtmp://127.0.0.1/live")
    client.create_stream()
    _pump(session, client)
    client.play(1, name)
    _pump(session, client)
    return session


def _ticks(src: Source, seconds: float) -> list[bytes]:
    """The bytes a real-time publisher writes in each tick, for `seconds`."""
    out = []
    loop = nxt = 0
    times = src.times
    for k in range(1, int(seconds / TICK) + 1):
        elapsed = k * TICK * 1000.0
        parts = []
        while True:
            j = bisect.bisect_right(times, elapsed - loop * src.period)
            if loop == 0:
                blob, off = src.blob_first, src.offsets_first
            else:
                blob, off = src.blob_loop, src.offsets_loop
            if j > nxt:
                parts.append(blob[off[nxt] : off[j]])
                nxt = j
            if j < len(times):
                break
            loop += 1
            nxt = 0
        out.append(b"".join(parts))
    return out


async def run(args: argparse.Namespace) -> dict[str, float]:
    src = load_source(media.media(Path(args.cache), 10, args.mbit))
    cfg = ServerConfig(
        record_dir=None,
        max_connections=100000,
        max_connections_per_ip=0,
        relay=RelayConfig(gop_cache=not args.no_gop_cache),
    )
    server = RTMPServer(cfg)
    pubs = [await _publisher(server, i, src) for i in range(args.publishers)]
    players = [await _player(server, i, "s0") for i in range(args.players)]
    await asyncio.sleep(0.05)
    for s in pubs + players:
        s.transport.kept = None  # type: ignore[union-attr]
    # Publisher i starts `i * 7 % 40` ticks late, so that keyframes (every 2 s of this file)
    # and GOP drops are spread over time as with publishers that connected one by one.
    lags = [i * 7 % 40 for i in range(len(pubs))]
    rounds = int((args.warmup + args.seconds) / TICK)
    ticks = _ticks(src, args.warmup + args.seconds)
    warm = int(args.warmup / TICK)
    per_tick = len(src.times) * TICK * 1000.0 / src.period
    prof = cProfile.Profile() if args.profile else None
    cpu = 0.0
    reads = 0
    for r in range(rounds):
        measured = r >= warm  # before: GOP caches filled, the heap grown
        t0 = time.process_time()
        if prof and measured:
            prof.enable()
        for s, lag in zip(pubs, lags, strict=True):
            if r >= lag:
                _feed_stage(s, ticks[r - lag], args.stage)
                reads += measured
        await asyncio.sleep(0)  # the relay's flushes (call_soon)
        if prof and measured:
            prof.disable()
        if measured:
            cpu += time.process_time() - t0
    if prof:
        prof.dump_stats(args.profile)
    media_msgs = per_tick * reads
    written = sum(p.transport.written for p in players)  # type: ignore[union-attr]
    for s in pubs + players:
        s.abort()
    out = {
        "publishers": args.publishers,
        "players": args.players,
        "reads": reads,
        "cpu_s": cpu,
        "us_per_read": cpu / reads * 1e6,
        "us_per_message": cpu / media_msgs * 1e6,
        "player_bytes": written,
        "equiv_publishers_per_core": args.publishers * args.seconds / cpu,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--publishers", type=int, default=200)
    ap.add_argument("--players", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds fed before measuring")
    ap.add_argument("--mbit", type=int, default=3)
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".cache"))
    ap.add_argument("--profile", default="")
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--no-gop-cache", action="store_true", help="the relay's GOP cache off")
    ap.add_argument("--stage", choices=("copy", "feed", "receive", "full"), default="full")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    from rtmp2server.protocol import _compiled

    print(_compiled.implementations(), Message.__module__)
    for k, v in asyncio.run(run(args)).items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
