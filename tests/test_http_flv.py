"""HTTP-FLV playback end to end: ffmpeg plays `http://HOST:PORT/live/NAME.flv`.

A real ffmpeg publishes over RTMP, a real ffmpeg plays over HTTP (`-c copy` into a file); what
it received must be the recording's frames from a keyframe on to the end, bit-exact, as for
RTMP players (`test_e2e_play.assert_suffix_from_keyframe`). The play access rules apply: a
play key in the query.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
from pathlib import Path

import pytest
from aiohttp import ClientSession

from rtmp2server.config import RelayConfig
from rtmp2server.server import RTMPServer, ServerConfig
from rtmp2server.server.access import AccessConfig, AppAccess, Rule
from support.clients import FFMPEG_DEBIAN, Publisher
from support.media import SourceMedia
from test_e2e_play import (  # noqa: F401  (media_dir: the fixture)
    assert_suffix_from_keyframe,
    make_source,
    media_dir,
    packet_hashes,
)
from test_http import check, looping, metric_samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "play-t0ken"


def config(tmp_path: Path, **kw: object) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        record_dir=tmp_path / "rec",
        http="127.0.0.1:0",
        # The play ends (Stream EOF: the response ends) as soon as the publish does, and a
        # stream not published is 404 at once (the wait for one: test_browser.py).
        relay=RelayConfig(republish_grace=0, play_wait=0),
        **kw,  # type: ignore[arg-type]
    )


def publisher(src: Path, url: str) -> Publisher:
    return Publisher(
        [
            FFMPEG_DEBIAN,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
            str(src),
            "-c",
            "copy",
            "-f",
            "flv",
            url,
        ]
    )


def http_player(url: str, out: Path) -> Publisher:
    return Publisher(
        [
            FFMPEG_DEBIAN,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            url,
            "-c",
            "copy",
            "-f",
            "flv",
            str(out),
        ]
    )


async def wait_until(pred: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.1)


def test_ffmpeg_plays_http_flv_bit_exact_from_the_join_keyframe(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    src = make_source(media_dir, "h264-aac-gop1s")
    received = tmp_path / "received.flv"

    async def main() -> Path:
        async with RTMPServer(config(tmp_path)) as server:
            assert server.http is not None
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/x")
            try:
                await wait_until(lambda: server.registry.get("live", "x") is not None)
                await asyncio.sleep(1.5)  # join mid-stream: from the GOP cache
                stream = server.registry.get("live", "x")
                assert stream is not None
                recorder = next(s for s in stream.sinks if hasattr(s, "path"))
                recording = Path(recorder.path)
                play = http_player(f"{server.http.url}/live/x.flv", received)
                async with ClientSession() as http:
                    await wait_until(lambda: server.relay is not None and server.relay.players())
                    async with http.get(f"{server.http.url}/api/v1/streams/live/x") as r:
                        [p] = (await r.json())["players"]
                        assert p["protocol"] == "http-flv"
                await asyncio.to_thread(pub.wait, 30)
                result = await asyncio.to_thread(play.wait, 30)
                assert result.returncode == 0, result.stdout
            finally:
                pub.kill()
            return recording

    recording = asyncio.run(main())
    joined = assert_suffix_from_keyframe(received, recording)
    assert joined.video_from > 0  # it joined mid-stream, not from the first frame
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            str(received),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "h264" in probe.stdout and "width=320" in probe.stdout


def test_http_flv_follows_the_play_rules(tmp_path: Path, media_dir: Path) -> None:  # noqa: F811
    src = make_source(media_dir, "h264-aac-gop1s")
    digest = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    access = AccessConfig(default=AppAccess(play=Rule("key"), play_keys=[digest]))

    async def main() -> None:
        async with RTMPServer(config(tmp_path, access=access, api_token="api")) as server:
            assert server.http is not None
            base = server.http.url
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/k")
            try:
                async with ClientSession() as http:
                    async with http.get(f"{base}/live/nothing.flv?token={TOKEN}") as r:
                        assert r.status == 404
                    await wait_until(lambda: server.registry.get("live", "k") is not None)
                    for query in ("", "?token=wrong"):
                        async with http.get(f"{base}/live/k.flv{query}") as r:
                            assert r.status == 403
                    # The API token is not what HTTP-FLV asks for: the play key is.
                    async with http.get(f"{base}/live/k.flv?token={TOKEN}") as r:
                        assert r.status == 200
                        assert r.headers["Content-Type"] == "video/x-flv"
                        head = await r.content.readexactly(13)
                        assert head[:3] == b"FLV"
                        tag = await r.content.readexactly(11)
                        assert tag[0] in (8, 9, 18)
            finally:
                pub.kill()

    asyncio.run(main())


def test_a_stalled_http_player_drops_to_keyframes_and_nobody_else_waits(
    tmp_path: Path,
    media_dir: Path,  # noqa: F811
) -> None:
    """~10 Mbit/s to an HTTP-FLV client that never reads: it is cut back to keyframes (its
    queue stays bounded), the API shows its dropped frames and warns; an ffmpeg HTTP player
    beside it and the recording get everything."""
    src = make_source(media_dir, "h264-heavy")
    received = tmp_path / "received.flv"
    cfg = config(tmp_path)
    assert cfg.relay is not None
    cfg.relay.player_max_buffer = 512 * 1024

    async def main() -> tuple[Path, dict[str, object]]:
        async with RTMPServer(cfg) as server:
            assert server.http is not None and server.http.address is not None
            host, port = server.http.address
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            pub = publisher(src, f"rtmp://127.0.0.1:{server.port}/live/heavy")
            try:
                await wait_until(lambda: server.registry.get("live", "heavy") is not None)
                stream = server.registry.get("live", "heavy")
                assert stream is not None
                recording = Path(next(s for s in stream.sinks if hasattr(s, "path")).path)
                play = http_player(f"{server.http.url}/live/heavy.flv", received)
                stalled.connect((host, port))
                stalled.sendall(b"GET /live/heavy.flv HTTP/1.1\r\nHost: x\r\n\r\n")
                relay = server.relay
                assert relay is not None
                await wait_until(lambda: len(relay.players()) == 2)

                await wait_until(lambda: any(p.skips for p in relay.players()))
                await asyncio.sleep(1)
                api = f"{server.http.url}/api/v1/streams/live/heavy"
                async with ClientSession() as http, http.get(api) as r:
                    body = await r.json()
                await asyncio.to_thread(pub.wait, 40)
                result = await asyncio.to_thread(play.wait, 30)
                assert result.returncode == 0, result.stdout
            finally:
                pub.kill()
                stalled.close()
            return recording, body

    recording, body = asyncio.run(main())
    players = body["players"]
    assert isinstance(players, list) and len(players) == 2
    dropped = sorted(p["dropped_frames"] for p in players)
    assert dropped[0] == 0 and dropped[1] > 0, players
    warnings = body["warnings"]
    assert isinstance(warnings, list)
    assert any("dropped for slow players" in w for w in warnings), warnings
    assert packet_hashes(recording) == packet_hashes(src)
    joined = assert_suffix_from_keyframe(received, recording)
    assert joined.video_from == 0  # it joined before the first frame and lost nothing


def test_http_players_are_clients_bounded_and_kickable(
    tmp_path: Path,
    source: SourceMedia,
) -> None:
    async def main() -> None:
        async with RTMPServer(config(tmp_path, max_connections_per_ip=2)) as server:
            assert server.http is not None
            base = server.http.url
            pub = looping(FFMPEG_DEBIAN, source.path, f"rtmp://127.0.0.1:{server.port}/live/c")
            play: Publisher | None = None
            try:
                await wait_until(lambda: server.registry.get("live", "c") is not None)
                play = http_player(f"{base}/live/c.flv", tmp_path / "kicked.flv")
                relay = server.relay
                assert relay is not None
                await wait_until(lambda: len(relay.players()) == 1)
                async with ClientSession() as http:
                    async with http.get(f"{base}/live/c.flv") as second:
                        assert second.status == 200
                        async with http.get(f"{base}/live/c.flv") as third:
                            assert third.status == 503  # two from 127.0.0.1 at most
                    await wait_until(lambda: len(relay.players()) == 1)
                    async with http.get(f"{base}/api/v1/clients") as r:
                        clients = await r.json()
                    check(clients, "/api/v1/clients")
                    [flv] = [c for c in clients["clients"] if c["protocol"] == "http-flv"]
                    assert flv["playing"] == ["live/c"] and flv["state"] == "playing"
                    async with http.get(f"{base}/metrics") as r:
                        samples = metric_samples(await r.text())
                    assert samples[("rtmp2_http_flv_players", ())] == 1
                    async with http.delete(f"{base}/api/v1/clients/{flv['id']}") as r:
                        assert r.status == 200
                    await asyncio.to_thread(play.wait, 15)
                    await wait_until(lambda: not relay.players())
                    async with http.get(f"{base}/api/v1/clients") as r:
                        left = (await r.json())["clients"]
                    assert [c["protocol"] for c in left] == ["rtmp"]
            finally:
                pub.kill()
                if play is not None:
                    play.kill()

    asyncio.run(main())
