"""The measurements. Each starts a fresh server, drives it with real clients over loopback,
reads the server's CPU/RSS from /proc, checks completeness, and stops the server.

Every client is bounded in time (subprocess timeouts, asyncio timeouts), and every figure
comes back as a plain dict so `__main__` can take medians over runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import media
from .media import Counts
from .rtmpclient import Client
from .servers import Running, ServerSpec

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]


@dataclass(frozen=True)
class Settings:
    runs: int
    ingest_repeat: int  # pushes of the 20 Mbit/s file per ingest measurement
    live_seconds: float  # length of the real-time 3 Mbit/s file
    publisher_levels: tuple[int, ...]
    player_levels: tuple[int, ...]
    latency_seconds: float
    latency_fps: int
    latency_frame_bytes: int
    memory_connections: int
    work: Path
    cache: Path


@contextlib.contextmanager
def server(spec: ServerSpec, work: Path, tls: bool = False) -> Iterator[Running]:
    if work.exists():
        shutil.rmtree(work)
    running = spec.start(work, tls=tls)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(work / "rec", ignore_errors=True)


def _push(url: str, src: Path, realtime: bool) -> list[str]:
    # ffmpeg's TLS layer (GnuTLS in Debian's 5.1) would check the bench's throwaway certificate.
    tls = ["-tls_verify", "0"] if url.startswith("rtmps://") else []
    pace = ["-re"] if realtime else []
    return [*FFMPEG, *pace, "-i", str(src), "-c", "copy", "-f", "flv", *tls, url]


def _check(srv: Running, names: list[str], expected: Counts) -> tuple[int, list[str]]:
    """How many of the streams `names` were recorded completely, and what was wrong."""
    files = {name: srv.recordings(name) for name in names}
    media.wait_stable([p for paths in files.values() for p in paths])
    good = 0
    problems = []
    for name, paths in files.items():
        if len(paths) != 1:
            problems.append(f"{name}: {len(paths)} recordings")
            continue
        got = media.count_packets(paths[0])
        if got == expected:
            good += 1
        else:
            problems.append(f"{name}: {got} of {expected}")
    return good, problems


# --- ingest --------------------------------------------------------------------------------


def warm_page_cache(work: Path, size: int) -> None:
    """Write and delete `size` bytes where the recordings go, once before measuring.

    On these VMs a page the guest has never touched costs several times more the first time
    it backs the page cache: the first server of a session paid for that and nothing else
    did (nginx-rtmp's first ingest run was 2.4 s/GB, its next ones 1.3). Freed pages are
    reused by the recordings that follow, so every server then writes to warm memory.
    """
    work.mkdir(parents=True, exist_ok=True)
    path = work / "warm.bin"
    block = bytes(4 << 20)
    with open(path, "wb", buffering=0) as f:
        for _ in range(size // len(block)):
            f.write(block)
    path.unlink()


def ingest(
    spec: ServerSpec, s: Settings, src: Path, expected: Counts, tls: bool = False
) -> dict[str, Any]:
    """Push the 20 Mbit/s file `ingest_repeat` times, without -re, one after the other; with
    `tls`, to the server's RTMPS listener (the same pushes, the same accounting: the server's
    CPU includes its side of the TLS, ffmpeg's side is not counted)."""
    with server(spec, s.work / spec.name / ("ingest-rtmps" if tls else "ingest"), tls) as srv:
        names = [f"ingest{i}" for i in range(s.ingest_repeat)]
        walls = []
        failures = []
        user0, sys0 = srv.cpu_times()
        for name in names:
            t0 = time.monotonic()
            proc = subprocess.run(
                _push(srv.url(name), src, False), capture_output=True, timeout=300, check=False
            )
            walls.append(time.monotonic() - t0)
            if proc.returncode != 0:
                failures.append(f"{name}: ffmpeg {proc.returncode}: {proc.stderr[-300:]!r}")
        media.wait_stable([p for n in names for p in srv.recordings(n)])
        user1, sys1 = srv.cpu_times()
        user, system = user1 - user0, sys1 - sys0
        cpu = user + system
        good, problems = _check(srv, names, expected)
    gigabytes = src.stat().st_size * len(names) / 1e9
    return {
        "cpu_s": cpu,
        "cpu_s_per_gb": cpu / gigabytes,
        "user_s_per_gb": user / gigabytes,
        "sys_s_per_gb": system / gigabytes,
        "wall_s": sorted(walls)[len(walls) // 2],
        "complete": good,
        "streams": len(names),
        "problems": failures + problems,
    }


# --- concurrent publishers -----------------------------------------------------------------


def _reap(procs: list[subprocess.Popen[bytes]], deadline: float) -> list[int | None]:
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(max(0.01, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    return codes


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop ffmpeg cleanly: once it is transcoding, one SIGINT only ends its main loop after
    the next packet, a second one also interrupts a read that waits for data."""
    for _ in range(2):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        time.sleep(0.2)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def clients(argvs: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Client processes that are stopped however the block ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for argv in argvs:
            started.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield started
    finally:
        _stop(started)


def publishers(spec: ServerSpec, s: Settings, src: Path, expected: Counts) -> list[dict[str, Any]]:
    """N real-time publishers at once, for growing N until a level fails."""
    levels = []
    with server(spec, s.work / spec.name / "publishers") as srv:
        for n in s.publisher_levels:
            names = [f"pub{n}x{i:03d}" for i in range(n)]
            cpu0 = srv.cpu()
            t0 = time.monotonic()
            with clients([_push(srv.url(name), src, True) for name in names]) as procs:
                codes = _reap(procs, t0 + s.live_seconds * 1.5 + 15)
                wall = time.monotonic() - t0
            media.wait_stable([p for name in names for p in srv.recordings(name)])
            cpu = srv.cpu() - cpu0
            good, problems = _check(srv, names, expected)
            late = wall > s.live_seconds * 1.2 + 3
            ok = good == n and all(c == 0 for c in codes) and not late and srv.alive()
            levels.append(
                {
                    "n": n,
                    "cpu_pct": 100 * cpu / wall,
                    "wall_s": wall,
                    "complete": good,
                    "ok": ok,
                    "problems": problems[:5] + ([f"wall {wall:.1f} s (late)"] if late else []),
                }
            )
            shutil.rmtree(srv.record_dir, ignore_errors=True)
            srv.record_dir.mkdir()
            if not ok:
                break
    return levels


# --- fan-out -------------------------------------------------------------------------------


def fanout(
    spec: ServerSpec, s: Settings, src: Path, expected: Counts, from_key: Counts, out: Path
) -> list[dict[str, Any]]:
    """One real-time publisher, N players that joined before it; growing N.

    The players are rtmpdump (`--live`), which writes what it receives straight to a file:
    ffmpeg as a player holds the tail of the stream in its muxer until it ends, and ffmpeg
    5.1 does not end on NetStream.Play.UnpublishNotify, so it would have to be interrupted
    and loses that tail."""
    levels = []
    with server(spec, s.work / spec.name / "fanout") as srv:
        for n in s.player_levels:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            name = f"fan{n}"
            files = [out / f"player{i:03d}.flv" for i in range(n)]
            dump = ["rtmpdump", "--quiet", "--live", "--timeout", "10", "-r", srv.url(name)]
            with clients([[*dump, "-o", str(f)] for f in files]):
                time.sleep(1.0 + 0.03 * n)  # let every player connect and wait for the stream
                cpu0 = srv.cpu()
                t0 = time.monotonic()
                pub = subprocess.run(
                    _push(srv.url(name), src, True),
                    capture_output=True,
                    timeout=s.live_seconds * 1.5 + 15,
                    check=False,
                )
                time.sleep(1.0)  # the tail of the stream on its way to the players
                wall = time.monotonic() - t0
                cpu = srv.cpu() - cpu0
            good = good_from_key = 0
            problems: list[str] = []
            for f in files:
                got = media.count_packets(f) if f.exists() else None
                if got == expected:
                    good += 1
                if got is not None and got.video >= from_key.video and got.audio >= from_key.audio:
                    good_from_key += 1
                if got != expected and len(problems) < 5:
                    problems.append(f"{f.name}: {got} of {expected}")
            if pub.returncode != 0:
                problems.append(f"publisher: ffmpeg {pub.returncode}: {pub.stderr[-300:]!r}")
            # The sweep goes on while every player got everything from the first keyframe on;
            # `complete` says whether they also got what came before it.
            ok = good_from_key == n and pub.returncode == 0 and srv.alive()
            levels.append(
                {
                    "n": n,
                    "cpu_pct": 100 * cpu / wall,
                    "cpu_pct_per_player": 100 * cpu / wall / n,
                    "wall_s": wall,
                    "complete": good,
                    "complete_from_key": good_from_key,
                    "ok": ok,
                    "problems": problems,
                }
            )
            shutil.rmtree(srv.record_dir, ignore_errors=True)
            srv.record_dir.mkdir()
            if not ok:
                break
    shutil.rmtree(out, ignore_errors=True)
    return levels


# --- relay latency -------------------------------------------------------------------------

_MAGIC = b"RBLT"
_STAMP = struct.Struct(">4sIQ")  # magic, sequence number, send time (monotonic ns)


def _frame(seq: int, key: bool, size: int) -> bytes:
    """An AVC NALU video message whose one NAL unit (type 12, filler) carries the stamp."""
    nal = b"\x0c" + _STAMP.pack(_MAGIC, seq, time.monotonic_ns())
    nal += b"\xff" * max(0, size - len(nal) - 9)
    return (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" + len(nal).to_bytes(4, "big") + nal


async def _latency(port: int, s: Settings, headers: list[tuple[int, bytes]]) -> dict[str, Any]:
    delays: list[float] = []
    seen: set[int] = set()

    def on_media(msg: Any, now: int) -> None:
        payload = bytes(msg.payload)
        at = payload.find(_MAGIC, 0, 16)
        if at >= 0:
            _, seq, sent = _STAMP.unpack_from(payload, at)
            if seq not in seen:
                seen.add(seq)
                delays.append((now - sent) / 1e6)

    pub = Client(port)
    player = Client(port, on_media=on_media)
    try:
        await pub.open()
        await pub.publish("latency")
        for type_id, payload in headers:
            pub.send(type_id, 0, payload)
        await player.open()
        await player.play("latency")
        await asyncio.sleep(0.5)
        count = int(s.latency_seconds * s.latency_fps)
        period = 1.0 / s.latency_fps
        start = time.monotonic()
        for seq in range(count):
            delay = start + seq * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = int(seq * 1000 / s.latency_fps)
            pub.send(9, ts, _frame(seq, seq % s.latency_fps == 0, s.latency_frame_bytes))
            await pub.drain()
        deadline = time.monotonic() + 3
        while len(seen) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await pub.close()
        await player.close()
    delays.sort()

    def pct(p: float) -> float:
        return delays[min(len(delays) - 1, int(p * len(delays)))] if delays else float("nan")

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "received": len(seen), "sent": count}


def latency(spec: ServerSpec, s: Settings, headers: list[tuple[int, bytes]]) -> dict[str, Any]:
    with server(spec, s.work / spec.name / "latency") as srv:
        return asyncio.run(asyncio.wait_for(_latency(srv.port, s, headers), s.latency_seconds + 40))


# --- memory per connection ----------------------------------------------------------------


async def _hold(
    port: int, n: int, headers: list[tuple[int, bytes]], measure: Any
) -> tuple[int, int]:
    clients: list[Client] = []

    async def one(i: int) -> None:
        c = Client(port, lenient=True)
        clients.append(c)
        await c.open()
        await c.publish(f"mem{i:04d}")
        for type_id, payload in headers:
            c.send(type_id, 0, payload)
        c.send(9, 0, _frame(i, True, 2000))
        await c.drain()

    try:
        for i in range(n):  # one after the other: pyrtmp stalls some concurrent handshakes
            await one(i)
        await asyncio.sleep(1.0)
        return int(measure()), sum(c.broken is not None for c in clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def memory(spec: ServerSpec, s: Settings, headers: list[tuple[int, bytes]]) -> dict[str, Any]:
    """RSS growth of the server tree with N open publishing connections, per connection."""
    with server(spec, s.work / spec.name / "memory") as srv:
        time.sleep(0.5)
        before = srv.rss()
        n = s.memory_connections
        after, unparsed = asyncio.run(asyncio.wait_for(_hold(srv.port, n, headers, srv.rss), 120))
        alive = srv.alive()
    return {
        "rss_before": before,
        "rss_after": after,
        "kib_per_conn": (after - before) / n / 1024,
        "replies_unparsed": unparsed,
        "server_alive": alive,
    }
