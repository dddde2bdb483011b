"""Headless Chromium driven over the DevTools protocol, with aiohttp's websocket client.

Debian's `chromium` is started as a user would start it headless, with a fresh profile and
`--remote-debugging-port=0`: it picks a free port and writes it to `DevToolsActivePort` in the
profile (the port, then the browser target's path). One websocket to that browser target
carries everything: a page target is created and attached in flat mode, so its commands and
events travel on the same socket with the page's `sessionId`.

Only what the browser tests need: navigate and wait for the load event, evaluate an expression
(awaiting a promise), take a PNG screenshot, and keep the page's console messages and uncaught
exceptions so that a failing test can show what the page said.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    # A muted video may autoplay anyway; this spares the test pages from relying on that.
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,800",
)


class BrowserError(RuntimeError):
    """Chromium did not start, a command failed, or the page threw."""


class Browser:
    """`async with Browser(tmp) as b:` one headless Chromium with one page."""

    def __init__(self, work: Path, start_timeout: float = 30.0) -> None:
        self.work = work
        self.start_timeout = start_timeout
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=work))
        self.log_path = work / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._event_seen = asyncio.Event()
        self.session: str | None = None
        self.console: list[str] = []  # what the page logged, and its uncaught exceptions

    # --- life ----------------------------------------------------------------------------

    async def __aenter__(self) -> Browser:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}:\n{self.log()}")
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                port, path = int(lines[0]), lines[1].strip()
                break
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"no DevToolsActivePort in {self.start_timeout} s:\n{self.log()}"
                )
            await asyncio.sleep(0.05)
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(
            f"ws://127.0.0.1:{port}{path}", max_msg_size=64 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime"):
            await self.send(f"{domain}.enable")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # --- the protocol --------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method", ""), data.get("params", {})
            if method == "Runtime.consoleAPICalled":
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
                )
                self.console.append(f"console.{params.get('type')}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {}).get("description") or details.get("text")
                self.console.append(f"uncaught: {exc}")
            self._events.append((method, params))
            self._event_seen.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrowserError(f"DevTools socket closed:\n{self.log()}"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, page: bool = True
    ) -> dict[str, Any]:
        """One command (to the page unless `page` is false); its result. BrowserError if the
        browser answers with an error."""
        assert self._ws is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self._ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(fut, 60)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first event `method` not yet taken (waiting for it up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (name, params) in enumerate(self._events):
                if name == method:
                    del self._events[: i + 1]
                    return params
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} in {timeout} s; page said: {self.console}")
            self._event_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event_seen.wait(), left)

    # --- the page ------------------------------------------------------------------------

    async def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load `url` and wait for its load event."""
        self._events.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigate {url}: {result['errorText']}")
        await self.wait_event("Page.loadEventFired", timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page (a promise is awaited); BrowserError if it
        throws."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} threw: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll `expression` until it is truthy; its value. BrowserError after `timeout`,
        naming the last value and what the page logged."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"{expression!r} still {value!r} after {timeout} s; page said: "
                    f"{self.console[-20:]}"
                )
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> bytes:
        """A PNG of the page, written to `path`; its bytes."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(result["data"])
        path.write_bytes(data)
        return data
