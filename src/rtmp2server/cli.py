"""The `rtmp2-server` command: a standalone RTMP server that records and relays every stream.

`rtmp2-server status` is its one subcommand: the live streams of a running server, read from
its JSON API (`GET /api/v1/streams`), as a table. It is recognised as the first argument before
the server's own parser runs, so every server option keeps its meaning and nothing else changes
for `rtmp2-server` without it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, config
from .config import ServerConfig
from .logs import escape, get_logger
from .server import RTMPServer
from .server.server import raise_fd_limit

log = get_logger("rtmp2server")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as for a bad value in the file (argparse adds its usage first).
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The options: --config, --print-config, --version, then one per configuration key
    (`config.KEYS`: named as the key, help from its docstring)."""
    p = _Parser(
        prog="rtmp2-server",
        description="RTMP server: accepts publishes from OBS, ffmpeg, GStreamer, librtmp, "
        "records each to <record-dir>/<app>/<stream>-<UTC time>.flv and plays it live to "
        "whoever asks for rtmp://HOST/<app>/<stream>. Every option is also a key of the "
        "--config file, in the section shown above it; options override the file.",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML (which --config reads) and exit",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config.add_arguments(p)
    return p


def resolve_args(args: argparse.Namespace) -> config.Resolved:
    """The effective configuration of the parsed options and their file; ConfigError."""
    return config.resolve(args.config, config.values_from_args(args))


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return resolve_args(args).config


def _apply_log_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper()))


def reload(server: RTMPServer, args: argparse.Namespace) -> bool:
    """SIGHUP: read the file again (the flags still override it). New connections get the
    new values; running ones keep theirs. A file that fails is logged and changes nothing."""
    try:
        new = resolve_args(args).config
    except config.ConfigError as err:
        log.error("reload: %s; keeping the running configuration", err)
        return False
    old = server.config
    if new.listeners() != old.listeners():
        log.warning(
            "reload: listeners cannot change without a restart: still %s (the file says %s)",
            ", ".join(lst.url for lst in old.listeners()),
            ", ".join(lst.url for lst in new.listeners()),
        )
    new.listen, new.host, new.port = old.listen, old.host, old.port
    new.tls_cert, new.tls_key = old.tls_cert, old.tls_key
    if (new.relay is None) != (old.relay is None):
        log.warning(
            "reload: play on or off needs a restart: keeping play %s",
            "off" if old.relay is None else "on",
        )
        new.relay = old.relay
    server.reconfigure(new)
    _apply_log_level(new.log_level)
    log.info("reload: configuration read again from %s", args.config)
    return True


async def run(cfg: ServerConfig, args: argparse.Namespace | None = None) -> int:
    server = RTMPServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        stop.set()

    # Before the port opens: whoever sees it open may signal at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    if args is not None and args.config is not None:
        loop.add_signal_handler(signal.SIGHUP, reload, server, args)
    else:
        # Nothing to read again; SIGHUP would otherwise end the process.
        loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP: no --config file to reload")
    try:
        await server.start()
    except OSError as err:
        where = ", ".join(
            [lst.url for lst in cfg.listeners()] + ([f"http://{cfg.http}"] if cfg.http else [])
        )
        print(f"rtmp2-server: cannot listen on {where}: {err.strerror or err}", file=sys.stderr)
        return 1
    log.info("accepting up to %d connections", server.max_connections())
    await stop.wait()
    if signals[0] == signal.SIGTERM:
        # Graceful maintenance: publishers that can reconnect are asked to, first.
        await server.drain()
    log.info("shutting down: closing %d connection(s)", len(server.sessions))
    await server.close()
    return 0


# --- rtmp2-server status ---------------------------------------------------------------------

STATUS_COLUMNS = ("STREAM", "CODEC", "RESOLUTION", "FPS", "BITRATE", "PLAYERS", "WARNINGS")


def build_status_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rtmp2-server status",
        description="The live streams of a running rtmp2-server, from its HTTP API.",
    )
    p.add_argument(
        "--http",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="the server's HTTP listener (its --http; default 127.0.0.1:8080)",
    )
    p.add_argument(
        "--api-token", default="", metavar="TOKEN", help="the server's api_token, when it has one"
    )
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    return p


def _kbits(bits: float) -> str:
    return f"{bits / 1000:.0f} kb/s" if bits < 10_000_000 else f"{bits / 1e6:.1f} Mb/s"


def status_rows(streams: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per stream of an `/api/v1/streams` answer, in `STATUS_COLUMNS` order. Names
    and warnings come from the publisher: escaped, as in a log line."""
    rows: list[tuple[str, ...]] = []
    for s in streams:
        tracks = s.get("tracks", [])
        video = next((t for t in tracks if t.get("kind") == "video"), None)
        ordered = sorted(tracks, key=lambda t: t.get("kind") != "video")  # video first
        codecs = "+".join(t["codec"] for t in ordered if t.get("codec")) or "-"
        size = "-"
        if video is not None and video.get("width") and video.get("height"):
            size = f"{video['width']}x{video['height']}"
        fps = s.get("health", {}).get("fps")
        if fps is None and video is not None:
            fps = video.get("fps")  # what the encoder declared, until enough frames arrived
        rows.append(
            (
                escape(f"{s['app']}/{s['name']}"),
                escape(codecs),
                size,
                "-" if fps is None else f"{fps:.2f}".rstrip("0").rstrip("."),
                _kbits(s.get("bitrate_in", 0)),
                str(len(s.get("players", []))),
                escape("; ".join(s.get("warnings", []))) or "-",
            )
        )
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    table: list[tuple[str, ...]] = [STATUS_COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(STATUS_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    if not rows:
        lines.append("(no live streams)")
    return "\n".join(lines)


class StatusError(Exception):
    """Why the server's streams could not be read (one line)."""


async def fetch_streams(http: Any, base: str, token: str) -> list[dict[str, Any]]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.get(
            base + "/api/v1/streams", headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            if r.status == 401:
                raise StatusError(f"{base} wants a bearer token: --api-token TOKEN")
            if r.status != 200:
                raise StatusError(f"{base}/api/v1/streams answered {r.status}")
            doc = await r.json()
    except (TimeoutError, aiohttp.ClientError, OSError) as err:
        raise StatusError(f"cannot reach {base}: {err or type(err).__name__}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise StatusError(f"{base}/api/v1/streams: not a streams document")
    return streams


async def _status(args: argparse.Namespace, base: str) -> int:
    import aiohttp

    # Clear the screen between refreshes only on a terminal; a pipe gets one table after another.
    clear = "\x1b[H\x1b[2J" if args.watch and sys.stdout.isatty() else ""
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                streams = await fetch_streams(http, base, args.api_token)
            except StatusError as err:
                print(f"rtmp2-server status: {err}", file=sys.stderr)
                if not args.watch:
                    return 1
            else:
                print(clear + format_table(status_rows(streams)), flush=True)
                if not args.watch:
                    return 0
            await asyncio.sleep(1.0)
            if not clear:
                print(flush=True)


def status_main(argv: list[str]) -> int:
    args = build_status_parser().parse_args(argv)
    try:
        host, port = config.http_address(args.http)
    except ValueError as err:
        print(f"rtmp2-server status: error: --http {args.http!r}: {err}", file=sys.stderr)
        return 2
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        return asyncio.run(_status(args, base))
    except KeyboardInterrupt:  # how --watch ends
        return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        resolved = resolve_args(args)
    except config.ConfigError as err:
        print(f"rtmp2-server: error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        config.print_config(resolved.values)
        return 0
    cfg = resolved.config
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    before, after = raise_fd_limit()
    if after != before:
        log.info("open file limit raised from %d to %d", before, after)
    from . import workers  # --workers N: a supervisor here, or worker i (README "Workers")

    index = workers.worker_index()
    if index is None and workers.worker_count(cfg) > 1:
        # Plain asyncio: the supervisor moves no media, and it spawns with pass_fds.
        return asyncio.run(workers.supervise(argv, workers.worker_count(cfg)))
    serve = run(cfg, args) if index is None else workers.run_worker(cfg, args, index)
    try:
        import uvloop  # optional speed-up

        return uvloop.run(serve)  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(serve)


if __name__ == "__main__":
    sys.exit(main())
