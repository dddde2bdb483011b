"""HTTP-FLV in a real browser, and the dashboard: headless Chromium against our HTTP listener.

Real parts only: our server (RTMP and `--http` on free loopback ports), Debian's ffmpeg
publishing the H.264/AAC source in real time (`-re`, looped so that it is live for the whole
test), Debian's Chromium driven over the DevTools protocol (`support.browser`), and mpegts.js
as setup installs it from npm, served by our listener. Playback counts only when the browser
decoded it: the video's `currentTime` advances and its decoded frame count grows. Screenshots
go to the test's tmp dir and must be PNGs of more than one colour.

And the HTTP-FLV wait: a player that asks before the publisher starts gets the stream once it
does (as an RTMP player does), and 404 once `play_wait` runs out.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import ClientSession, ClientTimeout

from rtmp2server.config import RelayConfig
from rtmp2server.http.server import STATIC
from rtmp2server.server import RTMPServer, ServerConfig
from support.browser import Browser
from support.clients import FFMPEG_DEBIAN, Publisher, start_looping_publisher
from support.media import SourceMedia

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TOKEN = "dash-t0ken"
PNG = b"\x89PNG\r\n\x1a\n"


def config(tmp_path: Path, **kw: object) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        record_dir=tmp_path / "rec",
        http="127.0.0.1:0",
        **kw,  # type: ignore[arg-type]
    )


async def until(pred: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def live(
    tmp_path: Path, source: SourceMedia, **kw: object
) -> AsyncIterator[tuple[RTMPServer, Publisher]]:
    """Our server with a live H.264/AAC publish of live/x (ffmpeg, real time, looped)."""
    async with RTMPServer(config(tmp_path, **kw)) as server:
        pub = start_looping_publisher(source.path, f"rtmp://127.0.0.1:{server.port}/live/x")
        try:
            await until(lambda: server.registry.get("live", "x") is not None, "publish of live/x")
            yield server, pub
        finally:
            pub.kill()


def colours(png: Path) -> int:
    """How many distinct colours the PNG has (decoded by ffmpeg, as raw RGB)."""
    raw = subprocess.run(
        [FFMPEG_DEBIAN, "-v", "error", "-i", str(png), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    assert len(raw) > 3 * 100 * 100, f"{png}: only {len(raw)} bytes of pixels"
    return len({raw[i : i + 3] for i in range(0, len(raw), 3 * 7)})


def assert_screenshot(data: bytes, path: Path) -> None:
    assert data[:8] == PNG, f"{path} is not a PNG: {data[:16]!r}"
    assert path.read_bytes() == data
    # The test source (ffmpeg's testsrc) alone has a dozen colours; a blank page has one.
    found = colours(path)
    assert found > 10, f"{path}: {found} colour(s)"


PLAYBACK = "(() => { const v = document.querySelector(%r); return v && [v.currentTime, " + (
    "v.getVideoPlaybackQuality().totalVideoFrames, v.webkitDecodedFrameCount, v.videoWidth]; })()"
)


async def assert_plays(browser: Browser, selector: str) -> None:
    """The <video> at `selector` decodes: currentTime advances by more than 1 s and the decoded
    frame count grows by more than 20 (the source has 30 fps)."""
    expr = PLAYBACK % selector
    await browser.wait_for(f"(({expr}) || [0])[0] > 0.2", timeout=60)
    t0, frames0, decoded0, width = await browser.evaluate(expr)
    assert width == 320, width
    await browser.wait_for(f"(({expr}) || [0])[0] > {t0 + 1.0}", timeout=60)
    await browser.wait_for(f"(({expr}) || [0, 0])[1] > {frames0 + 20}", timeout=60)
    t1, frames1, decoded1, _ = await browser.evaluate(expr)
    assert t1 > t0 + 1.0 and frames1 > frames0 + 20 and decoded1 > decoded0, (
        (t0, frames0, decoded0),
        (t1, frames1, decoded1),
        browser.console,
    )


def test_mpegts_js_is_installed_by_setup() -> None:
    """setup's npm step put mpegts.js where the listener serves it from."""
    path = STATIC / "vendor" / "mpegts.js"
    assert path.is_file(), f"{path} missing: run scripts/setup.sh"
    lock = json.loads((Path(__file__).parents[1] / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/mpegts.js"]["version"]
    package = STATIC.parents[3] / "node_modules" / "mpegts.js" / "package.json"
    assert json.loads(package.read_text())["version"] == version
    assert path.read_bytes() == (package.parent / "dist" / "mpegts.js").read_bytes()


def test_chromium_plays_http_flv_through_mpegts_js(tmp_path: Path, source: SourceMedia) -> None:
    async def main() -> None:
        async with live(tmp_path, source) as (server, _), Browser(tmp_path) as browser:
            assert server.http is not None
            base = server.http.url
            await browser.navigate(f"{base}/static/play.html?app=live&name=x")
            # mpegts.js came from our listener (the page names no other host).
            loaded = await browser.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert f"{base}/static/vendor/mpegts.js" in loaded, loaded
            assert await browser.evaluate("!!window.mpegts && mpegts.isSupported()"), (
                await browser.evaluate("document.getElementById('error').textContent")
            )
            await assert_plays(browser, "video")
            # The server sees the browser as an HTTP-FLV player of live/x.
            async with ClientSession() as http, http.get(f"{base}/api/v1/streams/live/x") as r:
                players = (await r.json())["players"]
            assert [p["protocol"] for p in players] == ["http-flv"], players
            shot = tmp_path / "play.png"
            assert_screenshot(await browser.screenshot(shot), shot)

    asyncio.run(main())


def test_dashboard_lists_previews_and_ends_a_live_stream(
    tmp_path: Path, source: SourceMedia
) -> None:
    async def main() -> None:
        async with live(tmp_path, source, api_token=TOKEN) as (server, pub):
            async with Browser(tmp_path) as browser:
                assert server.http is not None
                base = server.http.url
                await browser.navigate(f"{base}/")
                # No token yet: the API refuses, and the page says so.
                await browser.wait_for(
                    "document.getElementById('status').textContent.includes('401')"
                )
                await browser.evaluate(
                    f"document.getElementById('token').value = {TOKEN!r};"
                    "document.querySelector('#auth button').click()"
                )
                assert await browser.evaluate("sessionStorage.getItem('rtmp2.token')") == TOKEN
                row = "document.querySelector('tr[data-stream=\"live/x\"]')"
                video = await browser.wait_for(
                    f"{row} && {row}.querySelector('td.video').textContent"
                )
                assert "avc1" in video and "320\u00d7240" in video, video
                audio = await browser.evaluate(f"{row}.querySelector('td.audio').textContent")
                assert "mp4a" in audio and "44100 Hz" in audio, audio
                await assert_plays(browser, 'tr[data-stream="live/x"] video.preview')
                # A few polls for the sparkline and the preview's player to show.
                await browser.wait_for(
                    f"{row}.querySelector('td.players').textContent.startsWith('1')"
                )
                shot = tmp_path / "dashboard.png"
                assert_screenshot(await browser.screenshot(shot), shot)
                # End: the publish is gone from the registry, and ffmpeg's connection with it.
                await browser.evaluate(f"{row}.querySelector('button.kick').click()")
                # The page says what it did (and keeps saying it over the next polls).
                status = await browser.wait_for(
                    "(s => s.includes('ended live/x') && s)"
                    "(document.getElementById('status').textContent)"
                )
                assert "ended live/x" in status, status
                await until(lambda: server.registry.get("live", "x") is None, "end of live/x")
                await until(lambda: not pub.running(), "ffmpeg's exit after the end")
                await browser.wait_for(f"!{row}")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with ClientSession(headers=auth) as http, http.get(f"{base}/api/v1/streams") as r:
                assert (await r.json())["streams"] == []

    asyncio.run(main())


def test_http_flv_player_waits_for_the_publisher(tmp_path: Path, source: SourceMedia) -> None:
    async def main() -> None:
        relay = RelayConfig(play_wait=20.0, republish_grace=0)
        async with RTMPServer(config(tmp_path, relay=relay)) as server, ClientSession() as http:
            assert server.http is not None
            url = f"{server.http.url}/live/late.flv"
            asked = time.monotonic()
            get = asyncio.ensure_future(http.get(url, timeout=ClientTimeout(total=60)))
            await until(lambda: len(server.http.flv_players()) == 1, "the waiting player")  # type: ignore[union-attr]
            await asyncio.sleep(1.0)
            assert not get.done()  # no answer while nothing is published
            pub = start_looping_publisher(source.path, f"rtmp://127.0.0.1:{server.port}/live/late")
            try:
                async with await get as r:
                    assert r.status == 200, await r.text()
                    assert time.monotonic() - asked < 20.0
                    head = await r.content.readexactly(13)
                    assert head[:3] == b"FLV"
                    tags = [(await r.content.readexactly(11))[0]]
                    assert tags[0] in (8, 9, 18), tags
            finally:
                pub.kill()

    asyncio.run(main())


def test_http_flv_player_gets_404_after_play_wait(tmp_path: Path) -> None:
    async def main() -> None:
        relay = RelayConfig(play_wait=1.5)
        async with RTMPServer(config(tmp_path, relay=relay)) as server, ClientSession() as http:
            assert server.http is not None
            asked = time.monotonic()
            async with http.get(f"{server.http.url}/live/never.flv") as r:
                waited = time.monotonic() - asked
                assert r.status == 404
                assert "not published within 1.5 s" in (await r.json())["error"]
            assert waited >= 1.4, waited
            assert server.http.flv_players() == []
            assert server.relay is not None and server.relay.channel("live", "never") is None

    asyncio.run(main())


def test_http_flv_without_play_wait_is_404_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        relay = RelayConfig(play_wait=0)
        async with RTMPServer(config(tmp_path, relay=relay)) as server, ClientSession() as http:
            assert server.http is not None
            async with http.get(f"{server.http.url}/live/never.flv") as r:
                assert r.status == 404

    asyncio.run(main())


def test_missing_vendor_file_is_a_clear_404(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with RTMPServer(config(tmp_path)) as server, ClientSession() as http:
            assert server.http is not None
            base = server.http.url
            async with http.get(f"{base}/static/vendor/nothing.js") as r:
                assert r.status == 404
                assert "scripts/setup.sh" in (await r.json())["error"]
            for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/x.py"):
                async with http.get(base + path) as r:
                    assert r.status == 404, path
            async with http.get(f"{base}/") as r:
                assert r.status == 200 and "/static/vendor/mpegts.js" in await r.text()

    with caplog.at_level("WARNING"):
        asyncio.run(main())
    assert any("nothing.js" in m and "scripts/setup.sh" in m for m in caplog.messages)
