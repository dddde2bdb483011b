"""What the HTTP side's statistics sink costs on ingest: server CPU s per GB with and without it.

The statistics (`http/stats.py`) are a sink attached to every publish when the HTTP listener
is on (`--http HOST:PORT`); with `--http ""` there is no listener and no sink. Everything else
is the ingest figure of `scenarios.ingest`: our server (plain asyncio) on 127.0.0.1 recording
every publish, the 20 Mbit/s H.264 + AAC file pushed `--repeat` times with `ffmpeg -c copy`
(no -re), user + system CPU of the server's process tree from /proc, divided by the bytes
pushed. The two variants alternate, a fresh server each time, so drift on the machine falls on
both; the figure is the median of `--runs`. Each run checks the recordings packet for packet,
and, with the sink, that the stream was seen by the API while it was pushed.

The sink's own cost is also timed in this process, where other load on the machine hardly
moves it: the file's messages delivered through `Stream.deliver_all` in batches of what one
256 KiB read carries, with no sink and with a `StreamStats`, CPU by `time.process_time()`,
best of 5. The difference is what the sink adds per GB, on top of the server's ingest figure.

    cd bench && python -m rtmpbench.httpbench [--runs 3] [--repeat 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import media, procs
from .servers import CACHE, Running, ServerSpec, _ours_argv, _ours_env, ours_args

RECV = 256 * 1024  # what asyncio's selector transport asks recv() for


def in_process(src: Path, repeat: int = 5) -> tuple[float, float]:
    """CPU s per GB of delivering the file's messages without and with the statistics sink."""
    from rtmp2server.http.stats import StreamStats
    from rtmp2server.protocol.flv import parse_flv
    from rtmp2server.protocol.messages import Message
    from rtmp2server.server.registry import Stream

    _, tags, _ = parse_flv(src.read_bytes())
    batches: list[list[Message]] = [[]]
    size = 0
    for t in tags:
        batches[-1].append(
            Message(4 if t.tag_type != 18 else 5, t.timestamp, t.tag_type, 1, t.body)
        )
        size += len(t.body)
        if size >= RECV:
            batches.append([])
            size = 0
    gigabytes = sum(len(t.body) for t in tags) / 1e9

    def once(sink: bool) -> float:
        stream = Stream("live", "bench")
        if sink:
            stream.add_sink(StreamStats(stream))
        t0 = time.process_time()
        for batch in batches:
            stream.deliver_all(batch)
        return time.process_time() - t0

    bare = min(once(False) for _ in range(repeat))
    with_sink = min(once(True) for _ in range(repeat))
    return bare / gigabytes, with_sink / gigabytes


FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]


def _spec(http: str) -> ServerSpec:
    def command(work: Path, port: int, rec: Path) -> list[str]:
        return _ours_argv(False, [*ours_args(port, rec), "--http", http])

    return ServerSpec("ours", lambda: True, command, env=_ours_env)


def _seen_by_api(http: str, stop: threading.Event, seen: list[str]) -> None:
    """Poll the API until it reports a stream with its tracks (the sink at work), then stop:
    the requests themselves are not what is measured."""
    while not stop.is_set() and not seen:
        try:
            with urllib.request.urlopen(f"http://{http}/api/v1/streams", timeout=1) as r:
                seen.extend(s["name"] for s in json.load(r)["streams"] if s["tracks"])
        except OSError:
            pass
        stop.wait(0.1)


def one_run(src: Path, expected: media.Counts, repeat: int, sink: bool, work: Path) -> float:
    """Server CPU s per GB of one variant; raises when a recording is incomplete."""
    http = f"127.0.0.1:{procs.free_port()}" if sink else ""
    srv: Running = _spec(http).start(work)
    seen: list[str] = []
    stop = threading.Event()
    poller = threading.Thread(target=_seen_by_api, args=(http, stop, seen), daemon=True)
    try:
        if sink:
            poller.start()
        names = [f"ingest{i}" for i in range(repeat)]
        user0, sys0 = srv.cpu_times()
        for name in names:
            argv = [*FFMPEG, "-i", str(src), "-c", "copy", "-f", "flv", srv.url(name)]
            subprocess.run(argv, capture_output=True, timeout=300, check=True)
        paths = [p for n in names for p in srv.recordings(n)]
        media.wait_stable(paths)
        user1, sys1 = srv.cpu_times()
        stop.set()
        for name in names:
            files = srv.recordings(name)
            counts = media.count_packets(files[0]) if len(files) == 1 else None
            if counts != expected:
                raise RuntimeError(f"{name}: recorded {counts} of {expected} ({files})")
        if sink and not seen:
            raise RuntimeError("the API never reported a stream: was the sink attached?")
    finally:
        stop.set()
        srv.stop()
    gigabytes = src.stat().st_size * repeat / 1e9
    return (user1 - user0 + sys1 - sys0) / gigabytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rtmpbench.httpbench", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--repeat", type=int, default=8, help="pushes per run (default 8)")
    p.add_argument("--seconds", type=float, default=30, help="length of the 20 Mbit/s file")
    p.add_argument("--work", type=Path, default=None, help="where recordings go (default: tmp)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    src = media.media(CACHE / "media", args.seconds, 20)
    expected = media.count_packets(src)
    assert expected is not None
    bare, sink = in_process(src)
    print(f"in process: deliver {bare:.4f} s/GB, with the sink {sink:.4f} s/GB", flush=True)
    figures: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for run in range(args.runs):
            for variant in ("without", "with"):
                work = Path(tmp) / f"{variant}-{run}"
                figures[variant].append(
                    one_run(src, expected, args.repeat, variant == "with", work)
                )
                print(f"run {run + 1} {variant} sink: {figures[variant][-1]:.3f} s/GB", flush=True)
    off, on = (statistics.median(figures[v]) for v in ("without", "with"))
    load = procs.load_average()
    print()
    print("| ingest, server CPU s per GB (median) | without the sink | with the sink | cost |")
    print("| --- | --- | --- | --- |")
    print(
        f"| {args.runs} runs x {args.repeat} pushes | {off:.3f} | {on:.3f} | {on / off - 1:+.1%} |"
    )
    print(
        f"| in process, best of 5: deliver_all | {bare:.4f} | {sink:.4f} "
        f"| {sink - bare:+.4f} s/GB |"
    )
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json is not None:
        doc: dict[str, Any] = {
            "runs": figures,
            "median": {"without": off, "with": on},
            "in_process": {"without": bare, "with": sink},
            "repeat": args.repeat,
            "file_bytes": src.stat().st_size,
            "time": time.time(),
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
