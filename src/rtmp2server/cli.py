"""The `rtmp2-server` command: a standalone RTMP server that records every stream."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .server import RTMPServer, ServerConfig

log = logging.getLogger("rtmp2server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtmp2-server",
        description="RTMP server: accepts publishes from OBS, ffmpeg, GStreamer, librtmp "
        "and records each to <record-dir>/<app>/<stream>-<UTC time>.flv.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=1935, help="TCP port (default 1935)")
    p.add_argument(
        "--record-dir",
        type=Path,
        default=Path("recordings"),
        help="where recordings go (default ./recordings)",
    )
    p.add_argument("--no-record", action="store_true", help="do not record streams")
    p.add_argument("--chunk-size", type=int, default=4096, help="outgoing chunk size")
    p.add_argument(
        "--max-message-size",
        type=int,
        default=16 * 1024 * 1024,
        help="largest RTMP message accepted, in bytes (default 16 MiB)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="close a publisher that sends nothing for this many seconds (0: never)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        record_dir=None if args.no_record else args.record_dir,
        chunk_size=args.chunk_size,
        max_message_size=args.max_message_size,
        idle_timeout=args.idle_timeout,
    )


async def run(config: ServerConfig) -> int:
    server = RTMPServer(config)
    try:
        await server.start()
    except OSError as err:
        print(
            f"rtmp2-server: cannot listen on {config.host}:{config.port}: {err.strerror or err}",
            file=sys.stderr,
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: closing %d connection(s)", len(server.sessions))
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    try:
        import uvloop  # optional speed-up

        return uvloop.run(run(config))  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
