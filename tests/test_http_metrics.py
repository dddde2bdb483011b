"""The metrics of what goes wrong: protocol errors by kind, access callback latency, webhooks.

Each is provoked for real (bad bytes from a raw socket, a callback answered by a real aiohttp
service, webhooks POSTed to a port where nothing listens) against an in-process server with its
HTTP listener, and read back by parsing `/metrics` with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.access import AccessConfig, AppAccess
from support.clients import HANDSHAKE_SIZE, RawClient, connect_command, publish
from support.http import serve_http
from support.media import SourceMedia
from support.server import free_port
from test_http import Api, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def http_config(tmp_path: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, record_dir=None, http="127.0.0.1:0", **kw)


def _bad_peer(port: int, kind: str) -> bool:
    """One connection that sends the bad bytes of `kind`; True when the server closed it."""
    with RawClient(port) as raw:
        if kind == "HandshakeError":
            raw.send(b"\x06" + bytes(HANDSHAKE_SIZE))  # C0 version 6 (encrypted RTMPE)
        else:
            raw.handshake()
            if kind == "ChunkError":
                raw.send(b"\xc5" + b"x" * 16)  # type-3 chunk on a chunk stream never opened
            elif kind == "AMFError":
                raw.send(connect_command("live", "", body=b"\x02\x00\x07connect\x00\x3f\xf0"))
        return raw.wait_closed(5)


def test_protocol_errors_are_counted_by_kind(tmp_path: Path) -> None:
    kinds = ["HandshakeError", "ChunkError", "AMFError", "ChunkError"]

    async def main() -> dict[Any, float]:
        server = RTMPServer(http_config(tmp_path))
        await server.start()
        try:
            assert server.http is not None
            async with ClientSession() as http:
                api = Api(http, server.http.url)
                before = await api.metrics()
                assert not [k for k in before if k[0] == "rtmp2_protocol_errors_total"]
                loop = asyncio.get_running_loop()
                for kind in kinds:
                    closed = await loop.run_in_executor(None, _bad_peer, server.port, kind)
                    assert closed, kind
                return await until(
                    lambda: _when(
                        api, lambda m: len(_errors(m)) == 3 and sum(_errors(m).values()) == 4
                    )
                )
        finally:
            await server.close()

    samples = asyncio.run(main())
    assert _errors(samples) == {"HandshakeError": 1, "ChunkError": 2, "AMFError": 1}


def _errors(samples: dict[Any, float]) -> dict[str, float]:
    return {
        dict(labels)["kind"]: v
        for (name, labels), v in samples.items()
        if name == "rtmp2_protocol_errors_total"
    }


async def _when(api: Api, pred: Any) -> dict[Any, float] | None:
    samples = await api.metrics()
    return samples if pred(samples) else None


# --- access callbacks -----------------------------------------------------------------------

DELAY = 0.2  # the callback service's think time: every answered callback takes at least this


def _connect(port: int, app: str) -> RawClient:
    """A connection that has sent its connect: kept open, since closing it would cancel the
    pending callback (the connect's `_result` goes out before the decision, which applies to
    the publish or play that follows)."""
    raw = RawClient(port)
    raw.handshake()
    raw.send(connect_command(app, f"rtmp://127.0.0.1:{port}/{app}"))
    return raw


def test_callback_latency_is_a_histogram_by_action_and_outcome(tmp_path: Path) -> None:
    async def decide(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(DELAY)
        return web.Response(status=403 if body["app"] == "closed" else 200)

    async def main() -> dict[Any, float]:
        runner, url = await serve_http(decide)
        server = RTMPServer(http_config(tmp_path))
        server.access.config = AccessConfig(
            apps={
                "live": AppAccess(on_connect=url),
                "closed": AppAccess(on_connect=url),
                "down": AppAccess(on_connect=f"http://127.0.0.1:{free_port()}/hook"),
            }
        )
        await server.start()
        try:
            assert server.http is not None
            loop = asyncio.get_running_loop()
            clients = [
                await loop.run_in_executor(None, _connect, server.port, app)
                for app in ("live", "live", "closed", "down")
            ]
            try:
                async with ClientSession() as http:
                    api = Api(http, server.http.url)
                    return await until(
                        lambda: _when(api, lambda m: sum(_latency(m, "count").values()) == 4)
                    )
            finally:
                for raw in clients:
                    raw.sock.close()
        finally:
            await server.close()
            await runner.cleanup()
            # The HTTP side's observer left with its listener: AccessControl holds nothing of it.
            assert server.access.on_callback == []

    samples = asyncio.run(main())
    assert _latency(samples, "count") == {"allowed": 2, "denied": 1, "failed": 1}
    sums = _latency(samples, "sum")
    assert sums["allowed"] >= 2 * DELAY and sums["denied"] >= DELAY
    # Buckets are cumulative: nothing answered below the service's think time, all by +Inf.
    buckets = {
        (dict(labels)["outcome"], dict(labels)["le"]): v
        for (name, labels), v in samples.items()
        if name == "rtmp2_access_callback_duration_seconds_bucket"
    }
    assert buckets[("allowed", "0.1")] == 0 and buckets[("allowed", "+Inf")] == 2


def _latency(samples: dict[Any, float], part: str) -> dict[str, float]:
    out = {}
    for (name, labels), v in samples.items():
        if name == f"rtmp2_access_callback_duration_seconds_{part}":
            assert dict(labels)["action"] == "connect"
            out[dict(labels)["outcome"]] = v
    return out


# --- webhooks -------------------------------------------------------------------------------


def test_webhook_failures_to_a_port_where_nothing_listens(
    tmp_path: Path, source: SourceMedia
) -> None:
    """A real publish makes publish_start and publish_stop; each delivery is refused; with
    two attempts an event both fail twice and are given up."""

    async def main() -> dict[Any, float]:
        cfg = http_config(tmp_path, webhook=f"http://127.0.0.1:{free_port()}/hook")
        server = RTMPServer(cfg)
        server.webhooks.config.max_attempts = 2
        await server.start()
        try:
            assert server.http is not None
            url = f"rtmp://127.0.0.1:{server.port}/live/cam"
            loop = asyncio.get_running_loop()
            done = await loop.run_in_executor(None, publish, "ffmpeg-debian", source.path, url)
            assert done.returncode == 0, done.stderr
            async with ClientSession() as http:
                api = Api(http, server.http.url)
                return await until(lambda: _when(api, lambda m: _hooks(m)["given_up"] == 2))
        finally:
            await server.close()

    samples = asyncio.run(main())
    assert _hooks(samples) == {"sent": 0, "given_up": 2, "dropped": 0}
    assert samples[("rtmp2_webhook_failed_deliveries_total", ())] == 4
    assert samples[("rtmp2_webhook_queue", ())] == 0


def _hooks(samples: dict[Any, float]) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "rtmp2_webhook_events_total"
    }
