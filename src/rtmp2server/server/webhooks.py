"""Webhooks: signed notifications of what happened, sent without ever delaying media.

Events (`publish_start`, `publish_stop`, `play_start`, `play_stop`, `record_done`) are put on a
bounded queue and POSTed as JSON by one background task, in order. Each carries an `id` (for
the receiver to deduplicate: a retried event keeps its id) and a `timestamp`, and is signed
with HMAC-SHA256 over the exact body with the configured secret, in the header
`X-Rtmp2-Signature: sha256=<hex>` (GitHub's form). A failed delivery (not 2xx, a timeout, a
refused connection) is retried with exponential backoff (0.5 s doubling up to 30 s) up to
`max_attempts`; the events behind it wait, so order per stream is kept. A full queue drops the
new event, counts it and logs it (at most once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..logs import get_logger

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Rtmp2-Signature"
EVENTS = ("publish_start", "publish_stop", "play_start", "play_stop", "record_done")


@dataclass
class WebhookConfig:
    url: str | None = None
    """Where events are POSTed; None: no webhooks."""
    secret: str = ""
    """HMAC-SHA256 key of the signature header (empty: unsigned)."""
    queue_size: int = 1000
    """Events waiting at most; a new event beyond is dropped and counted."""
    max_attempts: int = 10
    """Deliveries tried per event before it is given up (logged)."""
    timeout: float = 5.0


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """The queue and its sender. `emit` never blocks and never raises."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._queue: asyncio.Queue[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self.given_up = 0  # events dropped after `max_attempts` failed deliveries
        self._drop_logged = 0.0

    def emit(self, event: str, **data: Any) -> None:
        if self.config.url is None:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.queue_size)
            self._task = asyncio.ensure_future(self._run())
        body = json.dumps(
            {"id": uuid.uuid4().hex, "event": event, "timestamp": time.time(), **data},
            separators=(",", ":"),
            default=str,
        ).encode()
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged >= 1.0:
                self._drop_logged = now
                log.warning(
                    "webhook: queue full (%d events); %d event(s) dropped so far",
                    self.config.queue_size,
                    self.dropped,
                )

    async def _run(self) -> None:
        import aiohttp

        assert self._queue is not None
        cfg = self.config
        async with aiohttp.ClientSession() as http:
            while True:
                body = await self._queue.get()
                headers = {"Content-Type": "application/json"}
                if cfg.secret:
                    headers[SIGNATURE_HEADER] = sign(cfg.secret, body)
                delay = 0.5
                for attempt in range(1, cfg.max_attempts + 1):
                    try:
                        async with http.post(
                            str(cfg.url),
                            data=body,
                            headers=headers,
                            timeout=aiohttp.ClientTimeout(total=cfg.timeout),
                        ) as response:
                            await response.read()
                            if 200 <= response.status < 300:
                                self.sent += 1
                                break
                            why = f"answered {response.status}"
                    except (TimeoutError, aiohttp.ClientError, OSError) as err:
                        why = f"failed: {err or type(err).__name__}"
                    self.failed += 1
                    if attempt == cfg.max_attempts:
                        self.given_up += 1
                        log.warning("webhook: event given up after %d attempts (%s)", attempt, why)
                        break
                    log.info("webhook: delivery %s; retrying in %.1f s", why, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                self._queue.task_done()

    @property
    def pending(self) -> int:
        """Events waiting in the queue (the one being delivered included)."""
        return 0 if self._queue is None else self._queue.qsize()

    async def close(self, timeout: float = 2.0) -> None:
        """Give the queue `timeout` seconds to drain, then stop the sender."""
        if self._task is None or self._queue is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("webhook: %d event(s) not delivered at close", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
