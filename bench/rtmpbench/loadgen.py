"""Capacity per core: one process drives N real-time publishers and M players, each server is
pinned to core 0 and the generator to core 1, and the load grows until the server cannot keep up.

    python -m rtmpbench.loadgen [--servers nginx-rtmp,ours+uvloop] [--window 10]
        [--publisher-steps 100,200,...] [--player-steps 100,200,...] [--only publishers,players]

What the generator does, and why it is cheap enough to measure nginx-rtmp rather than itself:
- Media: the bench's 3 Mbit/s H.264 + AAC FLV (`media.media`), its codec headers sent once
  and its other tags looped, timestamps continuing across loops (loop k adds k * period).
  Every message is pre-serialized once into one byte string per loop (chunk size 4096,
  audio on chunk stream 4 and video on 6, type-1 headers whose deltas are the same every loop,
  so the loop's bytes never change); a publisher writes a slice of it per tick.
- Pace: one task ticks every `--tick` seconds and writes, for every publisher, the messages
  whose timestamps are due since its own start (publishers start at different times, so their
  bursts spread over the tick).
- Players parse with the chunk parser below: the basic and message headers in Python, and a
  message whose chunks arrive contiguously is checked in one step, a CRC-32 of its whole chunked
  body (payload plus the server's type-3 chunk headers) against the source's for that chunk
  stream id and chunk size. Anything else (interleaved chunks, control, commands) goes the
  general way (pieces joined, payload compared with the source's bytes).
- Every media message of a player is checked: its type's next source message in order (a gap,
  a duplicate, a reordering is an error), its length, its payload, its timestamp (the
  server may rebase a player's timestamps, but the deltas must be the publisher's), and how
  far behind real time it arrives (against the publisher's clock).

- `FlvPlayer` does the same checks on the FLV tags of an HTTP-FLV response, `Probe` reads on
  every arrival and times each message from its publisher's write (the latency figure, run in
  its own process by `probe.py`), and `memory` takes RSS growth per publisher, per player and
  per player that stopped reading. `section2.py` runs every figure of issue 13 in one go.

A level fails when the server's core is above `--max-cpu` (95%), a publisher's send buffer has
not drained for more than `--max-block` s, a player is more than `--max-lag` s behind real time,
or anything is lost (an error above, a closed connection, a client that could not connect).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import json
import os
import platform
import resource
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rtmp2server.protocol import amf0

from . import media, procs, servers
from .servers import BENCH, CACHE, ServerSpec

CHUNK = 4096
CSID_AUDIO = 4
CSID_VIDEO = 6
CSID_CMD = 3
_TAG = struct.Struct(">B3s3sB3s")


# --- the source --------------------------------------------------------------------------


@dataclass
class Track:
    """The looped messages of one type (8 audio, 9 video), in order."""

    type_id: int
    rel: list[int] = field(default_factory=list)
    """Timestamp of each message, ms from the loop's start."""
    payloads: list[bytes] = field(default_factory=list)
    index: dict[bytes, int] = field(default_factory=dict)
    crcs: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    """(chunk stream id, chunk size) -> CRC-32 of each message's chunked body."""

    def crc_list(self, csid: int, chunk: int) -> list[int]:
        key = (csid, chunk)
        got = self.crcs.get(key)
        if got is None:
            hdr = _basic(3, csid)
            got = [zlib.crc32(_chunked(p, chunk, hdr)) for p in self.payloads]
            self.crcs[key] = got
        return got


@dataclass
class Source:
    headers: list[tuple[int, bytes]]
    tracks: dict[int, Track]
    period: int
    """ms: loop k's timestamps are the file's plus k * period."""
    order: list[tuple[int, int]]
    """(type, ts) of every looped message in file order."""
    blob_first: bytes
    blob_loop: bytes
    offsets_first: list[int]
    offsets_loop: list[int]
    times: list[int]
    types: list[int]
    """ms from the loop's start of each message of `order` (not decreasing)."""
    header_bytes: bytes
    bitrate: float
    pos_of: dict[int, list[int]] = field(default_factory=dict)
    """type -> the index in `order` of each of its messages"""
    nxt: dict[int, list[int]] = field(default_factory=dict)
    """type -> for each index g of `order` (and len(order)): its messages before g"""
    last_of: dict[int, list[int]] = field(default_factory=dict)
    """type -> for each g: the index in `order` of its last message before g, or -1"""


class Replay:
    """The exact bytes (header and chunked body) the server sent a player for each message of
    the loop, as checked the long way by the first player that got it whole. Every player of
    the same server gets the same bytes for the same message unless the server rebases its
    timestamps in a type-0 header, so another player's next bytes are checked by one compare
    (`bytes.startswith`): equal bytes are the same header after the same, checked, state."""

    def __init__(self, n: int) -> None:
        self.raw: list[bytes | None] = [None] * n
        self.meta: list[tuple[int, int, int, int] | None] = [None] * n
        self.tails: list[bytes | None] = [None] * n
        """For a type-0 header (its timestamp absolute, so different for each player whose
        timestamps the server rebases, as ours does): the bytes after the timestamp; the
        timestamp itself is checked against the player's own base."""
        """(chunk stream id, timestamp delta, length, type) of each recorded message"""


def _basic(fmt: int, csid: int) -> bytes:
    assert 2 <= csid < 64
    return bytes([(fmt << 6) | csid])


def _chunked(payload: bytes, chunk: int, hdr3: bytes) -> bytes:
    parts = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    return hdr3.join(parts)


def _header(fmt: int, csid: int, ts: int, length: int, type_id: int, sid: int = 1) -> bytes:
    b = _basic(fmt, csid)
    if fmt == 0:
        return (
            b
            + ts.to_bytes(3, "big")
            + length.to_bytes(3, "big")
            + bytes([type_id])
            + (sid.to_bytes(4, "little"))
        )
    return b + ts.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])


def load_source(path: Path) -> Source:
    data = path.read_bytes()
    pos = int.from_bytes(data[5:9], "big") + 4
    tags: list[tuple[int, int, bytes]] = []
    while pos + 11 <= len(data):
        tag_type, size, ts, ext, _ = _TAG.unpack_from(data, pos)
        n = int.from_bytes(size, "big")
        t = int.from_bytes(ts, "big") | (ext << 24)
        payload = data[pos + 11 : pos + 11 + n]
        pos += 11 + n + 4
        if len(payload) == n:
            tags.append((tag_type, t, payload))
    heads = media.codec_headers(path)
    head_set = {p for _, p in heads}
    tracks = {8: Track(8), 9: Track(9)}
    order: list[tuple[int, int, bytes]] = []
    for tag_type, t, payload in tags:
        if tag_type not in (8, 9) or payload in head_set:
            continue
        tr = tracks[tag_type]
        if payload in tr.index:  # a repeated payload could not be told apart: keep the first
            continue
        tr.index[payload] = len(tr.payloads)
        tr.payloads.append(payload)
        tr.rel.append(t)
        order.append((tag_type, t, payload))
    video = tracks[9].rel
    frame = max(1, round((video[-1] - video[0]) / max(1, len(video) - 1)))
    period = max(t for _, t, _ in order) + frame
    # Chunked bytes of one loop, with type-1 headers: each delta is from the previous message
    # of the same chunk stream, which at the loop's start is the previous loop's last.
    csid = {8: CSID_AUDIO, 9: CSID_VIDEO}
    last = {8: tracks[8].rel[-1] - period, 9: tracks[9].rel[-1] - period}
    hdr3 = {k: _basic(3, v) for k, v in csid.items()}
    first: list[bytes] = []
    loop: list[bytes] = []
    seen: set[int] = set()
    prev = dict(last)
    for tag_type, t, payload in order:
        body = _chunked(payload, CHUNK, hdr3[tag_type])
        delta = t - prev[tag_type]
        loop.append(_header(1, csid[tag_type], delta, len(payload), tag_type) + body)
        if tag_type in seen:
            first.append(loop[-1])
        else:  # after the codec headers, sent at timestamp 0 with type-0 headers
            seen.add(tag_type)
            first.append(_header(1, csid[tag_type], t, len(payload), tag_type) + body)
        prev[tag_type] = t

    def offsets(parts: list[bytes]) -> list[int]:
        out = [0]
        for p in parts:
            out.append(out[-1] + len(p))
        return out

    header_bytes = b"".join(
        _header(0, csid[tt], 0, len(p), tt) + _chunked(p, CHUNK, hdr3[tt]) for tt, p in heads
    )
    total = sum(len(p) for _, _, p in order)
    pos_of: dict[int, list[int]] = {8: [], 9: []}
    nxt: dict[int, list[int]] = {8: [], 9: []}
    last_of: dict[int, list[int]] = {8: [], 9: []}
    for g, (tt, _, _) in enumerate(order):
        for t in (8, 9):
            nxt[t].append(len(pos_of[t]))
            last_of[t].append(pos_of[t][-1] if pos_of[t] else -1)
        pos_of[tt].append(g)
    for t in (8, 9):
        nxt[t].append(len(pos_of[t]))
        last_of[t].append(pos_of[t][-1])
    return Source(
        pos_of=pos_of,
        nxt=nxt,
        last_of=last_of,
        headers=heads,
        tracks=tracks,
        period=period,
        order=[(tt, t) for tt, t, _ in order],
        blob_first=b"".join(first),
        blob_loop=b"".join(loop),
        offsets_first=offsets(first),
        offsets_loop=offsets(loop),
        times=[t for _, t, _ in order],
        types=[tt for tt, _, _ in order],
        header_bytes=header_bytes,
        bitrate=total * 8 / (period / 1000),
    )


# --- a minimal RTMP client ---------------------------------------------------------------


class Stats:
    """What went wrong, summed over every client of a run."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.examples: list[str] = []
        self.media = 0
        self.bytes_in = 0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())


def _command(name: str, tid: float, *args: Any, sid: int = 0, csid: int = CSID_CMD) -> bytes:
    payload = amf0.encode(name, tid, *args)
    return _header(0, csid, 0, len(payload), 20, sid) + _chunked(payload, CHUNK, _basic(3, csid))


def _control(type_id: int, payload: bytes) -> bytes:
    return _header(0, 2, 0, len(payload), type_id, 0) + payload


class Conn(asyncio.Protocol):
    """One RTMP client connection: handshake, connect, createStream, then publish or play.
    Parses everything the server sends; media is checked by `Player`."""

    def __init__(self, stats: Stats, app: str) -> None:
        self.stats = stats
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.handshaken = False
        self.in_chunk = 128
        self.cs: dict[int, list[Any]] = {}
        # csid -> [ts, delta, length, type, sid, remaining, pieces]
        self.received = 0
        self.acked = 0
        self.ack_window = 2_500_000
        self.waiters: dict[float, asyncio.Future[list[Any]]] = {}
        self.status: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = False
        self.label = ""
        self.hs_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exp: dict[int, list[Any]] = {}
        self.batched = False
        self.stalled = False
        """Never resumed by `Run._reads`: a player that stops reading (the memory figure)."""
        self.g: int | None = None
        """Player: the index in the source's order of the next message, when aligned."""
        self.k = 0
        self.gm = -1
        self.replay: Replay | None = None
        """Reading is paused after each read and resumed by `Run._reads` every
        `--read-interval` s: one read per interval instead of one per message."""

    # transport side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"\x03" + bytes(8) + os.urandom(1528))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost(exc)
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))
        if not self.hs_done.done():
            self.hs_done.set_exception(ConnectionError("closed in handshake"))

    def on_lost(self, exc: Exception | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        if self.received - self.acked >= self.ack_window:
            self.acked = self.received
            assert self.transport is not None
            self.transport.write(_control(3, (self.received & 0xFFFFFFFF).to_bytes(4, "big")))
        buf = self.buf + data if self.buf else data
        if not self.handshaken:
            if len(buf) < 3073:
                self.buf = buf
                return
            assert self.transport is not None
            self.transport.write(buf[1:1537])  # C2 echoes S1
            self.handshaken = True
            buf = buf[3073:]
            if not self.hs_done.done():  # not given up on (a connect timeout)
                self.hs_done.set_result(None)
        try:
            self.buf = self.parse(buf)
        except Exception as err:  # a bug of ours: counted as a loss, not hidden
            where = err.__traceback__.tb_next if err.__traceback__ else None
            line = where.tb_lineno if where else 0
            self.fail("generator error", f"{type(err).__name__}: {err} (loadgen.py:{line})")
            return
        if self.batched and self.transport is not None:
            self.transport.pause_reading()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # the chunk parser
    def parse(self, buf: bytes) -> bytes:
        """Consume every whole chunk of `buf`; returns what is left over. A chunk's header is
        only applied to its chunk stream once the chunk is complete (it is parsed again from
        its start when more bytes arrive)."""
        mv = memoryview(buf)
        n = len(buf)
        pos = 0
        cs = self.cs
        chunk = self.in_chunk
        fast = self.fast_media
        replay = self.replay
        order_len = len(self.replay.raw) if self.replay is not None else 0
        while pos < n:
            g = self.g
            if g is not None and replay is not None:
                raw = replay.raw
                tails = replay.tails
                k = self.k
                skipped = 0
                exp = self.exp
                base = {8: exp[8][2], 9: exp[9][2]}
                types = self.src.types
                times = self.src.times
                period = self.src.period
                while pos < n:
                    ex = raw[g]
                    if ex is None:
                        break
                    tail = tails[g]
                    if tail is None:
                        if not buf.startswith(ex, pos):
                            break
                    else:
                        if buf[pos] != ex[0] or not buf.startswith(tail, pos + 4):
                            break
                        ts = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
                        if ts != base[types[g]] + k * period + times[g]:
                            break
                    pos += len(ex)
                    skipped += 1
                    g += 1
                    if g == order_len:
                        g = 0
                        k += 1
                if skipped:
                    self.resync(g, k, skipped)
                if pos >= n:
                    break
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 63
            p = pos + 1
            if csid < 2:
                if csid == 0:
                    if p >= n:
                        break
                    csid = 64 + buf[p]
                    p += 1
                else:
                    if p + 1 >= n:
                        break
                    csid = 64 + buf[p] + 256 * buf[p + 1]
                    p += 2
            st = cs.get(csid)
            if fmt == 3:
                if st is None:
                    self.fail("protocol", f"type-3 chunk on new chunk stream {csid}")
                    return b""
                if st[6] is not None:  # the next chunk of a message
                    take = st[5] if st[5] < chunk else chunk
                    if p + take > n:
                        break
                    st[6].append(buf[p : p + take])
                    st[5] -= take
                    pos = p + take
                    if st[5] == 0:
                        payload = b"".join(st[6])
                        st[6] = None
                        self.message(st[3], st[0], payload)
                        if self.closed:
                            return b""
                        chunk = self.in_chunk
                    continue
                # a new message with the previous one's header
                delta = st[1]
                ts = st[0] + delta
                length = st[2]
                type_id = st[3]
                sid = st[4]
            elif fmt == 0:
                if p + 11 > n:
                    break
                ts = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                type_id = buf[p + 6]
                sid = int.from_bytes(buf[p + 7 : p + 11], "little")
                p += 11
                if ts == 0xFFFFFF:
                    if p + 4 > n:
                        break
                    ts = int.from_bytes(buf[p : p + 4], "big")
                    p += 4
                delta = 0  # as nginx-rtmp: a type-3 new message after a type-0 repeats its time
            else:
                if st is None:
                    self.fail("protocol", f"type-{fmt} chunk on new chunk stream {csid}")
                    return b""
                hl = 7 if fmt == 1 else 3
                if p + hl > n:
                    break
                delta = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                if fmt == 1:
                    length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                    type_id = buf[p + 6]
                else:
                    length = st[2]
                    type_id = st[3]
                sid = st[4]
                p += hl
                if delta == 0xFFFFFF:
                    if p + 4 > n:
                        break
                    delta = int.from_bytes(buf[p : p + 4], "big")
                    p += 4
                ts = st[0] + delta
            if (type_id == 9 or type_id == 8) and fast is not None and length > 0:
                # the whole message contiguous: one CRC over its chunked body
                body = length + ((length - 1) // chunk) * (1 if csid < 64 else 2)
                if p + body > n and self.exp.get(type_id) is not None:
                    break  # wait for the rest: a contiguous message is checked in one step
                if p + body <= n and fast(type_id, ts, length, csid, chunk, mv[p : p + body]):
                    gm = self.gm
                    if gm >= 0 and replay is not None and replay.raw[gm] is None:
                        replay.raw[gm] = bytes(mv[pos : p + body])
                        if fmt == 0 and csid < 64 and p == pos + 12:
                            replay.tails[gm] = bytes(mv[pos + 4 : p + body])
                        replay.meta[gm] = (csid, delta, length, type_id)
                    if st is None:
                        st = cs[csid] = [0, 0, 0, 0, 0, 0, None]
                    st[0] = ts
                    st[1] = delta
                    st[2] = length
                    st[3] = type_id
                    st[4] = sid
                    pos = p + body
                    continue
            take = length if length < chunk else chunk
            if p + take > n:
                break
            if st is None:
                st = cs[csid] = [0, 0, 0, 0, 0, 0, None]
            st[0] = ts
            st[1] = delta
            st[2] = length
            st[3] = type_id
            st[4] = sid
            st[5] = length - take
            pos = p + take
            if take < length:
                st[6] = [buf[p : p + take]]
                continue
            st[6] = None
            self.message(type_id, ts, buf[p : p + take])
            if self.closed:
                return b""
            chunk = self.in_chunk
        return bytes(mv[pos:]) if pos < n else b""

    def resync(self, g: int, k: int, skipped: int) -> None:
        pass

    fast_media: Callable[[int, int, int, int, int, memoryview], bool] | None = None

    def fail(self, kind: str, detail: str) -> None:
        self.stats.error(kind, f"{self.label} {detail}")
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def message(self, type_id: int, ts: int, payload: bytes) -> None:
        if type_id == 1:
            self.in_chunk = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        elif type_id == 5:
            self.ack_window = max(1, int.from_bytes(payload[:4], "big") // 2)
        elif type_id == 4:
            if payload[:2] == b"\x00\x06":  # ping request: answer, or nginx drops us
                self.send(_control(4, b"\x00\x07" + payload[2:6]))
        elif type_id == 20:
            try:
                values = amf0.decode_all(payload)
            except Exception as err:
                self.fail("protocol", f"bad command: {err}")
                return
            name = values[0] if values else ""
            if name in ("_result", "_error") and len(values) > 1:
                fut = self.waiters.pop(values[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(values)
            elif name == "onStatus":
                info = next((v for v in values[2:] if isinstance(v, dict)), {})
                self.status.put_nowait(info)
        elif type_id in (8, 9):
            self.media_message(type_id, ts, payload)

    def media_message(self, type_id: int, ts: int, payload: bytes) -> None:
        pass

    async def call(self, data: bytes, tid: float, timeout: float) -> list[Any]:
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiters[tid] = fut
        self.send(data)
        reply = await asyncio.wait_for(fut, timeout)
        if reply[0] != "_result":
            raise ConnectionError(f"{reply}")
        return reply

    async def wait_status(self, code: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            info = await asyncio.wait_for(self.status.get(), max(0.01, deadline - time.monotonic()))
            if info.get("code") == code:
                return
            if info.get("level") == "error":
                raise ConnectionError(f"{info.get('code')}: {info.get('description')}")

    async def setup(self, port: int, timeout: float) -> int:
        await asyncio.wait_for(self.hs_done, timeout)
        self.send(_control(1, CHUNK.to_bytes(4, "big")))
        url = f"rtmp://127.0.0.1:{port}/{self.app}"
        info = {"app": self.app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": url}
        await self.call(_command("connect", 1.0, info), 1.0, timeout)
        self.send(_control(5, (2_500_000).to_bytes(4, "big")))
        reply = await self.call(_command("createStream", 2.0, None), 2.0, timeout)
        return int(next(v for v in reply[2:] if isinstance(v, (int, float))))


class Publisher(Conn):
    def __init__(self, stats: Stats, app: str, name: str, src: Source) -> None:
        super().__init__(stats, app)
        self.name = name
        self.src = src
        self.label = f"publisher {name}"
        self.t0 = 0.0
        self.loop = 0
        self.next = 0
        self.blocked_since: float | None = None
        self.max_blocked = 0.0
        self.live = False
        self.sends: list[int] | None = None
        """When a latency probe watches this publisher: the end (global index, loop *
        len(order) + index in the loop, exclusive) of each write, and `sent_at` its time."""
        self.sent_at: list[float] = []

    def on_lost(self, exc: Exception | None) -> None:
        if self.live:
            self.stats.error("publisher closed", f"{self.label}: {exc}")

    async def start(self, port: int, timeout: float) -> None:
        sid = await self.setup(port, timeout)
        self.send(_command("publish", 0.0, None, self.name, "live", sid=sid, csid=8))
        await self.wait_status("NetStream.Publish.Start", timeout)
        if sid != 1:
            raise ConnectionError(f"stream id {sid}: the pre-serialized chunks assume 1")
        self.send(self.src.header_bytes)
        self.t0 = time.monotonic()
        self.live = True

    def pump(self, now: float, max_buffer: int) -> None:
        tr = self.transport
        if not self.live or tr is None or self.closed:
            return
        if tr.get_write_buffer_size() > 0:
            if self.blocked_since is None:
                self.blocked_since = now
            else:
                self.max_blocked = max(self.max_blocked, now - self.blocked_since)
            if tr.get_write_buffer_size() > max_buffer:
                return
        else:
            self.blocked_since = None
        src = self.src
        period = src.period
        times = src.times
        elapsed = (now - self.t0) * 1000.0
        while True:
            in_loop = elapsed - self.loop * period
            j = bisect.bisect_right(times, in_loop)
            if j > self.next:
                if self.sends is not None:
                    self.sends.append(self.loop * len(times) + j)
                    self.sent_at.append(now)
                if self.loop == 0:
                    off = src.offsets_first
                    tr.write(memoryview(src.blob_first)[off[self.next] : off[j]])
                else:
                    off = src.offsets_loop
                    tr.write(memoryview(src.blob_loop)[off[self.next] : off[j]])
                self.next = j
            if j < len(times):
                return
            self.loop += 1
            self.next = 0

    def sent(self, g: int) -> float | None:
        """When the message of global index `g` was written (None: not recorded)."""
        sends = self.sends
        if sends is None:
            return None
        i = bisect.bisect_right(sends, g)
        return self.sent_at[i] if i < len(sends) else None

    def position_ms(self, now: float) -> float:
        """The media time (ms, from the first loop's start) due now."""
        return (now - self.t0) * 1000.0


class Player(Conn):
    def __init__(self, stats: Stats, app: str, name: str, src: Source, pub: Publisher) -> None:
        super().__init__(stats, app)
        self.name = name
        self.src = src
        self.pub = pub
        self.label = f"player of {name}"
        self.heads = {p for _, p in src.headers}
        # self.exp, per type: [next index, loop, ts base, crc list or None, (csid, chunk)]
        self.last_abs = -1.0
        self.count = 0
        self.top = -1
        """The global index (loop * len(order) + index) of the newest message checked."""
        self.live = False
        self.fast_media = self._fast

    def on_lost(self, exc: Exception | None) -> None:
        if self.live:
            self.stats.error("player closed", f"{self.label}: {exc}")

    async def start(self, port: int, timeout: float) -> None:
        sid = await self.setup(port, timeout)
        self.live = True
        self.send(_command("play", 0.0, None, self.name, -1000, sid=sid, csid=8))
        self.send(_control(4, b"\x00\x03" + sid.to_bytes(4, "big") + (3000).to_bytes(4, "big")))
        await self.wait_status("NetStream.Play.Start", timeout)

    def _fast(
        self, type_id: int, ts: int, length: int, csid: int, chunk: int, body: memoryview
    ) -> bool:
        e = self.exp.get(type_id)
        if e is None:
            return False
        tr = self.src.tracks[type_id]
        i = e[0]
        if length != len(tr.payloads[i]):
            return False
        crcs = e[3]
        if crcs is None or e[4] != (csid, chunk):
            crcs = e[3] = tr.crc_list(csid, chunk)
            e[4] = (csid, chunk)
        if zlib.crc32(body) != crcs[i]:
            return False  # interleaved or wrong: the general path decides
        self._advance(type_id, e, tr, ts)
        return True

    def _advance(self, type_id: int, e: list[Any], tr: Track, ts: int) -> None:
        i = e[0]
        abs_ms = e[1] * self.src.period + tr.rel[i]
        ok = ts == e[2] + abs_ms
        if not ok:
            self.stats.error(
                "timestamp", f"{self.label} type {type_id} #{i}: {ts}, expected {e[2] + abs_ms}"
            )
            e[2] = ts - abs_ms
        if abs_ms > self.last_abs:
            self.last_abs = abs_ms
        src = self.src
        gm = src.pos_of[type_id][i]
        k = e[1]
        top = k * len(src.order) + gm
        if top > self.top:
            self.top = top
        i += 1
        if i == len(tr.rel):
            i = 0
            e[1] += 1
        e[0] = i
        self.count += 1
        # aligned: the other type's next message is the one the source's order says
        g = gm + 1
        if g == len(src.order):
            g = 0
            k += 1
        other = self.exp.get(17 - type_id)
        if ok and other is not None and other[0] == src.nxt[17 - type_id][g]:
            self.g = g
            self.k = k
            self.gm = gm
        else:
            self.g = None
            self.gm = -1

    def resync(self, g: int, k: int, skipped: int) -> None:
        """After `skipped` messages matched the replay: the state they leave."""
        src = self.src
        replay = self.replay
        assert replay is not None
        period = src.period
        self.g = g
        self.k = k
        self.gm = -1
        self.count += skipped
        for t in (8, 9):
            e = self.exp[t]
            e[0] = src.nxt[t][g]
            e[1] = k
            gl = src.last_of[t][g]
            lk = k
            if gl < 0:
                gl = src.pos_of[t][-1]
                lk = k - 1
            meta = replay.meta[gl]
            if meta is not None:
                st = self.cs.get(meta[0])
                if st is not None:
                    st[0] = e[2] + lk * period + src.times[gl]
                    st[1] = meta[1]
                    st[2] = meta[2]
                    st[3] = meta[3]
                    st[6] = None
        gm, km = (g - 1, k) if g > 0 else (len(src.order) - 1, k - 1)
        top = km * len(src.order) + gm
        if top > self.top:
            self.top = top
        abs_ms = km * period + src.times[gm]
        if abs_ms > self.last_abs:
            self.last_abs = abs_ms

    def media_message(self, type_id: int, ts: int, payload: bytes) -> None:
        if payload in self.heads:
            return
        tr = self.src.tracks[type_id]
        e = self.exp.get(type_id)
        if e is None:
            i = tr.index.get(payload)
            if i is None:
                self.fail(
                    "payload", f"type {type_id} message of {len(payload)} B not in the source"
                )
                return
            # which loop of the publisher's: the latest whose time for i has come
            now_ms = self.pub.position_ms(time.monotonic()) + 500
            loop = max(0, int((now_ms - tr.rel[i]) // self.src.period))
            abs_ms = loop * self.src.period + tr.rel[i]
            e = self.exp[type_id] = [i, loop, ts - abs_ms, None, None]
            self._advance(type_id, e, tr, ts)
            return
        i = e[0]
        if payload != tr.payloads[i]:
            j = tr.index.get(payload)
            what = "not in the source" if j is None else f"#{j}"
            self.fail("lost or reordered", f"type {type_id}: expected #{i}, got {what}")
            return
        self._advance(type_id, e, tr, ts)

    def lag(self, now: float) -> float:
        """Seconds behind the publisher's real time of the newest message received."""
        if self.last_abs < 0:
            return float("inf")
        return (self.pub.position_ms(now) - self.last_abs) / 1000.0


class Probe(Player):
    """A player that reads on every arrival (never paused) and takes, for every message it
    checked, the time from the publisher's write of it to its arrival: the relay latency,
    with the server at whatever load the other clients put on it."""

    def __init__(self, stats: Stats, app: str, name: str, src: Source, pub: Publisher) -> None:
        super().__init__(stats, app, name, src, pub)
        self.label = f"probe of {name}"
        self.delays: list[float] | None = None
        """Seconds per message, while a window records them (None: not recording)."""

    def data_received(self, data: bytes) -> None:
        before = self.top
        super().data_received(data)
        delays = self.delays
        if delays is None or self.top <= before or before < 0:
            return
        now = time.monotonic()
        sent = self.pub.sent
        for g in range(before + 1, self.top + 1):
            at = sent(g)
            if at is not None:
                delays.append(now - at)


class FlvPlayer(Player):
    """An HTTP-FLV player (`GET /app/name.flv`, HTTP/1.0 so that the body is the FLV stream
    itself, not chunked): the same checks of every media message as an RTMP player, on FLV
    tags. A tag is checked against the source by one `bytes.startswith` at its payload's
    offset (no copy); anything else is copied out and checked the long way."""

    def __init__(
        self, stats: Stats, app: str, name: str, src: Source, pub: Publisher, port: int
    ) -> None:
        super().__init__(stats, app, name, src, pub)
        self.label = f"HTTP-FLV player of {name}"
        self.connect_port = port
        self.flv_started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = f"GET /{self.app}/{self.name}.flv HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        transport.write(request.encode())  # type: ignore[attr-defined]

    async def start(self, port: int, timeout: float) -> None:
        self.live = True
        await asyncio.wait_for(self.hs_done, timeout)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        buf = self.buf + data if self.buf else data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    self.fail("protocol", "no end of the HTTP response header in 16 KiB")
                else:
                    self.buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 200 " not in status + b" ":
                self.fail("connect", f"HTTP response {status[:80]!r}")
                if not self.hs_done.done():
                    self.hs_done.set_exception(ConnectionError(repr(status[:80])))
                return
            self.handshaken = True
            buf = buf[end + 4 :]
            if not self.hs_done.done():
                self.hs_done.set_result(None)
        try:
            self.buf = self.parse_flv(buf)
        except Exception as err:  # a bug of ours: counted as a loss, not hidden
            self.fail("generator error", f"{type(err).__name__}: {err}")
            return
        if self.batched and self.transport is not None:
            self.transport.pause_reading()

    def parse_flv(self, buf: bytes) -> bytes:
        n = len(buf)
        pos = 0
        if not self.flv_started:
            if n < 13:
                return buf
            if buf[:3] != b"FLV":
                self.fail("protocol", f"not an FLV stream: {buf[:9]!r}")
                return b""
            pos = 9 + 4  # header, PreviousTagSize0
            self.flv_started = True
        exp = self.exp
        tracks = self.src.tracks
        while pos + 11 <= n:
            t = buf[pos]
            size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            end = pos + 15 + size
            if end > n:
                break
            ts = (buf[pos + 7] << 24) | (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6]
            if (
                (buf[end - 4] << 24) | (buf[end - 3] << 16) | (buf[end - 2] << 8) | buf[end - 1]
            ) != (size + 11):
                self.fail("protocol", f"PreviousTagSize of a {size} B tag is not {size + 11}")
                return b""
            if t == 8 or t == 9:
                e = exp.get(t)
                if e is not None:
                    tr = tracks[t]
                    expect = tr.payloads[e[0]]
                    if len(expect) == size and buf.startswith(expect, pos + 11):
                        self._advance(t, e, tr, ts)
                        pos = end
                        continue
                self.media_message(t, ts, buf[pos + 11 : pos + 11 + size])
                if self.closed:
                    return b""
            elif t != 18:
                self.fail("protocol", f"FLV tag of type {t}")
                return b""
            pos = end
        return buf[pos:] if pos < n else b""


# --- one run: a server, growing load ------------------------------------------------------


@dataclass
class Level:
    publishers: int
    players: int
    server_cpu: float
    """% of one core over the window"""
    server_user: float
    server_sys: float
    gen_cpu: float
    gen_user: float
    gen_sys: float
    max_blocked: float
    max_lag: float
    errors: dict[str, int]
    messages: int
    server_rss_mb: float
    held: bool
    why: str
    mbit_in: float
    """Mbit/s the players received over the window."""
    examples: list[str] = field(default_factory=list)
    """The first errors of the run (on the last level)."""


NGINX_CONF = """\
load_module {module};
user root;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 19000; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
{record}
        }}
    }}
}}
"""


def capacity_spec(name: str, record: bool, http_port: int = 0) -> ServerSpec:
    """The bench's server `name`, pinned to core 0, with its connection limits raised and
    (unless `record`) recording off: capacity is about relaying. Ours with `http_port`: its
    HTTP side on 127.0.0.1:http_port (the statistics sink on every publish, HTTP-FLV);
    otherwise `--http ""` as in every other figure."""
    base = servers.spec(name)

    if name == "nginx-rtmp":

        def command(work: Path, port: int, rec: Path) -> list[str]:
            conf = work / "nginx.conf"
            rec_lines = (
                f"            record all;\n            record_path {rec};\n"
                "            record_unique on;"
                if record
                else ""
            )
            conf.write_text(
                NGINX_CONF.format(
                    module=servers.NGINX_MODULE, work=work, port=port, record=rec_lines
                )
            )
            return ["nginx", "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]

    elif name.startswith("ours"):

        def command(work: Path, port: int, rec: Path) -> list[str]:
            argv = base.command(work, port, rec)
            extra = ["--max-connections", "19000", "--max-connections-per-ip", "0"]
            if not record:
                extra.append("--no-record")
            if http_port:  # the last --http wins over ours_args' `--http ""`
                extra += ["--http", f"127.0.0.1:{http_port}"]
            return [*argv, *extra]

    elif name == "node-media-server":

        def command(work: Path, port: int, rec: Path) -> list[str]:
            argv = base.command(work, port, rec)
            conf = work / "nms.json"
            config = json.loads(conf.read_text())
            config["record"]["auto"] = record
            conf.write_text(json.dumps(config, indent=2))
            return argv

    else:
        command = base.command

    def pinned(work: Path, port: int, rec: Path) -> list[str]:
        return ["taskset", "-c", "0", *command(work, port, rec)]

    return ServerSpec(base.name, base.can_play, pinned, env=base.env, available=base.available)


def unpinned(spec: ServerSpec, no_pin: bool) -> ServerSpec:
    """`spec` without its `taskset` when `no_pin`."""
    if not no_pin:
        return spec
    return ServerSpec(
        spec.name,
        spec.can_play,
        lambda w, p, r, c=spec.command: c(w, p, r)[3:],
        env=spec.env,
        available=spec.available,
    )


def _gen_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


class Run:
    def __init__(self, args: argparse.Namespace, src: Source, port: int, pid: int) -> None:
        self.args = args
        self.src = src
        self.port = port
        self.pid = pid
        self.stats = Stats()
        self.publishers: list[Publisher] = []
        self.players: list[Player] = []
        self.ticker: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.replay = Replay(len(src.order)) if args.replay else None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.args.tick
        max_buffer = self.args.max_buffer
        next_t = loop.time()
        while True:
            now = time.monotonic()
            for p in self.publishers:
                p.pump(now, max_buffer)
            next_t += tick
            delay = next_t - loop.time()
            if delay < 0:
                next_t = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def _reads(self) -> None:
        interval = self.args.read_interval
        while True:
            await asyncio.sleep(interval)
            for c in self.players:
                if c.batched and not c.stalled and not c.closed and c.transport is not None:
                    c.transport.resume_reading()

    async def _connect(self, conns: list[Any], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.args.connect_concurrency)

        # one deadline for the whole step: with connects that time out one after another,
        # a step of 400 at 16 at a time would otherwise take 25 timeouts
        deadline = loop.time() + timeout

        async def one(c: Conn) -> None:
            async with sem:
                try:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError(f"the step's connects took over {timeout:g} s")
                    port = getattr(c, "connect_port", None) or self.port
                    await asyncio.wait_for(
                        loop.create_connection(lambda: c, "127.0.0.1", port), left
                    )
                    await asyncio.wait_for(c.start(self.port, timeout), max(0.1, left))
                except Exception as err:
                    self.stats.error("connect", f"{c.label}: {type(err).__name__} {err}")
                    c.closed = True
                    if c.transport is not None:
                        c.transport.abort()

        await asyncio.gather(*(one(c) for c in conns))

    async def add_publishers(self, n: int) -> None:
        new = [
            Publisher(self.stats, "live", f"s{len(self.publishers) + i}", self.src)
            for i in range(n)
        ]
        await self._connect(new, self.args.timeout)
        self.publishers.extend(new)

    async def add_players(
        self, n: int, streams: list[Publisher], via: str = "rtmp", http_port: int = 0
    ) -> list[Player]:
        """`n` players spread evenly over `streams`: RTMP (`via` "rtmp"), HTTP-FLV on
        `http_port` ("flv"), or latency probes that read on every arrival ("probe")."""
        new: list[Player] = []
        for i in range(n):
            pub = streams[(len(self.players) + i) % len(streams)]
            if via == "flv":
                c: Player = FlvPlayer(self.stats, "live", pub.name, pub.src, pub, http_port)
            elif via == "probe":
                c = Probe(self.stats, "live", pub.name, pub.src, pub)
            else:
                c = Player(self.stats, "live", pub.name, pub.src, pub)
                c.replay = self.replay
            new.append(c)
        await self._connect(new, self.args.timeout)
        for c in new:
            c.batched = self.args.read_interval > 0 and via != "probe"
        self.players.extend(new)
        return new

    async def measure(
        self,
        label: tuple[int, int],
        errors_before: dict[str, int],
        window_start: Callable[[], None] | None = None,
    ) -> Level:
        args = self.args
        await asyncio.sleep(args.settle)
        if window_start is not None:
            window_start()
        for p in self.publishers:
            p.max_blocked = 0.0
            if p.blocked_since is not None:
                p.blocked_since = time.monotonic()
        counts0 = sum(p.count for p in self.players)
        bytes0 = sum(p.received for p in self.players)
        u0, s0 = procs.cpu_times(self.pid)
        g0 = _gen_cpu()
        t0 = time.monotonic()
        max_lag = 0.0
        while time.monotonic() - t0 < args.window:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for pl in self.players:
                if not pl.closed:
                    max_lag = max(max_lag, pl.lag(now))
        dt = time.monotonic() - t0
        u1, s1 = procs.cpu_times(self.pid)
        g1 = _gen_cpu()
        now = time.monotonic()
        max_blocked = max(
            [p.max_blocked for p in self.publishers]
            + [now - p.blocked_since for p in self.publishers if p.blocked_since is not None]
            + [0.0]
        )
        errors = {
            k: v - errors_before.get(k, 0)
            for k, v in self.stats.errors.items()
            if v - errors_before.get(k, 0)
        }
        server_cpu = 100 * (u1 + s1 - u0 - s0) / dt
        why = []
        if server_cpu > args.max_cpu:
            why.append(f"server core {server_cpu:.0f}% > {args.max_cpu:g}%")
        if max_blocked > args.max_block:
            why.append(f"a publisher blocked {max_blocked:.1f} s")
        if max_lag > args.max_lag:
            why.append(f"a player {max_lag:.1f} s behind")
        if errors:
            why.append("lost: " + ", ".join(f"{k} x{v}" for k, v in errors.items()))
        closed = any(c.closed for c in [*self.publishers, *self.players])
        if closed and not errors:
            why.append("a connection closed")
        return Level(
            publishers=label[0],
            players=label[1],
            server_cpu=server_cpu,
            server_user=100 * (u1 - u0) / dt,
            server_sys=100 * (s1 - s0) / dt,
            gen_cpu=100 * (g1[0] + g1[1] - g0[0] - g0[1]) / dt,
            gen_user=100 * (g1[0] - g0[0]) / dt,
            gen_sys=100 * (g1[1] - g0[1]) / dt,
            max_blocked=max_blocked,
            max_lag=max_lag,
            errors=errors,
            messages=sum(p.count for p in self.players) - counts0,
            server_rss_mb=procs.rss_bytes(self.pid) / 2**20,
            held=not why,
            why="; ".join(why) or "held",
            mbit_in=(sum(p.received for p in self.players) - bytes0) * 8 / dt / 1e6,
        )

    async def close(self) -> None:
        for task in (self.ticker, self.reader):
            if task is not None:
                task.cancel()
        for c in [*self.publishers, *self.players]:
            c.live = False
            if c.transport is not None:
                c.transport.abort()
        await asyncio.sleep(0.2)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _show(kind: str, lv: Level) -> None:
    _log(
        f"  {kind} P={lv.publishers} M={lv.players}: server {lv.server_cpu:.1f}% "
        f"(u {lv.server_user:.1f} s {lv.server_sys:.1f}), gen {lv.gen_cpu:.1f}% "
        f"(u {lv.gen_user:.1f} s {lv.gen_sys:.1f}), blocked {lv.max_blocked:.2f}s "
        f"lag {lv.max_lag:.2f}s msgs {lv.messages} in {lv.mbit_in:.0f} Mbit/s "
        f"rss {lv.server_rss_mb:.0f} MB -> {lv.why}"
    )


async def ramp(
    args: argparse.Namespace,
    src: Source,
    spec: ServerSpec,
    kind: str,
    work: Path,
    *,
    streams: int = 1,
    via: str = "rtmp",
    http_port: int = 0,
    steps: list[int] | None = None,
    tag: str = "",
) -> list[Level]:
    """One server from scratch: grow publishers (kind "publishers", one stream each) or
    players (kind "players", spread evenly over `streams` publishers, over RTMP or, `via`
    "flv", HTTP-FLV) through the steps until a level fails."""
    name = f"{kind}{tag}"
    running = spec.start(work / f"{spec.name}-{name}")
    levels: list[Level] = []
    run = Run(args, src, running.port, running.pid)
    try:
        run.ticker = asyncio.create_task(run._tick())
        run.reader = asyncio.create_task(run._reads())
        if kind == "players":
            await run.add_publishers(streams)
            await asyncio.sleep(1.0)
        have = 0
        if steps is None:
            steps = args.publisher_steps if kind == "publishers" else args.player_steps
        for level in steps:
            errors_before = dict(run.stats.errors)
            if kind == "publishers":
                await run.add_publishers(level - have)
                if have == 0:
                    probes = min(args.probes, level)
                    await run.add_players(probes, run.publishers[:probes])
                label = (level, len(run.players))
            else:
                await run.add_players(level - have, run.publishers, via, http_port)
                label = (streams, level)
            have = level
            lv = await run.measure(label, errors_before)
            levels.append(lv)
            _show(f"{spec.name} {name}", lv)
            if not lv.held or not running.alive():
                break
    finally:
        await run.close()
        running.stop()
    if levels:
        levels[-1].examples = list(run.stats.examples)
    return levels


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(
    args: argparse.Namespace,
    src: Source,
    spec: ServerSpec,
    work: Path,
    players: int,
    media_path: Path,
) -> dict[str, Any]:
    """Relay latency under load: one publisher and `--probes` probes that read on every
    arrival, in a process of their own (`probe.py`: stamped there, not behind this process's
    load), and `players` players of the same stream here (the load); over the window, the time
    from the publisher's write of each message to a probe's arrival of it, every message of
    every probe. p50 / p99 / max in ms, and the level as a ramp's."""
    running = spec.start(work / f"{spec.name}-latency")
    run = Run(args, src, running.port, running.pid)
    stream = "lat0"
    argv = [
        sys.executable,
        "-m",
        "rtmpbench.probe",
        str(running.port),
        stream,
        str(media_path),
        str(max(1, args.probes)),
        str(args.window),
        *("--tick", str(args.tick), "--timeout", str(args.timeout)),
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    doc: dict[str, Any] = {}
    try:
        run.reader = asyncio.create_task(run._reads())
        line = await asyncio.wait_for(proc.stdout.readline(), args.timeout + 10)
        if not line.startswith(b"T0 "):
            raise RuntimeError(f"the probe process said {line[:200]!r}")
        pub = Publisher(run.stats, "live", stream, src)
        pub.t0 = float(line.split()[1])  # CLOCK_MONOTONIC: the same in both processes
        await asyncio.sleep(1.0)
        errors_before = dict(run.stats.errors)
        await run.add_players(players, [pub])

        def start() -> None:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")

        lv = await run.measure((1, players + max(1, args.probes)), errors_before, start)
        line = await asyncio.wait_for(proc.stdout.readline(), args.timeout + 10)
        doc = json.loads(line)
        for kind, count in doc["errors"].items():
            lv.errors[kind] = lv.errors.get(kind, 0) + count
        if doc["errors"]:
            lv.held = False
            lv.why = f"{lv.why}; probes lost: {doc['errors']}".removeprefix("held; ")
        lv.examples = [*run.stats.examples, *doc["examples"]]
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await run.close()
        running.stop()
    _show(f"{spec.name} latency", lv)
    ms = [d * 1000 for d in doc.get("delays", [])]
    out = {
        "players": players,
        "probes": max(1, args.probes),
        "messages": len(ms),
        "p50_ms": _pct(ms, 0.50),
        "p99_ms": _pct(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "level": asdict(lv),
    }
    _log(
        f"  {spec.name} latency at {players} players: p50 {out['p50_ms']:.2f} ms, "
        f"p99 {out['p99_ms']:.2f} ms, max {out['max_ms']:.2f} ms over {len(ms)} messages"
    )
    return out


async def memory(
    args: argparse.Namespace, src: Source, spec: ServerSpec, work: Path, n: int, stalled: int
) -> dict[str, Any]:
    """RSS growth of the server tree per connection at a fixed level, each on a fresh server:
    `n` real-time publishers (one stream each); `n` players of one publisher's stream; then,
    on the same server, `stalled` more players that read nothing after their first read (a
    player that stopped reading: what the server keeps queued for it, up to its bound)."""
    out: dict[str, Any] = {"n": n, "stalled": stalled}
    for kind in ("publishers", "players"):
        running = spec.start(work / f"{spec.name}-memory-{kind}")
        run = Run(args, src, running.port, running.pid)
        try:
            run.ticker = asyncio.create_task(run._tick())
            run.reader = asyncio.create_task(run._reads())
            if kind == "players":
                await run.add_publishers(1)
            await asyncio.sleep(args.settle + 1.0)
            rss0 = procs.rss_bytes(running.pid)
            errors_before = dict(run.stats.errors)
            if kind == "publishers":
                await run.add_publishers(n)
                label = (n, 0)
            else:
                await run.add_players(n, run.publishers)
                label = (1, n)
            lv = await run.measure(label, errors_before)
            rss1 = procs.rss_bytes(running.pid)
            _show(f"{spec.name} memory {kind}", lv)
            out[kind] = {
                "rss_before": rss0,
                "rss_after": rss1,
                "kib_per_conn": (rss1 - rss0) / n / 1024,
                "level": asdict(lv),
            }
            if kind == "players" and stalled:
                new = await run.add_players(stalled, run.publishers)
                for c in new:
                    c.stalled = True
                peak = rss1
                for _ in range(int(args.stall_seconds * 4)):
                    await asyncio.sleep(0.25)
                    peak = max(peak, procs.rss_bytes(running.pid))
                rss2 = procs.rss_bytes(running.pid)
                out["stalled_players"] = {
                    "rss_before": rss1,
                    "rss_after": rss2,
                    "rss_peak": peak,
                    "kib_per_conn": (rss2 - rss1) / stalled / 1024,
                    "peak_kib_per_conn": (peak - rss1) / stalled / 1024,
                    "seconds": args.stall_seconds,
                }
        finally:
            await run.close()
            running.stop()
    stall = out.get("stalled_players", {})
    _log(
        f"  {spec.name} memory: {out['publishers']['kib_per_conn']:.0f} KiB per publisher, "
        f"{out['players']['kib_per_conn']:.0f} KiB per player"
        + (
            f", {stall['kib_per_conn']:.0f} KiB per stalled player after "
            f"{stall['seconds']:g} s (peak {stall['peak_kib_per_conn']:.0f})"
            if stall
            else ""
        )
    )
    return out


async def load_once(
    args: argparse.Namespace,
    src: Source,
    spec: ServerSpec,
    work: Path,
    publishers: int,
    players: int,
) -> Level:
    """One level on a fresh server: `publishers` publishers (one stream each, at least 1)
    and `players` players of the first stream (the statistics' cost, on and off)."""
    running = spec.start(work)
    run = Run(args, src, running.port, running.pid)
    try:
        run.ticker = asyncio.create_task(run._tick())
        run.reader = asyncio.create_task(run._reads())
        errors_before = dict(run.stats.errors)
        await run.add_publishers(max(1, publishers))
        await asyncio.sleep(1.0)
        await run.add_players(players, run.publishers[:1])
        lv = await run.measure((max(1, publishers), players), errors_before)
        lv.examples = list(run.stats.examples)
    finally:
        await run.close()
        running.stop()
    return lv


def _steps(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser(
    prog: str = "python -m rtmpbench.loadgen", description: str | None = None
) -> argparse.ArgumentParser:
    """The generator's options (`section2` adds its own to them)."""
    ap = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="nginx-rtmp,ours+uvloop")
    ap.add_argument("--only", default="publishers,players", help="publishers, players or both")
    ap.add_argument(
        "--publisher-steps", type=_steps, default=_steps("100,200,400,800,1200,1600,2000,2400,3200")
    )
    ap.add_argument(
        "--player-steps", type=_steps, default=_steps("100,200,400,800,1200,1600,2000,2400,3200")
    )
    ap.add_argument("--window", type=float, default=10.0, help="steady seconds per level")
    ap.add_argument(
        "--settle", type=float, default=3.0, help="seconds after a ramp before the window"
    )
    ap.add_argument("--tick", type=float, default=0.05, help="publishers' pacing tick, s")
    ap.add_argument(
        "--read-interval",
        type=float,
        default=0.2,
        help="players read every this many s (0: on every arrival)",
    )
    ap.add_argument(
        "--no-replay",
        dest="replay",
        action="store_false",
        help="check every message of every player the long way (see Replay)",
    )
    ap.add_argument(
        "--probes", type=int, default=4, help="players on the first streams in a publisher run"
    )
    ap.add_argument("--max-cpu", type=float, default=95.0)
    ap.add_argument("--max-block", type=float, default=1.0)
    ap.add_argument("--max-lag", type=float, default=1.0)
    ap.add_argument(
        "--max-buffer",
        type=int,
        default=4 << 20,
        help="a publisher stops writing above this many buffered bytes",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="connect/publish/play timeout, s, and the time a step's connects may take",
    )
    ap.add_argument("--connect-concurrency", type=int, default=64)
    ap.add_argument(
        "--stall-seconds",
        type=float,
        default=8.0,
        help="memory figure: how long the stalled players read nothing before RSS is taken",
    )
    ap.add_argument("--record", action="store_true", help="servers record every publish")
    ap.add_argument("--media-seconds", type=float, default=10.0)
    ap.add_argument("--mbit", type=int, default=3)
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin (taskset) server and generator"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    ap.add_argument("--work", type=Path, default=BENCH / "results" / "tmp" / "capacity")
    return ap


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    src = load_source(media.media(CACHE / "media", args.media_seconds, args.mbit))
    _log(
        f"source: {len(src.order)} messages per {src.period} ms loop, "
        f"{src.bitrate / 1e6:.2f} Mbit/s, {len(src.blob_loop)} B per loop"
    )
    out: dict[str, Any] = {"results": {}}
    for name in args.servers.split(","):
        spec = unpinned(capacity_spec(name, args.record), args.no_pin)
        why = spec.available()
        if why:
            _log(f"{name}: skipped ({why})")
            continue
        for kind in args.only.split(","):
            _log(f"{name}: {kind}")
            levels = await ramp(args, src, spec, kind, args.work)
            held = [lv for lv in levels if lv.held]
            top = held[-1] if held else None
            out["results"].setdefault(name, {})[kind] = {
                "levels": [asdict(lv) for lv in levels],
                "held": (top.publishers if kind == "publishers" else top.players) if top else 0,
                "limit": levels[-1].why if levels and not levels[-1].held else "steps exhausted",
            }
    return out


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not args.no_pin:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop
    except ImportError:
        _log("uvloop not importable: plain asyncio")
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    started = datetime.datetime.now(datetime.UTC)
    out = runner(amain(args))
    out["started"] = started.isoformat(timespec="seconds")
    out["machine"] = f"{_cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}"
    out["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out["load"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    path = args.out or BENCH / "results" / started.strftime("%Y-%m-%d") / "capacity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _log(f"wrote {path}")
    for name, kinds in out["results"].items():
        for kind, r in kinds.items():
            top = [lv for lv in r["levels"] if lv["held"]]
            gen = f"{top[-1]['gen_cpu']:.0f}%" if top else "-"
            srv = f"{top[-1]['server_cpu']:.0f}%" if top else "-"
            held = f"held {r['held']} (server {srv}, generator {gen})"
            _log(f"{name} {kind}: {held}; then: {r['limit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
