"""The stages of our ingest path timed one by one, in this process, on the 20 Mbit/s file's
messages: chunk reassembly (`ChunkReader.feed`) and the FLV file writing as the recorder does
it today, against alternatives that the profile suggests. CPU is `time.process_time()`
(user + system of this process), so kernel work (page-cache copies) counts as in the server.
No sockets: the receive side is the server's own business and shows in the profile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

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
