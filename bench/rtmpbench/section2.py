"""Issue 13's section 2 in one run: every capacity figure of every server, side by side, as
ratios to nginx-rtmp, with the generator's own CPU at every level.

    python -m rtmpbench.section2 [--servers nginx-rtmp,node-media-server,ours+uvloop]
        [--quick] [--window 6] [--settle 2] [--out results/<date>/section2]
    bash bench/run.sh section2 ...     # the same, after run.sh's installs

For each server, in this order (each figure on a fresh server, pinned to core 0, the
generator on core 1; see `loadgen`):
- ingest: server CPU s per GB of the 20 Mbit/s file pushed `--ingest-repeat` times by ffmpeg,
  recordings checked (`scenarios.ingest`, unchanged: the server records, nothing is pinned);
- real-time publishers per core at 3 Mbit/s and at 1 Mbit/s (the same picture, encoded at
  1 Mbit/s by `media.media`);
- players per core of one 3 Mbit/s stream, and spread evenly over 10 streams;
- relay latency p50 / p99 at half the players-per-core figure of one stream: that many
  players, plus a publisher and `--probes` probes in a process of their own (`probe.py`) that
  read on every arrival and time each message from the publisher's write to its arrival;
- memory: RSS growth of the server tree per publisher (`--memory-connections` publishers),
  per player (as many players of one stream), and per player that stopped reading
  (`--stalled` more players on that server that read nothing for `--stall-seconds`, 24 s:
  the kernel's socket buffers take the first 4 MB or so);
- ours only: the memory figure again with its GOP cache off (`--gop-cache-messages 0`),
  players per core over HTTP-FLV (the HTTP side on), and the cost of the
  statistics: one level (a quarter of its publishers-per-core figure, plus a quarter of its
  players-per-core figure on the first stream) with `--http ""` and then with the HTTP side on
  (its statistics sink on every publish), on fresh servers, `--stats-runs` times alternating.

Writes section2.json, section2.md (the table, `report.capacity_markdown`) and section2.log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from . import loadgen, media, procs, report, scenarios, servers
from .servers import BENCH, CACHE

DEFAULT_SERVERS = "nginx-rtmp,node-media-server,ours+uvloop"
PUBLISHER_STEPS = "100,250,500,750,1000,1400,1800,2400,3000,3600,4400"
PLAYER_STEPS = "250,500,1000,1500,2000,2500,3000,3600,4400,5200"
QUICK = {
    "publisher_steps": "10,20",
    "player_steps": "20,40",
    "window": 2.0,
    "settle": 1.0,
    "memory_connections": 20,
    "stalled": 5,
    "stall_seconds": 3.0,
    "ingest_repeat": 1,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = loadgen.build_parser("python -m rtmpbench.section2", __doc__.split("\n\n")[0])
    ap.set_defaults(
        servers=DEFAULT_SERVERS,
        publisher_steps=loadgen._steps(PUBLISHER_STEPS),
        player_steps=loadgen._steps(PLAYER_STEPS),
        window=5.0,
        settle=2.0,
        stall_seconds=24.0,
    )
    ap.add_argument("--quick", action="store_true", help="tiny levels: checks every figure runs")
    ap.add_argument("--memory-connections", type=int, default=200)
    ap.add_argument("--stalled", type=int, default=50, help="players that stop reading")
    ap.add_argument("--ingest-repeat", type=int, default=8)
    ap.add_argument("--streams", type=int, default=10, help="streams of the spread players figure")
    ap.add_argument("--stats-runs", type=int, default=2, help="off/on pairs of the stats figure")
    ap.add_argument(
        "--figures",
        default="ingest,publishers,publishers_1M,players,players_10,latency,memory,"
        "memory_nogop,players_flv,stats",
        help="a subset of the figures, comma-separated",
    )
    args = ap.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for key, value in QUICK.items():
            flag = "--" + key.replace("_", "-")
            if flag not in given:
                setattr(args, key, loadgen._steps(value) if isinstance(value, str) else value)
    return args


def _ramp_result(kind: str, levels: list[loadgen.Level]) -> dict[str, Any]:
    held = [lv for lv in levels if lv.held]
    top = held[-1] if held else None
    count = 0
    if top is not None:
        count = top.publishers if kind == "publishers" else top.players
    return {
        "levels": [asdict(lv) for lv in levels],
        "held": count,
        "limit": levels[-1].why if levels and not levels[-1].held else "steps exhausted",
    }


class _Tee:
    def __init__(self, *outs: TextIO) -> None:
        self.outs = outs

    def write(self, text: str) -> int:
        for out in self.outs:
            out.write(text)
        return len(text)

    def flush(self) -> None:
        for out in self.outs:
            out.flush()


async def one_server(
    args: argparse.Namespace,
    name: str,
    sources: dict[int, loadgen.Source],
    save: Callable[[], None],
    res: dict[str, Any],
) -> None:
    figures = set(args.figures.split(","))
    work = args.work / name
    spec = loadgen.unpinned(loadgen.capacity_spec(name, args.record), args.no_pin)
    ours = name.startswith("ours")
    src3 = sources[3]

    async def step(key: str, fn: Callable[[], Any]) -> Any:
        if key not in figures:
            return None
        loadgen._log(f"{name}: {key}")
        t0 = time.monotonic()
        try:
            out = await fn()
        except Exception as err:  # one broken figure must not stop the run
            res.setdefault("errors", []).append(f"{key}: {type(err).__name__}: {err}")
            loadgen._log(f"{name} {key}: FAILED {type(err).__name__}: {err}")
            return None
        res[key] = out
        res.setdefault("seconds", {})[key] = round(time.monotonic() - t0, 1)
        save()
        return out

    if "ingest" in figures:
        big = media.media(CACHE / "media", 30, 20)
        counts = media.count_packets(big)
        assert counts is not None
        s = scenarios.Settings(
            runs=1,
            ingest_repeat=args.ingest_repeat,
            live_seconds=10,
            publisher_levels=(),
            player_levels=(),
            latency_seconds=0,
            latency_fps=30,
            latency_frame_bytes=0,
            memory_connections=0,
            work=work / "ingest",
            cache=CACHE / "media",
        )
        scenarios.warm_page_cache(s.work, 2 * args.ingest_repeat * big.stat().st_size)

        async def ingest() -> Any:
            out = await asyncio.to_thread(scenarios.ingest, servers.spec(name), s, big, counts)
            loadgen._log(f"  {name} ingest: {json.dumps(out)[:300]}")
            return out

        await step("ingest", ingest)

    async def ramp(kind: str, src: loadgen.Source, **kw: Any) -> Any:
        levels = await loadgen.ramp(args, src, spec, kind, work, **kw)
        return _ramp_result(kind, levels)

    for key, kind, src, kw in (
        ("publishers", "publishers", src3, {}),
        ("publishers_1M", "publishers", sources[1], {"tag": "-1M"}),
        ("players", "players", src3, {}),
        ("players_10", "players", src3, {"streams": args.streams, "tag": f"-{args.streams}"}),
    ):
        await step(key, lambda kind=kind, src=src, kw=kw: ramp(kind, src, **kw))

    held = (res.get("players") or {}).get("held", 0)
    if held:
        path3 = media.media(CACHE / "media", args.media_seconds, 3)
        await step("latency", lambda: loadgen.latency(args, src3, spec, work, held // 2, path3))
    elif "latency" in figures:
        res.setdefault("errors", []).append("latency: no players-per-core figure to halve")

    await step(
        "memory",
        lambda: loadgen.memory(args, src3, spec, work, args.memory_connections, args.stalled),
    )
    if not ours:
        return
    # Ours keeps the last GOP of every stream for late joiners (nginx-rtmp keeps none): the
    # same memory figure with the cache off shows what a connection itself costs.
    nogop = loadgen.ServerSpec(
        spec.name,
        spec.can_play,
        lambda w, p, r, c=spec.command: [*c(w, p, r), "--gop-cache-messages", "0"],
        env=spec.env,
        available=spec.available,
    )
    await step(
        "memory_nogop",
        lambda: loadgen.memory(args, src3, nogop, work / "nogop", args.memory_connections, 0),
    )
    http_port = procs.free_port()
    spec_http = loadgen.unpinned(loadgen.capacity_spec(name, args.record, http_port), args.no_pin)

    async def flv() -> Any:
        levels = await loadgen.ramp(
            args, src3, spec_http, "players", work, via="flv", http_port=http_port, tag="-flv"
        )
        return _ramp_result("players", levels)

    await step("players_flv", flv)

    pubs = max(1, (res.get("publishers") or {}).get("held", 0) // 4)
    players = (res.get("players") or {}).get("held", 0) // 4

    async def stats() -> Any:
        out: dict[str, Any] = {"publishers": pubs, "players": players, "off": [], "on": []}
        for r in range(args.stats_runs):
            for variant, sp in (("off", spec), ("on", spec_http)):
                lv = await loadgen.load_once(
                    args, src3, sp, work / f"stats-{variant}-{r}", pubs, players
                )
                loadgen._show(f"{name} stats {variant}", lv)
                out[variant].append(asdict(lv))
        return out

    await step("stats", stats)


async def amain(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sources = {
        mbit: loadgen.load_source(media.media(CACHE / "media", args.media_seconds, mbit))
        for mbit in (3, 1)
    }
    for mbit, src in sources.items():
        loadgen._log(
            f"source {mbit} Mbit/s: {len(src.order)} messages per {src.period} ms loop, "
            f"{src.bitrate / 1e6:.2f} Mbit/s"
        )
    doc: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{loadgen._cpu_model()}, {os.cpu_count()} cores, Linux {os.uname().release}",
        "load_before": os.getloadavg(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sources": {
            str(m): {"bitrate": s.bitrate, "messages": len(s.order)} for m, s in sources.items()
        },
        "results": {},
    }

    def save() -> None:
        (out / "section2.json").write_text(json.dumps(doc, indent=1))

    t0 = time.monotonic()
    for name in args.servers.split(","):
        spec = servers.spec(name)
        why = spec.available()
        res: dict[str, Any] = doc["results"].setdefault(name, {})
        if why:
            loadgen._log(f"{name}: skipped ({why})")
            res["errors"] = [f"skipped: {why}"]
            continue
        t1 = time.monotonic()
        await one_server(args, name, sources, save, res)
        loadgen._log(f"{name}: {time.monotonic() - t1:.0f} s")
    doc["minutes"] = round((time.monotonic() - t0) / 60, 1)
    doc["load_after"] = os.getloadavg()
    save()
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    today = datetime.date.today().isoformat()
    out = args.out or BENCH / "results" / today / ("section2-quick" if args.quick else "section2")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "section2.log", "w")  # noqa: SIM115 - the whole run's log
    sys.stdout = _Tee(sys.__stdout__, log)  # type: ignore[assignment]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not args.no_pin:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop
    except ImportError:
        loadgen._log("uvloop not importable: plain asyncio")
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    doc = runner(amain(args, out))
    text = report.capacity_markdown(doc)
    (out / "section2.md").write_text(text)
    print(text)
    loadgen._log(f"wrote {out}")
    bad = [n for n, r in doc["results"].items() if r.get("errors")]
    return 1 if bad and servers.BASELINE in bad else 0


if __name__ == "__main__":
    sys.exit(main())
