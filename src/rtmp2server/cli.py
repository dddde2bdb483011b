"""The `rtmp2-server` command: a standalone RTMP server that records and relays every stream."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .logs import get_logger
from .server import RTMPServer, ServerConfig
from .server.access import AccessConfig, AppAccess, Rule
from .server.relay import RelayConfig
from .server.server import raise_fd_limit
from .server.webhooks import WebhookConfig

log = get_logger("rtmp2server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtmp2-server",
        description="RTMP server: accepts publishes from OBS, ffmpeg, GStreamer, librtmp, "
        "records each to <record-dir>/<app>/<stream>-<UTC time>.flv and plays it live to "
        "whoever asks for rtmp://HOST/<app>/<stream>.",
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
    d = ServerConfig()
    p.add_argument(
        "--max-chunk-size",
        type=int,
        default=d.max_chunk_size,
        help=f"largest Set Chunk Size accepted from a peer (default {d.max_chunk_size})",
    )
    p.add_argument(
        "--max-chunk-streams",
        type=int,
        default=d.max_chunk_streams,
        help=f"chunk stream ids one connection may use (default {d.max_chunk_streams})",
    )
    p.add_argument(
        "--max-partial-bytes",
        type=int,
        default=d.max_partial_bytes,
        help="bytes one connection may hold in unfinished messages "
        "(default: --max-message-size + 1 MiB)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=d.handshake_timeout,
        help="seconds from accept to a complete connect, however the peer paces its bytes "
        f"(default {d.handshake_timeout:g})",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=d.start_timeout,
        help="seconds from accept to the first publish or play; 0: no deadline "
        f"(default {d.start_timeout:g})",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        help="close a connection that completes no message for this many seconds, unless it "
        f"plays (0: never; default {d.idle_timeout:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"connections at once (default {d.max_connections}; less if the fd limit is lower)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=d.max_connections_per_ip,
        help=f"connections at once from one address; 0: no limit "
        f"(default {d.max_connections_per_ip})",
    )
    p.add_argument(
        "--max-name-length",
        type=int,
        default=d.max_name_length,
        help="longest app or stream name accepted, in characters; longer ones are refused "
        f"(default {d.max_name_length})",
    )
    p.add_argument(
        "--republish",
        choices=["takeover", "refuse"],
        default=d.republish,
        help="a publish of a name already being published: takeover (the new publisher "
        "replaces the old one: a reconnecting encoder is not locked out) or refuse "
        f"(default {d.republish})",
    )
    p.add_argument(
        "--record-flush-interval",
        type=float,
        default=d.record_flush_interval,
        help="seconds recorded tags may wait in memory: the most a killed server loses "
        f"(default {d.record_flush_interval:g})",
    )
    p.add_argument(
        "--record-fsync-interval",
        type=float,
        default=d.record_fsync_interval,
        help="seconds between fsyncs of each recording; 0: never "
        f"(default {d.record_fsync_interval:g})",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout,
        help="on SIGTERM, seconds to wait for publishers asked to reconnect (Enhanced RTMP v2 "
        f"Reconnect Request) before closing them (default {d.drain_timeout:g})",
    )
    relay = RelayConfig()
    p.add_argument("--no-play", action="store_true", help="refuse play requests (no relay)")
    p.add_argument(
        "--play-wait",
        type=float,
        default=relay.play_wait,
        help="seconds a player of a stream not published yet waits before "
        "NetStream.Play.StreamNotFound; 0 refuses at once, inf waits forever "
        f"(default {relay.play_wait:g})",
    )
    p.add_argument(
        "--gop-cache-messages",
        type=int,
        default=relay.gop_max_messages,
        help="largest GOP (audio+video messages from the last keyframe) kept for late joiners; "
        f"0 disables the cache (default {relay.gop_max_messages})",
    )
    p.add_argument(
        "--gop-cache-bytes",
        type=int,
        default=relay.gop_max_bytes,
        help=f"largest GOP kept for late joiners, in bytes (default {relay.gop_max_bytes})",
    )
    p.add_argument(
        "--republish-grace",
        type=float,
        default=relay.republish_grace,
        help="seconds players stay attached, told nothing, through a publisher gap or "
        "takeover; after that they get the end of the stream; 0: at once "
        f"(default {relay.republish_grace:g})",
    )
    p.add_argument(
        "--player-buffer",
        type=int,
        default=relay.player_max_buffer,
        help="bytes queued for a player above which it skips to the next keyframe "
        f"(default {relay.player_max_buffer})",
    )
    p.add_argument("--on-connect", metavar="URL", help="HTTP callback that decides each connect")
    p.add_argument("--on-publish", metavar="URL", help="HTTP callback that decides each publish")
    p.add_argument("--on-play", metavar="URL", help="HTTP callback that decides each play")
    p.add_argument(
        "--callback-format",
        choices=["json", "nginx"],
        default="json",
        help="the callbacks' request format: json, or nginx-rtmp's notify form (default json)",
    )
    p.add_argument("--webhook", metavar="URL", help="where signed event notifications are POSTed")
    p.add_argument(
        "--webhook-secret", metavar="SECRET", default="", help="HMAC-SHA256 key of the webhooks"
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def access_from_args(args: argparse.Namespace) -> AccessConfig:
    """Global callbacks from the command line: a URL given turns its action's policy to
    `callback` for every application."""
    return AccessConfig(
        default=AppAccess(
            publish=Rule("callback" if args.on_publish else "allow"),
            play=Rule("callback" if args.on_play else "allow"),
        ),
        on_connect=args.on_connect,
        on_publish=args.on_publish,
        on_play=args.on_play,
        callback_format=args.callback_format,
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        access=access_from_args(args),
        webhook=WebhookConfig(url=args.webhook, secret=args.webhook_secret),
        host=args.host,
        port=args.port,
        record_dir=None if args.no_record else args.record_dir,
        chunk_size=args.chunk_size,
        max_message_size=args.max_message_size,
        max_chunk_size=args.max_chunk_size,
        max_chunk_streams=args.max_chunk_streams,
        max_partial_bytes=args.max_partial_bytes,
        handshake_timeout=args.handshake_timeout,
        start_timeout=args.start_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        max_name_length=args.max_name_length,
        drain_timeout=args.drain_timeout,
        republish=args.republish,
        record_flush_interval=args.record_flush_interval,
        record_fsync_interval=args.record_fsync_interval,
        relay=None
        if args.no_play
        else RelayConfig(
            play_wait=args.play_wait,
            gop_cache=args.gop_cache_messages > 0,
            gop_max_messages=args.gop_cache_messages,
            gop_max_bytes=args.gop_cache_bytes,
            player_max_buffer=args.player_buffer,
            republish_grace=args.republish_grace,
        ),
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
    log.info("accepting up to %d connections", server.max_connections())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    if signals[0] == signal.SIGTERM:
        # Graceful maintenance: publishers that can reconnect are asked to, first.
        await server.drain()
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
    before, after = raise_fd_limit()
    if after != before:
        log.info("open file limit raised from %d to %d", before, after)
    try:
        import uvloop  # optional speed-up

        return uvloop.run(run(config))  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
