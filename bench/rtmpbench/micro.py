"""The stages of our ingest path timed one by one, in this process, on the 20 Mbit/s file's
messages: chunk reassembly (`ChunkReader.feed`) and the FLV file writing as the recorder does
it today, against alternatives that the profile suggests. CPU is `time.process_time()`
(user + system of this process), so kernel work (page-cache copies) counts as in the server.
No sockets: the receive side is the server's own business and shows in the profile.

`run_hot` (`python -m rtmpbench.micro FILE.flv`, from `bench/` with `src/` on the path) times
the compiled hot path's stages with the pure-Python modules and the compiled ones side by side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rtmp2server.protocol.chunk import ChunkReader, ChunkWriter
from rtmp2server.protocol.flv import TagItem, file_header, parse_flv, tag_header
from rtmp2server.server.flvfile import FLVFile

RECV = 256 * 1024  # what asyncio's selector transport asks recv() for


def _messages(src: Path) -> list[tuple[int, int, bytes]]:
    _, tags, _ = parse_flv(src.read_bytes())
    return [(t.tag_type, t.timestamp, t.body) for t in tags]


def _cpu(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run(src: Path, work: Path, repeat: int = 3) -> str:
    work.mkdir(parents=True, exist_ok=True)
    msgs = _messages(src)
    gb = sum(len(b) for _, _, b in msgs) / 1e9
    writer = ChunkWriter(4096)
    stream = b"".join(writer.write(6 if t == 9 else 4, ts, t, 1, body) for t, ts, body in msgs)
    slices = [stream[i : i + RECV] for i in range(0, len(stream), RECV)]
    # Reads that end where a message ends: no partial chunk is carried to the next read.
    aligned: list[bytes] = []
    writer = ChunkWriter(4096)
    batch: list[bytes] = []
    size = 0
    for t, ts, body in msgs:
        data = writer.write(6 if t == 9 else 4, ts, t, 1, body)
        batch.append(data)
        size += len(data)
        if size >= RECV:
            aligned.append(b"".join(batch))
            batch, size = [], 0
    if batch:
        aligned.append(b"".join(batch))
    out_path = work / "micro.flv"
    # What one read completes, as the recorder gets it (`on_messages`).
    batches: list[list[TagItem]] = [[]]
    size = 0
    for t, ts, body in msgs:
        batches[-1].append(TagItem(t, ts, body))
        size += len(body)
        if size >= RECV:
            batches.append([])
            size = 0

    def parse() -> int:  # messages are dropped at once, as the server's sinks do
        reader = ChunkReader()
        reader.chunk_size = 4096
        count = 0
        for piece in slices:
            count += len(reader.feed(piece))
        return count

    def parse_aligned() -> int:  # the same, every read ending on a chunk boundary
        reader = ChunkReader()
        reader.chunk_size = 4096
        count = 0
        for piece in aligned:
            count += len(reader.feed(piece))
        return count

    def write_buffered() -> None:  # the recorder before 6726d98: BufferedWriter, 3 writes/tag
        with open(out_path, "wb", buffering=RECV) as f:
            f.write(file_header(audio=True, video=True))
            for t, ts, body in msgs:
                f.write(tag_header(t, ts, len(body)))
                f.write(body)
                f.write((len(body) + 11).to_bytes(4))

    def write_joined() -> None:  # one bytes object per tag, one buffered write
        with open(out_path, "wb", buffering=RECV) as f:
            for t, ts, body in msgs:
                f.write(
                    b"".join((tag_header(t, ts, len(body)), body, (len(body) + 11).to_bytes(4)))
                )

    def write_writev_batch() -> None:  # unbuffered fd, one os.writev per ~256 KiB of tags
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            parts: list[bytes] = []
            size = 0
            for t, ts, body in msgs:
                n = len(body)
                parts += (tag_header(t, ts, n), body, (n + 11).to_bytes(4))
                size += n + 15
                if size >= RECV or len(parts) >= 900:
                    os.writev(fd, parts)
                    parts, size = [], 0
            if parts:
                os.writev(fd, parts)
        finally:
            os.close(fd)

    def write_recorder() -> None:  # the recorder's own file writer, one read's messages a call
        out_path.unlink(missing_ok=True)
        w = FLVFile.create(out_path)
        for batch in batches:
            w.write_messages(batch)
        w.close()

    def write_raw_only() -> None:  # the floor: the same bytes in 256 KiB writes, no framing
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for piece in slices:
                os.write(fd, piece)
        finally:
            os.close(fd)

    def copy_once() -> int:
        return sum(len(bytes(memoryview(piece))) for piece in slices)

    rows = [
        ("ChunkReader.feed: reassemble every message from 4096-byte chunks, 256 KiB reads", parse),
        (
            "ChunkReader.feed, reads ending on message boundaries (no carried partial chunk)",
            parse_aligned,
        ),
        (
            "FLV write as the recorder did before 6726d98 (BufferedWriter 256 KiB, 3 write() "
            "calls a tag)",
            write_buffered,
        ),
        ("FLV write, one joined bytes per tag into the same BufferedWriter", write_joined),
        (
            "FLV write, os.writev of ~256 KiB batches of (header, body, size) on a raw fd "
            "(the recorder since 6726d98)",
            write_writev_batch,
        ),
        (
            "FLV write through the recorder's file writer, one read's messages a call",
            write_recorder,
        ),
        ("floor: the same number of bytes written raw in 256 KiB os.write calls", write_raw_only),
        (
            "for scale: one bytes copy of every byte (bytes(memoryview) of each 256 KiB read)",
            copy_once,
        ),
    ]
    lines = [
        f"In-process, best of {repeat}, {len(msgs)} messages, {gb:.3f} GB of payload, "
        f"recordings on {out_path.parent}:",
        "",
        "| stage | CPU s per GB |",
        "| --- | ---: |",
    ]
    for label, fn in rows:
        lines.append(f"| {label} | {_cpu(fn, repeat) / gb:.2f} |")
    out_path.unlink(missing_ok=True)
    return "\n".join(lines) + "\n"


# --- the compiled hot path, pure against compiled ---------------------------------------------


def _publishing_connection(chunk_module: ModuleType) -> tuple[Any, Any]:
    """A `ServerConnection` past handshake, connect, createStream and an accepted publish (an
    in-memory `ClientConnection` on the other side), reading with `chunk_module`'s reader; and
    the client, to frame media with."""
    from rtmp2server.protocol.client import ClientConnection
    from rtmp2server.protocol.connection import ServerConnection
    from rtmp2server.protocol.events import PublishRequest

    server = ServerConnection()
    client = ClientConnection()
    requests: list[PublishRequest] = []

    def pump() -> None:
        for _ in range(20):
            up = client.data_to_send()
            if up:
                requests.extend(i for i in server.receive_data(up) if type(i) is PublishRequest)
            down = server.data_to_send()
            if down:
                client.receive_data(down)
            if not up and not down:
                return

    client.connect("live", "rtmp://127.0.0.1/live")
    client.create_stream()
    client.publish(1, "bench")
    pump()
    server.accept_publish(requests[-1])
    pump()
    # The same reader state (chunk size 4096 from the client's Set Chunk Size), the other code.
    old = server._reader
    reader = chunk_module.ChunkReader()
    reader.chunk_size = old.chunk_size
    reader._streams = {}
    server._reader = reader
    return server, client


def run_hot(src: Path, repeat: int = 7) -> str:
    """The hot path's stages, each timed with the pure-Python modules and the compiled ones in
    the same process (alternately, best of `repeat`): microseconds per message."""
    from rtmp2server.protocol import _compiled

    msgs = _messages(src)
    n = len(msgs)
    chunk_py = _compiled.load("chunk", compiled=False)
    flv_py = _compiled.load("flv", compiled=False)
    try:
        chunk_c = _compiled.load("chunk", compiled=True)
        flv_c = _compiled.load("flv", compiled=True)
    except ImportError as err:
        return f"compiled modules not built ({err}): `pip install -e .` builds them\n"
    writer = ChunkWriter(4096)
    per_msg = [writer.write(6 if t == 9 else 4, ts, t, 1, body) for t, ts, body in msgs]
    stream = b"".join(per_msg)
    slices = [stream[i : i + RECV] for i in range(0, len(stream), RECV)]
    items = [TagItem(t, ts, body) for t, ts, body in msgs]
    batches = [items[i : i + 8] for i in range(0, n, 8)]

    def parse(mod: ModuleType, reads: list[bytes]) -> Callable[[], object]:
        def fn() -> int:
            reader = mod.ChunkReader()
            reader.chunk_size = 4096
            return sum(len(reader.feed(piece)) for piece in reads)

        return fn

    def dispatch(mod: ModuleType) -> Callable[[], object]:
        # What a real-time publisher's read holds: one message (its media only; the
        # connection's preamble is done before the clock starts).
        def fn() -> int:
            conn, client = _publishing_connection(mod)
            for t, ts, body in msgs:
                client.send_media(1, t, ts, body)
            reads = client.data_to_send()
            step = len(reads) // n + 1
            t0 = time.process_time()
            got = 0
            for i in range(0, len(reads), step):
                got += len(conn.receive_data(reads[i : i + step]))
            return time.process_time() - t0  # type: ignore[no-any-return]

        return fn

    def frame(mod: ModuleType, size: int) -> Callable[[], object]:
        def fn() -> None:  # relay.frame_message: a fresh writer, a type-0 first header
            writer_cls = mod.ChunkWriter
            for t, ts, body in msgs:
                writer_cls(size).write(6 if t == 9 else 4, ts, t, 1, body)

        return fn

    def encode(mod: ModuleType) -> Callable[[], object]:
        def fn() -> None:  # the recorder's and HTTP-FLV's tag framing, 8 messages a call
            enc = mod.FLVEncoder()
            for batch in batches:
                enc.encode(batch, [])

        return fn

    rows: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "chunk parse, 256 KiB reads (ingest)",
            parse(chunk_py, slices),
            parse(chunk_c, slices),
        ),
        (
            "chunk parse, one message a read (real-time publisher)",
            parse(chunk_py, per_msg),
            parse(chunk_c, per_msg),
        ),
        (
            "ServerConnection.receive_data (parse + dispatch), one message a read",
            dispatch(chunk_py),
            dispatch(chunk_c),
        ),
        ("fan-out framing, chunk size 4096", frame(chunk_py, 4096), frame(chunk_c, 4096)),
        ("fan-out framing, chunk size 128", frame(chunk_py, 128), frame(chunk_c, 128)),
        ("FLV tag framing (FLVEncoder.encode, 8 tags a call)", encode(flv_py), encode(flv_c)),
    ]
    lines = [
        f"In-process, best of {repeat} (pure and compiled alternately), {n} messages of "
        f"{src.name}, microseconds per message:",
        "",
        "| stage | pure | compiled | speed-up |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, pure, compiled in rows:
        best = [float("inf"), float("inf")]
        for _ in range(repeat):
            for k, fn in enumerate((pure, compiled)):
                t0 = time.process_time()
                inner = fn()
                took = inner if isinstance(inner, float) else time.process_time() - t0
                best[k] = min(best[k], took)
        a, b = (x * 1e6 / n for x in best)
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="the hot path, pure against compiled")
    parser.add_argument("src", type=Path, help="an FLV file (H.264 + AAC)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(run_hot(args.src, args.repeat), end="")


if __name__ == "__main__":
    main()
