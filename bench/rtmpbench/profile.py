"""Profile our ingest path: run `rtmp2server` (plain asyncio, recording) while ffmpeg pushes the
20 Mbit/s file several times without -re, sampled by py-spy and, separately, under cProfile.

py-spy samples the running server from outside (no overhead in the server, idle time left
out), so its shares are shares of the CPU the server spent. cProfile adds a cost to every
Python call, which inflates small functions, but gives call counts (calls per message).
"""

from __future__ import annotations

import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import media, micro, procs
from .servers import REPO, ours_args

_SERVER = "import sys; sys.modules['uvloop'] = None\nfrom rtmp2server.cli import main\n{wrap}"
_PLAIN = "sys.exit(main(sys.argv[1:]))\n"
_CPROFILE = "import cProfile\nout = sys.argv.pop(1)\ncProfile.run('main(sys.argv[1:])', out)\n"


def _start(work: Path, wrap: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = procs.free_port()
    rec = work / "rec"
    rec.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        _SERVER.format(wrap=wrap),
        *extra,
        *ours_args(port, rec),
    ]
    env_path = str(REPO / "src")
    proc = subprocess.Popen(
        argv,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "wb"),  # noqa: SIM115 - lives as long as the server
    )
    if not procs.wait_port(port, 15):
        proc.kill()
        raise RuntimeError("our server did not start")
    return proc, port


def _push_all(port: int, src: Path, repeat: int) -> float:
    t0 = time.monotonic()
    for i in range(repeat):
        subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                str(src),
                "-c",
                "copy",
                "-f",
                "flv",
                f"rtmp://127.0.0.1:{port}/live/prof{i}",
            ],
            check=True,
            timeout=300,
        )
    return time.monotonic() - t0


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'file.py:func'"""
    func, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    if "/rtmp2server/" in file:
        file = "rtmp2server/" + file.split("/rtmp2server/", 1)[1]
    else:
        file = Path(file).name
    return f"{file}:{func}"


def pyspy(work: Path, src: Path, repeat: int, rate: int) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc, port = _start(work, _PLAIN, [])
    raw = work / "pyspy.txt"
    sampler = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(proc.pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    cpu0 = procs.cpu_seconds(proc.pid)
    wall = _push_all(port, src, repeat)
    time.sleep(1.0)
    cpu = procs.cpu_seconds(proc.pid) - cpu0
    sampler.send_signal(signal.SIGINT)
    sampler.wait(30)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("<")] or frames
        if not frames:
            continue
        # Samples in epoll are the loop waiting for data (py-spy's idle detection misses
        # some with --nonblocking): left out, so shares are of the busy samples.
        if frames[-1].endswith("Selector.select"):
            idle += n
            continue
        total += n
        self_time[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    gb = src.stat().st_size * repeat / 1e9
    lines = [
        f"py-spy at {rate} Hz: {total} busy samples (+{idle} waiting in epoll, left out) "
        f"while ffmpeg pushed {gb:.2f} GB ({repeat} x {src.name}) in {wall:.1f} s; server "
        f"CPU {cpu:.2f} s = {cpu / gb:.2f} s/GB (py-spy's own cost is not in it).",
        "",
        "| self time | function |",
        "| ---: | --- |",
    ]
    for name, n in self_time.most_common(20):
        lines.append(f"| {100 * n / max(total, 1):.1f}% | `{name}` |")
    lines += ["", "| inclusive | function |", "| ---: | --- |"]
    for name, n in inclusive.most_common(30):
        lines.append(f"| {100 * n / max(total, 1):.1f}% | `{name}` |")
    return "\n".join(lines) + "\n"


def cprofile(work: Path, src: Path, repeat: int) -> str:
    out = work / "cprofile.out"
    proc, port = _start(work, _CPROFILE, [str(out)])
    time.sleep(0.5)
    _push_all(port, src, repeat)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    stats = pstats.Stats(str(out))
    rows = []
    total = max(float(getattr(stats, "total_tt", 0.0)), 1e-9)
    table: dict[tuple[str, int, str], tuple[int, int, float, float, dict[object, object]]]
    table = stats.stats  # type: ignore[attr-defined]
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in table.items():
        rows.append((tottime, cumtime, ncalls, f"{Path(file).name}:{line}:{func}"))
    rows.sort(reverse=True)
    lines = [
        f"cProfile (deterministic; inflates cheap calls), total {total:.2f} s:",
        "",
        "| tottime | share | cumtime | calls | function |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for tottime, cumtime, ncalls, name in rows[:20]:
        lines.append(
            f"| {tottime:.3f} | {100 * tottime / total:.1f}% | {cumtime:.3f} | {ncalls} | "
            f"`{name}` |"
        )
    return "\n".join(lines) + "\n"


def run(work: Path, cache: Path, repeat: int, rate: int) -> str:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = media.media(cache, 30, 20)
    text = "## py-spy\n\n" + pyspy(work / "pyspy", src, repeat, rate)
    text += "\n## cProfile\n\n" + cprofile(work / "cprofile", src, repeat)
    text += "\n## The stages alone\n\n" + micro.run(src, work / "micro")
    return text
