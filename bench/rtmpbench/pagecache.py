"""The recorder's file writer with its pages left in the page cache and dropped a window behind,
alternately, on the 20 Mbit/s file's messages: CPU (user + system of this process) per GB of
each round, every round shown (the point is the spread, not the best case).

A round writes `--files` recordings of the file one after the other through `FLVFile`, one
256 KiB read's messages a call, as the recorder gets them, and deletes them at the end, as the
bench does after each server. `cached` is `drop_window=0` (the kernel's own page cache
policy); `dropped` is the default (`flvfile.DROP_WINDOW`: written pages handed to writeback and
dropped a window behind). Rounds alternate so both see the same machine.

    PYTHONPATH=bench:src python -m rtmpbench.pagecache [--rounds 6] [--files 8] [--work DIR]

Run from the repository root; recordings go to `--work` (default bench/results/tmp/pagecache,
on the disk, where the recordings of the ingest figure go).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from rtmp2server.protocol.chunk import ChunkReader, ChunkWriter
from rtmp2server.protocol.flv import parse_flv
from rtmp2server.protocol.messages import Message
from rtmp2server.server.flvfile import DROP_WINDOW, FLVFile

from . import media
from .servers import BENCH

READ = 256 * 1024


def batches(src: Path) -> tuple[list[list[Message]], int]:
    """The file's messages as the chunk reader hands them out of 256 KiB reads of a 4096-byte
    chunk stream (multi-chunk payloads as views of the reads), and the bytes of the FLV file
    they make."""
    _, tags, _ = parse_flv(src.read_bytes())
    writer = ChunkWriter(4096)
    stream = b"".join(
        writer.write(6 if t.tag_type == 9 else 4, t.timestamp, t.tag_type, 1, t.body) for t in tags
    )
    reader = ChunkReader()
    reader.chunk_size = 4096
    out = [reader.feed(stream[i : i + READ]) for i in range(0, len(stream), READ)]
    return out, 13 + sum(len(t.body) + 15 for t in tags)


def one_round(work: Path, reads: list[list[Message]], files: int, drop_window: int) -> float:
    """CPU seconds to write `files` recordings, deleted afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    for i in range(files):
        f = FLVFile.create(work / f"r{i}.flv", drop_window=drop_window)
        for batch in reads:
            f.write_messages(batch)
        f.close()
    cpu = time.process_time() - t0
    shutil.rmtree(work)
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--work", default=str(BENCH / "results" / "tmp" / "pagecache"))
    ap.add_argument("--cache", default=str(BENCH / ".cache"))
    args = ap.parse_args()
    src = media.media(Path(args.cache) / "media", 30, 20)
    reads, size = batches(src)
    gb = size * args.files / 1e9
    work = Path(args.work)
    modes = {"cached": 0, "dropped": DROP_WINDOW}
    got: dict[str, list[float]] = {name: [] for name in modes}
    print(f"{args.files} x {size / 1e6:.0f} MB recordings a round, in {work}")
    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for name in order:
            got[name].append(one_round(work, reads, args.files, modes[name]) / gb)
        print(f"round {r + 1}: " + ", ".join(f"{n} {got[n][-1]:.2f}" for n in modes) + " s/GB")
    for name, values in got.items():
        print(
            f"{name}: median {statistics.median(values):.2f}, "
            f"range {min(values):.2f}-{max(values):.2f} s/GB"
        )


if __name__ == "__main__":
    main()
