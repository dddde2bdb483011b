"""Webhooks against a real aiohttp receiver: signatures, retries while it is down, order."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from rtmp2server.server.webhooks import SIGNATURE_HEADER, WebhookConfig, Webhooks, sign
from support.server import free_port

SECRET = "hook-secret"


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"


def test_receiver_down_for_3_s_then_up_gets_every_event_once_in_order() -> None:
    port = free_port()
    received: list[dict[str, Any]] = []
    bad_signatures: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get(SIGNATURE_HEADER) != sign(SECRET, body):
            bad_signatures.append(body)
            return web.Response(status=401)
        received.append(json.loads(body))
        return web.Response(status=204)

    async def main() -> Webhooks:
        hooks = Webhooks(WebhookConfig(url=f"http://127.0.0.1:{port}/hook", secret=SECRET))
        for i in range(5):
            hooks.emit("publish_start", app="live", stream="cam", seq=i)
            hooks.emit("publish_stop", app="live", stream="cam", seq=i)
        await asyncio.sleep(3)  # nobody listens yet: every delivery fails and is retried
        assert received == []
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await hooks.close(timeout=20)
        await runner.cleanup()
        return hooks

    hooks = asyncio.run(main())
    assert not bad_signatures
    ids = [e["id"] for e in received]
    assert len(set(ids)) == len(ids) == 10  # each once (a receiver would dedupe by id)
    order = [(e["event"], e["seq"]) for e in received]
    assert order == [(k, i) for i in range(5) for k in ("publish_start", "publish_stop")]
    assert all(e["timestamp"] > 0 and e["stream"] == "cam" for e in received)
    assert hooks.failed > 0 and hooks.sent == 10 and hooks.dropped == 0


def test_full_queue_drops_and_counts() -> None:
    async def main() -> Webhooks:
        hooks = Webhooks(WebhookConfig(url="http://127.0.0.1:9/", queue_size=3, max_attempts=1))
        for i in range(10):
            hooks.emit("play_start", seq=i)
        await hooks.close(timeout=0.1)
        return hooks

    hooks = asyncio.run(main())
    assert hooks.dropped >= 6
