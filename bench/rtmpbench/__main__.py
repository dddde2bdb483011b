"""Run the benchmark: every server in turn, each measurement `--runs` times, then the table
and the chart. Started by bench/run.sh (which installs the servers first) or bench/smoke.sh.

    python -m rtmpbench [--quick | --smoke] [--runs N] [--servers a,b] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import media, procs, profile, report, scenarios, servers
from .servers import BASELINE, BENCH, CACHE, REPO, SERVERS, ServerSpec


def _levels(cap: int) -> tuple[int, ...]:
    out = [1]
    while out[-1] * 2 <= cap:
        out.append(out[-1] * 2)
    return tuple(out)


def settings(args: argparse.Namespace) -> scenarios.Settings:
    if args.smoke:
        runs, repeat, live, pubs, players, lat, mem = 1, 1, 3.0, 2, 2, 2.0, 20
    elif args.quick:
        runs, repeat, live, pubs, players, lat, mem = 1, 2, 6.0, 16, 16, 5.0, 100
    else:
        runs, repeat, live, pubs, players, lat, mem = 3, 8, 10.0, 32, 64, 10.0, 200
    return scenarios.Settings(
        runs=args.runs or runs,
        ingest_repeat=args.ingest_repeat or repeat,
        live_seconds=args.live_seconds or live,
        publisher_levels=_levels(args.max_publishers or pubs),
        player_levels=_levels(args.max_players or players),
        latency_seconds=lat,
        latency_fps=30,
        latency_frame_bytes=12_000,  # about 3 Mbit/s at 30 fps
        memory_connections=args.connections or mem,
        work=BENCH / "results" / "tmp" / "work",
        cache=CACHE / "media",
    )


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    nms_pkg = CACHE / "nms" / "node_modules" / "node-media-server" / "package.json"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB",
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "nginx": _version(["nginx", "-v"]).removeprefix("nginx version: "),
        "libnginx-mod-rtmp": _version(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-rtmp"]),
        "node-media-server": json.loads(nms_pkg.read_text())["version"]
        if nms_pkg.exists()
        else "not installed",
        "node": _version(["node", "--version"]),
        "pyrtmp": _version(
            [
                str(CACHE / "venv" / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('pyrtmp'))",
            ]
        ),
        "ffmpeg": " ".join(_version(["ffmpeg", "-version"]).split()[2:3]),
        "ours": f"git {commit}",
    }


def _filesystem(path: Path) -> str:
    probe = subprocess.run(
        ["df", "--output=fstype", str(path.parent if not path.exists() else path)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = probe.stdout.split()
    return lines[-1] if len(lines) > 1 else "?"


def _attempt(res: dict[str, Any], what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as err:  # one broken server or scenario must not stop the run
        res.setdefault("errors", []).append(f"{what}: {type(err).__name__}: {err}")
        traceback.print_exc()
        return None


def run(
    specs: list[ServerSpec],
    s: scenarios.Settings,
    log: Callable[[str], None],
    only: set[str] | None = None,
) -> Any:
    big = media.media(s.cache, 30, 20)
    live = media.media(s.cache, s.live_seconds, 3)
    big_counts = media.count_packets(big)
    live_counts = media.count_packets(live)
    assert big_counts is not None and live_counts is not None
    live_from_key = media.from_first_keyframe(live)
    headers = media.codec_headers(live)
    log(f"media: {big.name} {big_counts}, {live.name} {live_counts} ({live_from_key} from key)")
    results: report.Results = {spec.name: {} for spec in specs}
    if only is None or only & {"ingest", "ingest_tls"}:
        scenarios.warm_page_cache(s.work, 2 * s.ingest_repeat * big.stat().st_size)
    for r in range(s.runs):
        for spec in specs:
            res = results[spec.name]
            why = spec.available()
            if why is not None:
                if r == 0:
                    res.setdefault("errors", []).append(f"skipped: {why}")
                continue
            t0 = time.monotonic()
            plays = spec.can_play()
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("ingest", partial(scenarios.ingest, spec, s, big, big_counts)),
            ]
            if spec.rtmps_command is not None:
                # Right after the plain ingest, so that both see the same machine state.
                tls_ingest = partial(scenarios.ingest, spec, s, big, big_counts, tls=True)
                steps.append(("ingest_tls", tls_ingest))
            elif r == 0 and (only is None or "ingest_tls" in only):
                res.setdefault("errors", []).append(f"ingest over RTMPS n/a: {spec.no_rtmps}")
                res["no_rtmps"] = spec.no_rtmps
            steps += [
                ("publishers", partial(scenarios.publishers, spec, s, live, live_counts)),
                ("memory", partial(scenarios.memory, spec, s, headers)),
            ]
            if plays:
                players = s.work / "players"
                steps += [
                    (
                        "fanout",
                        partial(
                            scenarios.fanout, spec, s, live, live_counts, live_from_key, players
                        ),
                    ),
                    ("latency", partial(scenarios.latency, spec, s, headers)),
                ]
            elif r == 0:
                res.setdefault("errors", []).append("no play support: fan-out/latency n/a")
            for key, step in steps:
                if only is not None and key not in only:
                    continue
                out = _attempt(res, f"run {r + 1} {key}", step)
                if out is not None:
                    res.setdefault(key, []).append(out)
                    log(f"run {r + 1} {spec.name} {key}: {json.dumps(out)[:400]}")
            log(f"run {r + 1} {spec.name}: {time.monotonic() - t0:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rtmpbench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 short run of everything")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="only check that the harness works with our server (<2 min)",
    )
    p.add_argument(
        "--servers",
        help=f"comma-separated subset of {','.join(SERVERS)}; also ours@<git rev>[+uvloop]: "
        "our server as of that commit, to compare changes in one run",
    )
    p.add_argument("--runs", type=int, help="runs per figure (median taken); default 3")
    p.add_argument("--ingest-repeat", type=int, help="pushes of the 20 Mbit/s file per run")
    p.add_argument("--live-seconds", type=float, help="length of the real-time 3 Mbit/s file")
    p.add_argument("--max-publishers", type=int, help="cap of the publishers sweep")
    p.add_argument("--max-players", type=int, help="cap of the fan-out sweep")
    p.add_argument("--connections", type=int, help="connections for the memory figure")
    p.add_argument(
        "--only",
        help="comma-separated subset of ingest,ingest_tls,publishers,memory,fanout,latency "
        "(ingest_tls: the ingest over RTMPS, beside ingest)",
    )
    p.add_argument("--profile", action="store_true", help="profile our ingest path instead")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date>)")
    p.add_argument(
        "--work",
        type=Path,
        help="scratch folder for recordings (default bench/results/tmp/work; "
        "a tmpfs such as /dev/shm/rtmpbench takes the disk out of the figures)",
    )
    args = p.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: servers and clients are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    s = settings(args)
    if args.work:
        s = dataclasses.replace(s, work=args.work.resolve())
    today = datetime.date.today().isoformat()
    if args.smoke:
        out = args.out or BENCH / "results" / "tmp" / "smoke"
    else:
        out = args.out or BENCH / "results" / today
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / ("profile.log" if args.profile else "run.log"), "w")  # noqa: SIM115 - open for the whole run

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {line}", flush=True)
        logfile.write(f"[{stamp}] {line}\n")
        logfile.flush()

    if args.profile:
        text = profile.run(s.work.parent / "profile", s.cache, args.ingest_repeat or 16, 1000)
        header = f"# Profile of our ingest path, {today}\n\nMachine: {machine()['cpu']}\n\n"
        (out / "profile.md").write_text(header + text)
        log(f"wrote {out / 'profile.md'}")
        print(text)
        return 0

    if args.smoke:
        names = ["ours"]
    elif args.servers:
        names = args.servers.split(",")
    else:
        names = list(SERVERS)
    unknown = [n for n in names if n not in SERVERS and not n.startswith("ours@")]
    if unknown:
        p.error(f"unknown server(s) {unknown}; known: {list(SERVERS)} and ours@<git rev>")
    specs = [servers.spec(n) for n in names]
    info = machine()
    load0 = procs.load_average()
    log(f"settings: {s}")
    t0 = time.monotonic()
    results = run(specs, s, log, set(args.only.split(",")) if args.only else None)
    elapsed = time.monotonic() - t0
    load1 = procs.load_average()
    shutil.rmtree(s.work, ignore_errors=True)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    header = "\n".join(
        [
            f"# RTMP server benchmark, {today} ({mode}: {s.runs} run(s), medians)",
            "",
            f"Machine: {info['cpu']}, Linux {info['kernel']}; loopback only; recordings on "
            f"{_filesystem(s.work)}. Load average "
            f"{load0[0]:.2f} before, {load1[0]:.2f} after; {elapsed / 60:.0f} min.",
            "Servers: "
            + "; ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "kernel")),
            "",
            "Figures in parentheses are ratios to nginx-rtmp (below 1 is less CPU, memory or "
            "delay than nginx-rtmp; above 1 is more streams or players).",
            f"Ingest: the 30 s 20 Mbit/s H.264+AAC FLV pushed {s.ingest_repeat}x per run with "
            "`ffmpeg -c copy -f flv` (no -re), CPU = user+sys of the server's process tree. "
            "Ingest over RTMPS: the same pushes to an rtmps:// listener (`-tls_verify 0`, "
            "certificate from trustme), right after the plain ones; in parentheses its ratio "
            "to the same server's plain ingest.",
            f"Publishers: N x `ffmpeg -re` of a {s.live_seconds:g} s 3 Mbit/s FLV at once, "
            f"N = {', '.join(map(str, s.publisher_levels))} until a level fails (any recording "
            "not packet-complete, a publisher failing or running late); the clients share the 2 "
            "cores with the server.",
            f"Fan-out: N rtmpdump players waiting, then one `ffmpeg -re` publisher; N = "
            f"{', '.join(map(str, s.player_levels))} until a player misses packets after the first "
            "keyframe.",
            f"Latency: our sans-IO client publishes {s.latency_fps} video messages/s of "
            f"{s.latency_frame_bytes} bytes stamped with their send time for {s.latency_seconds:g} "
            "s; a second client plays them back. Memory: RSS growth with "
            f"{s.memory_connections} open publishing connections, per connection.",
        ]
    )
    text = report.markdown(results, header)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    drawn = report.chart(results, out / "chart.png", f"RTMP servers on {info['cpu']}, {today}")
    if not args.smoke and args.out is None and args.only is None:
        rel = Path(os.path.relpath(out, BENCH / "results"))
        chart_line = f"\n![chart]({rel}/chart.png)\n" if drawn else ""
        (BENCH / "results" / "latest.md").write_text(
            text + chart_line + f"\nRaw figures: [{rel}/results.json]({rel}/results.json)\n"
        )
    print(text)
    log(f"wrote {out}")
    if args.smoke:
        ours = results.get("ours", {})
        ok = (
            bool(ours.get("ingest"))
            and all(x["complete"] == x["streams"] for x in ours["ingest"])
            and bool(ours.get("ingest_tls"))
            and all(x["complete"] == x["streams"] for x in ours["ingest_tls"])
            and bool(ours.get("publishers"))
            and bool(ours.get("memory"))
        )
        log("smoke: harness OK" if ok else "smoke: FAILED")
        return 0 if ok else 1
    return 0 if BASELINE in results else 1


if __name__ == "__main__":
    sys.exit(main())
