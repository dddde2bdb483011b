"""The `rtmp2-server` command: a standalone RTMP server that records and relays every stream."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__, config
from .config import ServerConfig
from .logs import get_logger
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


def main(argv: list[str] | None = None) -> int:
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
    try:
        import uvloop  # optional speed-up

        return uvloop.run(run(cfg, args))  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(run(cfg, args))


if __name__ == "__main__":
    sys.exit(main())
