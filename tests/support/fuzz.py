"""Mutation fuzzing of recorded real client connections against an in-process `RTMPServer`.

A mutant is a capture (see `capture.py`) changed by one to three seeded mutations, replayed over
a real loopback socket without looking at what the server answers (those bytes are read and
thrown away). Everything about mutant number `i` of seed `s` follows from `Random(f"{s}/{i}")`,
so one mutant can be rebuilt and replayed alone (`Mutant.make`, `scripts/fuzz.sh --only`).

The mutations: bit flips; bytes replaced by 0x00, 0xFF, 0x7F or 0x80; a field of a chunk header
(basic header, timestamp, message length, type, stream id, extended timestamp) overwritten with
an edge value; truncation; deletion, duplication or insertion of a range; and a splice of two
captures at chunk boundaries. A point mutation lands in the payload of a command, metadata or
protocol control message four times in ten (the AMF and command parsers), elsewhere in the chunk
stream five times in ten, and anywhere, the handshake included, one time in ten. The server does
not validate C2 and falls back to the simple handshake on a bad C1 digest (see
`protocol/handshake.py`), so a replay gets past the handshake unless C0 itself is hit; C2 needs
no patching from the live S1. A mutant is sent in one write, in the reads the proxy
recorded, or re-split into random pieces of 1 to 512 bytes, and then its side is shut (EOF).

`run_fuzz()` runs rounds. In each, a real ffmpeg publishes the source media to `live/good` while
mutants go to the same server, several at once; at the end of a round the recording of `good`
must hold every video and audio frame of the source. Before the first round each publish
capture is replayed unchanged at its recorded pace (controls: their recordings must be complete
too, which shows that a replay is a real publish), and the server's memory (tracemalloc, after
`gc.collect()`) is taken as the baseline. The promise checked:

- no ERROR record and no traceback from the server's loggers, nor an asyncio exception;
- the good stream complete in every round;
- every mutant's connection closed by the server within `close_timeout` after its EOF (or
  earlier), and every send finished (the server never stops reading a mutant for good);
- after the mutants leave, no session left and memory within `memory_slack` of the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import re
import shutil
import subprocess
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rtmp2server.server.server import RTMPServer, ServerConfig

from .capture import PLAY_STREAM, Capture
from .clients import publish_command
from .media import SourceMedia
from .probe import av_counts

HANDSHAKE_END = 1 + 2 * 1536  # C0 + C1 + C2: the chunk stream starts here
INTERESTING = (0x00, 0xFF, 0x7F, 0x80)

# --- where the chunk headers are --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    offset: int
    width: int
    kind: str  # basic, timestamp, length, type, stream, ext


@dataclass(slots=True)
class ChunkMap:
    fields: list[Field]
    boundaries: list[int]  # offsets at which a chunk starts (after the handshake)
    # payload ranges of chunks that carry anything but audio and video (commands, metadata,
    # protocol control), where a few changed bytes reach the AMF and command parsers
    control: list[tuple[int, int]] = field(default_factory=list)


def chunk_map(data: bytes) -> ChunkMap:
    """The chunk headers of a client's byte stream (RTMP 1.0 section 5.3.1), as far as it
    parses; the client's Set Chunk Size messages are followed."""
    fields: list[Field] = []
    boundaries: list[int] = []
    chunk_size = 128
    # per chunk stream: message length, type, bytes still to come, extended timestamp in use
    state: dict[int, list[int]] = {}
    control = bytearray()  # payload of a Set Chunk Size in progress
    controls: list[tuple[int, int]] = []
    pos, end = HANDSHAKE_END, len(data)
    while pos < end:
        boundaries.append(pos)
        start = pos
        first = data[pos]
        fmt, csid = first >> 6, first & 0x3F
        pos += 1
        if csid == 0:
            if pos + 1 > end:
                break
            csid = 64 + data[pos]
            pos += 1
        elif csid == 1:
            if pos + 2 > end:
                break
            csid = 64 + data[pos] + 256 * data[pos + 1]
            pos += 2
        fields.append(Field(start, pos - start, "basic"))
        header = {0: 11, 1: 7, 2: 3, 3: 0}[fmt]
        if pos + header > end:
            break
        st = state.setdefault(csid, [0, 0, 0, 0])
        if fmt <= 2:
            ts = int.from_bytes(data[pos : pos + 3], "big")
            fields.append(Field(pos, 3, "timestamp"))
            st[3] = int(ts == 0xFFFFFF)
        if fmt <= 1:
            st[0] = int.from_bytes(data[pos + 3 : pos + 6], "big")
            st[1] = data[pos + 6]
            fields.append(Field(pos + 3, 3, "length"))
            fields.append(Field(pos + 6, 1, "type"))
        if fmt == 0:
            fields.append(Field(pos + 7, 4, "stream"))
        pos += header
        if st[3]:
            fields.append(Field(pos, 4, "ext"))
            pos += 4
        if st[2] == 0:
            st[2] = st[0]
            if st[1] == 1 and csid == 2:
                control.clear()
        take = min(chunk_size, st[2])
        if st[1] == 1 and csid == 2:
            control += data[pos : pos + take]
        if st[1] not in (8, 9) and take > 0:
            controls.append((pos, min(pos + take, end)))
        pos += take
        st[2] -= take
        if st[2] == 0 and st[1] == 1 and csid == 2 and len(control) >= 4:
            chunk_size = max(1, int.from_bytes(control[:4], "big") & 0x7FFFFFFF)
    return ChunkMap(fields, boundaries, controls)


# --- mutations ----------------------------------------------------------------------------------


def _point(rng: random.Random, size: int, cmap: ChunkMap | None = None) -> int:
    """A position to change: in a command or control payload four times in ten, elsewhere in
    the chunk stream five times in ten, anywhere (the handshake too) one time in ten."""
    roll = rng.random()
    if cmap is not None and cmap.control and roll < 0.4:
        start, end = rng.choice(cmap.control)
        if end <= size:
            return rng.randrange(start, end)
    if size > HANDSHAKE_END and roll < 0.9:
        return rng.randrange(HANDSHAKE_END, size)
    return rng.randrange(size)


def _edge_value(rng: random.Random, old: bytes, kind: str) -> bytes:
    width = len(old)
    if kind == "type" and rng.random() < 0.5:
        return bytes([rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22, 255])])
    choice = rng.randrange(7)
    if choice == 0:
        return bytes(width)
    if choice == 1:
        return b"\xff" * width
    if choice == 2:
        return b"\x7f" + b"\xff" * (width - 1)
    if choice == 3:
        return b"\x80" + bytes(width - 1)
    if choice == 4:
        value = int.from_bytes(old, "big") + rng.choice([-1, 1])
        return (value % (1 << (8 * width))).to_bytes(width, "big")
    if choice == 5 and width > 1:
        return b"\xff" * (width - 1) + b"\xfe"
    return rng.randbytes(width)


def mutate_in_place(rng: random.Random, data: bytearray, cmap: ChunkMap) -> str:
    """One mutation that keeps offsets; what it did, in words."""
    op = rng.choice(("bitflip", "interesting", "header", "header"))
    if op == "header" and cmap.fields:
        f = rng.choice(cmap.fields)
        old = bytes(data[f.offset : f.offset + f.width])
        new = _edge_value(rng, old, f.kind)
        if new == old:  # the edge value was already there: change its last bit instead
            new = new[:-1] + bytes([new[-1] ^ 1])
        data[f.offset : f.offset + f.width] = new
        return f"header {f.kind}@{f.offset} {old.hex()}->{new.hex()}"
    if op == "interesting":
        n = rng.randint(1, 4)
        spots = []
        for _ in range(n):
            at = _point(rng, len(data), cmap)
            data[at] = rng.choice(INTERESTING)
            spots.append(f"{at}={data[at]:02x}")
        return "bytes " + ",".join(spots)
    n = rng.randint(1, 8)
    spots = []
    for _ in range(n):
        at = _point(rng, len(data), cmap)
        bit = rng.randrange(8)
        data[at] ^= 1 << bit
        spots.append(f"{at}.{bit}")
    return "bitflip " + ",".join(spots)


def mutate_length(
    rng: random.Random, data: bytearray, cmap: ChunkMap, other: tuple[bytes, ChunkMap]
) -> tuple[bytearray, str]:
    """One mutation that changes the length; the result and what it did."""
    op = rng.choice(("truncate", "delete", "duplicate", "insert", "splice"))
    size = len(data)
    if op == "truncate":
        at = rng.choice(cmap.boundaries) if cmap.boundaries and rng.random() < 0.3 else None
        at = at if at is not None else _point(rng, size)
        return data[:at], f"truncate@{at}"
    if op == "insert":
        at = _point(rng, size, cmap)
        junk = rng.randbytes(rng.randint(1, 64))
        return data[:at] + junk + data[at:], f"insert@{at}+{len(junk)}"
    if op == "splice":
        other_data, other_map = other
        a = rng.choice(cmap.boundaries) if cmap.boundaries else _point(rng, size)
        b = rng.choice(other_map.boundaries) if other_map.boundaries else HANDSHAKE_END
        return data[:a] + other_data[b:], f"splice@{a}+other@{b}"
    at = _point(rng, size, cmap)
    n = min(rng.choice((1, 2, 4, 8, 16, 128, 1024, 4096)), size - at)
    if op == "delete":
        return data[:at] + data[at + n :], f"delete@{at}-{n}"
    return data[: at + n] + data[at : at + n] + data[at + n :], f"duplicate@{at}x{n}"


@dataclass(slots=True)
class Mutant:
    index: int
    capture: str
    data: bytes
    mode: str  # "blast", "segments" or "resplit"
    pieces: list[int]  # write sizes (mode segments/resplit); they cover data
    steps: list[str]

    @classmethod
    def make(cls, seed: int, index: int, captures: dict[str, Capture]) -> Mutant:
        rng = random.Random(f"{seed}/{index}")
        names = sorted(captures)
        base = captures[rng.choice(names)]
        other = captures[rng.choice(names)]
        stream = f"fz{index % 10_000_000:07d}"

        def named(c: Capture) -> bytes:
            return c.with_stream_name(stream) if c.role == "publish" else c.data

        data = bytearray(named(base))
        cmap = chunk_map(bytes(data))
        steps: list[str] = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            steps.append(mutate_in_place(rng, data, cmap))
        if rng.random() < 0.5:
            other_data = named(other)
            data, step = mutate_length(rng, data, cmap, (other_data, chunk_map(other_data)))
            steps.append(step.replace("other", other.name))
        if data == named(base):  # the changes undid each other
            at = _point(rng, len(data), cmap)
            data[at] ^= 0x01
            steps.append(f"bitflip {at}.0 (the others changed nothing)")
        mode = rng.choice(("blast", "segments", "resplit"))
        pieces: list[int] = []
        if mode == "segments":
            pieces = list(base.segments)
        elif mode == "resplit":
            left = len(data)
            while left > 0:
                n = min(left, rng.randint(1, 512))
                pieces.append(n)
                left -= n
        return cls(index, base.name, bytes(data), mode, pieces, steps)

    def describe(self) -> str:
        return f"mutant {self.index} of {self.capture} ({self.mode}): {'; '.join(self.steps)}"


# --- replay ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayResult:
    problem: str | None = None  # None: sent, and closed by the server in time
    received: int = 0
    local_port: int = 0


async def replay(
    port: int,
    data: bytes,
    pieces: list[int],
    *,
    close_timeout: float,
    send_timeout: float,
    pace: list[float] | None = None,
    on_connect: dict[int, object] | None = None,
    tag: object = None,
) -> ReplayResult:
    """Send `data` (in writes of `pieces`, or in one), shut our side, read until the server
    closes. `pace`: the time of each piece since the start, to replay at the recorded rate."""
    result = ReplayResult()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    result.local_port = int(writer.get_extra_info("sockname")[1])
    if on_connect is not None:
        on_connect[result.local_port] = tag

    async def drain_replies() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                result.received += len(chunk)

    reading = asyncio.create_task(drain_replies())
    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(send_timeout):
                if not pieces:
                    writer.write(data)
                    await writer.drain()
                else:
                    pos = 0
                    for i, n in enumerate(pieces):
                        if pos >= len(data):
                            break
                        if pace is not None:
                            # At least 1 ms: a timer, unlike sleep(0), lets the server read the
                            # last piece first, so pieces do not coalesce when we are late (a
                            # librtmp publish pipelines its first media 0.5 ms after `publish`,
                            # and media read with the publish is lost today: issue 9, item 1).
                            due = pace[i] - (time.monotonic() - started)
                            await asyncio.sleep(max(0.001, due) if i else max(0.0, due))
                        writer.write(data[pos : pos + n])
                        pos += n
                        await writer.drain()
                        if pace is None:
                            await asyncio.sleep(0)  # one server read per piece, mostly
                    if pos < len(data):
                        writer.write(data[pos:])
                        await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server closed first: allowed
        except TimeoutError:
            result.problem = f"the server did not take all bytes within {send_timeout} s"
            return result
        try:
            async with asyncio.timeout(close_timeout):
                await reading
        except TimeoutError:
            result.problem = f"connection still open {close_timeout} s after our EOF"
        return result
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --- the run -----------------------------------------------------------------------------------


@dataclass
class FuzzConfig:
    seed: int = 0
    mutants: int = 300
    seconds: float = 0.0  # 0: no time limit; else stop starting rounds after this long
    only: list[int] | None = None  # replay just these mutant numbers
    concurrency: int = 8
    close_timeout: float = 10.0  # a hang bound, not a speed check
    send_timeout: float = 30.0
    memory_slack: int = 4 * 1024 * 1024
    controls: bool = True


@dataclass
class FuzzReport:
    mutants_run: int = 0
    rounds: int = 0
    problems: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    warnings: Counter[str] = field(default_factory=Counter)
    infos: Counter[str] = field(default_factory=Counter)
    growth: list[str] = field(default_factory=list)  # tracemalloc's biggest differences
    baseline: int = 0
    after: int = 0
    bytes_sent: int = 0
    modes: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        top = ", ".join(f"{n}x {w}" for w, n in self.warnings.most_common(8))
        return (
            f"{self.mutants_run} mutants in {self.rounds} rounds, {self.bytes_sent} bytes; "
            f"modes {dict(self.modes)}; memory baseline {self.baseline} after {self.after} "
            f"(+{self.after - self.baseline}); info lines {dict(self.infos.most_common(6))}; "
            f"warnings: {top}"
        )


_PEER = re.compile(r"peer 127\.0\.0\.1:(\d+)")
_WORDS = re.compile(r"peer \S+: ")


class _LogWatch(logging.Handler):
    """Keeps every ERROR record and every record with a traceback (formatted), and only counts
    the others: a long run must not grow the test's own memory."""

    def __init__(self, report: FuzzReport, owners: dict[int, object]) -> None:
        super().__init__(logging.DEBUG)
        self.report = report
        self.owners = owners
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            text = self.format(record)
            match = _PEER.search(record.getMessage())
            owner = self.owners.get(int(match.group(1))) if match else None
            if owner is not None:
                text = f"[{owner}] {text}"
            if len(self.report.log_errors) < 50:
                self.report.log_errors.append(text)
        elif record.levelno >= logging.WARNING:
            message = _WORDS.sub("", record.getMessage())
            key = re.sub(r"\d+", "N", message)[:60]
            if len(self.report.warnings) < 500 or key in self.report.warnings:
                self.report.warnings[key] += 1
        else:
            # How far mutants got: "publish start", "play", ...
            key = record.getMessage().split(":", 1)[0][:30]
            if len(self.report.infos) < 100 or key in self.report.infos:
                self.report.infos[key] += 1


def _traced() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _good_publish(url: str, source: SourceMedia) -> asyncio.subprocess.Process:
    args = publish_command("ffmpeg-debian", source.path, url)
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


class _Fuzz:
    def __init__(
        self,
        captures: dict[str, Capture],
        source: SourceMedia,
        record_dir: Path,
        config: FuzzConfig,
        out_dir: Path,
    ) -> None:
        self.captures = captures
        self.source = source
        self.record_dir = record_dir
        self.cfg = config
        self.out_dir = out_dir
        self.report = FuzzReport()
        self.owners: dict[int, object] = {}
        self.server = RTMPServer(ServerConfig(host="127.0.0.1", port=0, record_dir=record_dir))

    async def run(self) -> FuzzReport:
        report, cfg = self.report, self.cfg
        loop = asyncio.get_running_loop()

        def on_loop_error(_loop: asyncio.AbstractEventLoop, ctx: dict[str, object]) -> None:
            if len(report.log_errors) < 50:
                report.log_errors.append(f"asyncio: {ctx.get('message')} {ctx.get('exception')!r}")

        loop.set_exception_handler(on_loop_error)
        await self.server.start()
        try:
            if cfg.controls:
                await self._controls()
            await self._settle()
            order = cfg.only if cfg.only is not None else list(range(cfg.mutants))
            # Made before the baseline: this list is ours, not the server's.
            pending = list(reversed(order))
            report.baseline = _traced()
            baseline_snapshot = tracemalloc.take_snapshot()
            started = time.monotonic()
            while pending:
                if cfg.seconds and report.rounds and time.monotonic() - started > cfg.seconds:
                    break
                await self._round(pending)
            await self._settle()
            report.after = _traced()
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            diff = snapshot.compare_to(baseline_snapshot, "lineno")
            report.growth = [str(d) for d in diff[:8]]
            if report.after - report.baseline > cfg.memory_slack:
                report.problems.append(
                    f"memory grew by {report.after - report.baseline} bytes after the mutants "
                    "left (tracemalloc, after gc.collect()); where it grew most:\n"
                    + "\n".join(f"  {line}" for line in report.growth)
                )
        finally:
            await self.server.close()
        return report

    async def _settle(self) -> None:
        """Wait (bounded) until the server has no session left."""
        for _ in range(200):
            if not self.server.sessions:
                return
            await asyncio.sleep(0.05)
        self.report.problems.append(
            f"{len(self.server.sessions)} sessions still open after every client left: "
            + ", ".join(s.peer for s in self.server.sessions)
        )

    def _url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.server.port}/live/{stream}"

    async def _controls(self) -> None:
        """Each publish capture replayed unchanged at its recorded pace, beside a good publish:
        all recordings complete (the replay is a real publish; nothing is lost)."""
        jobs = []
        names: dict[str, str] = {}
        for i, (name, capture) in enumerate(sorted(self.captures.items())):
            stream = f"fc{i:07d}" if capture.role == "publish" else capture.stream
            names[name] = stream
            data = capture.with_stream_name(stream) if capture.role == "publish" else capture.data
            jobs.append(
                replay(
                    self.server.port,
                    data,
                    capture.segments,
                    pace=capture.times,
                    close_timeout=self.cfg.close_timeout,
                    send_timeout=60,
                    on_connect=self.owners,
                    tag=f"control {name}",
                )
            )
        proc = await _good_publish(self._url(PLAY_STREAM), self.source)
        results = await asyncio.gather(*jobs)
        await self._finish_good(proc, "control round")
        for (name, stream), result in zip(sorted(names.items()), results, strict=True):
            if result.problem:
                self.report.problems.append(f"control {name}: {result.problem}")
            if self.captures[name].role != "publish":
                continue
            found = sorted((self.record_dir / "live").glob(f"{stream}-*.flv"))
            counts = self._counts(found[-1]) if found else None
            if counts != self.source.counts:
                self.report.problems.append(
                    f"control {name}: unchanged replay recorded {counts}, "
                    f"the source has {self.source.counts}"
                )

    def _counts(self, path: Path) -> dict[str, int] | str:
        """ffprobe's counts, or what it said about a file it cannot read (the file is kept)."""
        try:
            return av_counts(path)
        except subprocess.CalledProcessError as err:
            kept = self.out_dir / "unreadable"
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, kept / path.name)
            return (
                f"unreadable ({path.stat().st_size} bytes, kept in {kept}): "
                f"{str(err.stderr).strip()[-500:]}"
            )

    async def _finish_good(self, proc: asyncio.subprocess.Process, when: str) -> None:
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            self.report.problems.append(
                f"{when}: the good publisher (ffmpeg) exited {proc.returncode}: "
                f"{out.decode(errors='replace')[-2000:]}"
            )
        # Its publish ends when the server has read its deleteStream or EOF.
        for _ in range(200):
            if self.server.registry.get("live", PLAY_STREAM) is None:
                break
            await asyncio.sleep(0.05)
        found = sorted((self.record_dir / "live").glob(f"{PLAY_STREAM}-*.flv"))
        if not found:
            self.report.problems.append(f"{when}: no recording of the good stream")
            return
        counts = self._counts(found[-1])
        if counts != self.source.counts:
            self.report.problems.append(
                f"{when}: the good stream's recording {found[-1].name} holds {counts}, "
                f"the source has {self.source.counts}"
            )
        kept = self.out_dir / "good"
        kept.mkdir(parents=True, exist_ok=True)
        shutil.move(found[-1], kept / f"round-{self.report.rounds:05d}.flv")

    async def _mutant(self, index: int) -> None:
        mutant = Mutant.make(self.cfg.seed, index, self.captures)
        self.report.modes[mutant.mode] += 1
        self.report.bytes_sent += len(mutant.data)
        result = await replay(
            self.server.port,
            mutant.data,
            mutant.pieces,
            close_timeout=self.cfg.close_timeout,
            send_timeout=self.cfg.send_timeout,
            on_connect=self.owners,
            tag=f"mutant {index}",
        )
        self.report.mutants_run += 1
        if result.problem:
            self._keep(mutant)
            self.report.problems.append(f"{mutant.describe()}: {result.problem}")

    def _keep(self, mutant: Mutant) -> None:
        folder = self.out_dir / "mutants"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{mutant.index}.bin").write_bytes(mutant.data)
        (folder / f"{mutant.index}.txt").write_text(mutant.describe() + "\n")

    async def _round(self, pending: list[int]) -> None:
        """Mutants, `concurrency` at a time, while one good publish runs."""
        self.owners.clear()
        errors_before = len(self.report.log_errors)
        proc = await _good_publish(self._url(PLAY_STREAM), self.source)
        running: set[asyncio.Task[None]] = set()
        started: list[int] = []
        while pending and proc.returncode is None:
            while pending and len(running) < self.cfg.concurrency:
                index = pending.pop()
                started.append(index)
                running.add(asyncio.create_task(self._mutant(index)))
            _done, running = await asyncio.wait(
                running, timeout=0.5, return_when=asyncio.FIRST_COMPLETED
            )
        if running:
            await asyncio.wait(running)
        await self._finish_good(proc, f"round {self.report.rounds}")
        # A mutant named in an error line is kept for replay.
        for text in self.report.log_errors[errors_before:]:
            match = re.match(r"\[mutant (\d+)\]", text)
            if match:
                self._keep(Mutant.make(self.cfg.seed, int(match.group(1)), self.captures))
        self.report.rounds += 1
        await self._settle()
        # Mutants' recordings are not checked; drop them so that a long run stays small.
        for path in (self.record_dir / "live").glob("fz*.flv"):
            path.unlink()


async def run_fuzz(
    captures: dict[str, Capture],
    source: SourceMedia,
    record_dir: Path,
    config: FuzzConfig,
    out_dir: Path,
) -> FuzzReport:
    """The whole run (see the module docstring); the server's loggers are watched meanwhile."""
    fuzz = _Fuzz(captures, source, record_dir, config, out_dir)
    watch = _LogWatch(fuzz.report, fuzz.owners)
    loggers = [logging.getLogger("rtmp2server"), logging.getLogger("asyncio")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(watch)
        lg.setLevel(logging.INFO)
        lg.propagate = False  # pytest would keep every record of the run in memory
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        return await fuzz.run()
    finally:
        if not tracing:
            tracemalloc.stop()
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(watch)
            lg.setLevel(level)
            lg.propagate = propagate
